/**
 * Every way out of a request leaves nothing behind: once nobody holds or waits for a key, every
 * thread gets it at the first attempt, through every API (the quiescence guarantee, README). One
 * test per way out (DESIGN.md, "Every way out of a request", names them), each coordinated
 * through shared memory: a waiter is seen announced or asleep in the slot's own words before the
 * test moves on.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type Lease, LockError, LockTable } from '../src/index.js';

import { hashKey } from '../src/table/key.js';
import {
  offsets,
  S_SLEEPERS,
  S_STATE,
  SF_HANDOFF_UNTIL,
  SLOT_F64,
  SLOT_WORDS,
} from '../src/table/layout.js';
import {
  HANDOFF,
  READER_WAITING,
  STARVING,
  WAITING,
  WRITER_WAITING,
} from '../src/table/slot-state.js';
import { Puppet } from './puppets.js';
import { DIRECTORY, GRANTS, SLOTS } from '../src/table/internals.js';

// withLock runs its tasks from the built package (its worker file is JavaScript): `npm test`
// builds it first.
type Api = typeof import('../src/index.js');
const built = (await import(new URL('../dist/index.js', import.meta.url).href)) as Api;

const puppets: Puppet[] = [];
after(async () => {
  await Promise.all(puppets.map((p) => p.stop()));
});

function puppet(table: LockTable): Puppet {
  const p = new Puppet(table.buffer);
  puppets.push(p);
  return p;
}

function slotOf(table: LockTable, key: string): number {
  const slot = table[DIRECTORY].find(key, hashKey(key));
  assert.ok(slot >= 0, `${key} is bound`);
  return slot;
}

function word(table: LockTable, key: string): number {
  return Atomics.load(table[SLOTS], slotOf(table, key) * SLOT_WORDS + S_STATE);
}

function sleepers(table: LockTable, key: string): number {
  return Atomics.load(table[SLOTS], slotOf(table, key) * SLOT_WORDS + S_SLEEPERS);
}

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16)}`;
}

/** Waits (event loop free) until `ok()` holds: it reads shared memory that other threads write. */
async function until(ok: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!ok()) {
    if (performance.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Waits until `ok()` holds or `outcome` settles, whichever comes first; true if `ok()` was seen.
 * For a waiter with a waitTimeout: seen after it gave up, the state is gone (its marks withdrawn),
 * and this thread, descheduled for the whole wait, may never see it.
 */
async function seenBefore(ok: () => boolean, outcome: Promise<unknown>, what: string) {
  let settled = false;
  void outcome.then(() => (settled = true));
  let seen = false;
  await until(() => (seen = ok()) || settled, what);
  return seen;
}

/** A waiter of `key` that has announced `bits` and sleeps (so it is counted nowhere but there). */
async function untilAsleepWith(table: LockTable, key: string, bits: number): Promise<void> {
  await until(
    () =>
      (word(table, key) & bits) === bits &&
      (word(table, key) & WAITING) === 0 &&
      sleepers(table, key) > 0,
    `a waiter of ${key} sleeps with ${hex(bits)} announced (word ${hex(word(table, key))})`,
  );
}

/**
 * The quiescence guarantee for `key`, from this thread and from `other`: nobody holds it per
 * inspect() and held(), and every API gets it at the first attempt.
 */
async function assertFree(table: LockTable, key: string, other?: Puppet): Promise<void> {
  const state = () => `word ${hex(word(table, key))}, sleepers ${sleepers(table, key)}`;
  assert.equal(table.inspect(key), null, `inspect(${key}) is null (${state()})`);
  assert.ok(!table.held().some((info) => info.key === key), `held() has no ${key}`);
  const tries: [string, () => Lease | null][] = [
    ['tryAcquire', () => table.tryAcquire(key)],
    ['tryAcquire shared', () => table.tryAcquire(key, { mode: 'shared' })],
    ['acquireSync waitTimeout 0', () => table.acquireSync(key, { waitTimeout: 0 })],
    [
      'shared acquireSync waitTimeout 0',
      () => table.acquireSync(key, { mode: 'shared', waitTimeout: 0 }),
    ],
    ['acquireAllSync waitTimeout 0', () => table.acquireAllSync([key], { waitTimeout: 0 })[0]!],
  ];
  for (const [name, attempt] of tries) {
    let lease: Lease | null;
    try {
      lease = attempt();
    } catch (error) {
      assert.fail(`${name}(${key}) failed (${state()}): ${(error as Error).message}`);
    }
    assert.ok(lease !== null, `${name}(${key}) gets it at the first attempt (${state()})`);
    lease.release();
  }
  (await table.acquire(key, { waitTimeout: 0 })).release();
  (await table.acquireAll([key], { waitTimeout: 0 }))[0]!.release();
  if (other !== undefined) {
    const got = await other.do({ op: 'tryAcquire', key });
    assert.ok(got.ok, `another thread's tryAcquire(${key}) gets it (${state()}): ${got.code}`);
    assert.ok((await other.do({ op: 'release', lease: got.lease! })).ok);
  }
}

describe('a waiter that gives up takes its marks with it', () => {
  // Each waiter below gives up after its waitTimeout: this thread must see its announcement
  // before that, and one descheduled for the whole wait does not. Then set up again, at most 10
  // times (a machine that keeps this thread off the CPU that long every time fails the test).
  for (const kind of ['sync', 'async'] as const) {
    test(`an exclusive ${kind} waiter that times out after it starved`, async () => {
      for (let attempt = 1; ; attempt++) {
        const table = new LockTable({ capacity: 8 });
        const waiter = puppet(table);
        const other = puppet(table);
        const lease = table.acquireSync('k');
        const op = kind === 'sync' ? 'acquire' : 'acquireAsync';
        const gaveUp = waiter.do({ op, key: 'k', options: { waitTimeout: 300 } });
        // It starves (1 ms) long before its 300 ms are up: STARVING is announced, long enough
        // before it gives up that this thread sees it unless it is kept off the CPU throughout.
        const seen = await seenBefore(
          () => (word(table, 'k') & STARVING) !== 0,
          gaveUp,
          'the waiter starves',
        );
        assert.equal((await gaveUp).code, 'ERR_LOCK_TIMEOUT');
        lease.release();
        if (!seen) {
          assert.ok(attempt < 10, 'the waiter gave up unseen 10 times');
          continue;
        }
        await assertFree(table, 'k', other);
        return;
      }
    });
  }

  test('a shared waiter that times out', async () => {
    for (let attempt = 1; ; attempt++) {
      const table = new LockTable({ capacity: 8 });
      const waiter = puppet(table);
      const lease = table.acquireSync('k');
      const gaveUp = waiter.do({
        op: 'acquire',
        key: 'k',
        options: { mode: 'shared', waitTimeout: 250 },
      });
      const seen = await seenBefore(
        () => (word(table, 'k') & READER_WAITING) !== 0,
        gaveUp,
        'the reader announces itself',
      );
      assert.equal((await gaveUp).code, 'ERR_LOCK_TIMEOUT');
      lease.release();
      if (!seen) {
        assert.ok(attempt < 10, 'the reader gave up unseen 10 times');
        continue;
      }
      await assertFree(table, 'k', waiter);
      return;
    }
  });

  for (const mode of ['exclusive', 'shared'] as const) {
    test(`an ${mode} waiter aborted by its signal while it sleeps`, async () => {
      const table = new LockTable({ capacity: 8 });
      const waiter = puppet(table);
      const lease = table.acquireSync('k');
      const aborted = waiter.do({
        op: 'acquireAsync',
        key: 'k',
        abortable: true,
        options: { mode },
      });
      await untilAsleepWith(table, 'k', mode === 'shared' ? READER_WAITING : STARVING);
      assert.ok((await waiter.do({ op: 'abort' })).ok);
      assert.equal((await aborted).code, 'ABORT_ERR');
      lease.release();
      await assertFree(table, 'k', waiter);
    });
  }

  test('a writer that gives up on a shared group lets the next reader join at once', async () => {
    for (let attempt = 1; ; attempt++) {
      const table = new LockTable({ capacity: 8 });
      const writer = puppet(table);
      const first = table.acquireSync('k', { mode: 'shared' });
      const gaveUp = writer.do({ op: 'acquire', key: 'k', options: { waitTimeout: 250 } });
      const seen = await seenBefore(
        () => (word(table, 'k') & WRITER_WAITING) !== 0,
        gaveUp,
        'the writer announces itself',
      );
      assert.equal((await gaveUp).code, 'ERR_LOCK_TIMEOUT');
      if (!seen) {
        assert.ok(attempt < 10, 'the writer gave up unseen 10 times');
        first.release();
        continue;
      }
      const second = table.tryAcquire('k', { mode: 'shared' });
      assert.ok(second !== null, `a second reader joins (word ${hex(word(table, 'k'))})`);
      second.release();
      first.release();
      await assertFree(table, 'k', writer);
      return;
    }
  });

  test('a withLock call whose waitTimeout passes, and one whose signal aborts', async () => {
    const table = new built.LockTable({ capacity: 8 }) as unknown as LockTable;
    const withLock = built.withLock;
    const lease = table.acquireSync('k');
    await assert.rejects(
      withLock(table as never, 'k', () => 1, { waitTimeout: 20 }),
      {
        code: 'ERR_LOCK_TIMEOUT',
      },
    );
    const controller = new AbortController();
    const aborted = withLock(table as never, 'k', () => 1, {
      waitTimeout: 10_000,
      signal: controller.signal,
    });
    await until(
      () => (word(table, 'k') & STARVING) !== 0 && sleepers(table, 'k') > 0,
      'it sleeps, starving',
    );
    controller.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    lease.release();
    await assertFree(table, 'k');
  });
});

describe('a waiter whose thread is terminated takes its marks with it', () => {
  const cases = [
    { name: 'exclusive on exclusive', holder: 'exclusive', mode: 'exclusive', bits: STARVING },
    // A writer sleeps in 1 ms slices until it starves, then in SLEEP_SLICE_MS ones like a reader:
    // waiting for STARVING puts the termination in a long slice.
    {
      name: 'exclusive on shared',
      holder: 'shared',
      mode: 'exclusive',
      bits: WRITER_WAITING | STARVING,
    },
    { name: 'shared on exclusive', holder: 'exclusive', mode: 'shared', bits: READER_WAITING },
  ] as const;
  for (const c of cases) {
    test(`${c.name}: terminated asleep, the next release frees the key`, async () => {
      // A sleeper wakes at the end of each slice to look again; terminated in that look, it died
      // running (WAITING), which the spinner test below covers: then set up again, at most 10
      // times (a machine that always runs the look at the termination fails the test).
      for (let attempt = 1; ; attempt++) {
        const table = new LockTable({ capacity: 8 });
        const waiter = puppet(table);
        const lease = table.acquireSync('k', { mode: c.holder });
        void waiter.do({ op: 'acquire', key: 'k', options: { mode: c.mode } });
        await untilAsleepWith(table, 'k', c.bits);
        await waiter.stop();
        if ((word(table, 'k') & WAITING) !== 0) {
          assert.ok(attempt < 10, `the waiter died running 10 times (${hex(word(table, 'k'))})`);
          lease.release();
          continue;
        }
        lease.release();
        await assertFree(table, 'k');
        return;
      }
    });
  }

  test('terminated while it spins: its hand-off is anyone’s once the reservation lapses', async () => {
    let table: LockTable;
    let lease: Lease;
    // A long spin: it is running, with WAITING in the word, when it is terminated; unless this
    // thread was kept off the CPU until the spin (1 s) ended and the waiter went to sleep, which
    // the test above covers: then set up again, at most 10 times.
    for (let attempt = 1; ; attempt++) {
      table = new LockTable({ capacity: 8 });
      const waiter = puppet(table);
      lease = table.acquireSync('k');
      void waiter.do({ op: 'acquire', key: 'k', options: { spinDelay: 1000 } });
      await until(
        () => (word(table, 'k') & (STARVING | WAITING)) === (STARVING | WAITING),
        'the waiter starves, spinning',
      );
      await waiter.stop();
      if ((word(table, 'k') & WAITING) !== 0) break;
      assert.ok(attempt < 10, `the spinner died asleep 10 times (${hex(word(table, 'k'))})`);
      lease.release();
    }
    lease.release();
    const s = word(table, 'k');
    // A release does not judge the stamp (slot-state.ts, "Stale announcements"): it hands off to
    // the runner it saw, dead or not, and the reservation heals it.
    assert.ok((s & HANDOFF) !== 0, `the release hands off to the spinner it saw (${hex(s)})`);
    const geometry = {
      capacity: table.capacity,
      maxKeyLength: table.maxKeyLength,
      records: table[GRANTS].recordCount,
    };
    const slotF64 = new Float64Array(
      table.buffer,
      offsets(geometry).slotF64Offset,
      table.capacity * SLOT_F64,
    );
    const reservedUntil = slotF64[slotOf(table, 'k') * SLOT_F64 + SF_HANDOFF_UNTIL]!;
    await until(() => LockTable.now() >= reservedUntil, 'the reservation lapses');
    await assertFree(table, 'k');
  });

  test('with watch(), a dead writer’s announcement on a shared group goes at once', async () => {
    const table = new LockTable({ capacity: 8 });
    const writer = puppet(table);
    table.watch(writer.worker);
    const first = table.acquireSync('k', { mode: 'shared' });
    void writer.do({ op: 'acquire', key: 'k' });
    await untilAsleepWith(table, 'k', WRITER_WAITING);
    const exited = new Promise((resolve) => writer.worker.once('exit', resolve));
    await writer.stop();
    await exited;
    const second = table.tryAcquire('k', { mode: 'shared' });
    assert.ok(second !== null, `a second reader joins (word ${hex(word(table, 'k'))})`);
    second.release();
    first.release();
    await assertFree(table, 'k');
  });
});

describe('a waiter never waits for a key that is not its own', () => {
  test('an async waiter whose slot was evicted and bound to another key looks its key up again', async () => {
    const table = new LockTable({ capacity: 3 });
    const waiter = puppet(table);
    const c = table.acquireSync('C');
    const d = table.acquireSync('D');
    const a = table.acquireSync('A');
    const got = waiter.do({ op: 'acquireAsync', key: 'A', options: { waitTimeout: 60_000 } });
    await until(() => sleepers(table, 'A') > 0, 'the waiter sleeps on A’s slot');
    const aSlot = slotOf(table, 'A');
    const blocked = await waiter.block(); // its event loop is busy: the wake-up cannot run yet
    a.release();
    const b = table.acquireSync('B'); // evicts A's slot and binds it to B
    assert.equal(slotOf(table, 'B'), aSlot, 'B took A’s old slot');
    d.release();
    waiter.unblock();
    await blocked.reply;
    const reply = await got;
    assert.ok(reply.ok, `the waiter gets A (not B's holder's turn): ${reply.code}`);
    assert.equal(table.inspect('A')?.holders[0]?.threadId, waiter.threadId);
    assert.ok((await waiter.do({ op: 'release', lease: reply.lease! })).ok);
    b.release();
    c.release();
    await assertFree(table, 'A', waiter);
  });

  test('acquireAll holding K1 while its K2 slot is rebound does not deadlock', async () => {
    const table = new LockTable({ capacity: 3 });
    const waiter = puppet(table);
    const k2 = table.acquireSync('K2');
    const c = table.acquireSync('C');
    const all = waiter.do({
      op: 'acquireAll',
      keys: ['K1', 'K2'],
      options: { waitTimeout: 60_000 },
    });
    await until(
      () => table.inspect('K1') !== null && sleepers(table, 'K2') > 0,
      'it holds K1, sleeps on K2',
    );
    const blocked = await waiter.block();
    k2.release();
    const b = table.acquireSync('B'); // K2's slot, now bound to B
    c.release();
    const k1 = table.acquire('K1', { waitTimeout: 60_000 });
    waiter.unblock();
    await blocked.reply;
    const reply = await all;
    assert.ok(reply.ok, `acquireAll completes: ${reply.code}`);
    for (const lease of reply.leases!) assert.ok((await waiter.do({ op: 'release', lease })).ok);
    (await k1).release();
    b.release();
    await assertFree(table, 'K1', waiter);
    await assertFree(table, 'K2', waiter);
  });
});

test('recursion is per thread: a second handle of the same thread is refused, not deadlocked', () => {
  const table = new LockTable({ capacity: 8 });
  const other = LockTable.attach(table.buffer);
  const shared = table.acquireSync('k', { mode: 'shared' });
  assert.throws(
    () => other.acquireSync('k'),
    (error: unknown) => error instanceof LockError && error.code === 'ERR_LOCK_RECURSION',
  );
  const exclusive = LockTable.attach(table.buffer);
  shared.release();
  const held = exclusive.acquireSync('k');
  assert.throws(() => other.acquireSync('k', { mode: 'shared' }), { code: 'ERR_LOCK_RECURSION' });
  held.release();
  assert.equal(table.inspect('k'), null);
});
