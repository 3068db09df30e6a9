import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Lease, LockTable } from '../src/index.js';
import { hashKey } from '../src/table/key.js';
import { offsets, SF_HANDOFF_UNTIL, SLOT_F64 } from '../src/table/layout.js';
import { DIRECTORY, GRANTS } from '../src/table/internals.js';
import { HANDOFF_PATIENCE_MS, STARVATION_MS } from '../src/table/slot-state.js';
import {
  control,
  CTRL_GO,
  CTRL_HELD,
  CTRL_READY,
  CTRL_STOP,
  signal,
  spawn,
  waitFor,
} from './harness.js';
import { runQueueSince } from './run-queue.js';

/**
 * The longest wait the progress tests accept, beyond what the scheduler explains of it (the
 * run-queue wait of the waiter and of the holders meanwhile: test/fixtures/wait-ledger.ts; where
 * /proc/thread-self/schedstat is absent nothing is explained and this bounds the raw wait). The
 * policy's own bound (a starving writer is next: see the first test) is far below it; on a 2-core
 * VM shared with other jobs raw waits reached 176 ms quiet and 688-812 ms at load 9-13. A starved
 * thread would wait the whole window, three times this.
 */
const MAX_WAIT_MS = 500;
const WINDOW_MS = 1500;
/** The negative controls' hog keeps the key this long, asleep (a waiter with no turn for 3 s). */
const HOG_MS = 3000;

interface HotResult {
  sections: number;
  /** The longest wait, raw. */
  maxWait: number;
  /** The longest wait beyond the run-queue wait of the waiter and of the holders meanwhile. */
  maxUnexplained: number;
  /** This worker's run-queue wait over the window. */
  runQueue: number;
  /** Sections this worker began by taking the key from another thread. */
  swaps: number;
}

/**
 * Workers loop on one hot key for `windowMs`. With `hogMs`, the first worker keeps the key that
 * long in its first section (the negative controls).
 */
async function hotKey(
  modes: ('exclusive' | 'shared')[],
  windowMs: number,
  holdLoops = 0,
  tight = false,
  hogMs = 0,
) {
  const table = new LockTable({ capacity: 8 });
  const ctrl = control();
  const held = new SharedArrayBuffer(8 * modes.length);
  const workers = modes.map((mode, index) =>
    spawn<HotResult>('hotKey', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      key: 'hot',
      mode,
      holdLoops,
      tight,
      held,
      index,
      hogMs: index === 0 ? hogMs : 0,
    }),
  );
  await waitFor(ctrl, CTRL_READY, (v) => v === modes.length);
  signal(ctrl, CTRL_GO);
  // The window is a measurement length, not a synchronisation: every assertion below is about
  // counts and waits that the workers recorded themselves.
  await new Promise((r) => setTimeout(r, windowMs));
  signal(ctrl, CTRL_STOP);
  return Promise.all(workers.map((w) => w.result));
}

/** The workers of `results` whose longest unexplained wait reaches MAX_WAIT_MS. */
function waitsTooLong(results: HotResult[]): string[] {
  return results
    .filter((r) => r.maxUnexplained >= MAX_WAIT_MS)
    .map(
      (r) =>
        `a worker waited ${r.maxUnexplained.toFixed(1)} ms beyond its run-queue excuse (raw ${r.maxWait.toFixed(1)} ms)`,
    );
}

function describeWaits(results: HotResult[]): string {
  const f = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(', ');
  return `longest waits ${f(results.map((r) => r.maxWait))} ms, unexplained ${f(results.map((r) => r.maxUnexplained))} ms, run-queue over the window ${f(results.map((r) => r.runQueue))} ms`;
}

/**
 * Two writers take turns: a starving writer's turn comes within ms, so a window has hundreds of
 * turns; 1 per 30 ms would mean turns of 30 ms on average. A turn needs the holder on a CPU: the
 * longest run-queue wait of the workers over the window is taken off the window (not their sum:
 * two workers spinning on 2 busy cores each read 830 ms of 1500 at load 1, and 339 swaps).
 */
