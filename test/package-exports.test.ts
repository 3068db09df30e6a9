import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// These tests exercise the BUILT package (dist/), resolved through package.json "exports"
// exactly as a consumer would. `npm test` runs `npm run build` first (pretest).
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

interface ExportShape {
  LockTable: string;
  LockError: string;
  lockErrorIsError: boolean;
}

const report = `JSON.stringify({
  LockTable: typeof m.LockTable,
  LockError: typeof m.LockError,
  lockErrorIsError: typeof m.LockError === 'function' && m.LockError.prototype instanceof Error,
})`;

function withConsumerDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'locktable-exports-'));
  try {
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(repoRoot, join(dir, 'node_modules', 'locktable'), 'dir');
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function runNode<T = ExportShape>(dir: string, file: string, source: string): T {
  writeFileSync(join(dir, file), source);
  // Run without the parent's --import tsx so only plain Node resolution is involved.
  const out = execFileSync(process.execPath, [file], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return JSON.parse(out.trim()) as T;
}

function assertShape(shape: ExportShape): void {
  assert.equal(shape.LockTable, 'function');
  assert.equal(shape.LockError, 'function');
  assert.equal(shape.lockErrorIsError, true);
}

test('dist build exists', () => {
  for (const file of ['index.js', 'index.cjs', 'index.d.ts']) {
    assert.ok(existsSync(join(repoRoot, 'dist', file)), `dist/${file} missing: run npm run build`);
  }
});

test('built package loads as an ES module via import()', () => {
  withConsumerDir((dir) => {
    const shape = runNode(
      dir,
      'consumer.mjs',
      `const m = await import('locktable');\nconsole.log(${report});\n`,
    );
    assertShape(shape);
  });
});

test('built package loads as CommonJS via require()', () => {
  withConsumerDir((dir) => {
    const shape = runNode(
      dir,
      'consumer.cjs',
      `const m = require('locktable');\nconsole.log(${report});\n`,
    );
    assertShape(shape);
  });
});

// Both builds in one process (an ES module imports locktable, a CommonJS dependency requires it):
// each has its own copy of every class, and they must still recognise each other's objects, share
// one default withLock pool, and call their classes by their own names.
const bothBuilds = `
import { createRequire } from 'node:module';
import { inspect } from 'node:util';
import * as esm from 'locktable';
const cjs = createRequire(import.meta.url)('locktable');
const caught = (f) => { try { f(); } catch (e) { return e; } };
const out = { distinct: esm.LockTable !== cjs.LockTable && esm.LockError !== cjs.LockError };

const esmTable = new esm.LockTable({ capacity: 8 });
const cjsTable = new cjs.LockTable({ capacity: 8 });
out.tables = [
  cjsTable instanceof esm.LockTable,
  esmTable instanceof cjs.LockTable,
  cjs.LockTable.attach(esmTable.buffer) instanceof esm.LockTable,
  {} instanceof esm.LockTable,
  esmTable.buffer instanceof esm.LockTable,
];
const lease = cjsTable.tryAcquire('lease');
out.leases = [lease instanceof esm.Lease, lease instanceof cjs.Lease, cjsTable instanceof esm.Lease];
lease.release();

// withLock of one build with a table of the other (with the table's failTimeout, and another).
const task = (a, lock) => [a + 1, lock.key];
out.withLock = [
  await esm.withLock(cjsTable, 'k', task, { args: 1 }),
  await cjs.withLock(esmTable, 'k', task, { args: 2 }),
  await esm.withLock(cjsTable, 'k', task, { args: 3, failTimeout: 5 }),
];
const pools = globalThis[Symbol.for('locktable.defaultPools')];
out.defaultPools = pools instanceof Map ? pools.size : -1;

const released = caught(() => lease.release());
const exit = new cjs.WorkerExitError('k', 3, null);
const aborted = await cjsTable.acquire('a', { signal: AbortSignal.abort() }).catch((e) => e);
class OwnError extends esm.LockError {}
out.errors = {
  released: [released instanceof esm.LockError, released.code],
  exit: [exit instanceof esm.WorkerExitError, exit instanceof esm.LockError, exit instanceof Error],
  plainIsNotExit: new cjs.LockError('ERR_LOCK_TIMEOUT', 'k', 'm') instanceof esm.WorkerExitError,
  aborted: [aborted instanceof esm.AbortError, aborted instanceof esm.LockError],
  ownSubclass: [
    new OwnError('ERR_LOCK_TIMEOUT', 'k', 'm') instanceof OwnError,
    new esm.LockError('ERR_LOCK_TIMEOUT', 'k', 'm') instanceof OwnError,
    new OwnError('ERR_LOCK_TIMEOUT', 'k', 'm') instanceof cjs.LockError,
  ],
};

const classes = ['LockTable', 'Lease', 'LockError', 'AbortError', 'WorkerExitError'];
out.names = [esm, cjs].map((m) => classes.map((name) => m[name].name));
out.inspected = [inspect(esmTable).split(' ')[0], inspect(cjsTable).split(' ')[0]];
out.received = caught(() => esm.LockTable.attach(cjsTable)).message.replace(/^.*Received /, '');
console.log(JSON.stringify(out));
`;

interface BothBuilds {
  distinct: boolean;
  tables: boolean[];
  leases: boolean[];
  withLock: [number, string][];
  defaultPools: number;
  errors: Record<string, unknown>;
  names: string[][];
  inspected: string[];
  received: string;
}

test('the ESM and CommonJS builds in one process recognise each other and share one pool', () => {
  withConsumerDir((dir) => {
    const out = runNode<BothBuilds>(dir, 'both.mjs', bothBuilds);
    assert.equal(out.distinct, true, 'both builds were loaded');
    assert.deepEqual(out.tables, [true, true, true, false, false]);
    assert.deepEqual(out.leases, [true, true, false]);
    assert.deepEqual(out.withLock, [
      [2, 'k'],
      [3, 'k'],
      [4, 'k'],
    ]);
    assert.equal(out.defaultPools, 1, 'one default withLock pool for both builds');
    assert.deepEqual(out.errors, {
      released: [true, 'ERR_LOCK_RELEASED'],
      exit: [true, true, true],
      plainIsNotExit: false,
      aborted: [true, false],
      ownSubclass: [true, false, true],
    });
    const classes = ['LockTable', 'Lease', 'LockError', 'AbortError', 'WorkerExitError'];
    assert.deepEqual(out.names, [classes, classes]);
    assert.deepEqual(out.inspected, ['LockTable', 'LockTable']);
    assert.equal(out.received, 'an instance of LockTable');
  });
});

test('locktable/postgres loads through import and require; the main entry never loads pg', () => {
  withConsumerDir((dir) => {
    const esm = runNode<{ PgLockTable: string }>(
      dir,
      'pg-consumer.mjs',
      `const m = await import('locktable/postgres');\nconsole.log(JSON.stringify({ PgLockTable: typeof m.PgLockTable }));\n`,
    );
    assert.equal(esm.PgLockTable, 'function');
    const cjs = runNode<{ PgLockTable: string }>(
      dir,
      'pg-consumer.cjs',
      `const m = require('locktable/postgres');\nconsole.log(JSON.stringify({ PgLockTable: typeof m.PgLockTable }));\n`,
    );
    assert.equal(cjs.PgLockTable, 'function');
    // The main entry, in both builds: pg is never in the module cache after loading it.
    const main = runNode<{ loaded: boolean }>(
      dir,
      'main-consumer.mjs',
      `import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
await import('locktable');
require('locktable');
const loaded = Object.keys(require.cache).some((p) => p.includes('/node_modules/pg/'));
console.log(JSON.stringify({ loaded }));\n`,
    );
    assert.deepEqual(main, { loaded: false });
  });
});

test('dist/index.js and the chunks it imports never import pg', () => {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(join(repoRoot, 'dist', file), 'utf8');
    assert.doesNotMatch(
      source,
      /from\s*["']pg["']|require\(["']pg["']\)|import\(["']pg["']\)/,
      file,
    );
    for (const [, dep] of source.matchAll(/from\s*["']\.\/([^"']+)["']/g)) visit(dep!);
  };
  visit('index.js');
  visit('index.cjs');
  assert.ok(seen.size > 1);
});

