/**
 * The single-thread measurement of one peer (uncontended: one key; round robin: 1,000 keys), with
 * tinybench, over the peer's loop (ops-loop.ts).
 */
import { Bench } from 'tinybench';
import type { Api, LockClient } from '../peers/types.js';
import { opsLoop } from './ops-loop.js';

export interface OpsResult {
  opsPerSecond: number;
  lostUpdates: number;
  /** Operations per tinybench iteration (see ops-loop.ts). */
  batch: number;
}

export async function measureOps(
  client: LockClient,
  api: Api,
  keys: readonly string[],
  timeMs: number,
  handles = false,
): Promise<OpsResult> {
  const loop = opsLoop(client, api, keys, handles);
  await loop.calibrate();
  const bench = new Bench({ time: timeMs, warmupTime: timeMs / 4, throws: true });
  bench.add('ops', loop.run);
  await bench.run();
  const result = bench.tasks[0]!.result;
  if (result.state !== 'completed') throw new Error(`tinybench: ${result.state}`);
  return {
    opsPerSecond: (loop.batch() * 1000) / result.period,
    lostUpdates: loop.lostUpdates(),
    batch: loop.batch(),
  };
}
