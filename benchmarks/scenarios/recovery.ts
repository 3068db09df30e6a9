/**
 * `recovery`: a worker holding the key is terminated (no finally block runs, nothing is released);
 * how long until the worker waiting for the key gets it? locktable frees it two ways: `watch`
 * (table.watch(worker) releases a dead worker's locks on its 'exit' event) and `deadline` (the
 * lease has a finite hold; a waiter reclaims it failTimeout after the deadline). The other peers
 * are terminated the same way, with whatever recovery they have.
 */
import { type JobResult, type JobSpec, type Variant } from '../spec.js';
import {
  controlBlock,
  crossThreadMs,
  paddedCounters,
  pause,
  reached,
  W_HOLDING,
  W_REQUESTING,
  workerWord,
} from '../control.js';
import type { HostOptions } from '../peers/types.js';
import { startPeerWorkers } from './peer-workers.js';
import type { RecoveryWorkerData } from './recovery-worker.js';

/** The deadline variant: every lease holds 100 ms, and a waiter may reclaim 100 ms after that. */
export const RECOVERY_HOLD_MS = 100;
export const RECOVERY_FAIL_TIMEOUT_MS = 100;
/**
 * Between the waiter's request and the termination: long enough for the waiter to be past any
 * spin and asleep in its wait (locktable spins 50 us), which is where a real waiter would be.
 */
const SETTLE_MS = 20;
const START_TIMEOUT_MS = 30_000;

export function hostOptionsFor(variant: Variant | undefined): Omit<HostOptions, 'keys'> {
  if (variant === 'watch') return { watch: true };
  if (variant === 'deadline')
    return { hold: RECOVERY_HOLD_MS, failTimeout: RECOVERY_FAIL_TIMEOUT_MS };
  return {};
}

export async function recovery(spec: JobSpec): Promise<JobResult> {
  const key = 'account:42';
  const control = controlBlock(2);
  const counters = paddedCounters(1);
  const stamps = new SharedArrayBuffer(2 * 8);
  const data = ([0, 1] as const).map((index): Omit<RecoveryWorkerData, 'peer'> => ({
    api: spec.api,
    index,
    key,
    control: control.buffer as SharedArrayBuffer,
    counters: counters.buffer as SharedArrayBuffer,
    stamps,
  }));
  const options = { keys: [key], ...hostOptionsFor(spec.variant) };
  const fleet = await startPeerWorkers(spec.peer, options, './scenarios/recovery-worker.js', data);
  const stamp = new Float64Array(stamps);
  try {
    const asking = await Promise.race([
      reached(control, workerWord(1, W_REQUESTING), 1, START_TIMEOUT_MS),
      fleet.failed,
    ]);
    if (!asking)
      throw new Error(`the holder or the waiter did not start within ${START_TIMEOUT_MS} ms`);
    await pause(SETTLE_MS);
    if (Atomics.load(control, workerWord(1, W_HOLDING)) !== 0) {
      return {
        metrics: { recoveryMs: null },
        lostUpdates: 0,
        unsafe: 'the waiter got the key while the holder still held it',
      };
    }
    const holder = fleet.started[0]!;
    const terminatedAt = crossThreadMs();
    void holder.worker.terminate();
    const deadlineWait =
      spec.variant === 'deadline' ? RECOVERY_HOLD_MS + RECOVERY_FAIL_TIMEOUT_MS : 0;
    const got = await Promise.race([
      reached(control, workerWord(1, W_HOLDING), 1, spec.settings.recoveryCapMs + deadlineWait),
      fleet.started[1]!.failed,
    ]);
    if (!got) {
      return {
        metrics: { recoveryMs: null },
        lostUpdates: 0,
        notes: [`no next holder within ${spec.settings.recoveryCapMs + deadlineWait} ms`],
      };
    }
    const recoveryMs = stamp[1]! - terminatedAt;
    const metrics: Record<string, number | null> = { recoveryMs };
    if (spec.variant === 'deadline') {
      metrics.pastDeadlineMs =
        stamp[1]! - (stamp[0]! + RECOVERY_HOLD_MS + RECOVERY_FAIL_TIMEOUT_MS);
    }
    return { metrics, lostUpdates: 0 };
  } finally {
    await fleet.terminate();
  }
}
