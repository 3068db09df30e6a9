/**
 * The two workers of `recovery`. Worker 0 (the holder) takes the key, stamps when, says so, and
 * blocks inside its critical section until it is terminated: no `finally`, no release. Worker 1
 * (the waiter) waits until the holder holds, asks for the key, and stamps when it gets it.
 */
import { workerData } from 'node:worker_threads';
import { crossThreadMs, W_HOLDING, W_REQUESTING, workerWord } from '../control.js';
import type { Api } from '../peers/types.js';
import { connectPeer } from './connect.js';

export interface RecoveryWorkerData {
  api: Api;
  index: 0 | 1;
  key: string;
  control: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  /** Float64: [0] = when the holder got the key, [1] = when the waiter got it (ms). */
  stamps: SharedArrayBuffer;
}

const data = workerData as RecoveryWorkerData;
const control = new Int32Array(data.control);
const stamps = new Float64Array(data.stamps);
const counters = new Int32Array(data.counters);
const client = await connectPeer();

function take(section: () => void): Promise<void> | void {
  return data.api === 'sync' ? client.sync!(data.key, section) : client.async(data.key, section);
}

if (data.index === 0) {
  await take(() => {
    stamps[0] = crossThreadMs();
    Atomics.store(control, workerWord(0, W_HOLDING), 1);
    Atomics.notify(control, workerWord(0, W_HOLDING));
    const value = counters[0]!;
    // Blocks until terminated (nobody notifies this word).
    Atomics.wait(control, workerWord(0, W_REQUESTING), 0);
    counters[0] = value + 1;
  });
} else {
  while (Atomics.load(control, workerWord(0, W_HOLDING)) === 0) {
    Atomics.wait(control, workerWord(0, W_HOLDING), 0);
  }
  Atomics.store(control, workerWord(1, W_REQUESTING), 1);
  Atomics.notify(control, workerWord(1, W_REQUESTING));
  await take(() => {
    stamps[1] = crossThreadMs();
    const value = counters[0]!;
    counters[0] = value + 1;
    Atomics.store(control, workerWord(1, W_HOLDING), 1);
    Atomics.notify(control, workerWord(1, W_HOLDING));
  });
}
