/**
 * The piscina task module of the withLock benchmarks (compiled to tasks/pool-tasks.js). Each
 * export is a task: `pool.run(args, { name })` and withLock's `{ module, name }` both call it.
 */
import { crossThreadMs } from '../control.js';

export interface IncrementArgs {
  counter: SharedArrayBuffer;
}

/** The benchmarks' critical section, done by a pool worker: a non-atomic increment. */
export function increment({ counter }: IncrementArgs): number {
  const words = new Int32Array(counter);
  const value = words[0]!;
  words[0] = value + 1;
  return value;
}

export interface RunawayArgs {
  /** Int32 [0] = 1 once started, [1] = a counter it keeps writing; Float64 [1] = start (ms). */
  control: SharedArrayBuffer;
}

/** A task that never ends: it stamps its start, then writes shared memory until it is stopped. */
export function runaway({ control }: RunawayArgs): never {
  const words = new Int32Array(control);
  new Float64Array(control)[1] = crossThreadMs();
  Atomics.store(words, 0, 1);
  Atomics.notify(words, 0);
  for (;;) words[1] = words[1]! + 1;
}
