/**
 * `handoff`: two workers take turns on one key; each turn measures release by one worker ->
 * acquire by the other, which has been waiting for HOLD_MS (20 us). Reports p50 / p99 / max.
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
  reached,
  W_SAMPLES,
  W_SECTIONS,
  workerWord,
} from '../control.js';
import { type JobResult, type JobSpec, usesHandles } from '../spec.js';
import { quantileSorted } from '../stats.js';
import { HangError } from './contended.js';
import type { HandoffWorkerData } from './handoff-worker.js';
import { startPeerWorkers } from './peer-workers.js';

const SAMPLE_CAPACITY = 65_536;
const READY_TIMEOUT_MS = 20_000;
const DONE_GRACE_MS = 10_000;

export async function handoff(spec: JobSpec): Promise<JobResult> {
  const key = 'account:42';
  const control = controlBlock(2);
  const counters = paddedCounters(1);
  const samples = new SharedArrayBuffer((1 + 2 * SAMPLE_CAPACITY) * 8);
  const data = ([0, 1] as const).map((index): Omit<HandoffWorkerData, 'peer'> => ({
    api: spec.api,
    index,
    key,
    control: control.buffer as SharedArrayBuffer,
    counters: counters.buffer as SharedArrayBuffer,
    samples,
    sampleCapacity: SAMPLE_CAPACITY,
    handles: usesHandles(spec.variant),
  }));
  const fleet = await startPeerWorkers(
    spec.peer,
    { keys: [key] },
    './scenarios/handoff-worker.js',
    data,
  );
  try {
    const ready = await Promise.race([
      reached(control, C_READY, 2, READY_TIMEOUT_MS),
      fleet.failed,
    ]);
    if (!ready) throw new HangError(`workers not warmed up within ${READY_TIMEOUT_MS} ms`, {});
    Atomics.store(control, C_START, 1);
    Atomics.notify(control, C_START);
    await Promise.race([pause(spec.settings.windowMs), fleet.failed]);
    Atomics.store(control, C_STOP, 1);
    const done = await Promise.race([reached(control, C_DONE, 2, DONE_GRACE_MS), fleet.failed]);
    if (!done) throw new HangError(`workers did not stop within ${DONE_GRACE_MS} ms`, {});
    const all = new Float64Array(samples);
    const parts = [0, 1].map((i) => {
      const n = Math.min(SAMPLE_CAPACITY, Atomics.load(control, workerWord(i, W_SAMPLES)));
      const from = 1 + i * SAMPLE_CAPACITY;
      return Array.from(all.subarray(from, from + n));
    });
    const latencies = Float64Array.from(parts.flat()).sort();
    const total = [0, 1].reduce(
      (sum, i) => sum + Atomics.load(control, workerWord(i, W_SECTIONS)),
      0,
    );
    const us = (q: number) => (latencies.length === 0 ? null : quantileSorted(latencies, q) * 1000);
    return {
      metrics: {
        handoffP50Us: us(0.5),
        handoffP99Us: us(0.99),
        handoffMaxUs: us(1),
      },
      lostUpdates: total - counterSum(counters),
      notes: [`${latencies.length} handoffs in ${total} sections`],
    };
  } finally {
    await fleet.terminate();
  }
}
