/**
 * Turns the stale-announcement rules must not give away (a race review's reproductions).
 * 1. A starving writer stopped running (WAITING on) for > HANDOFF_PATIENCE_MS before a release.
 * 2. An async starving permit waiter woken by a freed permit whose event loop stays busy > 2 ms.
 * Each checks that a tryAcquire made right after (within the turn) is refused, as on main.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { hashKey } from '../src/table/key.js';
import { S_SLEEPERS, S_STATE, SLOT_WORDS } from '../src/table/layout.js';
import { STARVING, WAITING } from '../src/table/slot-state.js';
import { DIRECTORY, SLOTS } from '../src/table/internals.js';
import { Puppet } from './puppets.js';

const puppets: Puppet[] = [];
after(async () => {
  await Promise.all(puppets.map((p) => p.stop()));
});
function word(table: LockTable, key: string, off = S_STATE): number {
  const slot = table[DIRECTORY].find(key, hashKey(key));
  return Atomics.load(table[SLOTS], slot * SLOT_WORDS + off);
}
function busyWait(ms: number): void {
  const end = LockTable.now() + ms;
  while (LockTable.now() < end);
}

test('a starving writer stopped 3 ms while it runs keeps its hand-off', async () => {
  const table = new LockTable({ capacity: 8 });
  const lease = table.acquireSync('k');
  const w = new Puppet(table.buffer);
  puppets.push(w);
  const points = Array.from({ length: 200 }, () => 'wait:sleep' as const);
  const { reply } = await w.stallAt(points, {
    op: 'acquire',
    key: 'k',
    options: { waitTimeout: 60_000, spinDelay: 0 },
  });
  while ((word(table, 'k') & (WAITING | STARVING)) !== (WAITING | STARVING)) {
    w.resume();
    await w.nextStall('wait:sleep');
  }
  busyWait(3); // the writer is live, just not scheduled (stopped) for 3 ms
  lease.release();
  const back = table.tryAcquire('k');
  const took = back !== null;
  back?.release();
  for (let i = 0; i < 200; i++) w.resume();
  const r = await reply;
  assert.ok(r.ok);
  await w.do({ op: 'release', lease: r.lease! });
  assert.equal(took, false, 'the releaser took the key back from a live starving writer');
});

test('an async starving permit waiter whose event loop is busy 3 ms keeps its permit', async () => {
  const table = new LockTable({ capacity: 8 });
  const sem = table.semaphore('p', 2);
  const held = [sem.acquireSync(), sem.acquireSync()];
  const w = new Puppet(table.buffer);
  puppets.push(w);
  const got = w.do({ op: 'permitAsync', key: 'p', limit: 2, options: { waitTimeout: 60_000 } });
  while (
    (word(table, 'p') & STARVING) === 0 ||
    (word(table, 'p') & WAITING) !== 0 ||
    word(table, 'p', S_SLEEPERS) === 0
  )
    await new Promise((r) => setImmediate(r));
  const { reply: blocked } = await w.block();
  held[0]!.release(); // wakes the waiter (its waitAsync settles), which cannot run yet
  busyWait(3);
  const barge = sem.tryAcquire();
  const took = barge !== null;
  barge?.release();
  w.unblock();
  await blocked;
  const r = await got;
  assert.ok(r.ok);
  await w.do({ op: 'release', lease: r.lease! });
  held[1]!.release();
  assert.equal(took, false, 'a tryAcquire took the permit a live starving waiter was woken for');
});
