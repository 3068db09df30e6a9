/**
 * The paired uncontended measurement: the raw baseline and a peer (locktable) in the SAME thread
 * of the SAME process, each with its own loop (ops-loop.ts: same key, same section as the
 * unpaired rows), in alternating chunks of equal time. Each pair of adjacent chunks gives one
 * ratio, peer / baseline; the result is the median of those ratios, with their lowest and highest.
 *
 * Why: on this 2-core VM every process lands in a faster or a slower mode at random (the raw
 * futex ran at 23 M or 38 M ops/s depending on the process, locktable likewise and
 * independently), so a ratio of medians over separate processes swung from 0.34 to 0.56 between
 * runs of the whole benchmark. Two loops in one thread share the process's mode, and two adjacent
 * chunks share the machine's load of that moment (other jobs run on the same 2 cores). Measured
 * (sync, in a worker, 24 processes): the paired ratio read 0.57-0.65 but for one process (below),
 * and its median over 3 runs 0.57-0.64, where the ratio of two processes' medians read 0.35-0.71.
 *
 * What pairing cannot remove is a mode of one loop alone: with the sync API, now and then a
 * process ran locktable at half to two thirds of its usual rate while the baseline beside it ran
 * as usual (its optimized code differs from process to process), and that process's ratio shows
 * it (3 of 48 sync processes, two of them on the main thread: 0.46-0.47 against 0.55-0.65). The
 * goal takes the median over runs.
 */
import type { Api, LockClient } from '../peers/types.js';
import { median } from '../stats.js';
import type { OpsLoop } from './ops-loop.js';

/** Chunk pairs run and thrown away after calibration, so that both loops are optimized and GC has settled. */
const WARMUP_PAIRS = 5;

export interface PairedResult {
  /** Median over the measured chunks of each loop's rate. */
  baselineOpsPerSecond: number;
  peerOpsPerSecond: number;
  /** peer / baseline: the median over chunk pairs of each pair's ratio. */
  ratio: number;
  /** The lowest and highest ratio of one chunk pair. */
  lowestRatio: number;
  highestRatio: number;
  pairs: number;
  /** Both loops' lost updates (0 unless a lock let two holders overlap). */
  lostUpdates: number;
}

/**
 * A fresh instance of ops-loop.js: a distinct URL is a distinct module, compiled on its own, so
 * the two loops share no function (and no type feedback). See ops-loop.ts.
 */
async function freshLoopModule(tag: string): Promise<typeof import('./ops-loop.js')> {
  return (await import(
    new URL(`./ops-loop.js?paired=${tag}`, import.meta.url).href
  )) as typeof import('./ops-loop.js');
}

export async function measurePaired(
  baseline: LockClient,
  peer: LockClient,
  api: Api,
  keys: readonly string[],
  pairs: number,
  chunkMs: number,
  handles = false,
): Promise<PairedResult> {
  const baselineLoop = (await freshLoopModule('baseline')).opsLoop(baseline, api, keys);
  // Handles are the peer's (locktable's KeyHandle); the baseline hashes its key on every call.
  const peerLoop = (await freshLoopModule('peer')).opsLoop(peer, api, keys, handles);
  await baselineLoop.calibrate();
  await peerLoop.calibrate();

  // Which loop runs first alternates from pair to pair, so that neither always runs right after
  // the switch, nor always on the earlier side of a drift in the machine's load.
  const pair = async (index: number): Promise<{ baseline: number; peer: number }> => {
    const chunk = (loop: OpsLoop) => loop.runFor(chunkMs);
    if (index % 2 === 0) {
      const b = await chunk(baselineLoop);
      return { baseline: b, peer: await chunk(peerLoop) };
    }
    const p = await chunk(peerLoop);
    return { baseline: await chunk(baselineLoop), peer: p };
  };
  for (let i = 0; i < WARMUP_PAIRS; i++) await pair(i);

  const baselineRates: number[] = [];
  const peerRates: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const rates = await pair(i);
    baselineRates.push(rates.baseline);
    peerRates.push(rates.peer);
    ratios.push(rates.peer / rates.baseline);
  }
  return {
    baselineOpsPerSecond: median(baselineRates),
    peerOpsPerSecond: median(peerRates),
    ratio: median(ratios),
    lowestRatio: Math.min(...ratios),
    highestRatio: Math.max(...ratios),
    pairs,
    lostUpdates: baselineLoop.lostUpdates() + peerLoop.lostUpdates(),
  };
}
