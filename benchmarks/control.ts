/**
 * The control block that multi-worker scenarios coordinate through: one SharedArrayBuffer of
 * Int32 words. No messages and no sleeps decide when a phase starts or ends:
 *
 *   workers connect and warm up, then add 1 to READY  -> main waits until READY = workers
 *   main stores START = 1 and notifies                -> workers run critical sections
 *   main waits (timed) for the window, stores STOP = 1 -> workers finish their section, write
 *                                                        their counts, add 1 to DONE
 *   main waits until DONE = workers, reads the counts, the samples and the shared counters.
 *
 * Every word that two threads write sits on its own 64-byte cache line: words written by
 * different threads must not share a line, or false sharing would tax every peer and blur the
 * comparison. Worker i owns the line at workerWord(i, field).
 */

/** Int32 words per 64-byte cache line. */
export const LINE = 16;

/** Workers that have connected and warmed up (each adds 1). */
export const C_READY = 0 * LINE;
/** 0 until the main thread opens the measured window. */
export const C_START = 1 * LINE;
/** 0 until the main thread closes the measured window. */
export const C_STOP = 2 * LINE;
/** Workers that have written their counts and are about to exit (each adds 1). */
export const C_DONE = 3 * LINE;
/** Scenario-specific words, one line each (e.g. the handoff's last holder). */
export const C_SCENARIO = 4 * LINE;
const C_WORKERS = 8 * LINE;

/** Fields of a worker's own line. */
/** Critical sections this worker ran in the measured window. */
export const W_SECTIONS = 0;
/** Samples this worker wrote (may exceed its sample capacity: the buffer is a ring). */
export const W_SAMPLES = 1;
/** Handoff and recovery: 1 while this worker is asking for the lock. */
export const W_REQUESTING = 2;
/** Recovery: 1 once this worker holds the lock. */
export const W_HOLDING = 3;

export function controlBlock(workers: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer((C_WORKERS + workers * LINE) * 4));
}

export function workerWord(worker: number, field: number): number {
  return C_WORKERS + worker * LINE + field;
}

/**
 * `count` shared counters, each on its own cache line. Critical sections increment them WITHOUT
 * atomics (a plain read, then a plain write): a lock that lets two holders overlap loses updates.
 */
export function paddedCounters(count: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(Math.max(1, count) * LINE * 4));
}

export function counterSum(counters: Int32Array): number {
  let sum = 0;
  for (let i = 0; i < counters.length; i += LINE) sum += Atomics.load(counters, i);
  return sum;
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
 * Main side: wait, without blocking the event loop (worker errors and the messages some peers
 * route through the main thread must still flow), until the word at `index` reaches `target`.
 * Returns false on timeout.
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

/** Main side: the measured window, without blocking the event loop. */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A clock for stamps that one thread writes and another reads: process.hrtime is one monotonic
 * clock for the whole process, in every thread (performance.now() agrees today too, but only
 * because every thread's timeOrigin is the process start, which nodejs/node#46588 may change).
 */
export function crossThreadMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * Main side: say which phase a job has reached, on stderr. When a job has to be killed (a peer
 * hung, or flooded the main thread), the runner reports the last phase it saw.
 */
export function phase(name: string): void {
  process.stderr.write(`${PHASE_PREFIX}${name}\n`);
}

export const PHASE_PREFIX = 'BENCH-PHASE ';

/**
 * The paired variant of a multi-worker scenario (paired-contended.ts): which lock phase `p` runs,
 * 0 the peer (locktable) or 1 the baseline. Phase pairs alternate their order (0 1, 1 0, 0 1, ...).
 */
export function phasePeer(p: number): 0 | 1 {
  return ((p & 1) ^ ((p >> 1) & 1)) as 0 | 1;
}
