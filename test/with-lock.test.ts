/**
 * withLock across real threads: the task runs in a piscina worker of the BUILT package (pool
 * workers load dist/task-runner.js; `npm test` builds first). Tasks live in fixtures/tasks.mjs and
 * talk to the test through a SharedArrayBuffer ("cells"): [0] started, [1] go, [2] a runaway's
 * counter, Float64 [4] the deadline the task was given.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { threadId, Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import {
  control,
  counterMoves,
  CTRL_GO,
  CTRL_HELD,
  CTRL_READY,
  CTRL_STOP,
  rejection,
  signal,
  spawn,
  waitFor,
} from './harness.js';
import { runQueueSince } from './run-queue.js';

type Api = typeof import('../src/index.js');
const DIST = new URL('../dist/index.js', import.meta.url).href;
const { LockTable, LockError, WorkerExitError, withLock } = (await import(DIST)) as Api;
type Table = InstanceType<Api['LockTable']>;

const TASKS = new URL('./fixtures/tasks.mjs', import.meta.url);
const task = (name: string) => ({ module: TASKS, name });

const STARTED = 0;
const GO = 1;
const RETURNING = 10;

function cells(): { buffer: SharedArrayBuffer; c: Int32Array; deadline: () => number } {
  const buffer = new SharedArrayBuffer(64);
  const f = new Float64Array(buffer);
  return { buffer, c: new Int32Array(buffer), deadline: () => f[4]! };
}

/** Runs `fn` with a pool of fixtures/tasks.mjs of min..max threads, destroyed afterwards. */
async function withPool(min: number, max: number, fn: (pool: Piscina) => Promise<void>) {
  const pool = new Piscina({ filename: TASKS.href, minThreads: min, maxThreads: max });
  try {
    await fn(pool);
  } finally {
    await pool.destroy();
  }
}

/**
 * Occupies the pool's one thread (waitForGo on its own cells), queues a withLock call of
 * waitForGo on `queued` for key 'q' behind it, and aborts that call while it holds the key (after
 * `whileHeld`). Returns the blocker's cells and its run, to let it go later.
 */
async function abortWhileQueued(
  table: Table,
  pool: Piscina,
  queued: SharedArrayBuffer,
  whileHeld: () => void = () => {},
) {
  const blocker = cells();
  const busy = pool.run({ cells: blocker.buffer }, { name: 'waitForGo' });
  await waitFor(blocker.c, STARTED, (v) => v === 1);
  const stop = new AbortController();
  const run = withLock(table, 'q', 'waitForGo', {
    pool,
    args: { cells: queued },
    signal: stop.signal,
  });
  await new Promise((resolve) => setImmediate(resolve));
  whileHeld();
  stop.abort();
  assert.equal((await rejection(run)).name, 'AbortError');
  return { blocker, busy };
}

/** The runaway of fixtures/tasks.mjs as a self-contained function. */
const runaway = ({ cells }: { cells: SharedArrayBuffer }) => {
  const c = new Int32Array(cells);
  Atomics.store(c, 0, 1);
  for (;;) c[2]!++;
};

/** A worker that holds `key` until told to stop. */
async function holder(table: Table, key: string) {
  const ctrl = control();
  const w = spawn('acquireOnce', { buffer: table.buffer, ctrl: ctrl.buffer, key, keep: true });
  await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
  return {
    async stop() {
      signal(ctrl, CTRL_STOP);
      await w.exited;
    },
  };
}

/** A worker that took `key` with a short hold and died unwatched; returns once its hold is past. */
async function deadHolder(table: Table, key: string): Promise<void> {
  const ctrl = control();
  const w = spawn('holdForever', { buffer: table.buffer, ctrl: ctrl.buffer, key, hold: 20 });
  await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
  await w.worker.terminate();
  const deadline = table.inspect(key)!.holders[0]!.deadline;
  while (LockTable.now() <= deadline) {
    await new Promise((resolve) => setTimeout(resolve, deadline - LockTable.now() + 1));
  }
}

