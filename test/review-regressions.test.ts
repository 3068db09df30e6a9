/**
 * Regressions for the races found in review (DESIGN.md). Each test stops a real worker thread at a
 * precise point of the core (src/table/test-hooks.ts) and interleaves other threads around it, through
 * shared memory and messages, so the race happens every run rather than once in a while. Each one
 * failed on the code before its fix (the commit that adds it says how).
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { type LockError, LockTable } from '../src/index.js';
import { hashKey } from '../src/table/key.js';
import { bindingOf, REVOKED_STUCK_MS, revokedOf } from '../src/table/directory.js';
import {
  createViews,
  H_BIND_LOCK,
  HEADER_F64,
  HEADER_WORDS,
  HF_BIND_LOCK_DEADLINE,
  H_REVOKED_AT,
  S_BIND,
  S_SLEEPERS,
  S_STATE,
  SF_ANNOUNCED_AT,
  SLOT_F64,
  SLOT_WORDS,
} from '../src/table/layout.js';
import {
  EXCLUSIVE,
  HANDOFF,
  HANDOFF_PATIENCE_MS,
  PARKED,
  SLEEP_SLICE_MS,
  STARVING,
  WAITING,
  WRITER_WAITING,
} from '../src/table/slot-state.js';
import { testHooks } from '../src/table/test-hooks.js';
import { waitFor } from './harness.js';
import { Puppet } from './puppets.js';
import { DIRECTORY, GRANTS, HEADER, SLOTS } from '../src/table/internals.js';
import { FACADE } from '../src/table/lock-table.js';

const puppets: Puppet[] = [];
function puppet(table: LockTable): Puppet {
  const p = new Puppet(table.buffer);
  puppets.push(p);
  return p;
}
afterEach(async () => {
  await Promise.all(puppets.splice(0).map((p) => p.stop()));
});

function slotOf(table: LockTable, key: string): number {
  const slot = table[DIRECTORY].find(key, hashKey(key));
  assert.ok(slot >= 0, `${key} is not bound`);
  return slot;
}

describe('review regressions: exclusive deadlines and tokens', () => {
  test('a holder that extends while a waiter watches is never reclaimed (no parity ABA)', async () => {
    const failTimeout = 300;
    const table = new LockTable({ capacity: 4, failTimeout });
    const holder = puppet(table);
    const waiter = puppet(table);
    const h = await holder.do({ op: 'acquire', key: 'k', options: { hold: 60_000 } });
    assert.ok(h.ok);
    const base = slotOf(table, 'k') * SLOT_WORDS;
    // The flags a waiter adds (announcement, starvation, parked) are set beforehand, so that the
    // word the waiter sees does not change when it announces itself or sleeps.
    Atomics.or(table[SLOTS], base + S_STATE, WAITING | WRITER_WAITING | STARVING | PARKED);
    // 1. The holder stops inside an extend.
    let extend = (
      await holder.stallAt('extend:published', {
        op: 'extend',
        lease: h.lease,
        ms: 60_000,
      })
    ).reply;
    // 2. A waiter looks at the word while it is stopped there, then sleeps.
    const waited = waiter.do({
      op: 'acquire',
      key: 'k',
      options: { waitTimeout: 1500, spinDelay: 0 },
    });
    await waitFor(table[SLOTS], base + S_SLEEPERS, (v) => v > 0);
    // 3. The holder finishes, extends again, and stops inside a third extend: with a one-bit
    //    parity, the word is the one the waiter saw in step 2.
    holder.resume();
    assert.ok((await extend).ok);
    assert.ok((await holder.do({ op: 'extend', lease: h.lease, ms: 60_000 })).ok);
    extend = (
      await holder.stallAt('extend:published', { op: 'extend', lease: h.lease, ms: 60_000 })
    ).reply;
    // 4. The waiter wakes failTimeout after its first look: its holder is 60 s from its deadline.
    const w = await waited;
    holder.resume();
    assert.ok((await extend).ok);
    assert.equal(
      w.code,
      'ERR_LOCK_TIMEOUT',
      `the waiter reclaimed a live holder: ${JSON.stringify(w)}`,
    );
    assert.equal((await holder.do({ op: 'held', lease: h.lease })).held, true);
  });

  test('a holder stopped inside its grant window is not reclaimed (so its token is not issued twice)', async () => {
    const table = new LockTable({ capacity: 4, failTimeout: 50 });
    const holder = puppet(table);
    const waiter = puppet(table);
    const granted = (
      await holder.stallAt('grant:window', {
        op: 'acquire',
        key: 't',
        options: { hold: 60_000 },
      })
    ).reply;
    const w = await waiter.do({ op: 'acquire', key: 't', options: { waitTimeout: 400 } });
    holder.resume();
    const h = await granted;
    assert.ok(h.ok);
    if (w.ok) assert.notEqual(w.token, h.token, `token ${h.token} was issued twice`);
    assert.equal(
      w.code,
      'ERR_LOCK_TIMEOUT',
      `the waiter reclaimed a live holder: ${JSON.stringify(w)}`,
    );
    assert.equal((await holder.do({ op: 'held', lease: h.lease })).held, true);
  });
});

describe('review regressions: a holder terminated while it writes its deadline', () => {
  // worker.terminate() stops a thread at the entry of its next call, Atomics.store included. The
  // cell was once written by that Atomics.store alone: a holder terminated there left a cell that
  // never named it, so its grant stayed "in its window" (never reclaimed) and the key was held
  // for good (terminations.test.ts caught it once in 5 runs). The cell is now first written with
  // a plain store, pending, and a waiter reclaims by its deadline. The stall point sits between
  // the two stores; terminating the puppet there is terminating it at the Atomics call, and at
  // the entry of #publishCell itself: the pending store is made inline before that call (made
  // inside it, a holder terminated at its entry left no cell, and these tests time out).
  test('a grant: a waiter reclaims it after its deadline plus failTimeout', async () => {
    const failTimeout = 30;
    const table = new LockTable({ capacity: 4, failTimeout });
    const holder = puppet(table);
    await holder.stallAt('cell:pending', { op: 'acquire', key: 'd', options: { hold: 100 } });
    await holder.worker.terminate();
    const info = table.inspect('d');
    assert.ok(info !== null && info.holders.length === 1, 'the dead holder is not listed');
    const deadline = info.holders[0]!.deadline;
    assert.ok(Number.isFinite(deadline), 'the dead holder left no deadline');
    const lease = table.acquireSync('d', { waitTimeout: 5000 });
    assert.ok(LockTable.now() >= deadline + failTimeout, 'reclaimed before deadline + failTimeout');
    assert.equal(lease.recovered, true);
    lease.release();
    assert.equal(table.inspect('d'), null);
  });

  test('an extend: a waiter reclaims it after the new deadline plus failTimeout', async () => {
    const failTimeout = 30;
    const table = new LockTable({ capacity: 4, failTimeout });
    const holder = puppet(table);
    const h = await holder.do({ op: 'acquire', key: 'e', options: { hold: 60_000 } });
    assert.ok(h.ok);
    await holder.stallAt('cell:pending', { op: 'extend', lease: h.lease, ms: 100 });
    await holder.worker.terminate();
    const deadline = table.inspect('e')!.holders[0]!.deadline;
    assert.ok(deadline < LockTable.now() + 200, `the cell kept the old deadline (${deadline})`);
    const lease = table.acquireSync('e', { waitTimeout: 5000 });
    assert.ok(LockTable.now() >= deadline + failTimeout, 'reclaimed before deadline + failTimeout');
    assert.equal(lease.recovered, true);
    lease.release();
  });

  test('a steal takes a pending cell only once its deadline is past', async () => {
    // A steal (failTimeout -2^52) takes a published cell at once, but a pending one only once its
    // deadline is past: the token it must exceed is ordered only by the publishing store.
    const table = new LockTable({ capacity: 4, failTimeout: 30 });
    const holder = puppet(table);
    await holder.stallAt('cell:pending', { op: 'acquire', key: 's', options: { hold: 200 } });
    await holder.worker.terminate();
    const deadline = table.inspect('s')!.holders[0]!.deadline;
    const lease = await table[FACADE]().steal('s', { waitTimeout: 5000 });
    assert.ok(LockTable.now() >= deadline, 'a pending cell was stolen before its deadline');
    lease.release();
    // A published cell is stolen at once (long before its deadline).
    const live = puppet(table);
    const h = await live.do({ op: 'acquire', key: 's', options: { hold: 60_000 } });
    assert.ok(h.ok);
    const stolen = await table[FACADE]().steal('s', { waitTimeout: 5000 });
    assert.ok(stolen.token > BigInt(h.token!), 'the thief did not pass the robbed token');
    stolen.release();
  });
});

describe('review regressions: a reclaim takes only the grant it judged', () => {
  test('a reclaim judged on a deadline that was then extended hands the slot back', async () => {
    const table = new LockTable({ capacity: 4, failTimeout: 20 });
    const holder = puppet(table);
    const waiter = puppet(table);
    const h = await holder.do({ op: 'acquire', key: 'x', options: { hold: 40 } });
    assert.ok(h.ok);
    // The waiter finds the deadline passed (plus failTimeout) and stops before its CAS.
    const waited = (
      await waiter.stallAt('reclaim:judged', {
        op: 'acquire',
        key: 'x',
        options: { waitTimeout: 400 },
      })
    ).reply;
    // The holder extends twice: the state word is the one the waiter judged.
    assert.ok((await holder.do({ op: 'extend', lease: h.lease, ms: 60_000 })).ok);
    assert.ok((await holder.do({ op: 'extend', lease: h.lease, ms: 60_000 })).ok);
    waiter.resume();
    const w = await waited;
    assert.equal(
      w.code,
      'ERR_LOCK_TIMEOUT',
      `the waiter took an extended grant: ${JSON.stringify(w)}`,
    );
    assert.equal((await holder.do({ op: 'held', lease: h.lease })).held, true);
    assert.ok((await holder.do({ op: 'release', lease: h.lease })).ok);
  });

  test('a holder can release a grant that a reclaim has marked and is still checking', async () => {
    const table = new LockTable({ capacity: 4, failTimeout: 20 });
    const holder = puppet(table);
    const waiter = puppet(table);
    const h = await holder.do({ op: 'acquire', key: 'y', options: { hold: 40 } });
    // The waiter finds the grant expired, marks it RECLAIMING and stops before checking it.
    const waited = (
      await waiter.stallAt('reclaim:marked', {
        op: 'acquire',
        key: 'y',
        options: { waitTimeout: 5000 },
      })
    ).reply;
    // The mark does not stop the holder; its release drops it, and the reclaim then fails.
    assert.ok((await holder.do({ op: 'release', lease: h.lease })).ok);
    waiter.resume();
    const w = await waited;
    assert.ok(w.ok);
    assert.equal(w.recovered, false, 'the waiter got the lock from the release, not by reclaim');
  });

  test('a holder that extends a marked grant keeps it', async () => {
    const table = new LockTable({ capacity: 4, failTimeout: 20 });
    const holder = puppet(table);
    const waiter = puppet(table);
    const h = await holder.do({ op: 'acquire', key: 'z', options: { hold: 40 } });
    const waited = (
      await waiter.stallAt('reclaim:marked', {
        op: 'acquire',
        key: 'z',
        options: { waitTimeout: 400 },
      })
    ).reply;
    assert.ok((await holder.do({ op: 'extend', lease: h.lease, ms: 60_000 })).ok);
    waiter.resume();
    assert.equal((await waited).code, 'ERR_LOCK_TIMEOUT');
    assert.equal((await holder.do({ op: 'held', lease: h.lease })).held, true);
  });
});

describe('review regressions: shared holders', () => {
  test("a stale shared lease's release cannot free a newer reader's record", async () => {
    const table = new LockTable({ capacity: 4, failTimeout: 20 });
    const reader = puppet(table);
    const r = await reader.do({ op: 'acquire', key: 's', options: { mode: 'shared', hold: 30 } });
    assert.ok(r.ok);
    // The reader checks its record, then stops before acting on it...
    const release = (
      await reader.stallAt('releaseShared:checked', {
        op: 'release',
        lease: r.lease,
      })
    ).reply;
    // ...its deadline passes, a waiter reclaims the group and lets go, and a new reader (this
    // thread) takes the first free record: the stale lease's record.
    const w = table.acquireSync('s', { waitTimeout: 5000 });
    assert.equal(w.recovered, true);
    w.release();
    const fresh = table.acquireSync('s', { mode: 'shared', hold: 60_000 });
    reader.resume();
    assert.equal((await release).code, 'ERR_LOCK_STALE');
    assert.equal(fresh.held, true, "the stale release freed the new reader's record");
    assert.equal(table.tryAcquire('s'), null, 'an exclusive grant overlapped a shared holder');
    fresh.release();
  });

  test("a stale shared lease's extend cannot change a newer reader's deadline", async () => {
    const table = new LockTable({ capacity: 4, failTimeout: 20 });
    const reader = puppet(table);
    const r = await reader.do({ op: 'acquire', key: 'e', options: { mode: 'shared', hold: 30 } });
    assert.ok(r.ok);
    const extend = (
      await reader.stallAt('extendShared:checked', { op: 'extend', lease: r.lease, ms: 1 })
    ).reply;
    const w = table.acquireSync('e', { waitTimeout: 5000 });
    assert.equal(w.recovered, true);
    w.release();
    const fresh = table.acquireSync('e', { mode: 'shared', hold: 60_000 });
    reader.resume();
    assert.equal((await extend).code, 'ERR_LOCK_STALE');
    assert.equal(table.inspect('e')!.holders[0]!.deadline, fresh.deadline);
    fresh.release();
  });

  test('a reader stopped between giving up its record and dropping its count is not reclaimed', async () => {
    const table = new LockTable({ capacity: 4, failTimeout: 20 });
    const reader = puppet(table);
    const waiter = puppet(table);
    const r = await reader.do({
      op: 'acquire',
      key: 'g',
      options: { mode: 'shared', hold: 60_000 },
    });
    assert.ok(r.ok);
    const release = (
      await reader.stallAt('releaseShared:releasing', {
        op: 'release',
        lease: r.lease,
      })
    ).reply;
    const w = await waiter.do({ op: 'acquire', key: 'g', options: { waitTimeout: 300 } });
    if (w.ok) assert.ok((await waiter.do({ op: 'release', lease: w.lease })).ok);
    // A new shared group (this thread); then the stopped reader takes its count off.
    const fresh = table.acquireSync('g', { mode: 'shared', hold: 60_000 });
    reader.resume();
    assert.ok((await release).ok);
    assert.equal(table.tryAcquire('g'), null, 'an exclusive grant overlapped a shared holder');
    assert.equal(
      w.code,
      'ERR_LOCK_TIMEOUT',
      `the waiter reclaimed a live reader: ${JSON.stringify(w)}`,
    );
    fresh.release();
  });
});

describe('review regressions: forced release', () => {
  test("a forced release does not take over a dead holder's record from the waiter already taking it over", async () => {
    // The record of a lease that a waiter takes over (RELEASING by the waiter) still names its
    // dead holder: releaseAllOwnedBy (watch's 'exit' listener, which may run long after the holder
    // died) took it over a second time, and each took one count off the group.
    const failTimeout = 20;
    const table = new LockTable({ capacity: 4, failTimeout });
    const dead = puppet(table);
    const live = puppet(table);
    const waiter = puppet(table);
    const d = await dead.do({ op: 'permit', key: 's', limit: 2, options: { hold: 1 } });
    const h = await live.do({ op: 'permit', key: 's', limit: 2, options: { hold: 60_000 } });
    assert.ok(d.ok && h.ok);
    await dead.stop(); // not watched: its permit comes back by a reclaim, or by releaseAllOwnedBy
    const deadId = d.threadId;
    await new Promise((resolve) => setTimeout(resolve, 1 + failTimeout + 20));
    // The waiter reclaims the dead holder's expired permit: stopped with its count off the word
    // and the record not yet FREE.
    const w = (
      await waiter.stallAt('dropCount:dropped', {
        op: 'permit',
        key: 's',
        limit: 2,
        options: { hold: 60_000, waitTimeout: 2000 },
      })
    ).reply;
    // Now the dead holder's 'exit' listener.
    table.releaseAllOwnedBy(deadId);
    waiter.resume();
    const granted = await w;
    assert.ok(granted.ok && granted.recovered, JSON.stringify(granted));
    // Two permits held (the live holder's and the waiter's): no third.
    const third = table.semaphore('s', 2).tryAcquire();
    const holders = table.inspect('s')?.holders.length;
    third?.release();
    assert.equal(third, null, `a third permit of 2 (the group's count went below its holders)`);
    assert.equal(holders, 2);
  });

  test('a forced release leaves alone a record that a live thread has just claimed', async () => {
    // A claim is a CAS on the record's word (FREE -> CLAIMED), then plain stores of its slot and
    // owner: until they land, the record still names its last holder. releaseAllOwnedBy(dead)
    // freed a CLAIMED record naming the dead thread, although a live thread had claimed it; the
    // record went to the next claimer, and the live thread's stores then wrote its slot and owner
    // over the new lease's record (a lease that was never held, and a count that no record backs).
    const table = new LockTable({ capacity: 4, maxSharedHolders: 2 });
    const dead = puppet(table);
    const claimer = puppet(table);
    // The dead thread's last record: the first one, free now, its owner still the dead thread.
    const d = await dead.do({ op: 'acquire', key: 'a', options: { mode: 'shared' } });
    assert.ok(d.ok);
    assert.ok((await dead.do({ op: 'release', lease: d.lease })).ok);
    await dead.stop();
    // The claimer takes that record and stops before its stores.
    const claimed = (
      await claimer.stallAt('record:claimed', {
        op: 'acquire',
        key: 'a',
        options: { mode: 'shared' },
      })
    ).reply;
    // The dead thread's 'exit' listener, then a shared grant of this thread on another key.
    table.releaseAllOwnedBy(d.threadId);
    const mine = table.acquireSync('b', { mode: 'shared' });
    claimer.resume();
    const c = await claimed;
    assert.ok(c.ok, JSON.stringify(c));
    assert.equal(mine.held, true, "this thread's lease lost its record to the claimer's stores");
    assert.deepEqual(
      table.inspect('b')?.holders.map((h) => h.threadId),
      [table[GRANTS].threadId],
    );
    mine.release();
    assert.ok((await claimer.do({ op: 'release', lease: c.lease })).ok);
    assert.equal(table.inspect('a'), null);
    assert.equal(table.inspect('b'), null);
    table.acquireSync('b').release();
  });
});

describe('review regressions: binding mutex', () => {
  test('the binding mutex is not stolen on the previous holder’s deadline', async () => {
    const table = new LockTable({ capacity: 8 });
    table.acquireSync('earlier').release();
    // The earlier binder's deadline is long past (white-box: no need to wait 100 ms).
    const headerF64 = new Float64Array(table.buffer, HEADER_WORDS * 4, HEADER_F64);
    headerF64[HF_BIND_LOCK_DEADLINE] = 0;
    const binder = puppet(table);
    const bound = (await binder.stallAt('bind:locked', { op: 'acquire', key: 'b' })).reply;
    assert.equal(Atomics.load(table[HEADER], H_BIND_LOCK), binder.threadId + 1);
    // The binder has just taken the mutex and has not stamped its own deadline yet.
    const other = table.tryAcquire('c');
    binder.resume();
    assert.ok((await bound).ok);
    assert.equal(other, null, 'the mutex was stolen from a binder that had just taken it');
  });

  test('a robbed binder cannot overwrite the slot its thief bound', async () => {
    const table = new LockTable({ capacity: 1 });
    const robbed = puppet(table);
    const thief = puppet(table);
    const bind = S_BIND; // slot 0
    // The binder marks the only slot BINDING and stops there, past the mutex's 100 ms lease.
    const first = (
      await robbed.stallAt('bind:binding', {
        op: 'acquire',
        key: 'K1',
        options: { waitTimeout: 300 },
      })
    ).reply;
    assert.equal(Atomics.load(table[SLOTS], bind), bindingOf(robbed.threadId));
    // A thief steals the mutex after the lease and sweeps the slot; then the robbed binder resumes.
    const second = thief.do({ op: 'acquire', key: 'K2', options: { waitTimeout: 2000 } });
    await waitFor(table[SLOTS], bind, (v) => v !== bindingOf(robbed.threadId));
    await Promise.race([
      second,
      waitFor(table[SLOTS], bind, (v) => v === revokedOf(robbed.threadId)),
    ]);
    robbed.resume();
    const results = [
      { key: 'K1', reply: await first, threadId: robbed.threadId },
      { key: 'K2', reply: await second, threadId: thief.threadId },
    ];
    // Whoever holds the slot holds the key it asked for, and the table says so.
    for (const { key, reply, threadId } of results) {
      if (!reply.ok) continue;
      const info = table.inspect(key);
      assert.ok(info !== null, `${key} is held by thread ${threadId} but the table lost it`);
      assert.equal(info.holders[0]!.threadId, threadId);
    }
    assert.ok(
      results.some((r) => r.reply.ok),
      JSON.stringify(results),
    );
  });

  test('a binder that dies unwatched in its bind window: its slot is back for every thread REVOKED_STUCK_MS after the sweep', async () => {
    // The window copies the key with a call (keys.set), and terminate() stops a thread at a call:
    // an experiment that terminated a worker binding keys in a loop saw it die there. The stall
    // point sits in the same window.
    const table = new LockTable({ capacity: 1 });
    const dier = puppet(table);
    const dead = dier.threadId;
    await dier.stallAt('bind:binding', { op: 'acquire', key: 'K1' });
    await dier.stop();
    assert.equal(Atomics.load(table[SLOTS], S_BIND), bindingOf(dead));
    assert.equal(Atomics.load(table[HEADER], H_BIND_LOCK), dead + 1);
    // Past the dead binder's mutex lease, a bind steals the mutex and revokes the slot: the slot is
    // quarantined (its binder might only be stalled, and write into it when it resumes).
    const headerF64 = new Float64Array(table.buffer, HEADER_WORDS * 4, HEADER_F64);
    while (LockTable.now() <= headerF64[HF_BIND_LOCK_DEADLINE]!) await delay(5);
    assert.equal(table.tryAcquire('K2'), null);
    assert.equal(Atomics.load(table[SLOTS], S_BIND), revokedOf(dead));
    const sweptAt = Number(new BigInt64Array(table.buffer, H_REVOKED_AT * 4, 1)[0]) / 1000;
    // A thread that never looked at the slot before gets it at its first attempt once the
    // quarantine, counted from the sweep, is over (counted per thread from its own first look, as
    // before, it was refused, and got it only a second later).
    const late = puppet(table);
    while (LockTable.now() <= sweptAt + REVOKED_STUCK_MS) await delay(10);
    const got = await late.do({ op: 'tryAcquire', key: 'K3' });
    assert.ok(got.ok, `first attempt after the quarantine: ${JSON.stringify(got)}`);
    assert.equal(table.inspect('K3')!.holders[0]!.threadId, late.threadId);
  });

  test('an evictor that dies half-way does not wedge the key it was evicting', async () => {
    const table = new LockTable({ capacity: 1 });
    table.acquireSync('A').release();
    // Binding B evicts A from the only slot; the binder dies after the state CAS.
    const evictor = puppet(table);
    await evictor.stallAt('evict:unbound', { op: 'acquire', key: 'B' });
    await evictor.stop();
    // A is no longer bound; binding it again steals the dead binder's mutex after its lease and
    // finishes the eviction on the way.
    const a = await table.acquire('A', { waitTimeout: 2000 });
    assert.equal(table.inspect('A')!.holders[0]!.threadId, table[GRANTS].threadId);
    a.release();
  });

  test('a robbed binder that exits before handing its slot back is cleaned up by watch()', async () => {
    const table = new LockTable({ capacity: 1 });
    const robbed = puppet(table);
    table.watch(robbed.worker);
    const thief = puppet(table);
    await robbed.stallAt('bind:binding', { op: 'acquire', key: 'K1' });
    const second = thief.do({ op: 'acquire', key: 'K2', options: { waitTimeout: 5000 } });
    await waitFor(table[SLOTS], S_BIND, (v) => v === revokedOf(robbed.threadId));
    await robbed.stop();
    const r = await second;
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(table.inspect('K2')!.holders[0]!.threadId, thief.threadId);
  });
});

describe('review regressions: sleepers that die', () => {
  test('a sleeper terminated while asleep does not keep its key off the fast path', async () => {
    // Terminated once seen asleep with STARVING announced (its slices are SLEEP_SLICE_MS long
    // from then on, 1 ms before). It wakes at the end of each slice to look again: terminated in
    // that look, it died running, its count taken back or its WAITING in the word. Then set up
    // again, at most 10 times (a machine that always runs the look at the termination fails).
    let table: LockTable;
    let lease: ReturnType<LockTable['acquireSync']>;
    let at: number;
    for (let attempt = 1; ; attempt++) {
      table = new LockTable({ capacity: 4 });
      lease = table.acquireSync('s');
      at = slotOf(table, 's') * SLOT_WORDS;
      const slots = table[SLOTS];
      const sleeper = puppet(table);
      void sleeper.do({ op: 'acquire', key: 's', options: { spinDelay: 0 } });
      const asleep = () =>
        (Atomics.load(slots, at + S_STATE) & (STARVING | WAITING)) === STARVING &&
        Atomics.load(slots, at + S_SLEEPERS) === 1;
      for (const end = performance.now() + 20_000; !asleep();) {
        if (performance.now() > end) throw new Error('the sleeper never slept, starving');
        await new Promise((resolve) => setImmediate(resolve));
      }
      await sleeper.stop();
      const diedRunning =
        (Atomics.load(slots, at + S_STATE) & WAITING) !== 0 ||
        Atomics.load(slots, at + S_SLEEPERS) !== 1;
      if (!diedRunning) break;
      assert.ok(attempt < 10, 'the sleeper died running 10 times');
      lease.release();
    }
    // Terminated asleep: its count in S_SLEEPERS is never taken back (no finally runs).
    assert.equal(Atomics.load(table[SLOTS], at + S_SLEEPERS), 1);
    lease.release();
    // The release woke nobody, so nobody sleeps: the word must come back to plain FREE, and the
    // next acquire and release must leave it there (the fast path, not a permanent slow one).
    table.acquireSync('s').release();
    assert.equal(Atomics.load(table[SLOTS], at + S_STATE), 0);
  });
});

describe('review regressions: handoffs', () => {
  test('a HANDOFF goes to a request that waits, never to a tryAcquire within its reservation', () => {
    const table = new LockTable({ capacity: 4 });
    const h = table.acquireSync('h');
    // A starving writer announced itself while the key was held, and is running (WAITING) (white
    // box: its bits and its stamp, as its look writes them, without the thread). In normal mode a
    // release does not hand off at all (barging): only a turn does.
    const at = slotOf(table, 'h') * SLOT_WORDS + S_STATE;
    const announcedAt = LockTable.now();
    table[GRANTS].stampAnnouncement(slotOf(table, 'h'), announcedAt);
    Atomics.or(table[SLOTS], at, WAITING | WRITER_WAITING | STARVING);
    h.release();
    const reservedUntil = LockTable.now() + HANDOFF_PATIENCE_MS;
    assert.notEqual(Atomics.load(table[SLOTS], at) & HANDOFF, 0, 'the release did not hand off');
    // One attempt that never waits may not take the handoff while it is reserved (its waiter
    // would come within microseconds); a request that waits may.
    const tried = table.tryAcquire('h');
    let timedOut = false;
    try {
      table.acquireSync('h', { waitTimeout: 0 }).release();
    } catch (error) {
      timedOut = (error as LockError).code === 'ERR_LOCK_TIMEOUT';
    }
    if (LockTable.now() < reservedUntil) {
      assert.equal(tried, null, 'tryAcquire took a handoff meant for a waiter');
      assert.ok(timedOut, 'a waitTimeout 0 request took a handoff meant for a waiter');
    } else {
      tried?.release(); // this thread was descheduled past the reservation: anyone's by now
    }
    const lease = table.acquireSync('h', { waitTimeout: 1000 });
    assert.ok(lease.held);
    lease.release();
    const again = table.tryAcquire('h');
    assert.ok(again !== null, 'free again');
    again.release();
  });
});

/**
 * Blocks this thread (the hook of a stall point runs synchronously) until `ok(slots[at])`. The
 * words it watches change by CAS without a notify, so it looks again every millisecond.
 */
