/**
 * LockManager under contention: 4 worker threads each await `locks.request(name, cb)` in a loop
 * over NAMES names (an async callback that counts a section, and checks it ran alone: the counter
 * is read, an await passes, and it is written back), beside the same loop through the table it runs
 * on (`await table.acquire(name)` + `release`). Reports requests per second over all workers, the
 * median of RUNS runs of WINDOW_MS, each run a fresh table and fresh workers, the rows' runs
 * interleaved so that all see the machine's same moments. Node 24's built-in
 * `worker_threads.locks.request` runs the same loop as a third peer, under Node 24 (fetched as
 * `npm run bench` fetches it: benchmarks/runtimes.ts), one child process per run, interleaved with
 * the others: it also grants a name's requests in request order across threads. Lost updates must
 * be 0 for locktable's rows; the built-in's are reported (it has double-granted under contention:
 * NODE-NOTES).
 *
 *   npm run bench:web-locks:contended              # 5 runs of 1 s per row
 *   npm run bench:web-locks:contended -- --quick   # 3 runs of 300 ms
 *
 * The uncontended cost per request is `npm run bench:web-locks`.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as workerThreads from 'node:worker_threads';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { LockTable } from '../src/index.js';
import { LockManager } from '../src/web-locks/index.js';
import { resolveRuntimes } from './runtimes.js';

/** Registers tsx in the worker (Node 20 workers do not inherit the parent's loader). */
const BOOT = new URL('../test/fixtures/boot.mjs', import.meta.url);
const WORKERS = 4;
const NAME_COUNTS = [1, 8];
const BUILTIN = 'worker_threads.locks (Node 24)';
const PEERS = ['LockManager.request', 'table.acquire + release', BUILTIN] as const;
type Peer = (typeof PEERS)[number];

interface BuiltinLocks {
  request(name: string, cb: () => Promise<void>): Promise<void>;
}

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
  const builtin = (workerThreads as { locks?: BuiltinLocks }).locks;
  if (job.peer === BUILTIN && builtin === undefined) throw new Error('no worker_threads.locks');
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
  // A request of the built-in that waits for another thread holds no handle on the event loop:
  // without one, the worker would exit with its request unsettled. Every peer runs with it.
  const keepAlive = setInterval(() => {}, 1000);
  while (Atomics.load(ctrl, 2) === 0) {
    const i = k++ % names.length;
    if (job.peer === 'LockManager.request') {
      await locks.request(names[i]!, () => section(i));
    } else if (job.peer === BUILTIN) {
      await builtin!.request(names[i]!, () => section(i));
    } else {
      const lease = await table.acquire(names[i]!);
      try {
        await section(i);
      } finally {
        lease.release();
      }
    }
  }
  clearInterval(keepAlive);
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
  return {
    perSecond: (sections * 1000) / elapsed,
    lost: sections - counted,
    node: process.version,
  };
}

type Result = Awaited<ReturnType<typeof run>>;

/** The built-in's run, in a Node 24 child (`--child NAMES WINDOW_MS`), or the reason it cannot. */
function runBuiltin(node24: string | undefined, names: number, windowMs: number): Result | string {
  if (node24 === undefined) return 'Node 24 unavailable';
  const self = fileURLToPath(import.meta.url);
  const out = execFileSync(
    node24,
    ['--import', 'tsx', self, '--child', String(names), String(windowMs)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return JSON.parse(out.trim().split('\n').pop()!) as Result;
}

async function main(): Promise<void> {
  const child = process.argv.indexOf('--child');
  if (child >= 0) {
    const [names, windowMs] = process.argv.slice(child + 1, child + 3).map(Number);
    console.log(JSON.stringify(await run(BUILTIN, names!, windowMs!)));
    return;
  }
  const resolved = resolveRuntimes(new Set(['node24']), (l) => console.error(`# ${l}`)).get(
    'node24',
  );
  const node24 = resolved?.ok === true ? resolved.path : undefined;
  if (resolved?.ok === false) console.error(`# the built-in's rows skipped: ${resolved.reason}`);
  const quick = process.argv.includes('--quick');
  const runs = quick ? 3 : 5;
  const windowMs = quick ? 300 : 1000;
  const rates = new Map<string, number[]>();
  const lostBy = new Map<Peer, number>();
  let builtinVersion = '';
  for (let r = 0; r < runs; r++) {
    for (const names of NAME_COUNTS) {
      // Rotate which peer goes first in each run.
      const order = r % 2 === 0 ? PEERS : [...PEERS].reverse();
      for (const peer of order) {
        if (peer === BUILTIN && node24 === undefined) continue;
        const result =
          peer === BUILTIN ? runBuiltin(node24, names, windowMs) : await run(peer, names, windowMs);
        if (typeof result === 'string') continue;
        if (peer === BUILTIN && builtinVersion === '') builtinVersion = result.node;
        lostBy.set(peer, (lostBy.get(peer) ?? 0) + result.lost);
        const key = `${peer}|${names}`;
        rates.set(key, [...(rates.get(key) ?? []), result.perSecond]);
      }
    }
  }
  console.log(
    `LockManager under contention: ${WORKERS} workers, ${runs} runs of ${windowMs} ms, ` +
      `Node ${process.version}`,
  );
  console.log('names  peer                             requests/s (median; lowest-highest)');
  for (const names of NAME_COUNTS) {
    for (const peer of PEERS) {
      const got = rates.get(`${peer}|${names}`);
      if (got === undefined) continue;
      const list = [...got].sort((a, b) => a - b);
      const k = (v: number) => `${(v / 1000).toFixed(1)} k`;
      console.log(
        `${String(names).padEnd(5)}  ${peer.padEnd(31)}  ${k(list[list.length >> 1]!)} ` +
          `(${k(list[0]!)}-${k(list[list.length - 1]!)})`,
      );
    }
  }
  if (builtinVersion !== '') console.log(`(the built-in's rows under Node ${builtinVersion})`);
  for (const [peer, lost] of lostBy) console.log(`lost updates, ${peer}: ${lost}`);
  const ours =
    (lostBy.get('LockManager.request') ?? 0) + (lostBy.get('table.acquire + release') ?? 0);
  if (ours !== 0) process.exitCode = 1;
}

if (isMainThread) await main();
else await workerMain(workerData as Job);
