/**
 * One worker of `hot-key` (every section on one key) and `random-keys` (each section on one of 64
 * keys, chosen at random): connect, warm up on the scenario's own keys, signal READY, wait for
 * START, run lock -> non-atomic increment -> unlock until STOP, write the section count, DONE.
 *
 * Wait times (request -> grant) are sampled every SAMPLE_STRIDE-th section: two clock reads per
 * section would cost about as much as a whole uncontended section of the baseline, and would
 * squeeze every throughput ratio toward 1. The stride is the same for every peer.
 */
import { workerData } from 'node:worker_threads';
import {
  awaitFlag,
  C_READY,
  C_START,
  C_STOP,
  LINE,
  paddedCounters,
  signal,
  C_DONE,
  W_SAMPLES,
  W_SECTIONS,
  workerWord,
} from '../control.js';
import { type Api, prepared } from '../peers/types.js';
import { connectPeer } from './connect.js';

export interface ContendedWorkerData {
  api: Api;
  index: number;
  keys: readonly string[];
  /** 'one': always keys[0]; 'random': a key drawn by xorshift32 from `seed`. */
  pick: 'one' | 'random';
  /**
   * 0 for the throughput scenarios. The `exclusion` check holds each section this long (µs)
   * between its read and its write, so that a lock that lets two holders overlap is caught
   * losing updates within a short run instead of by luck.
   */
  holdUs: number;
  seed: number;
  control: SharedArrayBuffer;
  /** One counter per key, each on its own cache line. */
  counters: SharedArrayBuffer;
  /** Float64 wait samples (ms), `sampleCapacity` per worker, written as a ring. */
  samples: SharedArrayBuffer;
  sampleCapacity: number;
  /** Lock through prepared keys (locktable's KeyHandle): the handle variant. */
  handles?: boolean;
}

/** Sample the wait of every 16th section (a power of two: the test is a mask). */
export const SAMPLE_STRIDE = 16;
/** Warm-up before READY: this many sections, or this long, whichever comes first. */
const WARMUP_SECTIONS = 20_000;
const WARMUP_MS = 250;

const data = workerData as ContendedWorkerData;
const control = new Int32Array(data.control);
const samples = new Float64Array(
  data.samples,
  data.index * data.sampleCapacity * 8,
  data.sampleCapacity,
);
const keys = data.keys;
let state = data.seed | 0 || 1;
/** Samples written so far, and when the sampled request started (ms). */
let sampled = 0;
let requested = 0;

function nextKey(): number {
  if (data.pick === 'one') return 0;
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) % keys.length;
}

function sectionsFor(counters: Int32Array) {
  const holdMs = data.holdUs / 1000;
  const plain = keys.map((_, k) =>
    holdMs === 0
      ? () => {
          const at = k * LINE;
          const value = counters[at]!;
          counters[at] = value + 1;
        }
      : () => {
          const at = k * LINE;
          const value = counters[at]!;
          const until = performance.now() + holdMs;
          while (performance.now() < until) {
            // Holding the section open between the read and the write, on purpose.
          }
          counters[at] = value + 1;
        },
  );
  const timed = plain.map((section) => () => {
    samples[sampled++ % data.sampleCapacity] = performance.now() - requested;
    section();
  });
  return { plain, timed };
}

const client = await connectPeer();
const MASK = SAMPLE_STRIDE - 1;
/**
 * The lock calls, indexed like the keys: the peer's (key, section) calls, or with handles the
 * prepared locks' (section) calls. Both loops below call `sync(k, section)` either way.
 */
const locks = data.handles ? prepared(client, keys) : [];
const lockSync: (k: number, section: () => void) => void = data.handles
  ? (k, section) => locks[k]!.sync!(section)
  : (k, section) => client.sync!(keys[k]!, section);
const lockAsync: (k: number, section: () => void) => Promise<void> = data.handles
  ? (k, section) => locks[k]!.async(section)
  : (k, section) => client.async(keys[k]!, section);

function loopSync(counters: Int32Array, maxSections: number, untilMs: number): number {
  const { plain, timed } = sectionsFor(counters);
  const sync = lockSync;
  let n = 0;
  while (n < maxSections && Atomics.load(control, C_STOP) === 0) {
    const k = nextKey();
    if ((n & MASK) === 0) {
      const now = performance.now();
      if (now > untilMs) break;
      requested = now;
      sync(k, timed[k]!);
    } else {
      sync(k, plain[k]!);
    }
    n++;
  }
  return n;
}

async function loopAsync(counters: Int32Array, maxSections: number, untilMs: number) {
  const { plain, timed } = sectionsFor(counters);
  let n = 0;
  while (n < maxSections && Atomics.load(control, C_STOP) === 0) {
    const k = nextKey();
    if ((n & MASK) === 0) {
      const now = performance.now();
      if (now > untilMs) break;
      requested = now;
      await lockAsync(k, timed[k]!);
    } else {
      await lockAsync(k, plain[k]!);
    }
    n++;
  }
  return n;
}

const loop = data.api === 'sync' ? loopSync : loopAsync;
await loop(paddedCounters(keys.length), WARMUP_SECTIONS, performance.now() + WARMUP_MS);
sampled = 0;
signal(control, C_READY);
awaitFlag(control, C_START);
const sections = await loop(new Int32Array(data.counters), Infinity, Infinity);
control[workerWord(data.index, W_SECTIONS)] = sections;
control[workerWord(data.index, W_SAMPLES)] = sampled;
signal(control, C_DONE);
