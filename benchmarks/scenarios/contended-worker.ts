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
  C_SCENARIO,
  C_READY,
  phasePeer,
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
import { connectPeer, connectPeers } from './connect.js';

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
  /**
   * The paired variant: this worker runs locktable (its peer) and the baseline (its companion)
   * in alternating phases that the main thread announces in C_SCENARIO (paired-contended.ts),
   * each on its own counters, and adds each phase's sections to `phaseCounts`.
   */
  paired?: { phases: number; phaseCounts: SharedArrayBuffer; baselineCounters: SharedArrayBuffer };
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

if (data.paired !== undefined) {
  await runPaired(data.paired);
} else {
  await runOne();
}

async function runOne(): Promise<void> {
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
}

/**
 * The paired variant (see ContendedWorkerData.paired): warm both locks up, then follow the main
 * thread's phases until STOP. A phase's peer is phasePeer(p); a section started in a phase counts
 * for it. Each lock has its own counters, so a phase change (one worker still in the other lock's
 * section) cannot look like a lost update.
 */
async function runPaired(paired: NonNullable<ContendedWorkerData['paired']>): Promise<void> {
  const [peerClient, baselineClient] = await connectPeers();
  const peerLocks = data.handles ? prepared(peerClient!, keys) : [];
  const plainFor = (c: Int32Array) => sectionsFor(c).plain;
  const syncOf = [
    data.handles
      ? (k: number, section: () => void) => peerLocks[k]!.sync!(section)
      : (k: number, section: () => void) => peerClient!.sync!(keys[k]!, section),
    (k: number, section: () => void) => baselineClient!.sync!(keys[k]!, section),
  ];
  const asyncOf = [
    data.handles
      ? (k: number, section: () => void) => peerLocks[k]!.async(section)
      : (k: number, section: () => void) => peerClient!.async(keys[k]!, section),
    (k: number, section: () => void) => baselineClient!.async(keys[k]!, section),
  ];
  const counters = [new Int32Array(data.counters), new Int32Array(paired.baselineCounters)];
  const plain = [plainFor(counters[0]!), plainFor(counters[1]!)];
  const phaseCounts = new Int32Array(paired.phaseCounts);
  // Warm-up: both locks, on counters of their own.
  for (const who of [0, 1]) {
    const warm = plainFor(paddedCounters(keys.length));
    const until = performance.now() + WARMUP_MS;
    for (let n = 0; n < WARMUP_SECTIONS && performance.now() < until; n++) {
      const k = nextKey();
      if (data.api === 'sync') syncOf[who]!(k, warm[k]!);
      else await asyncOf[who]!(k, warm[k]!);
    }
  }
  signal(control, C_READY);
  awaitFlag(control, C_START);
  let total = 0;
  while (Atomics.load(control, C_STOP) === 0) {
    const p = Atomics.load(control, C_SCENARIO);
    if (p < 0 || p >= paired.phases) break;
    const who = phasePeer(p);
    const section = plain[who]!;
    let n = 0;
    if (data.api === 'sync') {
      const sync = syncOf[who]!;
      while (Atomics.load(control, C_SCENARIO) === p && Atomics.load(control, C_STOP) === 0) {
        const k = nextKey();
        sync(k, section[k]!);
        n++;
      }
    } else {
      const lockAsync = asyncOf[who]!;
      while (Atomics.load(control, C_SCENARIO) === p && Atomics.load(control, C_STOP) === 0) {
        const k = nextKey();
        await lockAsync(k, section[k]!);
        n++;
      }
    }
    phaseCounts[data.index * paired.phases + p] = n;
    total += n;
  }
  control[workerWord(data.index, W_SECTIONS)] = total;
  control[workerWord(data.index, W_SAMPLES)] = 0;
  signal(control, C_DONE);
}
