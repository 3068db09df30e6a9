/**
 * What a Web Locks request costs through locktable's LockManager (locktable/web-locks), against the
 * table it runs on (`await table.acquire` + `release`, the same work without the facade) and
 * against Node 24's built-in `worker_threads.locks.request`, measured in the same run: the
 * locktable rows under the Node that runs this script and under Node 24, the built-in under Node 24
 * (fetched as `npm run bench` fetches it: benchmarks/runtimes.ts). One thread, one name, no
 * contention: each row awaits one request (an async callback that returns at once) before the
 * next. Median of RUNS runs of N requests, in µs per request; a check counts the sections that ran
 * inside their lock (a counter read and written around an await), and every row must count N.
 *
 *   npm run bench:web-locks              # the full run (about a minute)
 *   npm run bench:web-locks -- --quick   # 3 runs of 20k
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as workerThreads from 'node:worker_threads';
import { LockTable } from '../src/index.js';
import { LockManager } from '../src/web-locks/index.js';
import { resolveRuntimes } from './runtimes.js';

const quick = process.argv.includes('--quick');
const child = process.argv.includes('--child');
const N = quick ? 20_000 : 100_000;
const RUNS = quick ? 3 : 7;

interface Row {
  name: string;
  node: string;
  usPerRequest: number;
  min: number;
  max: number;
  sections: number;
}

type Body = (n: number) => Promise<number>;

async function measure(name: string, body: Body): Promise<Row> {
  await body(N); // warm-up: the optimising compiler settles
  const runs: number[] = [];
  let sections = 0;
  for (let r = 0; r < RUNS; r++) {
    const t = performance.now();
    sections = await body(N);
    runs.push(((performance.now() - t) * 1000) / N);
  }
  runs.sort((a, b) => a - b);
  return {
    name,
    node: process.version,
    usPerRequest: runs[Math.floor(runs.length / 2)]!,
    min: runs[0]!,
    max: runs[runs.length - 1]!,
    sections,
  };
}

/** The bodies: each runs n sections under the lock and returns how many ran inside it. */
function bodies(): Record<string, Body> {
  const table = new LockTable();
  const locks = new LockManager(table);
  const counter = { value: 0 };
  const section = async (): Promise<void> => {
    const v = counter.value;
    await null;
    counter.value = v + 1;
  };
  const out: Record<string, Body> = {
    'table.acquire + release': async (n) => {
      counter.value = 0;
      for (let i = 0; i < n; i++) {
        const lease = await table.acquire('bench');
        try {
          await section();
        } finally {
          lease.release();
        }
      }
      return counter.value;
    },
    'LockManager.request (locktable/web-locks)': async (n) => {
      counter.value = 0;
      for (let i = 0; i < n; i++) await locks.request('bench', section);
      return counter.value;
    },
  };
  const builtin = (
    workerThreads as {
      locks?: { request(name: string, cb: () => Promise<void>): Promise<void> };
    }
  ).locks;
  if (builtin !== undefined) {
    out['worker_threads.locks.request (Node built-in)'] = async (n) => {
      counter.value = 0;
      for (let i = 0; i < n; i++) await builtin.request('bench', section);
      return counter.value;
    };
  }
  return out;
}

async function runHere(): Promise<Row[]> {
  const rows: Row[] = [];
  for (const [name, body] of Object.entries(bodies())) rows.push(await measure(name, body));
  return rows;
}

if (child) {
  console.log(JSON.stringify(await runHere()));
} else {
  const rows = await runHere();
  const node24 = resolveRuntimes(new Set(['node24']), (l) => console.error(`# ${l}`)).get('node24');
  if (node24?.ok === true) {
    const self = fileURLToPath(import.meta.url);
    const out = execFileSync(
      node24.path,
      ['--import', 'tsx', self, '--child', ...(quick ? ['--quick'] : [])],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 },
    );
    rows.push(...(JSON.parse(out.trim().split('\n').pop()!) as Row[]));
  } else {
    console.error(
      `# Node 24 rows skipped: ${node24?.ok === false ? node24.reason : 'unavailable'}`,
    );
  }
  console.log(`# ${RUNS} runs of ${N} requests each, one thread, one name; median (min-max)`);
  console.log(
    '| node | request | µs per request | vs table.acquire + release | sections counted |',
  );
  console.log('| --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const base = rows.find((b) => b.node === r.node && b.name === 'table.acquire + release');
    const ratio = base === undefined ? '-' : `${(r.usPerRequest / base.usPerRequest).toFixed(2)}x`;
    const check = r.sections === N ? `${r.sections} (all)` : `${r.sections} of ${N}: LOST UPDATES`;
    console.log(
      `| ${r.node} | ${r.name} | ${r.usPerRequest.toFixed(3)} (${r.min.toFixed(3)}-${r.max.toFixed(3)}) | ${ratio} | ${check} |`,
    );
  }
}
