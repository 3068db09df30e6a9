/**
 * Test harness: real worker threads running scenarios from fixtures/scenarios.ts, coordinated
 * through shared memory (never through sleeps).
 */
import { Worker } from 'node:worker_threads';
import { LockTable } from '../src/index.js';
import { track } from './spawned-workers.js';

const BOOT = new URL('./fixtures/boot.mjs', import.meta.url);
const SCENARIOS = new URL('./fixtures/scenarios.ts', import.meta.url).href;

export interface Spawned<T> {
  worker: Worker;
  /** The scenario's result (its one message), or the worker's error. */
  result: Promise<T>;
  /** The exit code, once the thread is gone. */
  exited: Promise<number>;
}

/**
 * Starts `scenario` in a worker thread. The worker is terminated when the current test ends
 * (spawned-workers.ts), pass or fail, so it must be spawned inside the test that uses it.
 */
export function spawn<T = unknown>(scenario: string, data: Record<string, unknown>): Spawned<T> {
  const worker = track(new Worker(BOOT, { workerData: { fixture: SCENARIOS, scenario, ...data } }));
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  const result = new Promise<T>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    void exited.then((code) => reject(new Error(`worker exited (${code}) before reporting`)));
  });
  result.catch(() => {}); // a test that terminates the worker may never read it
  return { worker, result, exited };
}

/** Control-block words shared by tests and scenarios. */
export const CTRL_READY = 0; // workers add 1 when ready
export const CTRL_GO = 1; // main sets 1: start
export const CTRL_STOP = 2; // main sets 1: stop
export const CTRL_HELD = 3; // a holder sets 1 once it holds its lock
export const CTRL_A = 4; // scenario-specific outputs
export const CTRL_B = 5;
export const CTRL_C = 6;
export const CTRL_D = 7;
export const CTRL_WORDS = 16;

export function control(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(CTRL_WORDS * 4));
}

/** Waits (without blocking the event loop) until ctrl[index] satisfies `ok`. */
export async function waitFor(
  ctrl: Int32Array,
  index: number,
  ok: (v: number) => boolean,
  timeoutMs = 20_000,
) {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = Atomics.load(ctrl, index);
    if (ok(v)) return v;
    const left = end - performance.now();
    if (left <= 0) throw new Error(`timed out waiting for control word ${index} (value ${v})`);
    const w = Atomics.waitAsync(ctrl, index, v, Math.min(left, 50));
    if (w.async) await w.value;
  }
}

export function signal(ctrl: Int32Array, index: number, value = 1): void {
  Atomics.store(ctrl, index, value);
  Atomics.notify(ctrl, index);
}

/** The error `p` rejects with; fails the test if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

/** Busy-checks, for `ms`, that c[index] does not move (a runaway's counter); true if it moved. */
export function counterMoves(c: Int32Array, ms: number, index = 2): boolean {
  const at = Atomics.load(c, index);
  const end = performance.now() + ms;
  while (performance.now() < end) if (Atomics.load(c, index) !== at) return true;
  return false;
}

/** A seed for a stress test: LOCKTABLE_SEED, or a fresh one. Printed so a failure can be replayed. */
export function seedFor(name: string): number {
  const env = process.env.LOCKTABLE_SEED;
  const seed = env !== undefined ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  console.log(`# ${name}: seed ${seed} (replay with LOCKTABLE_SEED=${seed})`);
  return seed;
}

/** Small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORKERS = 4;

/**
 * Runs the counter scenario (fixtures/scenarios.ts) in 4 workers: `total` non-atomic increments
 * under `lock` ('locktable': acquireSync; 'none': the negative control; 'run', 'runSync',
 * 'runAllSync': those calls). Returns what they should have counted and what they counted.
 */
export async function countUnder(
  lock: 'locktable' | 'none' | 'run' | 'runSync' | 'runAllSync',
  keys: string[],
  total: number,
  seed: number,
  async = false,
) {
  const table = new LockTable({ capacity: Math.max(16, keys.length * 2) });
  const counters = new SharedArrayBuffer(keys.length * 4);
  const ctrl = control();
  const per = Math.ceil(total / WORKERS);
  const workers = Array.from({ length: WORKERS }, (_, i) =>
    spawn('counter', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      counters,
      keys,
      lock,
      async,
      iterations: per,
      seed: seed + i,
    }),
  );
  await waitFor(ctrl, CTRL_READY, (v) => v === WORKERS);
  signal(ctrl, CTRL_GO);
  await Promise.all(workers.map((w) => w.result));
  const counted = new Int32Array(counters).reduce((a, b) => a + b, 0);
  return { expected: per * WORKERS, counted, table };
}