function blockUntil(slots: Int32Array, at: number, ok: (v: number) => boolean): void {
  const end = performance.now() + 20_000;
  for (;;) {
    const v = Atomics.load(slots, at);
    if (ok(v)) return;
    if (performance.now() > end) throw new Error(`word ${at} stayed ${v}`);
    Atomics.wait(slots, at, v, 1);
  }
}

describe('review regressions: hot-key back-off', () => {
  afterEach(() => {
    testHooks.stall = undefined;
  });

  test("an async acquire that loses a race in its fast path and then wins does not make this thread's next wait back off", async () => {
    const table = new LockTable({ capacity: 4 });
    const other = puppet(table);
    table.acquireSync('a').release(); // 'a' is in this thread's slot cache: acquire() spins for it
    const atA = slotOf(table, 'a') * SLOT_WORDS + S_STATE;
    let held = (await other.do({ op: 'acquire', key: 'a' })).lease!;
    let holding = true;
    let lost = false;
    // This thread's fast path (the hooks run in it, synchronously): the other thread lets go as it
    // starts to watch, and the first time it sees the key free, the other thread takes it back.
    testHooks.stall = (point) => {
      if (point === 'fast:watching' && holding) {
        void other.do({ op: 'release', lease: held });
        holding = false;
        blockUntil(table[SLOTS], atA, (v) => v === 0);
      } else if (point === 'fast:sawFree' && !lost) {
        lost = true;
        void other.do({ op: 'tryAcquire', key: 'a' });
        held++; // the puppet numbers its leases in order
        holding = true;
        blockUntil(table[SLOTS], atA, (v) => v === (EXCLUSIVE | other.threadId));
      }
    };
    const pending = table.acquire('a');
    testHooks.stall = undefined;
    assert.ok(lost, 'the fast path did not lose the race');
    if (holding) assert.ok((await other.do({ op: 'release', lease: held })).ok);
    (await pending).release();
    // A plain wait now, on another key: with spinDelay 0 it parks at once (counted in S_SLEEPERS,
    // synchronously inside acquire()). A wait that inherited the lost race would back off instead.
    const b = await other.do({ op: 'acquire', key: 'b' });
    const atB = slotOf(table, 'b') * SLOT_WORDS;
    const waiting = table.acquire('b', { spinDelay: 0 });
    const parked = Atomics.load(table[SLOTS], atB + S_SLEEPERS);
    assert.ok((await other.do({ op: 'release', lease: b.lease })).ok);
    (await waiting).release();
    assert.equal(parked, 1, 'the lost race of an earlier, granted request leaked into this one');
  });
});

