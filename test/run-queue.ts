/**
 * How long a thread was runnable but not running: its run-queue wait, from Linux's
 * /proc/thread-self/schedstat (ns on a CPU, ns waiting on a run queue, timeslices).
 *
 * Timing tests bound how late something happens (a wait's timeout, a reclaim, a hand-off). On a
 * quiet machine a few ms suffice; on a loaded one the OS can keep the thread that should act off
 * the CPU for tens or hundreds of ms, which says nothing about the lock. Such a test allows
 * lateness = its bound + the run-queue wait of the thread(s) that had to act, measured over the
 * same interval. A broken implementation (a timeout that fires much too late or never) is still
 * caught: its lateness is not made of run-queue wait. Where schedstat is absent (not Linux, or a
 * kernel without it) the wait reads as 0 and the fixed bounds apply as before.
 */
import { readFileSync } from 'node:fs';

const SCHEDSTAT = '/proc/thread-self/schedstat';

/** The calling thread's total run-queue wait so far, in ms; undefined where it cannot be read. */
export function runQueueMs(): number | undefined {
  try {
    const wait = Number(readFileSync(SCHEDSTAT, 'utf8').split(' ')[1]);
    return Number.isFinite(wait) ? wait / 1e6 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts measuring the calling thread's run-queue wait; the function returned gives the ms it has
 * waited on a run queue since (0 where schedstat is absent). Call both on the same thread.
 */
export function runQueueSince(): () => number {
  const start = runQueueMs();
  return () => {
    if (start === undefined) return 0;
    return (runQueueMs() ?? start) - start;
  };
}
