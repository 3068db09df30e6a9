/**
 * What one primitive operation costs on this machine, in ns: the figures of DESIGN.md's "Cost of
 * the fast path" table. One thread, best of 5 runs of N iterations each, the empty loop's cost
 * subtracted; then one cache-line transfer between two threads (a ping-pong); then how long timed
 * sleeps last.
 *
 *   npm run bench:primitives
 */
import { Worker } from 'node:worker_threads';
import { hashKey, keyEquals } from '../src/table/key.js';

const N = 20_000_000;
const RUNS = 5;
const i32 = new Int32Array(new SharedArrayBuffer(64));
const units = new Uint16Array(new SharedArrayBuffer(64));
const key = 'account:42';
for (let i = 0; i < key.length; i++) units[i] = key.charCodeAt(i);
const map = new Map([[key, 1]]);
const i64 = new BigInt64Array(new SharedArrayBuffer(64));
let sink = 0;

/**
 * The slot cache's lookup over many keys (slot-cache.ts): a Map against an object with no
 * prototype, each with keys of its own (strings made at run time, as keys that arrive in a
 * message are), looked up in a fixed random order of 64 keys, or 1,000 keys round robin.
 */
function keyStream(count: number, random: boolean) {
  const keys = Array.from({ length: count }, (_, i) => ['account', i].join(':'));
  const order = new Uint32Array(1 << 16);
  let x = 12345;
  for (let i = 0; i < order.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    order[i] = random ? (x >>> 0) % count : i % count;
  }
  const entries = keys.map((_, i) => ({ slot: i }));
  const map = new Map(keys.map((k, i) => [k, entries[i]!]));
  const dict = Object.create(null) as Record<string, { slot: number }>;
  const dictKeys = keys.map((k) => [k, ''].join(''));
  dictKeys.forEach((k, i) => (dict[k] = entries[i]!));
  return {
    map: (n: number) => {
      for (let i = 0; i < n; i++) sink += map.get(keys[order[i & 0xffff]!]!)!.slot;
    },
    dict: (n: number) => {
      for (let i = 0; i < n; i++) sink += dict[dictKeys[order[i & 0xffff]!]!]!.slot;
    },
  };
}
const random64 = keyStream(64, true);
const roundRobin1000 = keyStream(1000, false);

function best(body: (n: number) => void): number {
  let min = Infinity;
  for (let r = 0; r < RUNS; r++) {
    const t = performance.now();
    body(N);
    min = Math.min(min, ((performance.now() - t) * 1e6) / N);
  }
  return min;
}

const empty = best((n) => {
  for (let i = 0; i < n; i++) sink += i;
});
const ops: Record<string, (n: number) => void> = {
  'Atomics.compareExchange': (n) => {
    for (let i = 0; i < n; i++) sink += Atomics.compareExchange(i32, 0, i & 1, (i + 1) & 1);
  },
  'CAS then Atomics.exchange': (n) => {
    for (let i = 0; i < n; i++) {
      sink += Atomics.compareExchange(i32, 0, 0, 1);
      sink += Atomics.exchange(i32, 0, 0);
    }
  },
  'BigInt64 plain store': (n) => {
    for (let i = 0; i < n; i++) i64[i & 7] = BigInt(i & 255);
  },
  'BigInt64 Atomics.store': (n) => {
    for (let i = 0; i < n; i++) Atomics.store(i64, i & 7, BigInt(i & 255));
  },
  'Atomics.load': (n) => {
    for (let i = 0; i < n; i++) sink += Atomics.load(i32, i & 7);
  },
  'Map.get (string key)': (n) => {
    for (let i = 0; i < n; i++) sink += map.get(key)!;
  },
  'Map.get, 64 keys at random': random64.map,
  'no-prototype object, 64 at random': random64.dict,
  'Map.get, 1,000 keys in turn': roundRobin1000.map,
  'no-prototype object, 1,000 in turn': roundRobin1000.dict,
  [`hashKey (${key.length} units)`]: (n) => {
    for (let i = 0; i < n; i++) sink += hashKey(key);
  },
  [`keyEquals (${key.length} units)`]: (n) => {
    for (let i = 0; i < n; i++) sink += keyEquals(units, 0, key) ? 1 : 0;
  },
  'performance.now()': (n) => {
    for (let i = 0; i < n; i++) sink += performance.now();
  },
};
console.log(`ns per operation (best of ${RUNS} x ${N}, empty loop ${empty.toFixed(1)} ns removed)`);
for (const [name, body] of Object.entries(ops)) {
  console.log(`${name.padEnd(36)} ${(best(body) - empty).toFixed(1)}`);
}
if (sink === 0.5) console.log(sink); // keeps the loops from being optimised away

/**
 * One cache-line transfer between two threads, one way (ns): a worker and this thread pass a
 * word back and forth (each spins until the word is its turn, then writes the other's), so each
 * move of the line is one transfer. Median of 5 runs of PINGS round trips.
 */
const PINGS = 1_000_000;
const line = new Int32Array(new SharedArrayBuffer(64));
const ponger = new Worker(
  `const { workerData: line, parentPort } = require('node:worker_threads');
   for (let i = 0; i < ${5 * PINGS}; i++) {
     while (Atomics.load(line, 0) !== 1);
     Atomics.store(line, 0, 2);
   }
   parentPort.postMessage('done');`,
  { eval: true, workerData: line },
);
const pongerDone = new Promise((resolve) => ponger.once('message', resolve));
const transfers: number[] = [];
for (let r = 0; r < 5; r++) {
  const t = performance.now();
  for (let i = 0; i < PINGS; i++) {
    Atomics.store(line, 0, 1);
    while (Atomics.load(line, 0) !== 2);
  }
  transfers.push(((performance.now() - t) * 1e6) / (2 * PINGS));
}
await pongerDone;
await ponger.terminate();
console.log(
  `${'cache-line transfer, one way'.padEnd(30)} ${transfers.sort((a, b) => a - b)[2]!.toFixed(1)}`,
);

/**
 * How long a timed sleep really lasts (median of 20, ms): the figures of DESIGN.md's "Waiting".
 * Atomics.wait's timeout is honoured to within the OS's timer slack; waitAsync's runs on the event
 * loop's millisecond timers and is rounded to the nearest millisecond.
 */
async function sleepMs(sleep: () => unknown): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    await sleep();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[10]!;
}
const keepAlive = setInterval(() => {}, 1000); // a pending waitAsync alone lets the thread exit
console.log('\ntimed sleeps, median of 20 (ms)');
for (const ms of [0.1, 0.5, 1]) {
  const sync = await sleepMs(() => Atomics.wait(i32, 8, 0, ms));
  const async = await sleepMs(() => Atomics.waitAsync(i32, 8, 0, ms).value);
  console.log(
    `${`Atomics.wait(${ms})`.padEnd(30)} ${sync.toFixed(3)}\n${`Atomics.waitAsync(${ms})`.padEnd(30)} ${async.toFixed(3)}`,
  );
}
clearInterval(keepAlive);