describe('review regressions: a cell published late', () => {
  test('a holder reclaimed between its two cell stores does not overwrite its reclaimer’s cell', async () => {
    // The holder is stopped between the pending store and the publishing one, past its deadline
    // + failTimeout: a waiter reclaims it (as it must: a holder terminated there is reclaimed the
    // same way). When the holder goes on, its publishing store must not land on the reclaimer's
    // cell: a cell that does not name the holder of the word is "being written" to every reader,
    // so the new holder would never be reclaimed (nor show a deadline).
    const failTimeout = 30;
    const table = new LockTable({ capacity: 4, failTimeout });
    const holder = puppet(table);
    const thief = puppet(table);
    const granted = (
      await holder.stallAt('cell:pending', { op: 'acquire', key: 'o', options: { hold: 50 } })
    ).reply;
    const t = await thief.do({
      op: 'acquire',
      key: 'o',
      options: { hold: 150, waitTimeout: 5000 },
    });
    assert.ok(t.ok && t.recovered === true, JSON.stringify(t));
    holder.resume();
    assert.ok((await granted).ok);
    const info = table.inspect('o')!;
    assert.equal(info.holders[0]!.threadId, thief.threadId);
    assert.ok(
      Number.isFinite(info.holders[0]!.deadline),
      'the reclaimed holder published its cell over its reclaimer’s',
    );
    // So a reclaimer that dies holding the key is reclaimed in its turn.
    await thief.worker.terminate();
    const lease = table.acquireSync('o', { waitTimeout: 2000 });
    assert.equal(lease.recovered, true);
    lease.release();
  });
});