function tooFewSwaps(results: HotResult[], swaps: number): string[] {
  const running = WINDOW_MS - Math.max(...results.map((r) => r.runQueue));
  return swaps >= running / 30
    ? []
    : [
        `the key changed hands ${swaps} times in ${WINDOW_MS} ms (${running.toFixed(0)} ms running)`,
      ];
}

/**
 * A release to a starving writer reserves the HANDOFF for it for HANDOFF_PATIENCE_MS; after that
 * anyone may take it (its waiter may be gone). So the releaser's own tryAcquire right after the
 * release may take the key back legitimately only if the OS kept the releasing thread off the
 * CPU for about that long in between: then the gap is made of its run-queue wait
 * (test/run-queue.ts). Where schedstat is absent, no take-back is explained.
 */
function takeBackExplained(gapMs: number, runQueueMs: number): boolean {
  return gapMs >= HANDOFF_PATIENCE_MS && runQueueMs >= HANDOFF_PATIENCE_MS - 0.5;
}

/**
 * For the negative control: a release that forgets to reserve its HANDOFF for the waiter. Returns
 * a function that clears the reservation of `key` (prepared beforehand, so that it is quick).
 */
function reservationDropper(table: LockTable, key: string): () => void {
  const geometry = {
    capacity: table.capacity,
    maxKeyLength: table.maxKeyLength,
    records: table[GRANTS].recordCount,
  };
  const slotF64 = new Float64Array(table.buffer, offsets(geometry).slotF64Offset, table.capacity);
  const slot = table[DIRECTORY].find(key, hashKey(key));
  return () => {
    slotF64[slot * SLOT_F64 + SF_HANDOFF_UNTIL] = 0;
  };
}

/**
 * The main thread holds 'k'; a worker waits for it until it starves (announced as contended);
 * the main thread releases and at once tries to take 'k' back. A take-back explained by the main
 * thread's run-queue wait (takeBackExplained) is set up again, at most 10 times. Returns whether
 * the last attempt took the key back unexplained, and the waiter's result.
 */
async function releaseToStarvingWaiter(broken: boolean) {
  const table = new LockTable({ capacity: 4 });
  let lease: Lease = table.acquireSync('k');
  const ctrl = control();
  const waiter = spawn<{ ok: boolean; waited: number }>('acquireOnce', {
    buffer: table.buffer,
    ctrl: ctrl.buffer,
    key: 'k',
    keep: true,
  });
  let unexplained = false;
  let explained = 0;
  for (let attempt = 0; attempt < 10; attempt++) {
    // A writer waiting on a writer announces itself (contended) only once it starves.
    const t0 = performance.now();
    // The broken release is caught only if the releaser gets there before the waiter: a waiter
    // asleep takes tens of µs to wake, one spinning would claim the HANDOFF at once.
    const ready = () =>
      table.inspect('k')?.contended === true &&
      (!broken || (table.inspect('k')?.sleepers ?? 0) > 0);
    while (!ready()) {
      assert.ok(performance.now() - t0 < 20_000, 'the waiter never announced that it starves');
      await new Promise((r) => setImmediate(r));
    }
    const dropReservation = broken ? reservationDropper(table, 'k') : () => {};
    const queued = runQueueSince();
    const released = performance.now();
    lease.release();
    dropReservation();
    const back = table.tryAcquire('k');
    const gap = performance.now() - released;
    if (back === null) break;
    lease = back;
    if (!takeBackExplained(gap, queued())) {
      unexplained = true;
      lease.release();
      break;
    }
    explained++;
  }
  if (explained > 0) console.log(`# ${explained} take-back(s) explained by run-queue waits`);
  // Ten take-backs in a row, each excused: no attempt judged the lock, and a lock that always lets
  // the releaser take the key back would pass. Judged a failure (the key is still ours: let it go).
  if (explained === 10) {
    console.log('# every attempt was a take-back excused by run-queue waits: judged a failure');
    unexplained = true;
    lease.release();
  }
  await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
  signal(ctrl, CTRL_STOP);
  const result = await waiter.result;
  table.acquireSync('k').release();
  return { unexplained, result };
}

