/**
 * table.watch(pool): locks taken inside a piscina pool's tasks are freed when the task's thread
 * dies, for the threads the pool had when watched and those it starts later. Pool workers run the
 * built package (fixtures/tasks.mjs imports dist/; `npm test` builds first).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Piscina } from 'piscina';

type Api = typeof import('../src/index.js');
const DIST = new URL('../dist/index.js', import.meta.url).href;
const { LockTable } = (await import(DIST)) as Api;
type Table = InstanceType<Api['LockTable']>;

const TASKS = new URL('./fixtures/tasks.mjs', import.meta.url).href;
const STARTED = 0;
const GO = 1;

function pool(minThreads: number, maxThreads: number): Piscina {
  return new Piscina({ filename: TASKS, minThreads, maxThreads });
}

/** Runs lockInside in `p`: the task takes `key` in its thread and exits with `code`. */
async function crashHolding(p: Piscina, table: Table, key: string, code = 7): Promise<void> {
  const cells = new SharedArrayBuffer(16);
  await assert.rejects(
    p.run({ table: table.buffer, key, cells, code }, { name: 'lockInside' }),
    /exited with code: 7/,
  );
  // It took the lock before it died.
  assert.equal(Atomics.load(new Int32Array(cells), STARTED), 1);
}

describe('watch(pool)', () => {
  test('a pool task that dies holding a lock frees it at once', async () => {
    const table = new LockTable();
    const p = pool(1, 1);
    try {
      table.watch(p);
      await crashHolding(p, table, 'k');
      // The thread's 'exit' came before the run's rejection: the lock is free now.
      assert.equal(table.inspect('k'), null);
      assert.notEqual(table.tryAcquire('k', { hold: 1000 }), null);
    } finally {
      await p.destroy();
    }
  });

  test('threads the pool starts after watch() are watched too (replacements included)', async () => {
    const table = new LockTable();
    const p = pool(0, 2);
    try {
      assert.equal(p.threads.length, 0);
      table.watch(p);
      for (const key of ['a', 'b', 'c']) {
        await crashHolding(p, table, key);
        assert.equal(table.inspect(key), null, `${key} is still held`);
      }
    } finally {
      await p.destroy();
    }
  });

  test('destroying the pool under a task that holds a lock frees it', async () => {
    const table = new LockTable();
    const p = pool(1, 1);
    table.watch(p);
    const cells = new SharedArrayBuffer(16);
    const c = new Int32Array(cells);
    const running = p.run({ table: table.buffer, key: 'k', cells }, { name: 'lockInside' });
    running.catch(() => {});
    while (Atomics.load(c, STARTED) === 0) {
      const w = Atomics.waitAsync(c, STARTED, 0);
      if (w.async) await w.value;
    }
    assert.equal(table.inspect('k')?.holders.length, 1);
    await p.destroy();
    // destroy() resolves once its threads have exited.
    assert.equal(table.inspect('k'), null);
  });

  test('a task that finishes normally releases its own lock; watching changes nothing', async () => {
    const table = new LockTable();
    const p = pool(1, 1);
    try {
      table.watch(p);
      const cells = new SharedArrayBuffer(16);
      Atomics.store(new Int32Array(cells), GO, 1);
      assert.equal(
        await p.run({ table: table.buffer, key: 'k', cells }, { name: 'lockInside' }),
        'released',
      );
      assert.equal(table.inspect('k'), null);
    } finally {
      await p.destroy();
    }
  });

  test('negative control: unwatched, or after unwatch, a dead task keeps its lock', async () => {
    const table = new LockTable();
    const p = pool(0, 1);
    try {
      await crashHolding(p, table, 'never-watched');
      assert.equal(table.inspect('never-watched')?.holders.length, 1);
      const unwatch = table.watch(p);
      unwatch();
      await crashHolding(p, table, 'unwatched');
      assert.equal(table.inspect('unwatched')?.holders.length, 1);
    } finally {
      await p.destroy();
    }
  });

  test('refuses what is neither a Worker nor a pool', () => {
    const table = new LockTable();
    assert.throws(() => table.watch({} as never), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => table.watch(null as never), { code: 'ERR_INVALID_ARG_TYPE' });
  });
});

