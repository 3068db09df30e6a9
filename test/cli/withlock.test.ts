// The `withlock` command, BUILT (dist/withlock.js, `npm run build` first), run as a child process
// against a real PostgreSQL: exit codes, usage errors, signal forwarding, the wait timeout, lock
// loss, mutual exclusion of two runs, shared runs together, and the token in the environment.
// Every test coordinates through files, pipes and the database, never by sleeping long enough.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { PgLockTable } from '../../src/postgres/index.js';
import {
  databaseUrl,
  eventually,
  freshNamespace,
  rawClient,
  skipWithoutPostgres,
} from '../postgres/db.js';

const here = dirname(fileURLToPath(import.meta.url));
const bin = resolve(here, '../../dist/withlock.js');
const command = join(here, 'command.mjs');

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves when stdout contains `text`. */
  printed: (text: string) => Promise<void>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

describe('withlock', { skip: skipWithoutPostgres }, () => {
  const namespace = freshNamespace();
  let table: PgLockTable;
  let admin: pg.Client;
  let dir: string;
  let keyCount = 0;
  const newKey = () => `withlock-test-${keyCount++}`;

  const withlock = (args: string[], env: Record<string, string | undefined> = {}): Run => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: {
        ...process.env,
        NODE_OPTIONS: '',
        DATABASE_URL: databaseUrl,
        PG_CONNECTION_STRING: '',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const watchers: Array<() => void> = [];
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      for (const w of watchers) w();
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
      child.on('close', (code, signal) => res({ code, signal })),
    );
    const printed = (text: string) =>
      new Promise<void>((res, rej) => {
        const check = () => {
          if (out.includes(text)) res();
        };
        watchers.push(check);
        check();
        void done.then(() =>
          rej(new Error(`withlock exited before printing ${text}; stderr: ${err}`)),
        );
      });
    return { child, stdout: () => out, stderr: () => err, printed, done };
  };
  /** withlock <key> --namespace ns [options] -- node command.mjs <commandArgs> */
  const run = (key: string, options: string[], commandArgs: string[]) =>
    withlock([
      key,
      '--namespace',
      String(namespace),
      ...options,
      '--',
      process.execPath,
      command,
      ...commandArgs,
    ]);
  const file = (name: string) => join(dir, name);
  const lines = (path: string) => {
    try {
      return readFileSync(path, 'utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };

  before(async () => {
    table = new PgLockTable({ connectionString: databaseUrl, namespace });
    admin = await rawClient();
    dir = mkdtempSync(join(tmpdir(), 'locktable-withlock-'));
  });
  after(async () => {
    await table.close();
    await admin.end();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the built bin is executable and starts with a shebang', () => {
    accessSync(bin, fsConstants.X_OK);
    assert.match(readFileSync(bin, 'utf8'), /^#!\/usr\/bin\/env node\n/);
  });

  test('--help (exit codes listed) and --version', async () => {
    const help = withlock(['--help']);
    assert.equal((await help.done).code, 0);
    for (const code of ['64', '69', '75', '76', '127', '128 + n'])
      assert.match(help.stdout(), new RegExp(code.replace('+', '\\+')));
    const version = withlock(['--version']);
    assert.equal((await version.done).code, 0);
    const pkg = JSON.parse(readFileSync(resolve(here, '../../package.json'), 'utf8'));
    assert.equal(version.stdout().trim(), pkg.version);
  });

  test("exits with the command's exit code: 0, 3", async () => {
    const key = newKey();
    const ok = run(key, [], ['exit', '0']);
    assert.deepEqual(await ok.done, { code: 0, signal: null });
    const three = run(key, [], ['exit', '3']);
    assert.deepEqual(await three.done, { code: 3, signal: null });
    assert.equal(three.stderr(), '');
    const negative = withlock([
      key,
      '--namespace',
      '-7',
      '--',
      process.execPath,
      command,
      'exit',
      '0',
    ]);
    assert.equal((await negative.done).code, 0, `a negative --namespace: ${negative.stderr()}`);
    assert.equal(await table.inspect(key), null, 'released after the command exited');
  });

  test('exits with 128 + n when the command dies of signal n', async () => {
    const key = newKey();
    const term = run(key, [], ['signal', 'SIGTERM']);
    assert.equal((await term.done).code, 128 + 15);
    const kill = run(key, [], ['signal', 'SIGKILL']);
    assert.equal((await kill.done).code, 128 + 9);
    assert.equal(await table.inspect(key), null);
  });

  test('passes LOCKTABLE_KEY, LOCKTABLE_TOKEN (increasing between runs) and LOCKTABLE_MODE', async () => {
    const key = newKey();
    const first = run(key, [], ['env']);
    assert.equal((await first.done).code, 0);
    const second = run(key, ['--shared'], ['env']);
    assert.equal((await second.done).code, 0);
    const a = JSON.parse(first.stdout());
    const b = JSON.parse(second.stdout());
    assert.equal(a.key, key);
    assert.equal(a.mode, 'exclusive');
    assert.equal(b.mode, 'shared');
    assert.ok(BigInt(b.token) > BigInt(a.token), `${b.token} > ${a.token}`);
  });

  test('--wait-timeout: exits 75 without running the command while another holds the key', async () => {
    const key = newKey();
    const lease = await table.acquire(key);
    try {
      const marks = file('timeout');
      const timed = run(key, ['--wait-timeout', '50'], ['mark', marks, 'x', '0']);
      assert.equal((await timed.done).code, 75);
      assert.match(timed.stderr(), /timed out after 50 ms/);
      const once = run(key, ['--wait-timeout', '0'], ['mark', marks, 'y', '0']);
      assert.equal((await once.done).code, 75);
      const quiet = run(key, ['--wait-timeout', '0', '-q'], ['mark', marks, 'z', '0']);
      assert.equal((await quiet.done).code, 75);
      assert.equal(quiet.stderr(), '');
      assert.deepEqual(lines(marks), [], 'the command never ran');
    } finally {
      await lease.release();
    }
  });

  test('usage errors exit 64 and name the argument and value', async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /missing <key>/],
      [['k'], /missing the command/],
      [['k', 'true'], /expected -- before the command, got "true"/],
      [['k', '--'], /missing the command/],
      [['--wait-timeout', 'soon', 'k', '--', 'true'], /--wait-timeout .*"soon"/],
      [['--wait-timeout', '-5', 'k', '--', 'true'], /--wait-timeout .*"-5"/],
      [['--lease', '10', 'k', '--', 'true'], /--lease .*"10"/],
      [['--namespace', '1.5', 'k', '--', 'true'], /--namespace .*"1.5"/],
      [['--kill-after', 'x', 'k', '--', 'true'], /--kill-after .*"x"/],
      [['--bogus', 'k', '--', 'true'], /--bogus/],
      [['', '--', 'true'], /<key> must not be empty/],
      [['k', '--', 'true'], /no database/],
    ];
    for (const [args, message] of cases) {
      const env = message.source === 'no database' ? { DATABASE_URL: '' } : {};
      const r = withlock(args, env);
      const { code } = await r.done;
      assert.equal(code, 64, `${JSON.stringify(args)}: ${r.stderr()}`);
      assert.match(r.stderr(), message);
      assert.equal(r.stderr().trim().split('\n').length, 1, 'one line');
    }
    // A key PostgreSQL cannot store exactly: found by the backend's check, still a usage error.
    const long = run('a'.repeat(600), [], ['exit', '0']);
    assert.equal((await long.done).code, 64);
    assert.match(long.stderr(), /invalid <key>/);
  });

  test('--db wins over DATABASE_URL; an unreachable database exits 69', async () => {
    const marks = file('unreachable');
    const r = withlock([
      newKey(),
      '--db',
      'postgres://nobody@127.0.0.1:1/none',
      '--',
      process.execPath,
      command,
      'mark',
      marks,
      'x',
      '0',
    ]);
    assert.equal((await r.done).code, 69);
    assert.match(r.stderr(), /^withlock: cannot lock: .*ECONNREFUSED/);
    assert.deepEqual(lines(marks), []);
  });

  test('a command that cannot be found exits 127, one that is not executable 126', async () => {
    const key = newKey();
    const r = withlock([key, '--namespace', String(namespace), '--', 'no-such-command-xyz']);
    assert.equal((await r.done).code, 127);
    assert.match(r.stderr(), /cannot run "no-such-command-xyz"/);
    const dirAsCommand = withlock([key, '--namespace', String(namespace), '--', dir]);
    assert.equal((await dirAsCommand.done).code, 126);
    assert.equal(await table.inspect(key), null, 'released');
  });

  test('forwards SIGUSR1 and SIGTERM to the command', async () => {
    const key = newKey();
    const seen = file('forward');
    const r = run(key, [], ['trap', seen]);
    await r.printed('ready');
    r.child.kill('SIGUSR1');
    await eventually(() => lines(seen).includes('SIGUSR1'), 5000, 'the command to see SIGUSR1');
    r.child.kill('SIGTERM');
    assert.equal((await r.done).code, 42, "the command's exit code after its SIGTERM handler");
    assert.deepEqual(lines(seen), ['SIGUSR1', 'SIGTERM']);
    assert.equal(await table.inspect(key), null);
  });

  test('SIGTERM while waiting for the lock: exits 143 without running the command', async () => {
    const key = newKey();
    const lease = await table.acquire(key);
    const marks = file('aborted');
    try {
      const r = run(key, [], ['mark', marks, 'x', '0']);
      await eventually(
        async () => ((await table.inspect(key))?.waiters ?? 0) > 0,
        10_000,
        'withlock to wait on the server',
      );
      r.child.kill('SIGTERM');
      assert.equal((await r.done).code, 128 + 15);
      await eventually(
        async () => ((await table.inspect(key))?.waiters ?? 0) === 0,
        5000,
        'the wait to be cancelled on the server',
      );
    } finally {
      await lease.release();
    }
    assert.deepEqual(lines(marks), [], 'the command never ran');
  });

  test('lock lost (pg_terminate_backend): the command gets SIGTERM, withlock exits 76', async () => {
    const key = newKey();
    const seen = file('lost');
    const r = run(key, [], ['trap', seen]);
    await r.printed('ready');
    const info = await table.inspect(key);
    assert.equal(info?.holders.length, 1);
    await admin.query('SELECT pg_terminate_backend($1)', [info!.holders[0]!.pid]);
    assert.equal((await r.done).code, 76);
    assert.deepEqual(lines(seen), ['SIGTERM']);
    assert.match(r.stderr(), /lost the lock on "withlock-test-\d+"/);
  });

  test('lock lost, the command ignores SIGTERM: SIGKILL after --kill-after', async () => {
    const key = newKey();
    const seen = file('lost-ignored');
    const r = run(key, ['--kill-after', '100'], ['trap', seen, 'ignore']);
    await r.printed('ready');
    const info = await table.inspect(key);
    await admin.query('SELECT pg_terminate_backend($1)', [info!.holders[0]!.pid]);
    assert.equal((await r.done).code, 76);
    assert.deepEqual(lines(seen), ['SIGTERM'], 'it got SIGTERM, ignored it, and was killed');
  });

  test('two exclusive runs of one key never overlap', async () => {
    const key = newKey();
    const marks = file('exclusive');
    const runs = [0, 1, 2, 3].map((i) => run(key, [], ['mark', marks, String(i), '30']));
    for (const r of runs) assert.equal((await r.done).code, 0, r.stderr());
    const got = lines(marks);
    assert.equal(got.length, 8);
    for (let i = 0; i < got.length; i += 2) {
      const id = got[i]!.split(' ')[1];
      assert.deepEqual([got[i], got[i + 1]], [`start ${id}`, `end ${id}`], got.join(', '));
    }
  });

  test('two --shared runs of one key hold it together', async () => {
    const key = newKey();
    const meet = file('shared');
    // Each waits until the other has started: they finish only if they ran at the same time.
    const a = run(key, ['--shared'], ['meet', meet, 'a', 'b']);
    const b = run(key, ['--shared'], ['meet', meet, 'b', 'a']);
    assert.equal((await a.done).code, 0, a.stderr());
    assert.equal((await b.done).code, 0, b.stderr());
    assert.deepEqual(lines(meet).sort(), ['a', 'b']);
  });
});
