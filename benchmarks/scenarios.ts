/** The scenarios, main-thread side. Each returns plain numbers for report.ts. */
import { once } from 'node:events';
import { BaselineKeys } from './baseline.js';
import type { ContendedWorkerData } from './contended-worker.js';
import {
  C_COUNTER,
  C_COUNTS,
  C_DONE,
  C_READY,
  C_START,
  C_STOP,
  controlBlock,
  LINE,
  reached,
} from './control.js';
import { LockTable } from './library.js';
import { BATCH, opsPerSecond } from './micro.js';
import type { UncontendedResult, UncontendedWorkerData } from './uncontended-worker.js';
import { startWorker } from './workers.js';

/** The one string key of the single-key scenarios. */
export const KEY = 'account:42';

/** Workers get this long to start (tsx + bundle load) and warm up; 8 of them share 2 cores. */
const READY_TIMEOUT_MS = 60_000;
/** After STOP, every worker must finish its current section and report within this; else: hang. */
const DONE_GRACE_MS = 15_000;

// --- (a) uncontended, in a worker ------------------------------------------------------------

export async function uncontendedInWorker(timeMs: number): Promise<UncontendedResult> {
  const table = new LockTable();
  const keys = new BaselineKeys([KEY]);
  const data: UncontendedWorkerData = {
    key: KEY,
    table: table.buffer,
    baselineWords: keys.buffer,
    baselineKeys: [KEY],
    timeMs,
  };
  const { worker, failed, exited } = startWorker('./uncontended-worker.ts', data);
  const [result] = (await Promise.race([once(worker, 'message'), failed])) as [UncontendedResult];
  await exited;
  return result;
}

// --- (b) uncontended async, main thread --------------------------------------------------------

export async function uncontendedAsync(timeMs: number): Promise<UncontendedResult> {
  const table = new LockTable();
  const keys = new BaselineKeys([KEY]);
  const ops = await opsPerSecond(
    {
      locktable: async () => {
        for (let i = 0; i < BATCH; i++) (await table.acquire(KEY)).release();
      },
      baseline: async () => {
        for (let i = 0; i < BATCH; i++) {
          await keys.lockAsync(KEY);
          keys.unlock(KEY);
        }
      },
    },
    timeMs,
  );
  return { locktable: ops.locktable!, baseline: ops.baseline! };
}

// --- (c) one hot key, N workers ----------------------------------------------------------------

export type Impl = 'locktable' | 'baseline';

export interface ContendedRun {
  impl: Impl;
  workers: number;
  /** Measured window (ms), START store to STOP store. */
  windowMs: number;
  perWorker: number[];
  /** Sum of perWorker: what the counter must read. */
  expected: number;
  counter: number;
  lostUpdates: number;
  sectionsPerSecond: number;
  /** min / max of perWorker. */
  fairness: number;
}

/** A run that did not finish: what a bug report needs. */
export class HangError extends Error {
  constructor(
    message: string,
    readonly details: Record<string, unknown>,
  ) {
    super(message);
  }
}

