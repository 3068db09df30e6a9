/**
 * The paired variant of `random-keys` (locktable only): the same 4 workers run locktable and the
 * raw baseline in alternating phases of equal time, announced by the main thread in C_SCENARIO,
 * and each phase's sections are counted per worker. Each pair of adjacent phases gives one ratio,
 * locktable / baseline; the result is the median over pairs, with the lowest and highest.
 *
 * Why: a run of 4 workers on 2 cores is dominated by how the scheduler treats that process's
 * threads, which differs from process to process (the unpaired rows of one run spread by up to
 * 1.5x); in one process, adjacent phases share it. The order within a pair alternates
 * (phasePeer), so neither lock always runs right after the switch.
 */
import {
  C_DONE,
  C_READY,
  C_SCENARIO,
  C_START,
  C_STOP,
  controlBlock,
  counterSum,
  paddedCounters,
  pause,
  phasePeer,
  reached,
  W_SECTIONS,
  workerWord,
} from '../control.js';
import { type JobResult, type JobSpec, usesHandles } from '../spec.js';
import { median } from '../stats.js';
import { HangError } from './contended.js';
import type { ContendedWorkerData } from './contended-worker.js';
import { startPeerWorkers } from './peer-workers.js';

const READY_TIMEOUT_MS = 20_000;
const DONE_GRACE_MS = 10_000;

export async function pairedContended(
  spec: JobSpec,
  keys: readonly string[],
  workers: number,
  seed: number,
): Promise<JobResult> {
  const pairs = spec.settings.pairedChunks;
  const phaseMs = 2 * spec.settings.pairedChunkMs;
  const phases = 2 * pairs;
  const control = controlBlock(workers);
  Atomics.store(control, C_SCENARIO, 0);
  const counters = paddedCounters(keys.length);
  const baselineCounters = paddedCounters(keys.length);
  const phaseCounts = new Int32Array(new SharedArrayBuffer(workers * phases * 4));
  const data = Array.from({ length: workers }, (_, index): Omit<ContendedWorkerData, 'peer'> => ({
    api: spec.api,
    index,
    keys,
    pick: 'random',
    holdUs: 0,
    seed: seed + index * 104_729,
    control: control.buffer as SharedArrayBuffer,
    counters: counters.buffer as SharedArrayBuffer,
    samples: new SharedArrayBuffer(workers * 8), // unused: no wait samples in this variant
    sampleCapacity: 1,
    handles: usesHandles(spec.variant),
    paired: {
      phases,
      phaseCounts: phaseCounts.buffer as SharedArrayBuffer,
      baselineCounters: baselineCounters.buffer as SharedArrayBuffer,
    },
  }));
  const fleet = await startPeerWorkers(
    spec.peer,
    { keys },
    './scenarios/contended-worker.js',
    data,
    ['baseline'],
  );
  try {
    const ready = await Promise.race([
      reached(control, C_READY, workers, READY_TIMEOUT_MS),
      fleet.failed,
    ]);
    if (!ready) throw new HangError(`workers not warmed up within ${READY_TIMEOUT_MS} ms`, {});
    const starts: number[] = [];
    Atomics.store(control, C_START, 1);
    Atomics.notify(control, C_START);
    for (let p = 0; p < phases; p++) {
      Atomics.store(control, C_SCENARIO, p);
      starts.push(performance.now());
      await Promise.race([pause(phaseMs), fleet.failed]);
    }
    starts.push(performance.now());
    Atomics.store(control, C_STOP, 1);
    const done = await Promise.race([
      reached(control, C_DONE, workers, DONE_GRACE_MS),
      fleet.failed,
    ]);
    if (!done) throw new HangError(`workers did not stop within ${DONE_GRACE_MS} ms`, {});
    const rate = (p: number) => {
      let n = 0;
      for (let w = 0; w < workers; w++) n += phaseCounts[w * phases + p]!;
      return (n * 1000) / (starts[p + 1]! - starts[p]!);
    };
    const ratios: number[] = [];
    const peerRates: number[] = [];
    const baselineRates: number[] = [];
    for (let k = 0; k < pairs; k++) {
      const [a, b] = [2 * k, 2 * k + 1];
      const peerPhase = phasePeer(a) === 0 ? a : b;
      const basePhase = peerPhase === a ? b : a;
      // A phase in which no worker got the CPU at all (a loaded machine) has no rate to compare:
      // its pair is left out rather than read as a ratio of 0 or Infinity.
      if (rate(peerPhase) === 0 || rate(basePhase) === 0) continue;
      peerRates.push(rate(peerPhase));
      baselineRates.push(rate(basePhase));
      ratios.push(rate(peerPhase) / rate(basePhase));
    }
    if (ratios.length === 0) throw new HangError('no phase pair in which both locks ran', {});
    let total = 0;
    for (let w = 0; w < workers; w++) total += Atomics.load(control, workerWord(w, W_SECTIONS));
    return {
      metrics: {
        opsPerSecond: median(peerRates),
        baselineOpsPerSecond: median(baselineRates),
        pairedRatio: median(ratios),
        pairedRatioLowest: Math.min(...ratios),
        pairedRatioHighest: Math.max(...ratios),
      },
      lostUpdates: total - counterSum(counters) - counterSum(baselineCounters),
      notes: [
        `paired with the baseline in the same ${workers} workers: ${pairs} phase pairs of ${phaseMs} ms`,
        `seed ${seed}`,
      ],
    };
  } finally {
    await fleet.terminate();
  }
}