describe('review regressions: semaphore wake-ups', () => {
  /** Polls `ok` once per event-loop turn (shared memory only: no sleep decides anything). */
  async function until(ok: () => boolean): Promise<void> {
    const end = performance.now() + 20_000;
    while (!ok()) {
      if (performance.now() > end) throw new Error('timed out');
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  test('a permit freed while the sleeper woken for the one before is not yet running wakes another sleeper', async () => {
    // The sleeper of 2. must still be asleep at the releases of 4. A sleeper wakes at the end of
    // its slice (SLEEP_SLICE_MS) to look again: if this thread was kept off the CPU past it before
    // or between the releases, the sleeper took a permit in that look, or was woken with the
    // first one, and the test saw nothing. Its slice began after its announcement's stamp
    // (SF_ANNOUNCED_AT), so releases done before the stamp + SLEEP_SLICE_MS found it asleep;
    // later ones are set up again, at most 10 times (a machine that always runs the slice out
    // fails the test).
    for (let attempt = 1; ; attempt++) {
      const table = new LockTable({ capacity: 4 });
      const sem = table.semaphore('q', 3);
      const held = [sem.tryAcquire()!, sem.tryAcquire()!, sem.tryAcquire()!];
      const slots = table[SLOTS];
      const at = slotOf(table, 'q') * SLOT_WORDS + S_STATE;
      const sleepers = at - S_STATE + S_SLEEPERS;
      const { slotF64 } = createViews(table.buffer, {
        capacity: table.capacity,
        maxKeyLength: table.maxKeyLength,
        records: table[GRANTS].recordCount,
      });
      const stampAt = ((at - S_STATE) / SLOT_WORDS) * SLOT_F64 + SF_ANNOUNCED_AT;
      // 1. An async waiter asleep, then its event loop blocked: a release's notify wakes it (it is
      //    first on the word), but it does not run (as a thread busy or descheduled after its
      //    wake-up).
      const slow = puppet(table);
      const slowReply = slow.do({
        op: 'permitAsync',
        key: 'q',
        limit: 3,
        options: { waitTimeout: 20_000 },
      });
      await waitFor(slots, sleepers, (v) => v === 1);
      const blocked = await slow.block();
      assert.equal(Atomics.load(slots, sleepers), 1, 'the blocked waiter is not asleep');
      Atomics.and(slots, at, ~(STARVING | WAITING)); // its announcement, if any: see 3.
      // 2. A second waiter, starved, asleep for its slice (it announced STARVING, and its sleep
      //    cleared WAITING): behind the first on the word. The stamp is read first: the sleep seen
      //    after it began after it (a later look stamps again, and sleeps again).
      const sleeper = puppet(table);
      const sleeperReply = sleeper.do({
        op: 'permit',
        key: 'q',
        limit: 3,
        options: { waitTimeout: 20_000 },
      });
      let stamp = 0;
      await until(() => {
        stamp = slotF64[stampAt]!;
        const s = Atomics.load(slots, at);
        return (s & STARVING) !== 0 && (s & WAITING) === 0 && Atomics.load(slots, sleepers) === 2;
      });
      // 3. STARVING gone while it sleeps, as any grant leaves the word (the waiters re-announce
      //    when they look again), and PARKED there.
      Atomics.and(slots, at, ~STARVING);
      assert.notEqual(Atomics.load(slots, at) & PARKED, 0);
      // 4. Two permits come free: the first release wakes the blocked waiter; the second must wake
      //    the sleeper (the blocked one cannot relay it), not leave it its slice (250 ms).
      const freed = performance.now();
      held[0]!.release();
      held[1]!.release();
      // 1 ms for the two threads' clocks (api/clock.ts: each within microseconds of the other).
      const asleep = LockTable.now() < stamp + SLEEP_SLICE_MS - 1;
      const r = await sleeperReply;
      const took = performance.now() - freed;
      const word = Atomics.load(slots, at);
      slow.unblock();
      await blocked.reply;
      assert.ok((await slowReply).ok);
      held[2]!.release();
      assert.ok(r.ok, JSON.stringify(r));
      if (!asleep) {
        assert.ok(attempt < 10, 'the sleeper’s slice ended before the releases 10 times');
        console.log(`# attempt ${attempt}: the sleeper’s slice ended before the releases`);
        await Promise.all([slow.stop(), sleeper.stop()]);
        continue;
      }
      // Woken by a notify, a granted sleeper sets PARKED again for the blocked one (still
      // counted); one that woke at the end of its slice does not. (A witness that needs no clock.)
      assert.notEqual(
        word & PARKED,
        0,
        `the sleeper slept beside a free permit until its slice ended (${took.toFixed(0)} ms)`,
      );
      return;
    }
  });
});
