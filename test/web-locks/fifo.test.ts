/**
 * Grant order across threads: locktable's LockManager grants a name's requests in request order
 * across every thread attached to the table, by the Web Locks "grantable" rule (an exclusive
 * request waits for every earlier request; a shared one for earlier exclusive ones), with a
 * negative control (the same requests with the order switched off in the workers:
 * testHooks.unordered) that sees a grant out of order; ifAvailable and steal against another
 * thread's queued request; a worker terminated while queued, with watch() and without; and, on
 * Node >= 24.5, the same orders through Node's own worker_threads.locks. Real worker threads, coordinated through shared memory: each worker makes
 * its request once the request before it was made (and is listed in query().pending), never by
 * sleeping.
 */
import assert from 'node:assert/strict';
import * as workerThreads from 'node:worker_threads';
import { describe, test } from 'node:test';
import { LockTable } from '../../src/index.js';
import { LockManager } from '../../src/web-locks/index.js';
import { ENTRY_LEASE_MS } from '../../src/table/entries.js';
import { CTRL_A, CTRL_B, control, waitFor } from '../harness.js';
import { start, type Started } from './workers.js';

type Mode = 'exclusive' | 'shared';

/** Node's own Web Locks (Node >= 24.5), process-wide: FIFO per name across threads. */
const builtin = (workerThreads as { locks?: Pick<LockManager, 'request' | 'query'> }).locks;
let unique = 0;

/**
 * A table whose main thread holds `name` (in `mode`) until `release()`, and workers whose requests
 * for it wait behind, one per entry of `watched` (watch()ed or not), each started once the one
 * before it has registered its request.
 */
async function queuedBehind(name: string, mode: Mode, watched: boolean[]) {
  const table = new LockTable();
  const locks = new LockManager(table);
  let release!: () => void;
  const holding = locks.request(name, { mode }, () => new Promise<void>((r) => (release = r)));
  const waiters = [];
  for (const watch of watched) {
    const ctrl = control();
    const waiter = start('wait', { buffer: table.buffer, ctrl: ctrl.buffer, name });
    if (watch) table.watch(waiter.worker);
    await waitFor(ctrl, CTRL_A, (v) => v === 1);
    waiters.push(waiter);
  }
  return { locks, holding, release: () => release(), waiters };
}

/**
 * The main thread holds `name` in `first` mode; then one worker per entry of `modes` requests it,
 * in that order (each once the one before it has requested), while the main thread still holds;
 * then the main thread releases. Returns the order of the grants (worker indexes) and what
 * query().pending listed before the release. Consecutive shared requests form a group whose
 * callbacks each hold until the whole group holds.
 */
async function grantOrder(
  first: Mode,
  modes: Mode[],
  how: { unordered?: boolean; builtin?: boolean } = {},
): Promise<{ order: number[]; pending: string[]; clientIds: string[] }> {
  const table = new LockTable();
  const locks = how.builtin === true ? builtin! : new LockManager(table);
  const name = `fifo#${unique++}`;
  const ctrl = control();
  const order = new Int32Array(new SharedArrayBuffer(4 * modes.length)).fill(-1);
  const groups = new Int32Array(new SharedArrayBuffer(4 * modes.length));
  // Group of each request: a run of consecutive shared requests shares one.
  const groupOf: number[] = [];
  const sizes: number[] = [];
  modes.forEach((mode, i) => {
    const g = i > 0 && mode === 'shared' && modes[i - 1] === 'shared' ? groupOf[i - 1]! : i;
    groupOf.push(g);
    sizes[g] = (sizes[g] ?? 0) + 1;
  });
  let release!: () => void;
  const holding = locks.request(
    name,
    { mode: first },
    () => new Promise<void>((r) => (release = r)),
  );
  await new Promise((r) => setImmediate(r));
  const workers = modes.map((mode, index) =>
    start('fifo', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      order: order.buffer,
      groups: groups.buffer,
      group: groupOf[index],
      groupSize: sizes[groupOf[index]!],
      name,
      index,
      mode,
      ...how,
    }),
  );
  const clientIds = workers.map((w) => `thread-${w.threadId}`);
  await waitFor(ctrl, CTRL_A, (v) => v === modes.length);
  // Node's own query() lists the calling thread's requests only.
  const listed = how.builtin === true ? [] : (await locks.query()).pending;
  const pending = listed.map((p) => `${p.clientId} ${p.mode}`);
  release();
  await holding;
  await Promise.all(workers.map((w) => w.result));
  assert.equal(Atomics.load(ctrl, CTRL_B), modes.length, 'every request was granted');
  if (how.builtin !== true) assert.deepEqual(await locks.query(), { held: [], pending: [] });
  return { order: [...order], pending, clientIds };
}