describe("withLock: defaults (call, then attach, then new LockTable, then withLock's own)", () => {
  test('waitTimeout: the table default, then the handle default, then the call option', async () => {
    const table = new LockTable({ capacity: 16, waitTimeout: 100 });
    const handle = LockTable.attach(table.buffer, { waitTimeout: 30 });
    const h = await holder(table, 'busy');
    try {
      const cases: [string, Table, { waitTimeout?: number }, number][] = [
        ['table default', table, {}, 100],
        ['attach default over the table default', handle, {}, 30],
        ['call option over both', handle, { waitTimeout: 10 }, 10],
        ['call option over the table default', table, { waitTimeout: 10 }, 10],
      ];
      for (const [row, t, options, ms] of cases) {
        const t0 = performance.now();
        const error = await rejection(withLock(t, 'busy', () => 1, options));
        assert.equal(error.code, 'ERR_LOCK_TIMEOUT', row);
        assert.match(error.message, new RegExp(`after ${ms} ms`), row);
        assert.ok(performance.now() - t0 >= ms - 1, `${row}: gave up early`);
      }
      // The table API resolves the same layers (with its own library default).
      assert.match((await rejection(table.acquire('busy'))).message, /after 100 ms/);
    } finally {
      await h.stop();
    }
  });

  test('failTimeout: the table default, then the handle default, then the call option', async () => {
    // Each key's holder died unwatched and its hold is past: one attempt (waitTimeout 0) reclaims
    // it exactly when the call's failTimeout is 0.
    const table = new LockTable({ capacity: 16, failTimeout: 0 });
    const patient = LockTable.attach(table.buffer, { failTimeout: 3_600_000 });
    await deadHolder(table, 'dead1');
    await deadHolder(table, 'dead2');
    const recovered = (_args: unknown, lock: { recovered: boolean }) => lock.recovered;
    const once = { waitTimeout: 0 };
    assert.equal(await withLock(table, 'dead1', recovered, once), true, 'table default');
    const error = await rejection(withLock(patient, 'dead2', recovered, once));
    assert.equal(error.code, 'ERR_LOCK_TIMEOUT', 'attach default over the table default');
    assert.equal(
      await withLock(patient, 'dead2', recovered, { ...once, failTimeout: 0 }),
      true,
      'call option over both',
    );
  });
});

