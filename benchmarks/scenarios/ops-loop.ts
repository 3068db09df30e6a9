/**
 * One peer's single-thread loop (uncontended: one key; round robin: 1,000 keys). Every operation
 * is acquire -> non-atomic increment of that key's counter -> release, through the peer's client,
 * awaited one at a time: nothing else competes for the lock. Calls run in batches (see
 * calibrate), so that reading the clock costs next to nothing per operation.
 *
 * measureOps (ops.ts) times one loop with tinybench. The paired measurement (paired.ts) runs two
 * peers' loops in one thread, and loads this module once per peer under distinct URLs: each
 * instance is compiled on its own, so the call into a peer's client in each loop only ever sees
 * that peer, as in a process that runs one peer. (One loop function shared by two peers makes
 * its call sites polymorphic. Measured in a worker, sync, 6 processes each: with one shared
 * instance the baseline ran at 28-30 M ops/s and the ratio read 0.51-0.63; with one instance per
 * peer, 28-35 M ops/s and 0.58-0.63.)
 */
import { counterSum, LINE, paddedCounters } from '../control.js';
import { type Api, type LockClient, prepared } from '../peers/types.js';

/**
 * tinybench reads the clock around every call of a task. One lock operation may take tens of
 * nanoseconds, about what a clock read costs, so each call runs a batch sized to last about
 * BATCH_MS: the clock reads become negligible, and a slow peer (a millisecond per operation)
 * still gets many calls in the time.
 */
const BATCH_MS = 1;
const MAX_BATCH = 1000;
const CALIBRATE_MS = 30;

export interface OpsLoop {
  /** Runs one batch of operations (with the async API: returns a promise of its end). */
  readonly run: () => unknown;
  /** Operations per batch: 1 until calibrate(). */
  batch(): number;
  /**
   * Sizes the batch to last about BATCH_MS: operations in CALIBRATE_MS, one at a time. The first
   * pass only warms up (the first calls run in the interpreter and would make it far too small).
   */
  calibrate(): Promise<void>;
  /** Runs whole batches for at least `ms`; returns operations per second over that time. */
  runFor(ms: number): Promise<number>;
  /** Operations run so far minus what the counters read: 0 unless two holders overlapped. */
  lostUpdates(): number;
}

export function opsLoop(
  client: LockClient,
  api: Api,
  keys: readonly string[],
  handles = false,
): OpsLoop {
  const counters = paddedCounters(keys.length);
  const sections = keys.map((_, k) => () => {
    const at = k * LINE;
    const value = counters[at]!;
    counters[at] = value + 1;
  });
  let next = 0;
  let ops = 0;
  let batch = 1;
  const sync = client.sync;
  let run: () => unknown;
  let runFor: (ms: number) => Promise<number>;
  // With handles (locktable's KeyHandle), each key's lock is prepared once and indexed like its
  // section; without, the key string goes to the peer on every call (the baseline hashes it).
  const locks = handles ? prepared(client, keys) : [];
  const syncs = locks.map((lock) => lock.sync!);
  const asyncs = locks.map((lock) => lock.async);
  if (api === 'sync') {
    if (sync === undefined) throw new Error('this peer has no sync API');
    const runSync = handles
      ? () => {
          for (let i = 0; i < batch; i++) {
            const k = next;
            next = k + 1 === keys.length ? 0 : k + 1;
            syncs[k]!(sections[k]!);
          }
          ops += batch;
        }
      : () => {
          for (let i = 0; i < batch; i++) {
            const k = next;
            next = k + 1 === keys.length ? 0 : k + 1;
            sync(keys[k]!, sections[k]!);
          }
          ops += batch;
        };
    run = runSync;
    // No await between batches: a microtask turn per batch would tax the faster peer more.
    runFor = async (ms) => {
      const t0 = performance.now();
      let done = 0;
      let elapsed: number;
      do {
        runSync();
        done += batch;
        elapsed = performance.now() - t0;
      } while (elapsed < ms);
      return (done * 1000) / elapsed;
    };
  } else {
    const runAsync = handles
      ? async () => {
          for (let i = 0; i < batch; i++) {
            const k = next;
            next = k + 1 === keys.length ? 0 : k + 1;
            await asyncs[k]!(sections[k]!);
          }
          ops += batch;
        }
      : async () => {
          for (let i = 0; i < batch; i++) {
            const k = next;
            next = k + 1 === keys.length ? 0 : k + 1;
            await client.async(keys[k]!, sections[k]!);
          }
          ops += batch;
        };
    run = runAsync;
    runFor = async (ms) => {
      const t0 = performance.now();
      let done = 0;
      let elapsed: number;
      do {
        await runAsync();
        done += batch;
        elapsed = performance.now() - t0;
      } while (elapsed < ms);
      return (done * 1000) / elapsed;
    };
  }

  return {
    run,
    batch: () => batch,
    async calibrate() {
      batch = 1;
      let perMs = 0;
      for (let pass = 0; pass < 2; pass++) {
        const t0 = performance.now();
        let calibrated = 0;
        while (performance.now() - t0 < CALIBRATE_MS) {
          await run();
          calibrated++;
        }
        perMs = calibrated / (performance.now() - t0);
      }
      batch = Math.max(1, Math.min(MAX_BATCH, Math.round(perMs * BATCH_MS)));
    },
    runFor,
    lostUpdates: () => ops - counterSum(counters),
  };
}