const POOL_CONFIG = new URL('./fixtures/pool-config.mjs', import.meta.url);

/**
 * A worker that runs `calls` tasks on its default pool (configured with `configure`); returns how
 * many started at once (once `expect` have started, the rest are let go) and its report.
 */
async function tasksAtOnce(calls: number, expect: number, configure?: object) {
  const { Worker } = await import('node:worker_threads');
  const table = new LockTable();
  const cells = new SharedArrayBuffer(16);
  const c = new Int32Array(cells);
  const worker = new Worker(POOL_CONFIG, {
    workerData: { buffer: table.buffer, cells, calls, configure },
  });
  const report = new Promise<Record<string, unknown>>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  while (Atomics.load(c, 0) < expect) {
    const w = Atomics.waitAsync(c, 0, Atomics.load(c, 0), 10_000);
    if (w.async) await w.value;
  }
  // The tasks that started first are all inside now; a pool of `expect` threads starts no more.
  const atOnce = Atomics.load(c, 0);
  Atomics.store(c, 1, 1);
  Atomics.notify(c, 1);
  const out = await report;
  await worker.terminate();
  return { atOnce, out };
}

describe('the default withLock pool', () => {
  test('configureDefaultPool sets a worker thread’s pool; after its first use it throws ERR_INVALID_STATE', async () => {
    const { out } = await tasksAtOnce(3, 3, { maxThreads: 3, minThreads: 0, idleTimeout: 100 });
    assert.deepEqual(out.configured, { minThreads: 0, maxThreads: 3, idleTimeout: 100 });
    assert.equal(out.late, 'ERR_INVALID_STATE');
    // Three tasks that each waited until all three had started: three threads.
    assert.equal(new Set(out.results as number[]).size, 3);
  });

  test('a worker thread’s default pool is smaller than the machine (at most half its cores, at least 1)', async () => {
    const { availableParallelism } = await import('node:os');
    const max = Math.max(1, Math.floor(availableParallelism() / 2));
    const { atOnce, out } = await tasksAtOnce(max + 1, max);
    assert.equal(atOnce, max);
    // max + 1 tasks that block until max of them started ran in at most max threads.
    assert.equal((out.results as number[]).length, max + 1);
    assert.ok(new Set(out.results as number[]).size <= max, `threads: ${String(out.results)}`);
  });

  test('refuses bad settings, naming them', async () => {
    const { configureDefaultPool } = (await import(DIST)) as Api;
    assert.throws(() => configureDefaultPool({ maxThreads: 0 }), { code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => configureDefaultPool({ minThreads: 4, maxThreads: 2 }), /maxThreads/);
    assert.throws(() => configureDefaultPool({ idleTimeout: Infinity }), {
      code: 'ERR_OUT_OF_RANGE',
    });
    assert.throws(() => configureDefaultPool({ maxThread: 2 } as never), {
      code: 'ERR_INVALID_ARG_VALUE',
      message: /options\.maxThread\b.*not a known option/,
    });
  });
});

describe('withLock transferList', () => {
  test('moves an ArrayBuffer in args to the task instead of copying it', async () => {
    const { withLock } = (await import(DIST)) as Api;
    const table = new LockTable();
    const data = new Uint8Array([1, 2, 3]).buffer;
    const seen = await withLock(
      table,
      'k',
      ({ data }: { data: ArrayBuffer }) => [...new Uint8Array(data)],
      { args: { data }, transferList: [data] },
    );
    assert.deepEqual(seen, [1, 2, 3]);
    assert.equal(data.byteLength, 0, 'the caller’s buffer is detached: it was moved');
    // Without it, the buffer is copied.
    const kept = new Uint8Array([4]).buffer;
    await withLock(table, 'k', ({ kept }: { kept: ArrayBuffer }) => kept.byteLength, {
      args: { kept },
    });
    assert.equal(kept.byteLength, 1);
    await assert.rejects(
      withLock(table, 'k', () => 0, { transferList: 1 as never }),
      {
        code: 'ERR_INVALID_ARG_TYPE',
      },
    );
    assert.equal(table.inspect('k'), null);
  });
});