export async function contended(impl: Impl, workers: number, windowMs: number) {
  const control = controlBlock(workers);
  const table = new LockTable();
  const warmupKeys = Array.from({ length: workers }, (_, i) => `warmup:${i}`);
  const keyList = [KEY, ...warmupKeys];
  const keys = new BaselineKeys(keyList);
  const started = Array.from({ length: workers }, (_, index) => {
    const data: ContendedWorkerData = {
      impl,
      index,
      key: KEY,
      warmupKey: warmupKeys[index]!,
      control: control.buffer as SharedArrayBuffer,
      table: table.buffer,
      baselineWords: keys.buffer,
      baselineKeys: keyList,
    };
    return startWorker('./contended-worker.ts', data);
  });
  const failed = Promise.race(started.map((s) => s.failed));
  failed.catch(() => undefined);
  const terminateAll = () => Promise.all(started.map((s) => s.worker.terminate()));

  try {
    const ready = await Promise.race([
      reached(control, C_READY, workers, READY_TIMEOUT_MS),
      failed,
    ]);
    if (!ready) {
      throw new HangError(`${impl} x${workers}: workers not ready after ${READY_TIMEOUT_MS} ms`, {
        ready: Atomics.load(control, C_READY),
        ...lockState(impl, table, keys),
      });
    }

    const t0 = performance.now();
    Atomics.store(control, C_START, 1);
    Atomics.notify(control, C_START);
    // The measured window. Nobody else writes STOP, so this timed wait always runs out: it is the
    // window's clock, not coordination (and it keeps this thread off the cores meanwhile).
    Atomics.wait(control, C_STOP, 0, windowMs);
    Atomics.store(control, C_STOP, 1);
    const elapsed = performance.now() - t0;

    const done = await Promise.race([reached(control, C_DONE, workers, DONE_GRACE_MS), failed]);
    if (!done) {
      throw new HangError(`${impl} x${workers}: workers did not stop within ${DONE_GRACE_MS} ms`, {
        done: Atomics.load(control, C_DONE),
        counter: Atomics.load(control, C_COUNTER),
        perWorker: counts(control, workers),
        ...lockState(impl, table, keys),
      });
    }
    await Promise.all(started.map((s) => s.exited));

    const perWorker = counts(control, workers);
    const expected = perWorker.reduce((a, b) => a + b, 0);
    const counter = Atomics.load(control, C_COUNTER);
    const run: ContendedRun = {
      impl,
      workers,
      windowMs: elapsed,
      perWorker,
      expected,
      counter,
      lostUpdates: expected - counter,
      sectionsPerSecond: (expected * 1000) / elapsed,
      fairness: Math.max(...perWorker) === 0 ? 0 : Math.min(...perWorker) / Math.max(...perWorker),
    };
    return run;
  } finally {
    await terminateAll();
  }
}

function counts(control: Int32Array, workers: number): number[] {
  return Array.from({ length: workers }, (_, i) => Atomics.load(control, C_COUNTS + i * LINE));
}

function lockState(impl: Impl, table: LockTable, keys: BaselineKeys): Record<string, unknown> {
  if (impl === 'baseline') return { baselineWord: Atomics.load(keys.words, keys.indexOf(KEY)) };
  const info = table.inspect(KEY);
  // Tokens are bigints, which JSON cannot hold.
  return {
    inspect: JSON.parse(JSON.stringify(info, (_, v) => (typeof v === 'bigint' ? `${v}` : v))),
  };
}

// --- (d) shared memory per slot ----------------------------------------------------------------

export function bytesPerSlot(capacity: number, maxKeyLength: number): number {
  return new LockTable({ capacity, maxKeyLength }).buffer.byteLength / capacity;
}

// --- (e) acquire cost vs keys held -------------------------------------------------------------

/** Room for 100,000 held keys and the probe at a load factor of about 0.76. */
export const HELD_CAPACITY = 131_072;

/**
 * Untimed acquire + release calls on each table before measuring: without them the first table
 * measured also pays for the JIT warming up, and looks slower for that reason alone.
 */
const HELD_WARMUP_OPS = 200_000;

/**
 * ops/s of acquireSync + release of one more key while each count of other keys is held. Every
 * table is filled and warmed up before any is measured, and all are measured in one Bench.
 */
export async function acquireWithHeld(
  heldCounts: number[],
  timeMs: number,
): Promise<Record<string, number>> {
  const probe = 'probe:key';
  const tables = heldCounts.map((held) => {
    const table = new LockTable({ capacity: HELD_CAPACITY });
    for (let i = 0; i < held; i++) table.acquireSync(`held:${i}`); // held until the table is dropped
    return { name: `${held}`, table };
  });
  for (const { table } of tables) {
    for (let i = 0; i < HELD_WARMUP_OPS; i++) table.acquireSync(probe).release();
  }
  const tasks = Object.fromEntries(
    tables.map(({ name, table }) => [
      name,
      () => {
        for (let i = 0; i < BATCH; i++) table.acquireSync(probe).release();
      },
    ]),
  );
  return opsPerSecond(tasks, timeMs);
}
