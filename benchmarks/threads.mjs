/**
 * `npm run bench:threads`: how many OS threads a process has (Linux: /proc/self/task) when 4
 * worker threads each call withLock with the default pool: before, with the 4 workers idle, and
 * once each has run 4 concurrent withLock calls (its pool grown to its maxThreads). Runs the built
 * package (dist/), in plain JavaScript: under a loader such as tsx, every thread would start the
 * loader's own threads too. The README's thread counts come from here.
 */
import { readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

const WORKERS = 4;
const CALLS = 4;
const DIST = new URL('../dist/index.js', import.meta.url).href;

/** Threads that are starting or exiting come and go for a moment: count once they are done. */
function settle() {
  return new Promise((resolve) => setTimeout(resolve, 500));
}

function threads() {
  return readdirSync('/proc/self/task').length;
}

// Each worker: ready, then (on 'go') CALLS concurrent withLock calls on distinct keys, then reports
// and stays alive until terminated.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
parentPort.once('message', async () => {
  const { LockTable, withLock } = await import(${JSON.stringify(DIST)});
  const table = LockTable.attach(workerData);
  const calls = [];
  for (let i = 0; i < ${CALLS}; i++) {
    calls.push(withLock(table, 'k' + Math.random(), () => {
      const end = Date.now() + 200;
      while (Date.now() < end);
    }));
  }
  const outcomes = await Promise.allSettled(calls);
  const failed = outcomes.find((o) => o.status === 'rejected');
  parentPort.postMessage(failed === undefined ? 'done' : String(failed.reason));
});
parentPort.postMessage('ready');
// Alive until terminated (the default pool's idle threads never keep a thread alive).
setInterval(() => {}, 1 << 30);
`;

const { LockTable } = await import(DIST);
const table = new LockTable();
const before = threads();
const workers = Array.from(
  { length: WORKERS },
  () => new Worker(workerSource, { eval: true, workerData: table.buffer }),
);
const next = (w) => new Promise((resolve) => w.once('message', resolve));
await Promise.all(workers.map(next));
await settle();
const idle = threads();
const done = Promise.all(workers.map(next));
for (const w of workers) w.postMessage('go');
for (const outcome of await done) if (outcome !== 'done') throw new Error(String(outcome));
await settle();
const after = threads();
await Promise.all(workers.map((w) => w.terminate()));
console.log(
  `${availableParallelism()} cores, Node ${process.version}: ${before} threads at start, ` +
    `${idle} with ${WORKERS} idle workers, ${after} once each worker ran ${CALLS} concurrent ` +
    `withLock calls on the default pool (+${after - idle})`,
);
