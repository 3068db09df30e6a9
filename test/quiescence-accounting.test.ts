/**
 * The quiescence test's own accounting (fixtures/quiescence-mix.ts), against the table: a worker
 * that the test terminates while it holds a finite permit keeps its "inside" mark until the main
 * thread runs its 'exit' listener, and the main thread's event loop may be blocked in its own sync
 * requests for far longer than hold + failTimeout. The table may then take the permit back and grant
 * it to a request whose lease is not `recovered` (here a claim that collects expired records; as
 * well a waiter's reclaim whose freed permit a newcomer takes first). Nobody counts `stale` (the
 * holder is dead), so the old check saw limit + 1 holders inside: the CI failure "q-0: worker 1
 * found 2 other permit holders inside ... recovered 0 ... stale 0". A worker seen waiting can be
 * that holder too: terminate() is not instant, and it can still take its grant and mark itself.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { threadId, Worker } from 'node:worker_threads';
import { LockTable } from '../src/index.js';
import { C_RECOVERED, C_STALE, createShared, P_MAIN, Views } from './fixtures/quiescence-mix.js';

const BOOT = new URL('./fixtures/boot.mjs', import.meta.url);
const HOLDER = new URL('./fixtures/permit-holder.ts', import.meta.url).href;
const FAIL_TIMEOUT = 20;

function holder(
  table: LockTable,
  views: Views,
  shared: ReturnType<typeof createShared>,
  p: number,
  keys: number[],
  hold: number,
): { worker: Worker; inside: Promise<void> } {
  views.resetSlot(p);
  const worker = new Worker(BOOT, {
    workerData: {
      fixture: HOLDER,
      buffer: table.buffer,
      shared,
      p,
      keys,
      limit: 2,
      hold,
      failTimeout: FAIL_TIMEOUT,
    },
  });
  // As the quiescence test: its marks go first, then watch() frees its permits.
  worker.once('exit', () => views.clearInside(p));
  table.watch(worker);
  const inside = new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    worker.once('error', reject);
  });
  return { worker, inside };
}

/** Blocks this thread, as the main thread's acquireSync and sleepSync do in the mix. */
function block(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** `rule` false: the check without its deadline rule (failTimeout Infinity: every mark holds). */
async function run(rule: boolean) {
  const table = new LockTable({
    capacity: 4,
    maxSharedHolders: 3,
    failTimeout: FAIL_TIMEOUT,
    maxKeyLength: 8,
  });
  const shared = createShared();
  const views = new Views(shared);
  // q-0 (2 permits): worker 0 holds one for 30 ms, worker 1 the other; worker 1 also holds one of
  // q-1, the last of the table's 3 shared-holder records.
  const dead = holder(table, views, shared, 0, [0], 30);
  const live = holder(table, views, shared, 1, [0, 1], Infinity);
  await Promise.all([dead.inside, live.inside]);
  try {
    const exited = dead.worker.terminate();
    // From here on the main thread does not return to its event loop: worker 0's 'exit' listener
    // waits, and with it the clearing of its mark.
    block(30 + FAIL_TIMEOUT + 10);
    // A permit of another key: no free record, so the claim collects worker 0's expired one (its
    // count comes off q-0). No lease of this is `recovered`.
    const other = table.semaphore('q-2', 2).tryAcquire();
    assert.ok(other !== null && !other.recovered);
    other.release();
    const permit = table.semaphore('q-0', 2).tryAcquire({ hold: 30 });
    assert.ok(permit !== null && !permit.recovered, 'the freed permit, not a recovered one');
    // The table kept its limit: worker 1 and this thread.
    const info = table.inspect('q-0');
    assert.deepEqual(
      info?.holders.map((h) => h.threadId).sort((a, b) => a - b),
      [threadId, live.worker.threadId],
    );
    views.enterPermit(P_MAIN, 0, 2, 1, permit.deadline, rule ? FAIL_TIMEOUT : Infinity);
    const seen = views.violationList();
    assert.equal(views.counter(C_RECOVERED) + views.counter(C_STALE), 0);
    assert.equal(views.expiredOn(0), false);
    permit.release();
    await exited;
    return seen;
  } finally {
    await live.worker.terminate();
  }
}

test('without the deadline rule, a dead holder of an expired permit still counts as inside (the old check)', async () => {
  const seen = await run(false);
  assert.deepEqual(seen, [{ p: P_MAIN, q: P_MAIN, key: 0, round: 1 }]);
});

test('a terminated holder past deadline + failTimeout does not count as inside', async () => {
  assert.deepEqual(await run(true), []);
});
