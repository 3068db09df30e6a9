/**
 * Review of ebfe4c8 (H_REVOKED_AT): a sweep stamps its time before its CASes, so a mark that a
 * robbed binder makes after the stamp, and that the same sweep then revokes, is counted as older
 * than it is. If the sweeper stalls between its stamp and its CAS, the slot is taken back while
 * its binder has been in its bind window for much less than REVOKED_STUCK_MS, and the binder's
 * late plain writes land in a slot bound to another key.
 *
 * The sweeper stalls at 'sweep:begun', before it looks at any slot: on ebfe4c8 its stamp came
 * before that point, since dc5b6c3 each stamp comes after the look that saw the mark. So the test
 * times the quarantine from when the sweeper stopped there, not from H_REVOKED_AT (which the fixed
 * sweep has not written yet: a test reading it saw 0, and its waits ended at once).
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { LockTable } from '../src/index.js';
import { bindingOf, REVOKED_STUCK_MS } from '../src/table/directory.js';
import {
  H_BIND_LOCK,
  H_REVOKED_AT,
  HEADER_F64,
  HEADER_WORDS,
  HF_BIND_LOCK_DEADLINE,
  S_BIND,
  SLOT_WORDS,
} from '../src/table/layout.js';
import { HEADER, SLOTS } from '../src/table/internals.js';
import { Puppet } from './puppets.js';

const puppets: Puppet[] = [];
function puppet(table: LockTable): Puppet {
  const p = new Puppet(table.buffer);
  puppets.push(p);
  return p;
}
afterEach(async () => {
  await Promise.all(puppets.splice(0).map((p) => p.stop()));
});

test('a mark made after a sweep began is not taken back early', async () => {
  const table = new LockTable({ capacity: 1 });
  const robbed = puppet(table);
  const thief = puppet(table);
  const headerF64 = new Float64Array(table.buffer, HEADER_WORDS * 4, HEADER_F64);
  // 1. The binder of K1 takes the free mutex, picks slot 0 and stops before marking it.
  const first = (
    await robbed.stallAt(['bind:chosen', 'bind:binding'], {
      op: 'acquire',
      key: 'K1',
      options: { waitTimeout: 400 },
    })
  ).reply;
  // 2. Past its lease a thief steals the mutex, begins its sweep, and stops before it looks at any
  // slot (slot 0 is still EMPTY). A sweep that stamped its time once, before its CASes, has done
  // so by now.
  while (LockTable.now() <= headerF64[HF_BIND_LOCK_DEADLINE]!) await delay(5);
  const second = (
    await thief.stallAt('sweep:begun', {
      op: 'acquire',
      key: 'K2',
      options: { waitTimeout: 5000 },
    })
  ).reply;
  const began = LockTable.now();
  // 3. Most of a quarantine later, the robbed binder marks slot 0 BINDING and stops in its window.
  while (LockTable.now() < began + REVOKED_STUCK_MS - 150) await delay(5);
  robbed.resume();
  await robbed.nextStall('bind:binding');
  const marked = LockTable.now();
  assert.equal(Atomics.load(table[SLOTS], S_BIND), bindingOf(robbed.threadId));
  // 4. A quarantine after the sweep began, the thief goes on: it sees the mark and revokes it, and
  // binds its key (taking the slot back) or waits; either way it lets go of the mutex.
  while (LockTable.now() < began + REVOKED_STUCK_MS + 5) await delay(5);
  thief.resume();
  for (;;) {
    const bind = Atomics.load(table[SLOTS], S_BIND);
    const lock = Atomics.load(table[HEADER], H_BIND_LOCK);
    if (bind !== bindingOf(robbed.threadId) && lock !== thief.threadId + 1) break;
    await delay(1);
  }
  const inWindow = LockTable.now() - marked;
  assert.ok(inWindow < REVOKED_STUCK_MS / 2, `the binder was in its window ${inWindow} ms`);
  // 5. The robbed binder resumes (in its window for ~150 ms, far below REVOKED_STUCK_MS).
  robbed.resume();
  const results = [
    { key: 'K1', reply: await first, threadId: robbed.threadId },
    { key: 'K2', reply: await second, threadId: thief.threadId },
  ];
  const show = (v: unknown) =>
    JSON.stringify(v, (_, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
  console.log(`# in window ${inWindow.toFixed(1)} ms; ${show(results)}`);
  for (const { key, reply, threadId } of results) {
    if (!reply.ok) continue;
    const info = table.inspect(key);
    assert.ok(
      info !== null,
      `${key} is held by thread ${threadId} but the table lost it (K1: ${show(table.inspect('K1'))})`,
    );
    assert.equal(info.holders[0]!.threadId, threadId);
  }
});

test('a robbed binder that comes back and dies in its window: the next binder revokes its mark', async () => {
  // Capacity 2: K1 and K2 start at slot 1, K5 at slot 0.
  const table = new LockTable({ capacity: 2 });
  const robbed = puppet(table);
  const thief = puppet(table);
  const headerF64 = new Float64Array(table.buffer, HEADER_WORDS * 4, HEADER_F64);
  await robbed.stallAt(['bind:chosen', 'bind:binding'], {
    op: 'acquire',
    key: 'K1',
    options: { waitTimeout: 5000 },
  });
  while (LockTable.now() <= headerF64[HF_BIND_LOCK_DEADLINE]!) await delay(5);
  // The thief steals the mutex, binds K5 to slot 0, holds it, and lets the mutex go.
  const held = await thief.do({ op: 'acquire', key: 'K5' });
  assert.ok(held.ok);
  assert.equal(Atomics.load(table[HEADER], H_BIND_LOCK), 0);
  // The robbed binder marks slot 1 and dies there: the mutex is nobody's, so nobody steals it.
  robbed.resume();
  await robbed.nextStall('bind:binding');
  const dead = robbed.threadId;
  await robbed.stop();
  assert.equal(Atomics.load(table[SLOTS], SLOT_WORDS + S_BIND), bindingOf(dead));
  // The next binder through slot 1 revokes the mark; a quarantine later, the slot is back.
  assert.equal(table.tryAcquire('K2'), null);
  const stamped =
    Number(Atomics.load(new BigInt64Array(table.buffer, H_REVOKED_AT * 4, 1), 0)) / 1000;
  while (LockTable.now() <= stamped + REVOKED_STUCK_MS) await delay(10);
  const lease = table.tryAcquire('K2');
  assert.ok(lease !== null, 'slot 1 never came back');
  lease.release();
});
