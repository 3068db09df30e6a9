/**
 * Where a withLock round trip's time goes beyond a bare `pool.run` of the same task: the round
 * trip split by phase, each phase a form of its own, all forms in rotating turns of CHUNK_MS on
 * the same 1-thread pool in one thread (the `with-lock` scenario's paired method), each form's
 * time per call read against the bare run of the same turn.
 *
 *   bare         pool.run(args, { name: 'increment' })                   the baseline
 *   lock+bare    await acquire (hold = execTimeout), bare, release       the lock's share
 *   runner       pool.run(payload, { filename: withLock's runner })      the runner's payload and
 *                with a payload built as withLock builds it, control     its work in the worker,
 *                buffer reused                                           no main-thread withLock
 *   runner+sab   the same with a fresh control SharedArrayBuffer         + a buffer per call
 *   runner+clone the same, reused buffer, with structuredClone(args)     + the old args check
 *   runner+timer the same with withLock's exec timer set and cleared     + the timer
 *   runner+lock  the same under await acquire ... release                + the lock
 *   withLock     withLock(table, key, 'increment', { pool, args })       everything
 *
 * Then, without thread hops, the main thread's own work per call (ns, best of 5 loops):
 * withLock's option parsing and args check, the control buffer, the exec timer, acquire + release.
 *
 *   npm run bench:with-lock-split [-- turns]
 */
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { LockTable, withLock } from './library.js';
import { pairedTurn } from './scenarios/with-lock.js';
import { median } from './stats.js';
import type { IncrementArgs } from './tasks/pool-tasks.js';

const TASKS = new URL('./tasks/pool-tasks.js', import.meta.url).href;
/** withLock's runner: task-runner.js next to the package's index.js. */
const RUNNER = fileURLToPath(new URL('./task-runner.js', import.meta.resolve('locktable')));
const CHUNK_MS = 30;
const WARMUP_TURNS = 3;
const EXEC_TIMEOUT = 5000;

async function main(): Promise<void> {
  if (withLock === undefined) throw new Error('dist/ does not export withLock');
  const run = withLock;
  const turns = Number(process.argv[2] ?? 40);
  const table = new LockTable();
  const key = 'account:42';
  const pool = new Piscina({ filename: TASKS, minThreads: 1, maxThreads: 1 });
  const args: IncrementArgs = { counter: new SharedArrayBuffer(4) };
  // withLock's payload (src/with-lock/task.ts): [task id, args, control, key, token, table,
  // execTimeout, flags].
  const taskId = `m${TASKS.length}:${TASKS}increment`;
  const reused = new SharedArrayBuffer(24);
  const reusedWords = new Int32Array(reused);
  const runnerOptions = { filename: RUNNER, name: 'default' };
  const payload = (control: SharedArrayBuffer) => [
    taskId,
    args,
    control,
    key,
    1n,
    table.buffer,
    EXEC_TIMEOUT,
    0,
  ];
  const forms: Record<string, () => Promise<unknown>> = {
    bare: () => pool.run(args, { name: 'increment' }),
    'lock+bare': async () => {
      const lease = await table.acquire(key, { hold: EXEC_TIMEOUT });
      await pool.run(args, { name: 'increment' });
      lease.release();
    },
    runner: () => {
      Atomics.store(reusedWords, 0, 0);
      return pool.run(payload(reused), runnerOptions);
    },
    'runner+sab': () => pool.run(payload(new SharedArrayBuffer(24)), runnerOptions),
    'runner+clone': () => {
      structuredClone(args);
      Atomics.store(reusedWords, 0, 0);
      return pool.run(payload(reused), runnerOptions);
    },
    'runner+timer': async () => {
      Atomics.store(reusedWords, 0, 0);
      const timer = setTimeout(noop, EXEC_TIMEOUT / 8);
      timer.unref();
      await pool.run(payload(reused), runnerOptions);
      clearTimeout(timer);
    },
    'runner+lock': async () => {
      const lease = await table.acquire(key, { hold: EXEC_TIMEOUT });
      Atomics.store(reusedWords, 0, 0);
      await pool.run(payload(reused), runnerOptions);
      lease.release();
    },
    withLock: () => run(table, key, 'increment', { pool, args }),
  };
  const names = Object.keys(forms);
  for (const name of names) await forms[name]!();
  const perCall: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const overBare: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const load = [loadavg()[0]!];
  for (let turn = -WARMUP_TURNS; turn < turns; turn++) {
    const { us } = await pairedTurn(forms, names, turn + WARMUP_TURNS, CHUNK_MS);
    if (turn < 0) continue;
    for (const name of names) {
      perCall[name]!.push(us[name]!);
      overBare[name]!.push(us[name]! - us.bare!);
    }
  }
  load.push(loadavg()[0]!);
  await pool.destroy();
  console.log(
    `withLock split: ${turns} turns of ${CHUNK_MS} ms per form, 1-thread pool, ` +
      `load ${load.map((l) => l.toFixed(2)).join(' -> ')}`,
  );
  console.log('form          us/call   - bare (us, median of per-turn differences)   / bare');
  for (const name of names) {
    const ratios = perCall[name]!.map((v, i) => v / perCall.bare![i]!);
    console.log(
      `${name.padEnd(12)}  ${median(perCall[name]!).toFixed(1).padStart(7)}   ` +
        `${median(overBare[name]!).toFixed(1).padStart(7)}` +
        `${''.padEnd(37)}${median(ratios).toFixed(2)}`,
    );
  }
  mainThreadWork(table, key, args);
  await mainThreadAsync(table, key);
}

