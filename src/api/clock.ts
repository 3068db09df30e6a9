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

/**
 * Calls `fn` once monotonicNow() has reached `deadline`, never before. A bare setTimeout may fire
 * early by up to a few ms on this clock: Node counts a timer from the event loop's cached time,
 * which is behind when the timer is set late in a long tick. This one looks at the clock when it
 * fires and sets itself again for what is left. Returns a function that cancels it.
 */
export function callAt(deadline: number, fn: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const check = () => {
    const left = deadline - monotonicNow();
    if (left > 0) timer = setTimeout(check, Math.min(Math.ceil(left), 2 ** 31 - 1));
    else fn();
  };
  timer = setTimeout(
    check,
    Math.max(0, Math.min(Math.ceil(deadline - monotonicNow()), 2 ** 31 - 1)),
  );
  return () => clearTimeout(timer);
}
