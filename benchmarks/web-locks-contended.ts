/**
 * LockManager under contention: 4 worker threads each await `locks.request(name, cb)` in a loop
 * over NAMES names (an async callback that counts a section, and checks it ran alone: the counter
 * is read, an await passes, and it is written back), beside the same loop through the table it runs
 * on (`await table.acquire(name)` + `release`). Reports requests per second over all workers, the
 * median of RUNS runs of WINDOW_MS, each run a fresh table and fresh workers, the rows' runs
 * interleaved so that both see the machine's same moments. Lost updates must be 0.
 *
 *   npm run bench:web-locks:contended              # 5 runs of 1 s per row
 *   npm run bench:web-locks:contended -- --quick   # 3 runs of 300 ms
 *
 * The uncontended cost per request is `npm run bench:web-locks`.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { LockTable } from '../src/index.js';
import { LockManager } from '../src/web-locks/index.js';

/** Registers tsx in the worker (Node 20 workers do not inherit the parent's loader). */
const BOOT = new URL('../test/fixtures/boot.mjs', import.meta.url);
const WORKERS = 4;
const NAME_COUNTS = [1, 8];
const PEERS = ['LockManager.request', 'table.acquire + release'] as const;
type Peer = (typeof PEERS)[number];

interface Job {
  buffer: SharedArrayBuffer;
  ctrl: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  peer: Peer;
  names: number;
  index: number;
}

// ctrl words: 0 ready count, 1 go, 2 stop.
async function workerMain(job: Job): Promise<void> {
  const ctrl = new Int32Array(job.ctrl);
  const counters = new Int32Array(job.counters);
  const table = LockTable.attach(job.buffer);
  const locks = new LockManager(table);
  const names = Array.from({ length: job.names }, (_, i) => `name:${i}`);
  Atomics.add(ctrl, 0, 1);
  while (Atomics.load(ctrl, 1) === 0) await new Promise((resolve) => setTimeout(resolve, 1));
  let n = 0;
  let k = job.index;
  const section = async (i: number): Promise<void> => {
    const v = counters[i]!;
    await null;
    counters[i] = v + 1;
    n++;
  };
  while (Atomics.load(ctrl, 2) === 0) {
    const i = k++ % names.length;
    if (job.peer === 'LockManager.request') {
      await locks.request(names[i]!, () => section(i));
    } else {
      const lease = await table.acquire(names[i]!);
      try {
        await section(i);
      } finally {
        lease.release();
      }
    }
  }
  parentPort!.postMessage(n);
}

async function run(peer: Peer, names: number, windowMs: number) {
  const table = new LockTable({ capacity: 1024 });
  const ctrl = new Int32Array(new SharedArrayBuffer(16));
  const counters = new Int32Array(new SharedArrayBuffer(4 * names));
  const workers = Array.from(
    { length: WORKERS },
    (_, index) =>
      new Worker(BOOT, {
        workerData: {
          fixture: import.meta.url,
          buffer: table.buffer,
          ctrl: ctrl.buffer,
          counters: counters.buffer,
          peer,
          names,
          index,
        } satisfies Job & { fixture: string },
      }),
  );
  const done = workers.map((w) => new Promise<number>((resolve) => w.once('message', resolve)));
  while (Atomics.load(ctrl, 0) < WORKERS) await new Promise((resolve) => setTimeout(resolve, 5));
  Atomics.store(ctrl, 1, 1);
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  Atomics.store(ctrl, 2, 1);
  const sections = (await Promise.all(done)).reduce((a, b) => a + b, 0);
  const elapsed = performance.now() - t0;
  await Promise.all(workers.map((w) => w.terminate()));
  const counted = counters.reduce((a, b) => a + b, 0);
  return { perSecond: (sections * 1000) / elapsed, lost: sections - counted };
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const runs = quick ? 3 : 5;
  const windowMs = quick ? 300 : 1000;
  const rates = new Map<string, number[]>();
  let lost = 0;
  for (let r = 0; r < runs; r++) {
    for (const names of NAME_COUNTS) {
      // Rotate which peer goes first in each run.
      const order = r % 2 === 0 ? PEERS : [...PEERS].reverse();
      for (const peer of order) {
        const result = await run(peer, names, windowMs);
        lost += result.lost;
        const key = `${peer}|${names}`;
        rates.set(key, [...(rates.get(key) ?? []), result.perSecond]);
      }
    }
  }
  console.log(
    `LockManager under contention: ${WORKERS} workers, ${runs} runs of ${windowMs} ms, ` +
      `Node ${process.version}`,
  );
  console.log('names  peer                       requests/s (median; lowest-highest)');
  for (const names of NAME_COUNTS) {
    for (const peer of PEERS) {
      const list = [...rates.get(`${peer}|${names}`)!].sort((a, b) => a - b);
      const k = (v: number) => `${(v / 1000).toFixed(1)} k`;
      console.log(
        `${String(names).padEnd(5)}  ${peer.padEnd(25)}  ${k(list[list.length >> 1]!)} ` +
          `(${k(list[0]!)}-${k(list[list.length - 1]!)})`,
      );
    }
  }
  console.log(`lost updates: ${lost}`);
  if (lost !== 0) process.exitCode = 1;
}

if (isMainThread) await main();
else await workerMain(workerData as Job);
