/** Single-thread micro-benchmarks, with tinybench. */
import { Bench } from 'tinybench';

/**
 * Operations per tinybench iteration. tinybench reads the clock around every call of a task; one
 * lock operation takes tens of nanoseconds, about what a clock read costs, so one operation per
 * call would add the same constant to both sides and squeeze every ratio toward 1. A batch of
 * 1000 makes the clock reads negligible.
 */
export const BATCH = 1000;

/** Runs each task (one call = BATCH operations) and returns operations per second for each. */
export async function opsPerSecond(
  tasks: Record<string, () => unknown>,
  timeMs: number,
): Promise<Record<string, number>> {
  const bench = new Bench({ time: timeMs, warmupTime: timeMs / 4, throws: true });
  for (const [name, fn] of Object.entries(tasks)) bench.add(name, fn);
  await bench.run();
  const out: Record<string, number> = {};
  for (const task of bench.tasks) {
    const result = task.result;
    if (result.state !== 'completed') throw new Error(`${task.name}: ${result.state}`);
    // period = mean ms per call; totalTime/runs rather than a mean of per-call rates.
    out[task.name] = (BATCH * 1000) / result.period;
  }
  return out;
}