/** The order with each run of shared requests (granted together, in any order) sorted. */
function groupsSorted(order: number[], modes: Mode[]): number[] {
  const out = [...order];
  for (let i = 0; i < out.length;) {
    let j = i + 1;
    while (j < out.length && modes[out[i]!] === 'shared' && modes[out[j]!] === 'shared') j++;
    out.splice(i, j - i, ...out.slice(i, j).sort((a, b) => a - b));
    i = j;
  }
  return out;
}

describe('LockManager grant order across threads', () => {
  test('exclusive requests of 4 workers are granted in request order', async () => {
    const modes: Mode[] = ['exclusive', 'exclusive', 'exclusive', 'exclusive'];
    const { order, pending, clientIds } = await grantOrder('exclusive', modes);
    assert.deepEqual(
      pending,
      clientIds.map((c) => `${c} exclusive`),
      'query() listed every request, in request order',
    );
    assert.deepEqual(order, [0, 1, 2, 3]);
  });

  const mixed: Mode[] = ['exclusive', 'shared', 'shared', 'exclusive', 'shared'];

  test('mixed: a shared request waits for an earlier exclusive one; consecutive shared ones are held together', async () => {
    // The main thread holds shared: the shared requests 1 and 2 could be granted at once, but the
    // exclusive request 0 is before them.
    const { order, pending, clientIds } = await grantOrder('shared', mixed);
    assert.deepEqual(
      pending,
      clientIds.map((c, i) => `${c} ${mixed[i]}`),
    );
    // 0; then 1 and 2 together (each held until both held); then 3; then 4.
    assert.deepEqual(groupsSorted(order, mixed), [0, 1, 2, 3, 4], `order ${order.join(',')}`);
  });

  test('negative control: the same requests without the cross-thread order are granted out of order', async () => {
    const { order } = await grantOrder('shared', mixed, { unordered: true });
    // Without the order, the shared requests 1, 2 and 4 join the main thread's shared lock at once,
    // before the exclusive request 0.
    assert.notDeepEqual(groupsSorted(order, mixed), [0, 1, 2, 3, 4], `order ${order.join(',')}`);
    assert.notEqual(order[0], 0, `order ${order.join(',')}`);
  });

  test("ifAvailable is null while another thread's earlier request waits, even if the table would grant it", async () => {
    const name = 'available';
    const { locks, holding, release, waiters } = await queuedBehind(name, 'shared', [false]);
    const waiter = waiters[0]!;
    // Held shared, so the table would grant a shared request; the exclusive one waits before it.
    const got = await locks.request(name, { mode: 'shared', ifAvailable: true }, (l) => l);
    assert.equal(got, null);
    release();
    await holding;
    assert.equal((await waiter.result).settled, 'granted');
    assert.notEqual(await locks.request(name, { ifAvailable: true }, (l) => l), null);
  });

  test("steal goes ahead of another thread's queued request, which is granted after it", async () => {
    const name = 'stolen';
    const queued = await queuedBehind(name, 'exclusive', [false]);
    const { locks, holding: robbed, release } = queued;
    const waiter = queued.waiters[0]!;
    let waiterGranted = false;
    void waiter.result.then(() => (waiterGranted = true));
    const stole = await locks.request(name, { steal: true }, async () => {
      // Granted at once, ahead of the queued request (still listed, not granted).
      const pending = (await locks.query()).pending.map((p) => p.clientId);
      return { pending, waiterGranted };
    });
    assert.deepEqual(stole, { pending: [`thread-${waiter.threadId}`], waiterGranted: false });
    await assert.rejects(robbed, { name: 'AbortError' });
    release();
    assert.equal((await waiter.result).settled, 'granted');
    assert.deepEqual(await locks.query(), { held: [], pending: [] });
  });

  // The same two orders through Node's own, where it exists (npm run test:web-locks:node24).
  const node = `Node ${process.version} worker_threads.locks`;
  const skip = builtin === undefined ? `absent on Node ${process.version}` : false;
  test(`${node}: the same exclusive requests, in request order`, { skip }, async () => {
    const modes: Mode[] = ['exclusive', 'exclusive', 'exclusive', 'exclusive'];
    assert.deepEqual((await grantOrder('exclusive', modes, { builtin: true })).order, [0, 1, 2, 3]);
  });
  // Measured on Node 24.21.0: a shared request of another thread can join the held shared locks
  // ahead of an earlier exclusive one (out of order in 6 of 12 runs: 0,1,4,2,3; 0,4,2,1,3 (3 times);
  // 0,2,4,1,3; 0,4,1,2,3), which the same requests in one thread do not
  // (test/web-locks/conformance.ts passes for it). Run as a todo, so that it is listed in every run.
  const differs =
    'Node can grant a shared request of another thread ahead of an earlier queued exclusive one';
  test(
    `${node}: the same mixed requests, by the same rule`,
    skip === false ? { todo: differs } : { skip },
    async () => {
      const { order } = await grantOrder('shared', mixed, { builtin: true });
      assert.deepEqual(groupsSorted(order, mixed), [0, 1, 2, 3, 4], `order ${order.join(',')}`);
    },
  );

  for (const watched of [true, false]) {
    const how = watched ? 'with watch(): at once' : 'without watch(): within its entry lease';
    test(`a worker terminated while queued no longer holds back the requests after it, ${how}`, async () => {
      const { locks, holding, release, waiters } = await queuedBehind('queued', 'exclusive', [
        watched,
        false,
      ]);
      const [dead, next] = waiters as [Started, Started];
      assert.deepEqual(
        (await locks.query()).pending.map((p) => p.clientId),
        [`thread-${dead.threadId}`, `thread-${next.threadId}`],
      );
      const t0 = LockTable.now();
      await dead.worker.terminate();
      // The lock comes free only now: the request after the dead one is granted once the dead
      // one's entry is gone (watch: freed at its exit; else its stamp lapses, ENTRY_LEASE_MS after
      // its last refresh, and the next request looks again at least every ENTRY_REFRESH_MS).
      release();
      await holding;
      let granted = false;
      void next.result.then(() => (granted = true));
      // Until the next request is granted, look: once it was (its message came after its grant),
      // the dead request's entry must be gone (an entry, once gone, never comes back). No bound
      // in time is assumed here; only the order of the two.
      const deadId = `thread-${dead.threadId}`;
      for (let looks = 0; ; looks++) {
        const wasGranted = granted;
        const listed = (await locks.query()).pending.some((p) => p.clientId === deadId);
        assert.ok(!(wasGranted && listed), `granted while the dead request was listed (${looks})`);
        if (wasGranted) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      const result = await next.result;
      const ms = LockTable.now() - t0;
      console.log(
        `# the next request was granted ${ms.toFixed(1)} ms after the termination (${how})`,
      );
      assert.equal(result.settled, 'granted');
      assert.ok(ms < (watched ? 500 : ENTRY_LEASE_MS + 1000), `${ms} ms`);
      assert.deepEqual(await locks.query(), { held: [], pending: [] });
    });
  }
});
