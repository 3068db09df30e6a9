/**
 * Issue 3's withLock, measured only when dist/ exports it (the job is skipped, with the reason,
 * when it does not):
 * - `with-lock`: a withLock round trip on an uncontended key against a bare `pool.run` of the same
 *   task on the same pool, sequential calls, in paired chunks (each ratio from adjacent chunks of
 *   the same moment). Both forms withLock offers for a module task are measured: the pool's task
 *   name, and `{ module, name }`.
 * - `exec-timeout`: a task that never ends runs under withLock with execTimeout; the main thread
 *   asks for the same key meanwhile. Reports the time from the exec deadline to the next holder,
 *   checks the call rejects with ERR_LOCK_EXEC_TIMEOUT, and checks that the runaway task wrote
 *   nothing once the next holder had the key.
 */
import { Piscina } from 'piscina';
import { crossThreadMs, pause, reached } from '../control.js';
import { LockTable, withLock } from '../library.js';
import type { JobOutput, JobSpec } from '../spec.js';
import { median } from '../stats.js';
import type { IncrementArgs, RunawayArgs } from '../tasks/pool-tasks.js';

const TASKS = new URL('../tasks/pool-tasks.js', import.meta.url).href;
export const EXEC_TIMEOUT_MS = 100;
/** Each form runs this long per turn (about 300 round trips); see withLockRoundTrip. */
const CHUNK_MS = 30;
/** Turns run and thrown away first: the pool's worker, the JIT and the heap settle. */
const WARMUP_TURNS = 3;
/** The measured turns take about this share of the micro time (3 forms: 3 x that in all). */
const ROUND_TRIP_TIME_SHARE = 1;
/** After the next holder got the key, watch the runaway's counter this long for a late write. */
const LATE_WRITE_WATCH_MS = 20;
/** The worker stamps the task's start a little after withLock's runner starts the exec timer. */
const EARLY_TOLERANCE_MS = 2;

export const NO_WITH_LOCK = 'dist/ does not export withLock yet (issue 3)';

