import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { STARVATION_MS } from '../src/table/slot-state.js';
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

/**
 * The longest wait the progress tests accept. The policy's own bound (a starving writer is next:
 * see the first test) is far below it; what a wall-clock wait measures on a 2-core VM shared with
 * other jobs is mostly how long the OS keeps a runnable thread off the CPU, which reached 176 ms
 * with the previous (hand-off-every-release) policy too. A starved thread would wait the whole
 * window, three times this.
 */
const MAX_WAIT_MS = 500;
const WINDOW_MS = 1500;

interface HotResult {
  sections: number;
  maxWait: number;
  /** Sections this worker began by taking the key from another thread. */
  swaps: number;
}

/** Workers loop on one hot key; stops once `total` sections are done (counted in shared memory). */
async function hotKey(
  modes: ('exclusive' | 'shared')[],
  windowMs: number,
  holdLoops = 0,
  tight = false,
) {
  const table = new LockTable({ capacity: 8 });
  const ctrl = control();
  const workers = modes.map((mode) =>
    spawn<HotResult>('hotKey', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      key: 'hot',
      mode,
      holdLoops,
      tight,
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

describe('fairness', () => {
  test('once a writer starves, the releaser cannot take the lock back: the waiter is next', async () => {
    const table = new LockTable({ capacity: 4 });
    const lease = table.acquireSync('k');
    const ctrl = control();
    const waiter = spawn<{ ok: boolean; waited: number }>('acquireOnce', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      key: 'k',
      keep: true,
    });
    // A writer waiting on a writer announces itself (contended) only once it starves.
    const t0 = performance.now();
    while (table.inspect('k')?.contended !== true) {
      assert.ok(performance.now() - t0 < 20_000, 'the waiter never announced that it starves');
      await new Promise((r) => setImmediate(r));
    }
    lease.release();
    assert.equal(
      table.tryAcquire('k'),
      null,
      'the releaser took the lock back from a starving waiter',
    );
    await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
    signal(ctrl, CTRL_STOP);
    const result = await waiter.result;
    assert.ok(result.ok);
    assert.ok(result.waited >= STARVATION_MS, `the waiter got the key after ${result.waited} ms`);
    table.acquireSync('k').release();
  });

  test(`starvation mode holds within ${STARVATION_MS} ms: 2 workers on a hot key all get a share, turn by turn`, async () => {
    const results = await hotKey(['exclusive', 'exclusive'], WINDOW_MS);
    const counts = results.map((r) => r.sections);
    const swaps = results.reduce((sum, r) => sum + r.swaps, 0);
    const maxWait = Math.max(...results.map((r) => r.maxWait));
    console.log(
      `# sections per worker ${counts.join(', ')}; ${swaps} swaps; longest wait ${maxWait.toFixed(1)} ms`,
    );
    // The policy shares the key's time (a turn ends when the other writer has waited 1 ms), not
    // sections: a worker's sections per turn are what its thread runs in that time. Two workers'
    // rates differ on a shared 2-core VM (each isolate's JIT output, each vCPU's share): quiet CI
    // runs read 0.93-1.0 mostly, but 0.69, 0.70 and once 0.34 (1.87 M against 5.43 M, with no
    // wait over 16.3 ms). So: every worker gets a real share, the key keeps changing hands (a
    // starving writer's turn comes within ms, so 1.5 s has hundreds of turns; 50 would mean turns
    // of 30 ms on average), and the wait stays bounded. The bench reads the fairness figure.
    assert.ok(Math.min(...counts) >= 0.25 * Math.max(...counts), `unfair: ${counts}`);
    assert.ok(swaps >= WINDOW_MS / 30, `the key changed hands ${swaps} times in ${WINDOW_MS} ms`);
    assert.ok(maxWait < MAX_WAIT_MS, `a worker waited ${maxWait} ms`);
  });

  test('two writers in a tight loop on one key take it in turns, not section by section', async () => {
    // A writer that loses a race backs off until it starves, and a thread that hands the key off
    // waits its own turn: so the key changes hands about once per STARVATION_MS, thousands of
    // sections apart. Before the back-off (commit 7bb5aa8), the two workers swapped it every 2-15
    // sections in this loop; with gaps between sections, spinners win and swaps are natural.
    const results = await hotKey(['exclusive', 'exclusive'], WINDOW_MS, 0, true);
    const sections = results.reduce((sum, r) => sum + r.sections, 0);
    const swaps = results.reduce((sum, r) => sum + r.swaps, 0);
    const counts = results.map((r) => r.sections);
    console.log(`# ${sections} sections, ${swaps} swaps; per worker ${counts.join(', ')}`);
    assert.ok(sections >= 100 * swaps, `the key changed hands every ${sections / swaps} sections`);
    // Sections per turn are each thread's own speed (see the test above): a full suite at load 5
    // read 7.7 M against 16.4 M (0.47) with the key changing hands 172,160 times.
    assert.ok(Math.min(...counts) >= 0.25 * Math.max(...counts), `unfair: ${counts}`);
  });

  test('no thread starves on a hot key: 4 workers on 2 cores all progress, bounded wait', async () => {
    const results = await hotKey(
      ['exclusive', 'exclusive', 'exclusive', 'exclusive'],
      WINDOW_MS,
      50,
    );
    const counts = results.map((r) => r.sections);
    const maxWait = Math.max(...results.map((r) => r.maxWait));
    console.log(
      `# sections per worker ${counts.join(', ')}; longest wait ${maxWait.toFixed(1)} ms`,
    );
    assert.ok(Math.min(...counts) >= 0.25 * Math.max(...counts), `unfair: ${counts}`);
    assert.ok(maxWait < MAX_WAIT_MS, `a worker waited ${maxWait} ms`);
  });

  test('a writer is not starved by a stream of overlapping readers', async () => {
    const results = await hotKey(['shared', 'shared', 'shared', 'exclusive'], WINDOW_MS, 200);
    const writer = results[3]!;
    console.log(
      `# readers ${results.slice(0, 3).map((r) => r.sections)}; writer ${writer.sections}, longest wait ${writer.maxWait.toFixed(1)} ms`,
    );
    assert.ok(writer.sections > 50, `writer got ${writer.sections} sections`);
    assert.ok(writer.maxWait < MAX_WAIT_MS, `writer waited ${writer.maxWait} ms`);
  });

  test('readers are not starved by a stream of writers', async () => {
    const results = await hotKey(['exclusive', 'exclusive', 'exclusive', 'shared'], WINDOW_MS, 200);
    const reader = results[3]!;
    console.log(
      `# writers ${results.slice(0, 3).map((r) => r.sections)}; reader ${reader.sections}, longest wait ${reader.maxWait.toFixed(1)} ms`,
    );
    assert.ok(reader.sections > 50, `reader got ${reader.sections} sections`);
    assert.ok(reader.maxWait < MAX_WAIT_MS, `reader waited ${reader.maxWait} ms`);
  });
});