describe('fairness', () => {
  test('once a writer starves, the releaser cannot take the lock back: the waiter is next', async () => {
    const { unexplained, result } = await releaseToStarvingWaiter(false);
    assert.equal(unexplained, false, 'the releaser took the lock back from a starving waiter');
    assert.ok(result.ok);
    assert.ok(result.waited >= STARVATION_MS, `the waiter got the key after ${result.waited} ms`);
  });

  test('negative control: a release that does not reserve its hand-off is caught', async () => {
    // A waiter that wakes at once can still claim the HANDOFF first (about half the runs on a
    // quiet 2-core VM): up to 10 runs.
    let caught = false;
    for (let run = 0; run < 10 && !caught; run++)
      caught = (await releaseToStarvingWaiter(true)).unexplained;
    assert.ok(caught, 'the releaser never took the key back unexplained');
  });

  test(`starvation mode holds within ${STARVATION_MS} ms: 2 workers on a hot key all get a share, turn by turn`, async () => {
    const results = await hotKey(['exclusive', 'exclusive'], WINDOW_MS);
    const counts = results.map((r) => r.sections);
    const swaps = results.reduce((sum, r) => sum + r.swaps, 0);
    console.log(
      `# sections per worker ${counts.join(', ')}; ${swaps} swaps; ${describeWaits(results)}`,
    );
    // The policy shares the key's time (a turn ends when the other writer has waited 1 ms), not
    // sections: a worker's sections per turn are what its thread runs in that time. Two workers'
    // rates differ on a shared 2-core VM (each isolate's JIT output, each vCPU's share): quiet CI
    // runs read 0.93-1.0 mostly, but 0.69, 0.70 and once 0.34 (1.87 M against 5.43 M, with no
    // wait over 16.3 ms); a full run at load 7 read 0.235 (0.96 M against 4.07 M, 213,450 swaps,
    // no wait over 28.5 ms). So what is judged is the guarantee: the wait stays bounded
    // (waitsTooLong) and the key keeps changing hands (tooFewSwaps), both with the negative control
    // below; the share only has to be real (a tenth), not even. The bench reads the fairness figure.
    assert.ok(Math.min(...counts) >= 0.1 * Math.max(...counts), `unfair: ${counts}`);
    assert.deepEqual(tooFewSwaps(results, swaps), []);
    assert.deepEqual(waitsTooLong(results), []);
  });

  test('negative control: a writer kept from the key for 3 s is caught (its wait, the swaps)', async () => {
    const results = await hotKey(['exclusive', 'exclusive'], WINDOW_MS, 0, false, HOG_MS);
    const swaps = results.reduce((sum, r) => sum + r.swaps, 0);
    console.log(`# ${swaps} swaps; ${describeWaits(results)}`);
    assert.ok(waitsTooLong(results).length > 0, 'a 3 s wait passed as explained');
    assert.ok(tooFewSwaps(results, swaps).length > 0, `${swaps} swaps passed`);
  });

  test('two writers in a tight loop on one key take it in turns, not section by section', async () => {
    // A writer that loses a race backs off until it starves, and a thread that hands the key off
    // waits its own turn: so the key changes hands about once per STARVATION_MS, thousands of
    // sections apart. Before the back-off (commit 7bb5aa8), the two workers swapped it every 2-15
    // sections in this loop; with gaps between sections, spinners win and swaps are natural.
    // Runs are bimodal, quiet or not: most read 1,500-5,000 swaps in 27-30 M sections, but some
    // 50,000-244,000 (99 sections a swap at worst), with the workers' counts uneven. There, a
    // fresh request (one that has not lost a race, so does not back off) wins its first race
    // nearly always, and the key goes back and forth in chains until one loses (a scratch probe,
    // not in the repo; left as a throughput gap, not a safety one). So the line is 30, twice the
    // worst the loop read without the back-off.
    const results = await hotKey(['exclusive', 'exclusive'], WINDOW_MS, 0, true);
    const sections = results.reduce((sum, r) => sum + r.sections, 0);
    const swaps = results.reduce((sum, r) => sum + r.swaps, 0);
    const counts = results.map((r) => r.sections);
    console.log(`# ${sections} sections, ${swaps} swaps; per worker ${counts.join(', ')}`);
    assert.ok(sections >= 30 * swaps, `the key changed hands every ${sections / swaps} sections`);
    // Sections per turn are each thread's own speed (see the test above): a full suite at load 5
    // read 7.7 M against 16.4 M (0.47) with the key changing hands 172,160 times.
    assert.ok(Math.min(...counts) >= 0.1 * Math.max(...counts), `unfair: ${counts}`);
  });

  test('no thread starves on a hot key: 4 workers on 2 cores all progress, bounded wait', async () => {
    const results = await hotKey(
      ['exclusive', 'exclusive', 'exclusive', 'exclusive'],
      WINDOW_MS,
      50,
    );
    const counts = results.map((r) => r.sections);
    console.log(`# sections per worker ${counts.join(', ')}; ${describeWaits(results)}`);
    assert.ok(Math.min(...counts) >= 0.25 * Math.max(...counts), `unfair: ${counts}`);
    assert.deepEqual(waitsTooLong(results), []);
  });

  test('negative control: of 4 workers on a hot key, waiters kept from it for 3 s are caught', async () => {
    const results = await hotKey(
      ['exclusive', 'exclusive', 'exclusive', 'exclusive'],
      WINDOW_MS,
      50,
      false,
      HOG_MS,
    );
    console.log(`# ${describeWaits(results)}`);
    assert.ok(waitsTooLong(results).length > 0, 'a 3 s wait passed as explained');
  });

  test('a writer is not starved by a stream of overlapping readers', async () => {
    const results = await hotKey(['shared', 'shared', 'shared', 'exclusive'], WINDOW_MS, 200);
    const writer = results[3]!;
    console.log(
      `# readers ${results.slice(0, 3).map((r) => r.sections)}; writer ${writer.sections}; ${describeWaits([writer])}`,
    );
    assert.ok(writer.sections > 50, `writer got ${writer.sections} sections`);
    assert.deepEqual(waitsTooLong([writer]), []);
  });

  test('negative control: a writer kept from the key by a reader for 3 s is caught', async () => {
    const results = await hotKey(
      ['shared', 'shared', 'shared', 'exclusive'],
      WINDOW_MS,
      200,
      false,
      HOG_MS,
    );
    const writer = results[3]!;
    console.log(`# writer: ${describeWaits([writer])}`);
    assert.ok(waitsTooLong([writer]).length > 0, "the writer's 3 s wait passed as explained");
  });

  test('readers are not starved by a stream of writers', async () => {
    const results = await hotKey(['exclusive', 'exclusive', 'exclusive', 'shared'], WINDOW_MS, 200);
    const reader = results[3]!;
    console.log(
      `# writers ${results.slice(0, 3).map((r) => r.sections)}; reader ${reader.sections}; ${describeWaits([reader])}`,
    );
    assert.ok(reader.sections > 50, `reader got ${reader.sections} sections`);
    assert.deepEqual(waitsTooLong([reader]), []);
  });

  test('negative control: a reader kept from the key by a writer for 3 s is caught', async () => {
    const results = await hotKey(
      ['exclusive', 'exclusive', 'exclusive', 'shared'],
      WINDOW_MS,
      200,
      false,
      HOG_MS,
    );
    const reader = results[3]!;
    console.log(`# reader: ${describeWaits([reader])}`);
    assert.ok(waitsTooLong([reader]).length > 0, "the reader's 3 s wait passed as explained");
  });
});
