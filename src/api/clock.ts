/**
 * One monotonic clock, in milliseconds, that every thread of the process reads the same way.
 *
 * Deadlines stamped in shared memory by one thread are compared with "now" by another, so the
 * clock must be (1) monotonic - never the wall clock, which steps - and (2) the same in every
 * thread. `process.hrtime()` is CLOCK_MONOTONIC, process-wide, but costs ~50 ns and allocates.
 * `performance.now()` is cheaper (~17 ns) but is relative to the thread's `timeOrigin`, which Node
 * 20-24 happens to set to the process start in every thread (nodejs/node#46588) and could change.
 * So each thread measures, once, the offset between its `performance.now()` and hrtime, and reads
 * `performance.now() + offset` afterwards: hrtime's timeline at performance.now()'s price.
 */
import { performance } from 'node:perf_hooks';

function measureOffset(): number {
  // The offset is taken from the sample with the tightest bracket, to within about a microsecond.
  let best = Infinity;
  let offset = 0;
  for (let i = 0; i < 5; i++) {
    const before = performance.now();
    const mono = Number(process.hrtime.bigint()) / 1e6;
    const after = performance.now();
    if (after - before < best) {
      best = after - before;
      offset = mono - (before + after) / 2;
    }
  }
  return offset;
}

const offset = measureOffset();

/** Milliseconds on the process-wide monotonic clock (CLOCK_MONOTONIC), with sub-ms precision. */
export function monotonicNow(): number {
  return performance.now() + offset;
}
