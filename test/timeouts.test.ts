import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { control, CTRL_HELD, spawn, waitFor } from './harness.js';
import { runQueueSince } from './run-queue.js';

/**
 * How late a timeout may fire on this 2-core VM: a few ms, plus scheduling noise, plus the time
 * the waiting thread was runnable but not running (test/run-queue.ts): on a loaded machine the OS
 * alone can keep it off the CPU for far longer than LATE_MS.
 */
const LATE_MS = 25;

/** How late a timeout fired beyond what the waiting thread's run-queue wait explains. */
function unexplainedLateness(waited: number, ms: number, runQueue: number): number {
  return waited - ms - runQueue;
}

/** For the negative controls: a timeout that fires this much too late. */
const BROKEN_LATE_MS = 300;

interface Outcome {
  ok: boolean;
  code: string;
  waited: number;
  runQueue: number;
}

/** A worker's blocking acquire of a key held by the main thread, with `waitTimeout`. */
async function workerWait(table: LockTable, key: string, waitTimeout: number) {
  const ctrl = control();
  return spawn<Outcome>('acquireOnce', {
    buffer: table.buffer,
    ctrl: ctrl.buffer,
    key,
    options: { waitTimeout },
  }).result;
}

/** An async acquire on the main thread of a key held elsewhere, with `waitTimeout`. */
async function mainWait(table: LockTable, key: string, waitTimeout: number) {
  const queued = runQueueSince();
  const t0 = LockTable.now();
  await assert.rejects(table.acquire(key, { waitTimeout }), { code: 'ERR_LOCK_TIMEOUT', key });
  return { waited: LockTable.now() - t0, runQueue: queued() };
}

async function holdInWorker(table: LockTable, key: string) {
  const ctrl = control();
  const holder = spawn('holdForever', { buffer: table.buffer, ctrl: ctrl.buffer, key });
  await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
  return holder;
}

describe('wait timeouts', () => {
  test('a blocking wait in a worker times out on time: never early, not late by more than a few ms', async () => {
    const table = new LockTable({ capacity: 8 });
    const lease = table.acquireSync('t');
    for (const ms of [5, 20, 60]) {
      const r = await workerWait(table, 't', ms);
      assert.equal(r.code, 'ERR_LOCK_TIMEOUT');
      assert.ok(r.waited >= ms, `timed out after ${r.waited} ms, before ${ms} ms`);
      const late = unexplainedLateness(r.waited, ms, r.runQueue);
      assert.ok(
        late < LATE_MS,
        `timed out after ${r.waited} ms, for ${ms} ms (${r.runQueue.toFixed(1)} ms on a run queue)`,
      );
    }
    lease.release();
  });

  test('negative control: a worker timeout that fires 300 ms late is caught', async () => {
    const table = new LockTable({ capacity: 8 });
    const lease = table.acquireSync('t');
    for (const ms of [5, 20, 60]) {
      const r = await workerWait(table, 't', ms + BROKEN_LATE_MS);
      assert.equal(r.code, 'ERR_LOCK_TIMEOUT');
      const late = unexplainedLateness(r.waited, ms, r.runQueue);
      assert.ok(late >= LATE_MS, `a timeout ${r.waited} ms after ${ms} ms passed as on time`);
    }
    lease.release();
  });

  test('an async wait on the main thread times out on time', async () => {
    const table = new LockTable({ capacity: 8 });
    await holdInWorker(table, 'a');
    for (const ms of [1, 10, 50]) {
      const { waited, runQueue } = await mainWait(table, 'a', ms);
      assert.ok(waited >= ms, `waited ${waited} ms for ${ms} ms`);
      const late = unexplainedLateness(waited, ms, runQueue);
      assert.ok(
        late < LATE_MS,
        `waited ${waited} ms for ${ms} ms (${runQueue.toFixed(1)} ms on a run queue)`,
      );
    }
  });

  test('negative control: a main-thread timeout that fires 300 ms late is caught', async () => {
    const table = new LockTable({ capacity: 8 });
    await holdInWorker(table, 'a');
    for (const ms of [1, 10, 50]) {
      const { waited, runQueue } = await mainWait(table, 'a', ms + BROKEN_LATE_MS);
      const late = unexplainedLateness(waited, ms, runQueue);
      assert.ok(late >= LATE_MS, `a timeout ${waited} ms after ${ms} ms passed as on time`);
    }
  });

  test('waitTimeout 0 means exactly one attempt', async () => {
    const table = new LockTable({ capacity: 8 });
    const lease = table.acquireSync('z');
    const queued = runQueueSince();
    const t0 = performance.now();
    table.acquireSync('y', { waitTimeout: 0 }).release();
    assert.throws(() => table.acquireSync('z', { waitTimeout: 0 }), { code: 'ERR_LOCK_RECURSION' });
    await assert.rejects(table.acquire('z', { waitTimeout: 0 }), { code: 'ERR_LOCK_TIMEOUT' });
    assert.equal(table.tryAcquire('z'), null);
    const took = performance.now() - t0;
    assert.ok(took - queued() < 20, `took ${took} ms (${queued().toFixed(1)} ms on a run queue)`);
    lease.release();
    assert.ok(table.acquireSync('z', { waitTimeout: 0 }).held);
  });
});
