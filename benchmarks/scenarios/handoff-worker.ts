/**
 * One of the two workers of `handoff`. They take turns on one key: the holder waits until the
 * other worker has announced (through shared memory) that it is about to ask for the lock, holds
 * HOLD_MS longer (the waiter is then waiting: past a short spin and asleep, for a futex; within
 * its spinDelay, for locktable), stamps the time and returns, and the peer releases. The waiter's section starts by reading the clock: the difference is one
 * release -> acquire handoff. A holder that re-takes the lock before the waiter does (barging) is
 * not a handoff and is not sampled; the waiter's eventual grant is measured from the latest release.
 */
import { workerData } from 'node:worker_threads';
import {
  awaitFlag,
  C_DONE,
  C_READY,
  C_SCENARIO,
  C_START,
  C_STOP,
  crossThreadMs,
  LINE,
  signal,
  W_REQUESTING,
  W_SAMPLES,
  W_SECTIONS,
  workerWord,
} from '../control.js';
import { type Api, prepared } from '../peers/types.js';
import { connectPeer } from './connect.js';

export interface HandoffWorkerData {
  api: Api;
  index: 0 | 1;
  key: string;
  control: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  /** Float64: [0] = when the last holder released (ms); then each worker's samples. */
  samples: SharedArrayBuffer;
  sampleCapacity: number;
  /** Lock through a prepared key (locktable's KeyHandle): the handle variant. */
  handles?: boolean;
}

/** Which worker (index + 1) released last; written under the lock. */
export const C_LAST_HOLDER = C_SCENARIO;
/**
 * How long a holder keeps the lock after the other worker has asked for it (ms): 20 us, the
 * handoff of issue 13. Longer than any futex spin (100 loads, about 1 us), so the baseline's
 * waiter is asleep; shorter than locktable's default spinDelay (50 us), so its waiter should
 * still be spinning when the release comes.
 */
export const HOLD_MS = 0.02;
/** Warm-up before READY: this many sections, or this long, whichever comes first. */
const WARMUP_SECTIONS = 2000;
const WARMUP_MS = 250;

const data = workerData as HandoffWorkerData;
const control = new Int32Array(data.control);
const stamps = new Float64Array(data.samples, 0, 1);
const samples = new Float64Array(
  data.samples,
  (1 + data.index * data.sampleCapacity) * 8,
  data.sampleCapacity,
);
const me = data.index;
const other = 1 - me;
const myRequest = workerWord(me, W_REQUESTING);
const otherRequest = workerWord(other, W_REQUESTING);
let measuring = false;
let sampled = 0;

function makeSection(counters: Int32Array) {
  return () => {
    const granted = crossThreadMs();
    Atomics.store(control, myRequest, 0);
    if (measuring && Atomics.load(control, C_LAST_HOLDER) === other + 1) {
      samples[sampled++ % data.sampleCapacity] = granted - stamps[0]!;
    }
    const value = counters[0]!;
    counters[0] = value + 1;
    if (measuring) {
      while (Atomics.load(control, otherRequest) === 0 && Atomics.load(control, C_STOP) === 0) {
        // The other worker is between its release and its next request: a few microseconds.
      }
      const until = performance.now() + HOLD_MS;
      while (performance.now() < until) {
        // Holding on purpose, so that the waiter goes to sleep.
      }
    }
    Atomics.store(control, C_LAST_HOLDER, me + 1);
    stamps[0] = crossThreadMs();
  };
}

const client = await connectPeer();
const lock = data.handles ? prepared(client, [data.key])[0]! : undefined;

async function loop(counters: Int32Array, maxSections: number, untilMs: number) {
  const section = makeSection(counters);
  let n = 0;
  while (n < maxSections && Atomics.load(control, C_STOP) === 0 && performance.now() < untilMs) {
    Atomics.store(control, myRequest, 1);
    if (lock !== undefined) {
      if (data.api === 'sync') lock.sync!(section);
      else await lock.async(section);
    } else if (data.api === 'sync') client.sync!(data.key, section);
    else await client.async(data.key, section);
    n++;
  }
  Atomics.store(control, myRequest, 0);
  return n;
}

await loop(new Int32Array(LINE), WARMUP_SECTIONS, performance.now() + WARMUP_MS);
signal(control, C_READY);
awaitFlag(control, C_START);
measuring = true;
const sections = await loop(new Int32Array(data.counters), Infinity, Infinity);
control[workerWord(me, W_SECTIONS)] = sections;
control[workerWord(me, W_SAMPLES)] = sampled;
signal(control, C_DONE);