describe('withLock', () => {
  test('runs the task in a worker under the lock and returns its value', async () => {
    const table = new LockTable({ capacity: 16 });
    const r = (await withLock(table, 'k', task('describeLock'), {
      args: { x: 1 },
      execTimeout: 2000,
    })) as {
      lock: { key: string; mode: string; token: bigint; deadline: number; table: unknown };
      holder: number;
      args: unknown;
    };
    assert.deepEqual(r.args, { x: 1 });
    assert.equal(r.lock.key, 'k');
    assert.equal(r.lock.mode, 'exclusive');
    assert.equal(typeof r.lock.token, 'bigint');
    assert.ok(r.lock.token > 0n);
    assert.ok(r.lock.table instanceof SharedArrayBuffer);
    // Inside the task, the table shows the lock held by the calling thread.
    assert.equal(r.holder, threadId);
    assert.ok(r.lock.deadline <= LockTable.now() + 2000 && r.lock.deadline > LockTable.now());
    assert.equal(table.inspect('k'), null, 'released when the task settled');
    // A self-contained function gets its args; the next grant has a larger token.
    const token2 = await withLock(table, 'k', (a: { n: number }, lock) => [a.n * 2, lock.token], {
      args: { n: 21 },
    });
    assert.equal(token2[0], 42);
    assert.ok(token2[1]! > r.lock.token);
  });

  test('holds the lock while the task runs; SharedArrayBuffers in args are shared', async () => {
    const table = new LockTable({ capacity: 16 });
    const { buffer, c } = cells();
    const done = withLock(table, 'k', task('waitForGo'), { args: { cells: buffer } });
    await waitFor(c, STARTED, (v) => v === 1);
    assert.equal(table.tryAcquire('k'), null);
    assert.equal(table.inspect('k')?.holders[0]?.threadId, threadId);
    signal(c, GO);
    assert.equal(await done, 'went');
    table.tryAcquire('k')!.release();
  });

  test('shared mode: tasks overlap; an exclusive task waits for them', async () => {
    const table = new LockTable({ capacity: 16 });
    const a = cells();
    const b = cells();
    await withPool(3, 3, async (pool) => {
      const opts = { pool, mode: 'shared' as const };
      const p1 = withLock(table, 's', 'waitForGo', { ...opts, args: { cells: a.buffer } });
      const p2 = withLock(table, 's', 'waitForGo', { ...opts, args: { cells: b.buffer } });
      await waitFor(a.c, STARTED, (v) => v === 1);
      await waitFor(b.c, STARTED, (v) => v === 1);
      assert.equal(table.inspect('s')?.holders.length, 2);
      const x = cells();
      const p3 = withLock(table, 's', 'waitForGo', { pool, args: { cells: x.buffer } });
      signal(a.c, GO);
      assert.equal(await p1, 'went');
      assert.equal(Atomics.load(x.c, STARTED), 0, 'the exclusive task ran beside a shared one');
      signal(b.c, GO);
      await p2;
      await waitFor(x.c, STARTED, (v) => v === 1);
      signal(x.c, GO);
      await p3;
    });
  });

  test('the exec timer starts when the task starts, not when it is queued', async () => {
    const table = new LockTable({ capacity: 16 });
    await withPool(1, 1, async (pool) => {
      const blocker = cells();
      const busy = pool.run({ cells: blocker.buffer }, { name: 'waitForGo' });
      await waitFor(blocker.c, STARTED, (v) => v === 1);
      // Queued behind the busy worker for longer than its execTimeout.
      const queued = withLock(table, 'q', 'quick', { pool, args: 'ran', execTimeout: 100 });
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(table.inspect('q')?.holders[0]?.threadId, threadId, 'held while queued');
      signal(blocker.c, GO);
      await busy;
      assert.equal(await queued, 'ran');
    });
  });

  test("an execTimeout beyond setTimeout's range (2^34 ms) neither fires early nor spins", async () => {
    const table = new LockTable({ capacity: 16 });
    const { buffer, c } = cells();
    let overflows = 0;
    const onWarning = (w: Error) => {
      if (w.name === 'TimeoutOverflowWarning') overflows++;
    };
    process.on('warning', onWarning);
    try {
      const run = withLock(table, 'long', task('waitForGo'), {
        args: { cells: buffer },
        execTimeout: 2 ** 34,
      });
      await waitFor(c, STARTED, (v) => v === 1);
      await new Promise((resolve) => setTimeout(resolve, 30));
      signal(c, GO);
      assert.equal(await run, 'went');
      assert.equal(overflows, 0);
    } finally {
      process.off('warning', onWarning);
    }
  });

  test('exec timeout: the runaway thread is gone before anyone else holds the lock', async () => {
    const table = new LockTable({ capacity: 16 });
    const trials = 20;
    let movedAfterRelease = 0;
    for (let i = 0; i < trials; i++) {
      const { buffer, c } = cells();
      const error = await rejection(
        // A function task: no module to import, so the exec time is all spent in the loop.
        withLock(table, 'run', runaway, { args: { cells: buffer }, execTimeout: 50 }),
      );
      assert.ok(error instanceof LockError);
      assert.equal(error.code, 'ERR_LOCK_EXEC_TIMEOUT');
      assert.equal(Atomics.load(c, STARTED), 1);
      const lease = table.tryAcquire('run');
      assert.ok(lease !== null, 'the lock is free once withLock rejects');
      if (counterMoves(c, 3)) movedAfterRelease++;
      lease.release();
    }
    assert.equal(movedAfterRelease, 0, `the runaway wrote after release in ${movedAfterRelease}`);
  });

  test('negative control: releasing on piscina’s AbortError lets the runaway write on', async () => {
    // The same check as above, for a lock released as soon as piscina rejects the aborted run.
    const table = new LockTable({ capacity: 16 });
    await withPool(1, 1, async (pool) => {
      // It is caught in about 1 trial of 2 to 7 here; stop at the first.
      let trials = 0;
      let caught = false;
      while (!caught && trials < 100) {
        trials++;
        const { buffer, c } = cells();
        const lease = await table.acquire('run');
        const stop = new AbortController();
        const run = pool.run({ cells: buffer }, { name: 'runaway', signal: stop.signal });
        await waitFor(c, STARTED, (v) => v === 1);
        stop.abort();
        await rejection(run);
        lease.release();
        const next = table.tryAcquire('run')!;
        caught = counterMoves(c, 3);
        next.release();
      }
      console.log(`# negative control: a write after release caught in trial ${trials}`);
      assert.ok(caught, 'the broken lock was never caught');
    });
  });

  /**
   * A contender waits for 'hot' while a runaway holds it under withLock with execTimeout 200.
   * Returns when the contender got it after the exec deadline, and the run-queue wait of the two
   * threads that had to act (test/run-queue.ts): the main thread (the timeout, the termination,
   * the release) and the contender (its wake-up).
   */
  async function contenderAfterExecTimeout() {
    const table = new LockTable({ capacity: 16 });
    const { buffer, c, deadline } = cells();
    const ctrl = control();
    const contender = spawn<{ ok: boolean; at: number; recovered: boolean; runQueue: number }>(
      'acquireOnce',
      {
        buffer: table.buffer,
        ctrl: ctrl.buffer,
        key: 'hot',
        waitGo: true,
        options: { waitTimeout: 10_000 },
      },
    );
    await waitFor(ctrl, CTRL_READY, (v) => v === 1);
    const queued = runQueueSince();
    const run = withLock(table, 'hot', task('runaway'), {
      args: { cells: buffer },
      execTimeout: 200,
    });
    await waitFor(c, STARTED, (v) => v === 1);
    signal(ctrl, CTRL_GO);
    assert.equal((await rejection(run)).code, 'ERR_LOCK_EXEC_TIMEOUT');
    const got = await contender.result;
    assert.ok(got.ok);
    assert.equal(got.recovered, false);
    return { late: got.at - deadline(), runQueue: queued() + got.runQueue };
  }

  /** How late the contender may get the key, beyond the run-queue wait of the threads involved. */
  const EXEC_LATE_MS = 150;

  test('exec timeout: a waiting contender gets the key about when the exec time is up', async () => {
    const { late, runQueue } = await contenderAfterExecTimeout();
    console.log(
      `# next holder ${late.toFixed(1)} ms after the exec deadline ` +
        `(run-queue wait of main + contender ${runQueue.toFixed(1)} ms)`,
    );
    assert.ok(late >= 0, `the contender got the key ${-late} ms before the exec deadline`);
    assert.ok(
      late - runQueue < EXEC_LATE_MS,
      `the contender got the key ${late} ms after the exec deadline (${runQueue.toFixed(1)} ms on run queues)`,
    );
  });

  test('negative control: a contender that gets the key 300 ms after the exec deadline is caught', async () => {
    // Judged against a deadline 300 ms earlier: as if the exec timeout had fired 300 ms late.
    const { late, runQueue } = await contenderAfterExecTimeout();
    const judged = late + 300;
    assert.ok(judged - runQueue >= EXEC_LATE_MS, `a hand-off ${judged} ms late passed as on time`);
  });

  test('exec timeout: the lock is released as soon as the thread has exited, before piscina replaces it', async () => {
    // Piscina's own 'exit' listener starts a replacement thread (~5 ms of the calling thread's
    // time); withLock's release must not wait behind it, and must not come before the exit.
    const table = new LockTable({ capacity: 16 });
    await withPool(1, 1, async (pool) => {
      const { buffer, c } = cells();
      const ctrl = control();
      const contender = spawn<{ ok: boolean; at: number }>('acquireOnce', {
        buffer: table.buffer,
        ctrl: ctrl.buffer,
        key: 'hot',
        waitGo: true,
        options: { waitTimeout: 10_000 },
      });
      await waitFor(ctrl, CTRL_READY, (v) => v === 1);
      const heldByCaller = () =>
        table.inspect('hot')?.holders.some((h) => h.threadId === threadId) === true;
      const run = withLock(table, 'hot', 'runaway', {
        pool,
        args: { cells: buffer },
        execTimeout: 100,
      });
      await waitFor(c, STARTED, (v) => v === 1);
      const [worker] = pool.threads;
      assert.ok(worker !== undefined);
      // When the exit event begins, and when each listener already there (piscina's, the
      // pool's thread map) runs: is the key still held by the withLock call?
      let exitAt = NaN;
      let heldAtExit: boolean | undefined;
      const heldAtListeners: boolean[] = [];
      const emit = worker.emit.bind(worker);
      worker.emit = (event: string | symbol, ...args: unknown[]) => {
        if (event === 'exit') {
          heldAtExit = heldByCaller();
          exitAt = LockTable.now();
        }
        return emit(event, ...args);
      };
      for (const listener of worker.listeners('exit') as ((...a: unknown[]) => void)[]) {
        worker.off('exit', listener);
        worker.on('exit', (...args: unknown[]) => {
          heldAtListeners.push(heldByCaller());
          listener.apply(worker, args);
        });
      }
      signal(ctrl, CTRL_GO);
      assert.equal((await rejection(run)).code, 'ERR_LOCK_EXEC_TIMEOUT');
      const got = await contender.result;
      assert.ok(got.ok);
      // The release on the calling thread, plus the contender's wake-up.
      const delay = got.at - exitAt;
      console.log(`# the contender had the key ${delay.toFixed(2)} ms after the thread's exit`);
      assert.equal(heldAtExit, true, 'the lock was released before the thread exited');
      assert.ok(heldAtListeners.length >= 1, "piscina's exit listener was not seen");
      assert.deepEqual(
        heldAtListeners,
        heldAtListeners.map(() => false),
        "the lock was still held when piscina's exit listener ran",
      );
    });
  });

  test("a task's error is the call's error, and the lock is released at once", async () => {
    const table = new LockTable({ capacity: 16 });
    const error = (await rejection(withLock(table, 'e', task('rejects')))) as Error & {
      code?: string;
      detail?: unknown;
    };
    assert.equal(error.name, 'CustomError');
    assert.equal(error.message, 'the task failed');
    assert.equal(error.code, 'E_CUSTOM');
    assert.deepEqual(error.detail, { n: 42 });
    assert.match(error.stack ?? '', /tasks\.mjs/);
    assert.ok(error.cause instanceof RangeError);
    assert.equal(table.inspect('e'), null);
    const typeError = await rejection(
      withLock(table, 'e', () => {
        throw new TypeError('typed');
      }),
    );
    assert.ok(typeError instanceof TypeError);
    const thrown = await rejection(
      withLock(table, 'e', () => {
        throw 42;
      }),
    );
    assert.match(thrown.message, /non-Error value: 42/);
  });

  /** A module of data only: its namespace object looks plain by its prototype. */
  const DATA_MODULE: string = 'data:text/javascript,export const a = 1';

  test('args that cannot be cloned are refused before the lock is taken', async () => {
    const table = new LockTable({ capacity: 16 });
    // The key is held (by this thread): a call that waited for it first would time out instead.
    const held = table.tryAcquire('c')!;
    // A proxy and a deep symbol: withLock walks small plain args itself rather than cloning them
    // (task.ts, surelyCloneable), and must leave these to the clone.
    const refused = [
      () => 1,
      { f: () => 1 },
      Symbol('s'),
      { nested: [new WeakMap()] },
      new Proxy({}, {}),
      { a: [{ b: Symbol('deep') }] },
      // Plain-looking by prototype, refused by the clone (review of s8-withlock): an arguments
      // object, a module namespace, a WeakMap with a swapped prototype.
      (function (..._: unknown[]) {
        // eslint-disable-next-line prefer-rest-params
        return arguments;
      })(1),
      (await import(DATA_MODULE)) as object,
      Object.setPrototypeOf(new WeakMap(), Object.prototype),
    ];
    for (const args of refused) {
      const error = await rejection(withLock(table, 'c', () => 1, { args, waitTimeout: 0 }));
      assert.ok(error instanceof TypeError, `${error.name}: ${error.message}`);
      assert.equal(error.code, 'ERR_INVALID_ARG_VALUE');
      assert.match(error.message, /"options\.args".*structured clone/);
      assert.equal((error.cause as Error).name, 'DataCloneError');
    }
    held.release();
    const error = await rejection(withLock(table, 'c', () => 1, { args: () => 1 }));
    assert.equal(error.code, 'ERR_INVALID_ARG_VALUE');
    assert.equal(table.inspect('c'), null);
    const lease = table.tryAcquire('c');
    assert.ok(lease !== null, 'the key is free after the refusal');
    lease.release();
  });

  test('results that cannot be cloned are clear errors; nothing stays held', async () => {
    const table = new LockTable({ capacity: 16 });
    const badResult = await rejection(withLock(table, 'c', () => ({ f: () => 1 })));
    assert.ok(badResult instanceof TypeError);
    assert.match(badResult.message, /result cannot be sent back/);
    assert.deepEqual(table.held(), []);
  });

  test('a task that calls process.exit(): ERR_LOCK_WORKER_EXIT with the exit code', async () => {
    const table = new LockTable({ capacity: 16 });
    const { buffer } = cells();
    const error = await rejection(
      withLock(table, 'x', task('exitWith'), { args: { cells: buffer, code: 7 } }),
    );
    assert.ok(error instanceof WorkerExitError);
    assert.equal(error.code, 'ERR_LOCK_WORKER_EXIT');
    assert.equal(error.exitCode, 7);
    assert.equal(table.inspect('x'), null);
    assert.equal(await withLock(table, 'x', (a: number) => a + 1, { args: 1 }), 2);
  });

  test('wait timeout and abort while waiting: the task never runs, nothing is held', async () => {
    const table = new LockTable({ capacity: 16 });
    const h = await holder(table, 'busy');
    try {
      const { buffer, c } = cells();
      const t0 = performance.now();
      const timedOut = await rejection(
        withLock(table, 'busy', task('waitForGo'), { args: { cells: buffer }, waitTimeout: 50 }),
      );
      assert.equal(timedOut.code, 'ERR_LOCK_TIMEOUT');
      assert.ok(performance.now() - t0 >= 49);
      const stop = new AbortController();
      const reason = new Error('changed my mind');
      const pending = withLock(table, 'busy', task('waitForGo'), {
        args: { cells: buffer },
        signal: stop.signal,
        waitTimeout: Infinity,
      });
      setTimeout(() => stop.abort(reason), 20);
      const aborted = await rejection(pending);
      assert.equal(aborted.name, 'AbortError');
      assert.equal(aborted.cause, reason);
      assert.equal(Atomics.load(c, STARTED), 0, 'the task ran');
      const holders = table.inspect('busy')?.holders ?? [];
      assert.ok(holders.every((x) => x.threadId !== threadId));
    } finally {
      await h.stop();
    }
  });

  test('abort while running stops the task like an exec timeout', async () => {
    const table = new LockTable({ capacity: 16 });
    const { buffer, c } = cells();
    const stop = new AbortController();
    const reason = new Error('stop now');
    const run = withLock(table, 'r', task('runaway'), {
      args: { cells: buffer },
      signal: stop.signal,
    });
    await waitFor(c, STARTED, (v) => v === 1);
    stop.abort(reason);
    const error = await rejection(run);
    assert.equal(error.name, 'AbortError');
    assert.equal(error.cause, reason);
    const lease = table.tryAcquire('r');
    assert.ok(lease !== null);
    assert.equal(counterMoves(c, 5), false, 'the aborted task still writes');
    lease.release();
  });

  test('abort while queued: the lock is released at once and the task never runs', async () => {
    const table = new LockTable({ capacity: 16 });
    await withPool(1, 1, async (pool) => {
      const queued = cells();
      const { blocker, busy } = await abortWhileQueued(table, pool, queued.buffer, () =>
        assert.equal(table.inspect('q')?.holders[0]?.threadId, threadId),
      );
      table.tryAcquire('q')!.release();
      signal(blocker.c, GO);
      await busy;
      // The pool has served its queue: the cancelled task was never run.
      assert.equal(await pool.run('after', { name: 'quick' }), 'after');
      assert.equal(Atomics.load(queued.c, STARTED), 0);
    });
  });

  test('control blocks are reused only once their worker answered, and come back reset', async () => {
    const table = new LockTable({ capacity: 16 });
    await withPool(1, 1, async (pool) => {
      // Cancelled while queued: its block must not serve another call before the worker has
      // seen it (a reused block reset to QUEUED would let this body run). GO is set, so a body
      // that ran would return at once rather than hang the test.
      const cancelled = cells();
      Atomics.store(cancelled.c, GO, 1);
      const { blocker, busy } = await abortWhileQueued(table, pool, cancelled.buffer);
      const b = withLock(table, 'r', 'quick', { pool, args: 'b' });
      signal(blocker.c, GO);
      await busy;
      assert.equal(await b, 'b');
      assert.equal(Atomics.load(cancelled.c, STARTED), 0, 'the cancelled body never ran');
      // These calls get blocks back from the calls above (DONE, CANCELLED): each is reset, so the
      // runaway starts, and is stopped by its exec timeout.
      for (let i = 0; i < 2; i++) {
        const { buffer, c } = cells();
        const error = await rejection(
          withLock(table, 'r', 'runaway', { pool, args: { cells: buffer }, execTimeout: 100 }),
        );
        assert.equal(error.code, 'ERR_LOCK_EXEC_TIMEOUT');
        assert.equal(Atomics.load(c, STARTED), 1);
        assert.equal(counterMoves(c, 20), false);
        assert.equal(await withLock(table, 'r', 'quick', { pool, args: i }), i);
      }
      assert.deepEqual(table.held(), []);
    });
  });

  test('the calling thread dies while its task runs: reclaimed after start + execTimeout + failTimeout', async () => {
    const table = new LockTable({ capacity: 16 });
    const { buffer, c, deadline } = cells();
    const caller = new Worker(new URL('./fixtures/with-lock-caller.mjs', import.meta.url), {
      // Long enough that the caller is terminated well before its own exec timer would fire.
      workerData: { buffer: table.buffer, key: 'orphan', cells: buffer, execTimeout: 2000 },
    });
    caller.on('error', () => {}); // a caller that outlived its exec timeout would throw here
    await waitFor(c, STARTED, (v) => v === 1);
    // At its first timer tick after the start (within execTimeout / 8), the caller stamps the
    // deadline the task was given (start + execTimeout) in the slot: rounded up to the whole ms
    // that a deadline cell holds, from a "now + remaining" computed a few µs before the stamp (so
    // up to 1 ms and those µs later, never earlier).
    const stamped = async () => {
      const giveUp = LockTable.now() + 5000;
      while (LockTable.now() < giveUp) {
        const d = table.inspect('orphan')?.holders[0]?.deadline ?? NaN;
        if (d >= deadline() && d < deadline() + 1.5) return d;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.fail(
        `slot deadline ${table.inspect('orphan')?.holders[0]?.deadline} != ${deadline()}`,
      );
    };
    const slotDeadline = await stamped();
    await caller.terminate();
    const contender = LockTable.attach(table.buffer, { failTimeout: 100 });
    const lease = await contender.acquire('orphan', { waitTimeout: 5000 });
    const at = LockTable.now();
    assert.equal(lease.recovered, true);
    assert.ok(at >= slotDeadline + 100, `reclaimed ${slotDeadline + 100 - at} ms early`);
    lease.release();
  });

  test('the pool keeps serving after 100 exec timeouts, with nothing leaked', async () => {
    const table = new LockTable({ capacity: 16 });
    await withPool(2, 4, async (pool) => {
      await pool.run(0, { name: 'quick' });
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      const timersBefore = timers();
      const lanes = 4;
      let timeouts = 0;
      await Promise.all(
        Array.from({ length: lanes }, async (_, lane) => {
          for (let i = 0; i < 100 / lanes; i++) {
            const { buffer } = cells();
            const error = await rejection(
              withLock(table, `lane${lane}`, 'block', {
                pool,
                args: { cells: buffer },
                execTimeout: 10,
              }),
            );
            assert.equal(error.code, 'ERR_LOCK_EXEC_TIMEOUT');
            timeouts++;
          }
        }),
      );
      assert.equal(timeouts, 100);
      assert.equal(
        await withLock(table, 'after', 'quick', { pool, args: 'still serving' }),
        'still serving',
      );
      assert.ok(pool.threads.length <= 4, `${pool.threads.length} threads`);
      for (const worker of pool.threads) {
        assert.ok(worker.listenerCount('exit') <= 2, `${worker.listenerCount('exit')} listeners`);
      }
      assert.ok(timers() <= timersBefore, `${timers() - timersBefore} timers leaked`);
      assert.deepEqual(table.held(), []);
    });
  });

  test('a task that finished before its caller saw the deadline pass is not stopped', async () => {
    // The caller's event loop is busy past the exec deadline, after the task has returned: the
    // task counts as finished, and its thread (which piscina gives the next task) is not killed.
    // The event loop is blocked from before the deadline (then the exec timer has not fired, and
    // cannot) until the task says it returns (RETURNING, a few instructions before its STARTED ->
    // DONE), and busy until past the deadline. A test thread kept off the CPU until the deadline
    // before it blocks its loop may see the timer fire first, rightly: then that round is set up
    // again, at most 5 times.
    const table = new LockTable({ capacity: 16 });
    await withPool(1, 1, async (pool) => {
      let late = 0;
      for (let i = 0; i < 5;) {
        const x = cells();
        const run = withLock(table, 'a', 'waitForGoAndSay', {
          pool,
          args: { cells: x.buffer },
          execTimeout: 40,
        });
        run.catch(() => {});
        await waitFor(x.c, STARTED, (v) => v === 1);
        const next = pool.run('next', { name: 'quick' });
        const blocked = await new Promise<boolean>((resolve) =>
          setImmediate(() => {
            const deadline = x.deadline();
            const intime = LockTable.now() < deadline;
            signal(x.c, GO);
            if (!intime) return resolve(false);
            Atomics.wait(x.c, RETURNING, 0, 10_000);
            const end = Math.max(deadline, LockTable.now()) + 20;
            while (LockTable.now() < end);
            resolve(true);
          }),
        );
        if (!blocked) {
          assert.ok(++late < 5, 'this thread reached the deadline before blocking, 5 times');
          await run.catch(() => {});
          await next;
          continue;
        }
        assert.equal(await run, 'went');
        assert.equal(await next, 'next');
        i++;
      }
    });
  });

  test('a caller stalled past its deadline + failTimeout learns that its lease was lost', async () => {
    // The calling thread's event loop is blocked; a contender (failTimeout 5 ms) reclaims the
    // lock; when the caller wakes it stops the task, and reports ERR_LOCK_STALE, not a clean stop.
    const table = new LockTable({ capacity: 16, failTimeout: 5 });
    const ctrl = control();
    const contender = spawn<{ ok: boolean; recovered: boolean }>('acquireOnce', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      key: 'stall',
      waitGo: true,
      options: { waitTimeout: 10_000 },
    });
    await waitFor(ctrl, CTRL_READY, (v) => v === 1);
    const { buffer, c } = cells();
    const run = withLock(table, 'stall', runaway, { args: { cells: buffer }, execTimeout: 100 });
    run.catch(() => {});
    await waitFor(c, STARTED, (v) => v === 1);
    signal(ctrl, CTRL_GO);
    const end = performance.now() + 400;
    while (performance.now() < end); // the caller's event loop stalls
    const error = await rejection(run);
    assert.equal(error.code, 'ERR_LOCK_STALE');
    assert.equal((error.cause as { code?: string }).code, 'ERR_LOCK_EXEC_TIMEOUT');
    assert.equal((await contender.result).recovered, true);
  });

  test('an error whose fields cannot be read still rejects at once', async () => {
    const table = new LockTable({ capacity: 16 });
    const error = await rejection(
      withLock(table, 'g', () => {
        const e = new Error('task failed');
        Object.defineProperty(e, 'details', {
          enumerable: true,
          get() {
            throw new Error('getter boom');
          },
        });
        throw e;
      }),
    );
    assert.equal(error.message, 'task failed');
    assert.equal(table.inspect('g'), null);
  });

  test('destroying the pool under a running task: the lock waits for the thread to exit', async () => {
    const table = new LockTable({ capacity: 16 });
    for (let i = 0; i < 5; i++) {
      const pool = new Piscina({ filename: TASKS.href, minThreads: 1, maxThreads: 1 });
      const { buffer, c } = cells();
      const run = withLock(table, 'k', 'runaway', { pool, args: { cells: buffer } });
      await waitFor(c, STARTED, (v) => v === 1);
      void pool.destroy();
      await rejection(run);
      const lease = table.tryAcquire('k');
      assert.ok(lease !== null);
      assert.equal(counterMoves(c, 3), false, 'the task wrote after the lock was released');
      lease.release();
    }
  });

  test('bad arguments are refused before anything is held', async () => {
    const table = new LockTable({ capacity: 16 });
    // Several tasks per thread: stopping one would kill the others.
    const sharingPool = new Piscina({ filename: TASKS.href, concurrentTasksPerWorker: 2 });
    const cases: [unknown[], string][] = [
      [[{}, 'k', () => 1], 'ERR_INVALID_ARG_TYPE'],
      [[table, 5, () => 1], 'ERR_INVALID_ARG_TYPE'],
      [[table, 'k', 42], 'ERR_INVALID_ARG_TYPE'],
      [[table, 'k', 'named'], 'ERR_INVALID_ARG_VALUE'],
      [
        [
          table,
          'k',
          {
            m(a: unknown) {
              return a;
            },
          }.m,
        ],
        'ERR_INVALID_ARG_VALUE',
      ],
      [[table, 'k', ((a: unknown) => a).bind(null)], 'ERR_INVALID_ARG_VALUE'],
      [[table, 'k', class {}], 'ERR_INVALID_ARG_VALUE'],
      [[table, 'k', { module: 5 }], 'ERR_INVALID_ARG_TYPE'],
      [[table, 'k', () => 1, { execTimeout: -1 }], 'ERR_OUT_OF_RANGE'],
      [[table, 'k', () => 1, { execTimeout: 0 }], 'ERR_OUT_OF_RANGE'],
      [[table, 'k', () => 1, { waitTimeout: NaN }], 'ERR_OUT_OF_RANGE'],
      [[table, 'k', () => 1, { failTimeout: '1' }], 'ERR_INVALID_ARG_TYPE'],
      [[table, 'k', () => 1, { mode: 'solo' }], 'ERR_INVALID_ARG_VALUE'],
      [[table, 'k', () => 1, { pool: {} }], 'ERR_INVALID_ARG_TYPE'],
      [[table, 'k', () => 1, { pool: sharingPool }], 'ERR_INVALID_ARG_VALUE'],
      [[table, 'k', () => 1, { signal: 'stop' }], 'ERR_INVALID_ARG_TYPE'],
      [[table, 'k', () => 1, { spinDelay: -1 }], 'ERR_OUT_OF_RANGE'],
      [[table, 'k', () => 1, { args: () => 1 }], 'ERR_INVALID_ARG_VALUE'],
      [[table, 'k', () => 1, null], 'ERR_INVALID_ARG_TYPE'],
    ];
    for (const [args, code] of cases) {
      const error = await rejection((withLock as (...a: unknown[]) => Promise<unknown>)(...args));
      assert.equal(error.code, code, `${error.message}`);
      assert.match(error.message, /"(table|key|task|task\.module|options(\.\w+)?)"/);
    }
    assert.deepEqual(table.held(), []);
    await sharingPool.destroy();
  });

  test('a script that calls withLock once exits by itself', async () => {
    const script = `
      import { LockTable, withLock } from ${JSON.stringify(DIST)};
      const table = new LockTable();
      console.log(await withLock(table, 'once', (a) => a * 2, { args: 21 }));
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', script],
      { timeout: 20_000 },
    );
    assert.equal(stdout.trim(), '42');
  });
});

/** Asserts that `key` is free: nobody holds it, and one attempt takes it at once. */
function assertFree(table: Table, key: string): void {
  assert.equal(table.inspect(key), null, `${key} is still held`);
  const lease = table.tryAcquire(key);
  assert.ok(lease !== null, `one attempt could not take ${key}`);
  lease.release();
}

describe('withLock: every way out leaves the key free (no other holder or waiter)', () => {
  test('the task returns', async () => {
    const table = new LockTable({ capacity: 16 });
    assert.equal(await withLock(table, 'k', () => 1), 1);
    assertFree(table, 'k');
  });

  test('the task throws', async () => {
    const table = new LockTable({ capacity: 16 });
    const error = await rejection(
      withLock(table, 'k', () => {
        throw new Error('thrown');
      }),
    );
    assert.equal(error.message, 'thrown');
    assertFree(table, 'k');
  });

  test("the task's worker exits", async () => {
    const table = new LockTable({ capacity: 16 });
    const { buffer } = cells();
    const error = await rejection(
      withLock(table, 'k', task('exitWith'), { args: { cells: buffer, code: 3 } }),
    );
    assert.equal(error.code, 'ERR_LOCK_WORKER_EXIT');
    assertFree(table, 'k');
  });

  test('the exec timeout passes', async () => {
    const table = new LockTable({ capacity: 16 });
    const { buffer } = cells();
    const error = await rejection(
      withLock(table, 'k', runaway, { args: { cells: buffer }, execTimeout: 50 }),
    );
    assert.equal(error.code, 'ERR_LOCK_EXEC_TIMEOUT');
    assertFree(table, 'k');
  });

  test('the signal aborts while the task is queued', async () => {
    const table = new LockTable({ capacity: 16 });
    await withPool(1, 1, async (pool) => {
      const blocker = cells();
      const busy = pool.run({ cells: blocker.buffer }, { name: 'waitForGo' });
      await waitFor(blocker.c, STARTED, (v) => v === 1);
      const stop = new AbortController();
      const run = withLock(table, 'k', 'quick', { pool, signal: stop.signal });
      while (table.inspect('k') === null) await new Promise((resolve) => setImmediate(resolve));
      stop.abort();
      assert.equal((await rejection(run)).name, 'AbortError');
      assertFree(table, 'k');
      signal(blocker.c, GO);
      await busy;
    });
  });

  // A request that gave up (timed out, or aborted after it had announced itself) takes its marks
  // with it (test/exits.test.ts has the same for table.acquire).
  test('the wait timeout passes', async () => {
    const table = new LockTable({ capacity: 16 });
    const h = await holder(table, 'k');
    const error = await rejection(withLock(table, 'k', () => 1, { waitTimeout: 30 }));
    assert.equal(error.code, 'ERR_LOCK_TIMEOUT');
    await h.stop();
    assertFree(table, 'k');
  });

  /** withLock waits for `k`, held by a worker, and is aborted once `ready` holds for the key. */
  async function abortWhileWaiting(
    ready: (info: { sleepers: number; contended: boolean }) => boolean,
  ) {
    const table = new LockTable({ capacity: 16 });
    const h = await holder(table, 'k');
    const stop = new AbortController();
    const run = withLock(table, 'k', () => 1, { signal: stop.signal, waitTimeout: Infinity });
    // Seen in shared memory, so the abort finds the request in the state the test means.
    while (!ready(table.inspect('k')!)) await new Promise((resolve) => setTimeout(resolve, 1));
    stop.abort();
    assert.equal((await rejection(run)).name, 'AbortError');
    await h.stop();
    assertFree(table, 'k');
  }

  test('the signal aborts while waiting for the lock (asleep)', async () => {
    await abortWhileWaiting((info) => info.sleepers > 0);
  });

  test('the signal aborts while waiting for the lock (announced as a waiter)', async () => {
    await abortWhileWaiting((info) => info.contended);
  });
});
