/**
 * locktable's LockManager across real worker threads: exclusion (with a negative control),
 * query() of other threads' holders and waiters, a steal that reaches a holder in another thread,
 * and threads terminated while holding or waiting, with watch() and without. Threads coordinate
 * through shared memory (harness.ts), never by sleeping.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { LockManager } from '../src/web-locks/index.js';
import { ENTRY_LEASE_MS } from '../src/table/entries.js';
import {
  CTRL_A,
  CTRL_GO,
  CTRL_HELD,
  CTRL_READY,
  CTRL_STOP,
  control,
  prng,
  seedFor,
  signal,
  waitFor,
} from './harness.js';
import { runQueueSince } from './run-queue.js';
import { start } from './web-locks/workers.js';

/** Polls `check` (on each turn of a 5 ms interval) until it holds, or fails after `ms`. */
async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<number> {
  const t0 = LockTable.now();
  for (;;) {
    if (await check()) return LockTable.now() - t0;
    if (LockTable.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const NAMES = 3;
const SECTIONS = 300;

/** 4 workers and the main thread increment NAMES counters, each under its name's lock. */
async function hammer(
  broken: boolean,
  seed: number,
): Promise<{ expected: number; counted: number }> {
  const table = new LockTable();
  const locks = new LockManager(table);
  const ctrl = control();
  const counters = new Int32Array(new SharedArrayBuffer(4 * NAMES));
  const data = { buffer: table.buffer, ctrl: ctrl.buffer, counters: counters.buffer };
  const workers = Array.from({ length: 4 }, () =>
    start('hammer', { ...data, names: NAMES, sections: SECTIONS, seed, broken }),
  );
  await waitFor(ctrl, CTRL_READY, (v) => v === 4);
  signal(ctrl, CTRL_GO);
  const random = prng(seed);
  for (let i = 0; i < SECTIONS; i++) {
    const k = Math.floor(random() * NAMES);
    const section = async (): Promise<void> => {
      const v = counters[k]!;
      await new Promise((r) => setImmediate(r));
      counters[k] = v + 1;
    };
    if (broken) await section();
    else await locks.request(`hammer-${k}`, section);
  }
  await Promise.all(workers.map((w) => w.result));
  const counted = counters.reduce((a, b) => a + b, 0);
  return { expected: 5 * SECTIONS, counted };
}

describe('LockManager across threads', () => {
  test('exclusion: 4 workers and the main thread, 0 lost updates', async () => {
    const seed = seedFor('web-locks exclusion');
    const { expected, counted } = await hammer(false, seed);
    assert.equal(counted, expected, `${expected - counted} lost updates`);
  });

  test('negative control: the same hammer without the lock loses updates', async () => {
    const seed = seedFor('web-locks exclusion control');
    const { expected, counted } = await hammer(true, seed);
    console.log(`# without the lock: ${expected - counted} lost updates of ${expected}`);
    assert.ok(counted < expected, 'the harness must see lost updates without a lock');
  });

  test("query() in one thread lists another thread's holder and waiter", async () => {
    const table = new LockTable();
    const locks = new LockManager(table);
    const ctrl = control();
    const data = { buffer: table.buffer, ctrl: ctrl.buffer, name: 'shown' };
    const holder = start('hold', data);
    await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
    const waiter = start('wait', data);
    await waitFor(ctrl, CTRL_A, (v) => v === 1);
    const snapshot = await locks.query();
    assert.deepEqual(snapshot.held, [
      { name: 'shown', mode: 'exclusive', clientId: `thread-${holder.threadId}` },
    ]);
    assert.deepEqual(snapshot.pending, [
      { name: 'shown', mode: 'exclusive', clientId: `thread-${waiter.threadId}` },
    ]);
    signal(ctrl, CTRL_STOP);
    assert.deepEqual(await holder.result, {
      settled: 'released',
      held: false,
      threadId: holder.threadId,
    });
    assert.equal((await waiter.result).settled, 'granted');
    assert.deepEqual(await locks.query(), { held: [], pending: [] });
  });

  test('steal from a holder in another thread: its request rejects there with AbortError', async () => {
    const table = new LockTable();
    const locks = new LockManager(table);
    const ctrl = control();
    const holder = start('hold', { buffer: table.buffer, ctrl: ctrl.buffer, name: 'robbed' });
    await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
    const t0 = LockTable.now();
    const token = await locks.request('robbed', { steal: true }, (l) => l!.token);
    const outcome = await holder.result; // posted when the holder's request settled
    const ms = LockTable.now() - t0;
    console.log(`# the robbed thread's request rejected ${ms.toFixed(2)} ms after the steal began`);
    assert.deepEqual(outcome, {
      rejected: 'AbortError',
      code: 20,
      held: false,
      threadId: holder.threadId,
    });
    assert.ok(token > 1n);
    signal(ctrl, CTRL_STOP);
    await holder.exited;
  });

  test("a steal rings every thread's doorbell; a thread holding another name keeps its lock", async () => {
    const table = new LockTable();
    const locks = new LockManager(table);
    const [robbedCtrl, bystanderCtrl] = [control(), control()];
    const robbed = start('hold', { buffer: table.buffer, ctrl: robbedCtrl.buffer, name: 'taken' });
    const bystander = start('hold', {
      buffer: table.buffer,
      ctrl: bystanderCtrl.buffer,
      name: 'kept',
    });
    const ids = [robbed.threadId, bystander.threadId];
    await waitFor(robbedCtrl, CTRL_HELD, (v) => v === 1);
    await waitFor(bystanderCtrl, CTRL_HELD, (v) => v === 1);
    await locks.request('taken', { steal: true }, () => {});
    assert.equal((await robbed.result).rejected, 'AbortError');
    // The bystander's doorbell rang too; it checked its lock, found it held, and waits on.
    const names = (await locks.query()).held.map((h) => [h.name, h.clientId]);
    assert.deepEqual(names, [['kept', `thread-${ids[1]}`]]);
    signal(bystanderCtrl, CTRL_STOP);
    assert.deepEqual(await bystander.result, {
      settled: 'released',
      held: false,
      threadId: ids[1],
    });
    signal(robbedCtrl, CTRL_STOP);
    await Promise.all([robbed.exited, bystander.exited]);
  });

  // The robbed thread's event loop is blocked in its callback (Atomics.wait) from the grant until
  // the thief holds the lock and says so (CTRL_STOP): its callback then returns before its
  // heartbeat or doorbell can run, and only the release at settle can tell it the lock was lost.
  async function blocked(
    take: (locks: LockManager, stop: () => void) => Promise<unknown>,
    options: { failTimeout?: number; hold?: number } = {},
  ): Promise<Record<string, unknown>> {
    const table = new LockTable(
      options.failTimeout === undefined ? {} : { failTimeout: options.failTimeout },
    );
    const locks = new LockManager(table);
    const ctrl = control();
    const data = { buffer: table.buffer, ctrl: ctrl.buffer, name: 'blocked' };
    const holder = start(
      'block',
      options.hold === undefined ? data : { ...data, hold: options.hold },
    );
    const threadId = holder.threadId;
    await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
    await take(locks, () => signal(ctrl, CTRL_STOP));
    const outcome = await holder.result;
    await holder.exited;
    assert.deepEqual(await locks.query(), { held: [], pending: [] });
    assert.equal(outcome.threadId, threadId);
    return { ...outcome, threadId: undefined };
  }
  const robbed = { rejected: 'AbortError', code: 20, held: false, threadId: undefined };

  test('a holder robbed while its callback blocks the thread rejects with AbortError, never fulfils', async () => {
    const outcome = await blocked((locks, stop) =>
      locks.request('blocked', { steal: true }, () => stop()),
    );
    assert.deepEqual(outcome, robbed);
  });

  test('negative control: the same blocked holder, not robbed, fulfils', async () => {
    const outcome = await blocked(async (_locks, stop) => stop());
    assert.deepEqual(outcome, { settled: 'released', held: false, threadId: undefined });
  });

  test('a holder whose hold passed, reclaimed while its callback blocks the thread, rejects with AbortError', async () => {
    // Granted once the holder's hold (plus failTimeout) has passed and the table reclaims it.
    const outcome = await blocked((locks, stop) => locks.request('blocked', () => stop()), {
      failTimeout: 20,
      hold: 50,
    });
    assert.deepEqual(outcome, robbed);
  });

  for (const watched of [true, false]) {
    const how = watched ? 'with watch(): at once' : 'without watch(): through its lease';
    test(`a worker terminated while holding: its lock goes to the next waiter, ${how}`, async () => {
      const table = new LockTable({ failTimeout: 100 });
      const locks = new LockManager(table);
      const ctrl = control();
      const lease = 200;
      const holder = start('hold', {
        buffer: table.buffer,
        ctrl: ctrl.buffer,
        name: 'dies',
        lease,
      });
      if (watched) table.watch(holder.worker);
      await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
      const granted = locks.request('dies', () => LockTable.now());
      const queued = runQueueSince();
      const t0 = LockTable.now();
      await holder.worker.terminate();
      const at = await granted;
      const rq = queued();
      console.log(`# granted ${(at - t0).toFixed(1)} ms after the termination (${how})`);
      // With watch: the exit event frees it. Without: the lease (renewed every lease / 4 until the
      // thread died) runs out, then failTimeout. Judged beyond this thread's run-queue wait
      // (test/run-queue.ts): it is the one that frees, reclaims and is granted.
      assert.ok(
        at - t0 - rq < (watched ? 500 : lease + 100 + 1000),
        `${at - t0} ms (${rq.toFixed(1)} ms on a run queue)`,
      );
      assert.deepEqual(await locks.query(), { held: [], pending: [] });
    });

    test(`a worker terminated while waiting leaves query(), ${how}`, async () => {
      const table = new LockTable();
      const locks = new LockManager(table);
      const ctrl = control();
      let release!: () => void;
      const holding = locks.request('busy', () => new Promise<void>((r) => (release = r)));
      const waiter = start('wait', { buffer: table.buffer, ctrl: ctrl.buffer, name: 'busy' });
      if (watched) table.watch(waiter.worker);
      await waitFor(ctrl, CTRL_A, (v) => v === 1);
      const theirs = `thread-${waiter.threadId}`;
      assert.deepEqual((await locks.query()).pending, [
        { name: 'busy', mode: 'exclusive', clientId: theirs },
      ]);
      await waiter.worker.terminate();
      const queued = runQueueSince();
      const ms = await until('the dead waiter leaves query()', ENTRY_LEASE_MS + 2000, async () =>
        (await locks.query()).pending.every((p) => p.clientId !== theirs),
      );
      const rq = queued();
      console.log(`# the dead waiter left query() ${ms.toFixed(1)} ms after its exit (${how})`);
      // Judged beyond this thread's run-queue wait (test/run-queue.ts): it runs the exit event.
      if (watched) assert.ok(ms - rq < 100, `${ms} ms (${rq.toFixed(1)} ms on a run queue)`);
      // It holds nothing and blocks nobody: the next request after the holder is granted.
      release();
      await holding;
      assert.equal(await locks.request('busy', () => 'next'), 'next');
      assert.deepEqual(await locks.query(), { held: [], pending: [] });
    });
  }
});
