/**
 * The single-thread measurement (uncontended: one key; round robin: 1,000 keys), with tinybench.
 * Every operation is acquire -> non-atomic increment of that key's counter -> release, through the
 * peer's client, awaited one at a time: nothing else competes for the lock.
 */
import { Bench } from 'tinybench';
import { counterSum, LINE, paddedCounters } from '../control.js';
import type { Api, LockClient } from '../peers/types.js';

export interface OpsResult {
  opsPerSecond: number;
  lostUpdates: number;
  /** Operations per tinybench iteration (see calibrate). */
  batch: number;
}

/**
 * tinybench reads the clock around every call of a task. One lock operation may take tens of
 * nanoseconds, about what a clock read costs, so each call runs a batch sized to last about
 * BATCH_MS: the clock reads become negligible, and a slow peer (a millisecond per operation)
 * still gets many calls in the time.
 */
const BATCH_MS = 1;
const MAX_BATCH = 1000;
const CALIBRATE_MS = 30;

export async function measureOps(
  client: LockClient,
  api: Api,
  keys: readonly string[],
  timeMs: number,
): Promise<OpsResult> {
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
  if (api === 'sync') {
    if (sync === undefined) throw new Error('this peer has no sync API');
    run = () => {
      for (let i = 0; i < batch; i++) {
        const k = next;
        next = k + 1 === keys.length ? 0 : k + 1;
        sync(keys[k]!, sections[k]!);
      }
      ops += batch;
    };
  } else {
    run = async () => {
      for (let i = 0; i < batch; i++) {
        const k = next;
        next = k + 1 === keys.length ? 0 : k + 1;
        await client.async(keys[k]!, sections[k]!);
      }
      ops += batch;
    };
  }

  // Calibrate the batch: operations in CALIBRATE_MS, one at a time. The first pass only warms up
  // (the first calls run in the interpreter and would make the batch far too small).
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

  const bench = new Bench({ time: timeMs, warmupTime: timeMs / 4, throws: true });
  bench.add('ops', run);
  await bench.run();
  const result = bench.tasks[0]!.result;
  if (result.state !== 'completed') throw new Error(`tinybench: ${result.state}`);
  return {
    opsPerSecond: (batch * 1000) / result.period,
    lostUpdates: ops - counterSum(counters),
    batch,
  };
}