test('locktable/web-locks loads through import and require, and works with a table of the other build', () => {
  withConsumerDir((dir) => {
    const source = (load: string) => `${load}
const table = new LockTable();
const locks = new LockManager(table);
const got = await locks.request('k', (lock) => lock.name + ':' + lock.mode);
const other = new LockManager(otherTable);
const crossed = await other.request('k', { ifAvailable: true }, (lock) => lock !== null);
console.log(JSON.stringify({ LockManager: typeof LockManager, got, crossed }));\n`;
    const esm = runNode<{ LockManager: string; got: string; crossed: boolean }>(
      dir,
      'wl-consumer.mjs',
      source(`import { createRequire } from 'node:module';
import { LockManager, LockTable } from 'locktable/web-locks';
const otherTable = new (createRequire(import.meta.url)('locktable').LockTable)();`),
    );
    assert.deepEqual(esm, { LockManager: 'function', got: 'k:exclusive', crossed: true });
    const cjs = runNode<{ LockManager: string; got: string; crossed: boolean }>(
      dir,
      'wl-consumer.cjs',
      `(async () => {${source(`const { LockManager, LockTable } = require('locktable/web-locks');
const otherTable = new (await import('locktable')).LockTable();`)}})();`,
    );
    assert.deepEqual(cjs, { LockManager: 'function', got: 'k:exclusive', crossed: true });
  });
});

test('dist/index.js and the chunks it imports never load the Web Locks facade', () => {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(join(repoRoot, 'dist', file), 'utf8');
    assert.doesNotMatch(source, /LockManager = class|class LockManager\b/, file);
    for (const [, dep] of source.matchAll(/from\s*["']\.\/([^"']+)["']/g)) visit(dep!);
  };
  visit('index.js');
  visit('index.cjs');
  // The check can see the facade where it is.
  assert.match(
    readFileSync(join(repoRoot, 'dist', 'web-locks.js'), 'utf8'),
    /LockManager = class|class LockManager\b/,
  );
});
