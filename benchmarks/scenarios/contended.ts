/**
 * `exclusion`: the same as random-keys with 8 keys, but every section holds its key 5 µs between
 * the read and the write: a correctness check more than a speed figure.
 * `hot-key`: N workers (1, 2, 4, 8 on a 2-core machine: oversubscription is part of real life) all
 * lock one key. `random-keys`: 4 workers lock one of 64 keys each time, chosen at random.
 * Reports sections/s, fairness (slowest / fastest worker), the sampled wait p50 / p99 / max, and
 * lost updates (sections counted minus what the shared counters read).
 */
import {
  C_DONE,
  C_READY,
  C_START,
  C_STOP,
  controlBlock,
  counterSum,
  paddedCounters,
  pause,
  phase,
  reached,
  W_SAMPLES,
  W_SECTIONS,
  workerWord,
} from '../control.js';
import { type JobResult, type JobSpec, usesHandles } from '../spec.js';
import { fairness, quantileSorted } from '../stats.js';
import type { ContendedWorkerData } from './contended-worker.js';
import { pairedContended } from './paired-contended.js';
import { startPeerWorkers } from './peer-workers.js';

export const RANDOM_KEYS = 64;
export const RANDOM_KEYS_WORKERS = 4;
/** `exclusion`: 4 workers, 8 keys at random, each section held 5 µs between read and write. */
export const EXCLUSION_KEYS = 8;
export const EXCLUSION_WORKERS = 4;
export const EXCLUSION_HOLD_US = 5;
/** Wait samples kept per worker (a ring: the latest ones when a worker runs more). */
const SAMPLE_CAPACITY = 65_536;
/** Workers get this long to warm up after connecting. */
const READY_TIMEOUT_MS = 20_000;
/** After STOP, every worker must finish its current section and report within this; else: hang. */
const DONE_GRACE_MS = 10_000;

export class HangError extends Error {
  constructor(
    message: string,
    readonly details: Record<string, unknown>,
  ) {
    super(message);
  }
}

export async function contended(spec: JobSpec): Promise<JobResult> {
  const exclusion = spec.scenario === 'exclusion';
  const random = spec.scenario === 'random-keys' || exclusion;
  const workers = exclusion ? EXCLUSION_WORKERS : random ? RANDOM_KEYS_WORKERS : spec.workers!;
  const keyCount = exclusion ? EXCLUSION_KEYS : random ? RANDOM_KEYS : 1;
  const keys = random ? Array.from({ length: keyCount }, (_, i) => `account:${i}`) : ['account:42'];
  const control = controlBlock(workers);
  const counters = paddedCounters(keys.length);
  const samples = new SharedArrayBuffer(workers * SAMPLE_CAPACITY * 8);
  const seed = (spec.settings.seed + spec.run * 7919) | 0;
  if (spec.variant === 'paired' || spec.variant === 'paired-handle') {
    return pairedContended(spec, keys, workers, seed);
  }
  const data = Array.from({ length: workers }, (_, index): Omit<ContendedWorkerData, 'peer'> => ({
    api: spec.api,
    index,
    keys,
    pick: random ? 'random' : 'one',
    holdUs: exclusion ? EXCLUSION_HOLD_US : 0,
    seed: seed + index * 104_729,
    control: control.buffer as SharedArrayBuffer,
    counters: counters.buffer as SharedArrayBuffer,
    samples,
    sampleCapacity: SAMPLE_CAPACITY,
    handles: usesHandles(spec.variant),
  }));
  const fleet = await startPeerWorkers(
    spec.peer,
    { keys },
    './scenarios/contended-worker.js',
    data,
  );
  const perWorker = () =>
    Array.from({ length: workers }, (_, i) => Atomics.load(control, workerWord(i, W_SECTIONS)));
  try {
    const ready = await Promise.race([
      reached(control, C_READY, workers, READY_TIMEOUT_MS),
      fleet.failed,
    ]);
    if (!ready) {
      throw new HangError(`workers not warmed up within ${READY_TIMEOUT_MS} ms`, {
        ready: Atomics.load(control, C_READY),
      });
    }
    phase('warmed up; measuring');
    const t0 = performance.now();
    Atomics.store(control, C_START, 1);
    Atomics.notify(control, C_START);
    await Promise.race([pause(spec.settings.windowMs), fleet.failed]);
    Atomics.store(control, C_STOP, 1);
    const elapsed = performance.now() - t0;
    phase(
      `window closed after ${elapsed.toFixed(0)} ms (asked ${spec.settings.windowMs}); waiting for the workers to stop`,
    );
    const done = await Promise.race([
      reached(control, C_DONE, workers, DONE_GRACE_MS),
      fleet.failed,
    ]);
    if (!done) {
      throw new HangError(`workers did not stop within ${DONE_GRACE_MS} ms of the window's end`, {
        done: Atomics.load(control, C_DONE),
        counters: counterSum(counters),
        perWorker: perWorker(),
      });
    }
    const counts = perWorker();
    const total = counts.reduce((a, b) => a + b, 0);
    const waits = collectSamples(control, samples, workers);
    return {
      metrics: {
        opsPerSecond: (total * 1000) / elapsed,
        fairness: fairness(counts),
        waitP50Us: quantileSorted(waits, 0.5) * 1000,
        waitP99Us: quantileSorted(waits, 0.99) * 1000,
        waitMaxUs: waits.length === 0 ? null : waits[waits.length - 1]! * 1000,
      },
      lostUpdates: total - counterSum(counters),
      notes: [`per worker ${counts.join('/')}`, `seed ${seed}`, `${waits.length} wait samples`],
    };
  } finally {
    await fleet.terminate();
  }
}

/** Every worker's samples (ms), sorted ascending. */
function collectSamples(control: Int32Array, buffer: SharedArrayBuffer, workers: number) {
  const all = new Float64Array(buffer);
  const parts: Float64Array[] = [];
  for (let i = 0; i < workers; i++) {
    const n = Math.min(SAMPLE_CAPACITY, Atomics.load(control, workerWord(i, W_SAMPLES)));
    parts.push(all.subarray(i * SAMPLE_CAPACITY, i * SAMPLE_CAPACITY + n));
  }
  const merged = new Float64Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) {
    merged.set(part, at);
    at += part.length;
  }
  return merged.sort();
}
