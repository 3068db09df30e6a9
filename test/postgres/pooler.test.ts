// A transaction-mode pooler (PgBouncer) between PgLockTable and the server: session advisory
// locks would be shared by every client the pooler multiplexes on one server process, so the
// backend must refuse it (ERR_LOCK_POOLER), never grant through it twice. Needs the pgbouncer
// binary (Debian: apt-get install pgbouncer; .ci/run installs it); skipped without it, except
// under CI=true.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { PgLockTable } from '../../src/postgres/index.js';
import { databaseUrl, freshNamespace, serverLocks, skipWithoutPostgres } from './db.js';

function findPgbouncer(): string | undefined {
  for (const path of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']) {
    if (existsSync(path)) return path;
  }
  const which = spawnSync('which', ['pgbouncer'], { encoding: 'utf8' });
  return which.status === 0 ? which.stdout.trim() : undefined;
}

const binary = findPgbouncer();
if (binary === undefined && databaseUrl !== undefined && process.env.CI === 'true') {
  throw new Error('CI=true but pgbouncer is not installed (apt-get install pgbouncer)');
}
const skip =
  skipWithoutPostgres ||
  (binary === undefined ? 'pgbouncer not installed (Debian: apt-get install pgbouncer)' : false);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function listening(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (child.exitCode !== null) throw new Error(`pgbouncer exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ port, host: '127.0.0.1' });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('pgbouncer did not start listening');
}

describe('PgLockTable behind a transaction-mode pooler (PgBouncer)', { skip }, () => {
  let dir: string;
  let bouncer: ChildProcess;
  let url: string;
  const tables: PgLockTable[] = [];
  const open = (namespace: number): PgLockTable => {
    const table = new PgLockTable({ connectionString: url, namespace, lease: Infinity });
    tables.push(table);
    return table;
  };

  before(async () => {
    const server = new URL(databaseUrl!);
    const port = await freePort();
    dir = mkdtempSync(join(tmpdir(), 'locktable-pgbouncer-'));
    const user = decodeURIComponent(server.username) || userInfo().username;
    const database = server.pathname.slice(1) || 'postgres';
    writeFileSync(join(dir, 'userlist.txt'), `"${user}" ""\n`);
    writeFileSync(
      join(dir, 'pgbouncer.ini'),
      [
        '[databases]',
        `${database} = host=${server.hostname} port=${server.port || 5432} dbname=${database} user=${user}`,
        '[pgbouncer]',
        'listen_addr = 127.0.0.1',
        `listen_port = ${port}`,
        'unix_socket_dir =',
        'auth_type = trust',
        `auth_file = ${join(dir, 'userlist.txt')}`,
        'pool_mode = transaction',
        // One server process for every client: the sharing is certain, not a matter of timing.
        'default_pool_size = 1',
        'max_client_conn = 100',
        `logfile = ${join(dir, 'pgbouncer.log')}`,
        `pidfile = ${join(dir, 'pgbouncer.pid')}`,
        'ignore_startup_parameters = extra_float_digits',
        '',
      ].join('\n'),
    );
    const args = [join(dir, 'pgbouncer.ini')];
    if (userInfo().uid === 0) {
      // PgBouncer refuses to run as root: it runs as the postgres user, which must read its files.
      const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout);
      const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout);
      for (const f of ['', 'userlist.txt', 'pgbouncer.ini']) chownSync(join(dir, f), uid, gid);
      args.unshift('-u', 'postgres');
    }
    bouncer = spawn(binary!, args, { stdio: 'ignore' });
    await listening(port, bouncer);
    url = `postgres://${encodeURIComponent(user)}@127.0.0.1:${port}/${database}`;
  });

  after(async () => {
    await Promise.all(tables.map((t) => t.close().catch(() => {})));
    bouncer?.kill('SIGKILL');
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test('negative control: through the pooler, two clients share one session and both get one lock', async () => {
    const clients = [
      new pg.Client({ connectionString: url }),
      new pg.Client({ connectionString: url }),
    ];
    for (const c of clients) {
      c.on('error', () => {});
      await c.connect();
    }
    try {
      const key = freshNamespace();
      const first = await clients[0]!.query('SELECT pg_try_advisory_lock($1::int8) AS ok', [key]);
      const second = await clients[1]!.query('SELECT pg_try_advisory_lock($1::int8) AS ok', [key]);
      assert.equal(first.rows[0].ok, true);
      assert.equal(second.rows[0].ok, true, 'the pooler gave the second client the same session');
      await clients[0]!.query('SELECT pg_advisory_unlock_all()');
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
    }
  });

  /** A raw client through the pooler that clears the one server process's session state. */
  async function resetServerProcess(): Promise<pg.Client> {
    const raw = new pg.Client({ connectionString: url });
    raw.on('error', () => {});
    await raw.connect();
    await raw.query('DISCARD ALL');
    return raw;
  }

  async function assertNothingLocked(namespace: number): Promise<void> {
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    try {
      assert.deepEqual(await serverLocks(admin, namespace), []);
    } finally {
      await admin.end();
    }
  }

  test('a PgLockTable through the pooler is refused at its first request, holding nothing', async () => {
    (await resetServerProcess()).end();
    const namespace = freshNamespace();
    const table = open(namespace);
    // Its control session and its lock session land on the one server process: the second
    // finds the first's prepared statements there (PgBouncer 1.18 does not track them).
    await assert.rejects(table.acquire('invoice:1', { waitTimeout: 2000 }), {
      code: 'ERR_LOCK_POOLER',
      key: 'invoice:1',
      message: /transaction-mode pooler/,
    });
    await assertNothingLocked(namespace);
  });

  test('a server process that already carries another session’s marker is refused at session start', async () => {
    // A pooler that does track prepared statements (PgBouncer >= 1.21) gets here: the marker.
    const raw = await resetServerProcess();
    try {
      await raw.query("SELECT set_config('locktable.session', 'locktable:another', false)");
      const namespace = freshNamespace();
      await assert.rejects(open(namespace).acquire('invoice:2', { waitTimeout: 2000 }), {
        code: 'ERR_LOCK_POOLER',
        message: /already carries another locktable session/,
      });
      await assertNothingLocked(namespace);
    } finally {
      await raw.end();
    }
  });
});