/** ns per op of fn, best of 5 loops of n. */
function nsPerOp(n: number, fn: () => void): number {
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    best = Math.min(best, ((performance.now() - t0) * 1e6) / n);
  }
  return best;
}

function mainThreadWork(table: LockTable, key: string, args: IncrementArgs): void {
  console.log('\nmain thread, no thread hop (ns per op, best of 5 loops):');
  const rows: [string, () => void][] = [
    ['structuredClone(args) (the args check)', () => structuredClone(args)],
    [
      'new SharedArrayBuffer(24) + 2 views',
      () => {
        const b = new SharedArrayBuffer(24);
        new Int32Array(b);
        new Float64Array(b);
      },
    ],
    [
      'setTimeout + unref + clearTimeout',
      () => {
        const t = setTimeout(noop, 625);
        t.unref();
        clearTimeout(t);
      },
    ],
    [
      'acquireSync + release (hold)',
      () => table.acquireSync(key, { hold: EXEC_TIMEOUT }).release(),
    ],
  ];
  for (const [label, fn] of rows)
    console.log(`  ${label.padEnd(44)} ${nsPerOp(20_000, fn).toFixed(0)}`);
}

function noop(): void {}

async function mainThreadAsync(table: LockTable, key: string): Promise<void> {
  const run = withLock!;
  // A pool that answers at once, as the runner does: what is left is withLock's own work.
  const answer = { ok: true, value: 0 };
  const instant = {
    run: () => Promise.resolve(answer),
    on: () => instant,
    threads: [],
    options: { filename: fileURLToPath(TASKS) },
  };
  const args = { counter: new SharedArrayBuffer(4) };
  const rows: [string, () => Promise<unknown>][] = [
    [
      'await acquire + release (hold)',
      async () => (await table.acquire(key, { hold: EXEC_TIMEOUT })).release(),
    ],
    ['await instant pool.run', () => instant.run()],
    ['withLock on an instant pool', () => run(table, key, 'increment', { pool: instant, args })],
    [
      'withLock on an instant pool, args 1',
      () => run(table, key, 'increment', { pool: instant, args: 1 }),
    ],
  ];
  for (const [label, fn] of rows) {
    const n = 20_000;
    let best = Infinity;
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await fn();
      best = Math.min(best, ((performance.now() - t0) * 1e6) / n);
    }
    console.log(`  ${label.padEnd(44)} ${best.toFixed(0)}`);
  }
}

await main();