export async function withLockRoundTrip(spec: JobSpec): Promise<JobOutput> {
  if (withLock === undefined) return { kind: 'skip', reason: NO_WITH_LOCK };
  const run = withLock;
  const table = new LockTable();
  const key = 'account:42';
  // One thread: every sequential call lands on the same warm worker, for both sides.
  const pool = new Piscina({ filename: TASKS, minThreads: 1, maxThreads: 1 });
  const args: IncrementArgs = { counter: new SharedArrayBuffer(4) };
  let calls = 0;
  const forms: Record<string, () => Promise<unknown>> = {
    bareRun: () => pool.run(args, { name: 'increment' }),
    withLockName: () => run(table, key, 'increment', { pool, args }),
    withLockModule: () => run(table, key, { module: TASKS, name: 'increment' }, { pool, args }),
  };
  const notes: string[] = [];
  const working: string[] = [];
  for (const [name, call] of Object.entries(forms)) {
    try {
      await call();
      calls++;
      working.push(name);
    } catch (error) {
      notes.push(`${name} failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  // Paired chunks: every form runs for CHUNK_MS in turn (a rotating order), and each turn of the
  // forms gives one ratio per withLock form against the bare run beside it. A round trip is two
  // thread hops, the figure most sensitive to the scheduler: medians of separate tinybench runs
  // read 1.17x, 1.45x and 1.52x in three full runs; adjacent chunks share the machine's moment.
  const perCall: Record<string, number[]> = Object.fromEntries(working.map((n) => [n, []]));
  const ratios: Record<string, number[]> = { withLockName: [], withLockModule: [] };
  const turns = Math.max(
    8,
    Math.round((ROUND_TRIP_TIME_SHARE * spec.settings.microTimeMs) / CHUNK_MS),
  );
  for (let turn = -WARMUP_TURNS; turn < turns; turn++) {
    const { us, calls: made } = await pairedTurn(forms, working, turn + WARMUP_TURNS, CHUNK_MS);
    calls += made;
    if (turn < 0) continue;
    for (const name of working) perCall[name]!.push(us[name]!);
    if (us.bareRun === undefined) continue;
    for (const name of Object.keys(ratios)) {
      if (us[name] !== undefined) ratios[name]!.push(us[name]! / us.bareRun);
    }
  }
  await pool.destroy();
  const us: Record<string, number | null> = {};
  for (const name of Object.keys(forms)) {
    const list = perCall[name] ?? [];
    us[name] = list.length ? median(list) : null;
  }
  const ratio = (list: number[]) => (list.length ? median(list) : null);
  for (const [name, list] of Object.entries(ratios)) {
    if (list.length === 0) continue;
    notes.push(
      `${name} / bareRun over ${list.length} chunk turns of ${CHUNK_MS} ms: lowest ` +
        `${Math.min(...list).toFixed(2)}, highest ${Math.max(...list).toFixed(2)}`,
    );
  }
  return {
    kind: 'result',
    result: {
      metrics: {
        bareRunUs: us.bareRun!,
        withLockNameUs: us.withLockName!,
        withLockModuleUs: us.withLockModule!,
        nameOverBare: ratio(ratios.withLockName!),
        moduleOverBare: ratio(ratios.withLockModule!),
      },
      lostUpdates: calls - Atomics.load(new Int32Array(args.counter), 0),
      notes,
    },
  };
}

/**
 * One turn of paired chunks: each of `names` runs its form for `chunkMs`, in an order that
 * rotates with `turn`. Returns µs per call by form, and the calls made.
 */
export async function pairedTurn(
  forms: Record<string, () => Promise<unknown>>,
  names: readonly string[],
  turn: number,
  chunkMs: number,
): Promise<{ us: Record<string, number>; calls: number }> {
  const us: Record<string, number> = {};
  let calls = 0;
  for (let k = 0; k < names.length; k++) {
    const name = names[(k + turn) % names.length]!;
    const call = forms[name]!;
    const t0 = performance.now();
    let n = 0;
    let t: number;
    do {
      await call();
      n++;
      t = performance.now();
    } while (t - t0 < chunkMs);
    us[name] = ((t - t0) * 1000) / n;
    calls += n;
  }
  return { us, calls };
}

export async function execTimeout(_spec: JobSpec): Promise<JobOutput> {
  if (withLock === undefined) return { kind: 'skip', reason: NO_WITH_LOCK };
  const table = new LockTable();
  const key = 'account:42';
  const pool = new Piscina({ filename: TASKS, minThreads: 1, maxThreads: 2 });
  const control = new SharedArrayBuffer(16);
  const words = new Int32Array(control);
  const stamps = new Float64Array(control);
  const args: RunawayArgs = { control };
  // A warm pool: the measured call must not wait for a worker to start.
  await pool.run({ counter: new SharedArrayBuffer(4) } satisfies IncrementArgs, {
    name: 'increment',
  });
  const call = withLock(
    table,
    key,
    { module: TASKS, name: 'runaway' },
    { pool, args, execTimeout: EXEC_TIMEOUT_MS },
  );
  const outcome = call.then(
    () => 'resolved',
    (error: { code?: unknown; name?: unknown }) => String(error?.code ?? error?.name),
  );
  try {
    if (!(await reached(words, 0, 1, 30_000))) throw new Error('the runaway task did not start');
    const lease = await table.acquire(key, { waitTimeout: 30_000 });
    const nextAt = crossThreadMs();
    const seen = Atomics.load(words, 1);
    await pause(LATE_WRITE_WATCH_MS);
    const late = Atomics.load(words, 1) !== seen;
    lease.release();
    const code = await outcome;
    const afterDeadline = nextAt - (stamps[1]! + EXEC_TIMEOUT_MS);
    const notes = [`withLock settled with ${code}`];
    if (afterDeadline < -EARLY_TOLERANCE_MS) {
      notes.push(
        `the next holder got the key ${(-afterDeadline).toFixed(0)} ms before the task had run ` +
          `${EXEC_TIMEOUT_MS} ms: the exec timer started before the task did (queue time counted)`,
      );
    }
    let unsafe: string | undefined;
    if (late) unsafe = 'the timed-out task wrote shared memory after the next holder got the key';
    else if (code !== 'ERR_LOCK_EXEC_TIMEOUT')
      unsafe = `expected ERR_LOCK_EXEC_TIMEOUT, got ${code}`;
    return {
      kind: 'result',
      result: {
        metrics: { afterExecTimeoutMs: afterDeadline },
        lostUpdates: 0,
        ...(unsafe === undefined ? {} : { unsafe }),
        notes,
      },
    };
  } finally {
    await pool.destroy();
  }
}
