/**
 * The control block that multi-worker scenarios coordinate through: one SharedArrayBuffer of
 * Int32 words. No messages and no sleeps decide when a phase starts or ends:
 *
 *   workers attach and warm up, then add 1 to READY   -> main waits until READY = workers
 *   main stores START = 1 and notifies                -> workers run critical sections
 *   main waits (timed) for the window, stores STOP = 1 -> workers finish their section, write
 *                                                        their count, add 1 to DONE
 *   main waits until DONE = workers, reads the counts and the shared counter.
 *
 * Every word sits on its own 64-byte cache line: words written by different threads must not
 * share a line, or false sharing would tax both implementations and blur the comparison.
 */

/** Int32 words per 64-byte cache line. */
export const LINE = 16;

/** Workers that have attached and warmed up (each adds 1). */
export const C_READY = 0 * LINE;
/** 0 until the main thread opens the measured window. */
export const C_START = 1 * LINE;
/** 0 until the main thread closes the measured window. */
export const C_STOP = 2 * LINE;
/** Workers that have written their count and are about to exit (each adds 1). */
export const C_DONE = 3 * LINE;
/** The shared counter: every critical section increments it WITHOUT atomics (read, then write). */
export const C_COUNTER = 4 * LINE;
/** Worker i writes its number of critical sections at C_COUNTS + i * LINE. */
export const C_COUNTS = 5 * LINE;

export function controlBlock(workers: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer((C_COUNTS + workers * LINE) * 4));
}

/** Worker side: add 1 to a counter word and wake the main thread. */
export function signal(control: Int32Array, index: number): void {
  Atomics.add(control, index, 1);
  Atomics.notify(control, index);
}

/** Worker side: block until the word at `index` is no longer 0. */
export function awaitFlag(control: Int32Array, index: number): void {
  while (Atomics.load(control, index) === 0) Atomics.wait(control, index, 0);
}

/**
 * Main side: wait, without blocking the event loop (worker errors must still arrive), until the
 * word at `index` reaches `target`. Returns false on timeout.
 */
export async function reached(
  control: Int32Array,
  index: number,
  target: number,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = Atomics.load(control, index);
    if (value >= target) return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    const waited = Atomics.waitAsync(control, index, value, left);
    if (waited.async) await waited.value;
  }
}
