/**
 * What a user sees: util.inspect of a table, option names checked at every entry point, options
 * that accept undefined, and the names the built package's types export.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { inspect } from 'node:util';

// The built package (withLock runs its worker file from dist/; `npm test` builds first).
type Api = typeof import('../src/index.js');
const DIST = new URL('../dist/index.js', import.meta.url).href;
const { configureDefaultPool, Lease, LockTable, withLock } = (await import(DIST)) as Api;

const unknown = (field: string) => ({
  name: 'TypeError',
  code: 'ERR_INVALID_ARG_VALUE',
  message: new RegExp(`"${field.replace('.', '\\.')}" argument is not a known option`),
});

describe('the public surface', () => {
  test('util.inspect(table) is a short summary, not the shared memory', () => {
    const table = new LockTable({ capacity: 16, maxKeyLength: 8 });
    const lease = table.acquireSync('k');
    assert.equal(inspect(table), 'LockTable { capacity: 16, maxKeyLength: 8, held: 1 }');
    lease.release();
    assert.equal(inspect(table), 'LockTable { capacity: 16, maxKeyLength: 8, held: 0 }');
  });

  test('the table object shows no internals: no own string keys, none of its old internal names', () => {
    const table = new LockTable();
    assert.deepEqual(Object.keys(table), []);
    for (const name of ['directory', 'grants', 'slots', 'header', 'explicitDefaults']) {
      assert.equal(name in table, false, `table.${name} is reachable`);
    }
  });

  test('an unknown option name is refused with a TypeError that names it, everywhere', async () => {
    const table = new LockTable();
    assert.throws(() => new LockTable({ capcity: 10 } as never), unknown('options.capcity'));
    assert.throws(
      () => LockTable.attach(table.buffer, { mode: 'shared' } as never),
      unknown('defaults.mode'),
    );
    const typo = { waitTimout: 10 } as never;
    assert.throws(() => table.tryAcquire('k', typo), unknown('options.waitTimout'));
    assert.throws(() => table.acquireSync('k', typo), unknown('options.waitTimout'));
    assert.throws(() => table.acquireAllSync(['k'], typo), unknown('options.waitTimout'));
    assert.throws(() => table.runSync('k', () => 0, typo), unknown('options.waitTimout'));
    await assert.rejects(table.acquire('k', typo), unknown('options.waitTimout'));
    await assert.rejects(table.acquireAll(['k'], typo), unknown('options.waitTimout'));
    await assert.rejects(
      table.run('k', () => 0, typo),
      unknown('options.waitTimout'),
    );
    await assert.rejects(
      withLock(table, 'k', () => 0, { exectimeout: 5 } as never),
      unknown('options.exectimeout'),
    );
    assert.throws(() => configureDefaultPool({ threads: 2 } as never), unknown('options.threads'));
    // Nothing was taken on the way.
    assert.deepEqual(table.held(), []);
  });

  test('every option accepts undefined, as if it were left out', async () => {
    const table = new LockTable({ capacity: undefined, hold: undefined, waitTimeout: undefined });
    const all = { mode: undefined, hold: undefined, waitTimeout: undefined, spinDelay: undefined };
    table.acquireSync('k', all).release();
    (await table.acquire('k', { ...all, signal: undefined })).release();
    table.acquireAllSync(['k'], all).release();
    LockTable.attach(table.buffer, { failTimeout: undefined });
    assert.equal(await withLock(table, 'k', () => 1, { args: undefined, pool: undefined }), 1);
  });

  test('the Lease constructor is not the public API: calling it throws', async () => {
    assert.throws(() => new (Lease as unknown as new () => object)(), {
      name: 'TypeError',
      message: /Illegal constructor/,
    });
    const table = new LockTable();
    const lease = table.acquireSync('k');
    assert.ok(lease instanceof Lease);
    assert.ok(!({} instanceof Lease));
    lease.release();
  });

  test('the built types export every type a user sees by name, and no internals', () => {
    const dts = readFileSync(new URL('../dist/index.d.ts', import.meta.url), 'utf8');
    const exported = new Set(
      [...dts.matchAll(/export \{([^}]*)\}/g)].flatMap((m) =>
        m[1]!.split(',').map((s) =>
          s
            .trim()
            .split(' as ')
            .pop()!
            .replace(/^type /, ''),
        ),
      ),
    );
    for (const name of [
      'LockTable',
      'Lease',
      'LeaseGroup',
      'LockInfo',
      'HolderInfo',
      'WatchedPool',
      'LockTableOptions',
      'TableDefaults',
      'ResolvedDefaults',
      'TryAcquireOptions',
      'AcquireSyncOptions',
      'AcquireOptions',
      'Mode',
      'LockError',
      'LockErrorCode',
      'AbortError',
      'WorkerExitError',
      'compareKeys',
      'Locks',
      'LockLease',
      'LockGroup',
      'LockDescription',
      'LockTryOptions',
      'LockWaitOptions',
      'withLock',
      'WithLockOptions',
      'ModuleTask',
      'TaskFunction',
      'TaskLock',
      'TaskPool',
      'configureDefaultPool',
      'DefaultPoolOptions',
      'ResolvedDefaultPoolOptions',
    ]) {
      assert.ok(exported.has(name), `dist/index.d.ts does not export ${name}`);
    }
    for (const internal of ['Directory', 'Records', 'Grants', 'Views', 'LeaseHost']) {
      assert.doesNotMatch(
        dts,
        new RegExp(`\\b${internal}\\b`),
        `dist/index.d.ts shows ${internal}`,
      );
    }
  });
});
