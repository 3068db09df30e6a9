/**
 * One worker of the hot-key scenario: attach, warm up, signal READY, wait for START, then loop
 * lock -> non-atomic counter increment -> unlock until STOP; write the section count; signal DONE.
 */
import { workerData } from 'node:worker_threads';
import { BaselineKeys } from './baseline.js';
import {
  awaitFlag,
  C_COUNTER,
  C_COUNTS,
  C_DONE,
  C_READY,
  C_START,
  C_STOP,
  LINE,
  signal,
} from './control.js';
import { LockTable } from './library.js';

export interface ContendedWorkerData {
  impl: 'locktable' | 'baseline';
  /** This worker's number, 0..workers-1. */
  index: number;
  key: string;
  /** A key of this worker's own, for warming up before READY. */
  warmupKey: string;
  control: SharedArrayBuffer;
  table: SharedArrayBuffer;
  baselineWords: SharedArrayBuffer;
  baselineKeys: string[];
}

/**
 * Sections each worker runs on a key of its own before READY, so that the JIT has optimized the
 * loop before the window opens (the first calls run in the interpreter, far slower).
 */
const WARMUP_SECTIONS = 20_000;

const data = workerData as ContendedWorkerData;
const control = new Int32Array(data.control);
const scratch = new Int32Array(new SharedArrayBuffer(4));

/** The critical section: a plain read, then a plain write. Lost updates show a broken lock. */
function increment(counter: Int32Array, at: number): void {
  const value = counter[at]!;
  counter[at] = value + 1;
}

function locktableLoop(table: LockTable, key: string, counter: Int32Array, at: number, n: number) {
  let sections = 0;
  while (sections < n && Atomics.load(control, C_STOP) === 0) {
    const lease = table.acquireSync(key);
    increment(counter, at);
    lease.release();
    sections++;
  }
  return sections;
}

function baselineLoop(keys: BaselineKeys, key: string, counter: Int32Array, at: number, n: number) {
  let sections = 0;
  while (sections < n && Atomics.load(control, C_STOP) === 0) {
    keys.lock(key);
    increment(counter, at);
    keys.unlock(key);
    sections++;
  }
  return sections;
}

let loop: (key: string, counter: Int32Array, at: number, n: number) => number;
if (data.impl === 'locktable') {
  const table = LockTable.attach(data.table);
  loop = (key, counter, at, n) => locktableLoop(table, key, counter, at, n);
} else {
  const keys = new BaselineKeys(data.baselineKeys, data.baselineWords);
  loop = (key, counter, at, n) => baselineLoop(keys, key, counter, at, n);
}

loop(data.warmupKey, scratch, 0, WARMUP_SECTIONS);
signal(control, C_READY);
awaitFlag(control, C_START);
const sections = loop(data.key, control, C_COUNTER, Infinity);
control[C_COUNTS + data.index * LINE] = sections;
signal(control, C_DONE);
