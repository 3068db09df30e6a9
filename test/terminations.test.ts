/**
 * Threads die at any moment: worker.terminate() stops a worker at the entry of its next call (see
 * "Threads that die, and threads that stall" in src/table/slot-state.ts). Every state a thread can leave
 * there must be one the others recover from. This test terminates churning workers at random
 * moments, many times, then checks
 * without watch() that everything they held comes back through deadlines alone: every key can be
 * taken, every slot can be bound, every shared-holder record can be claimed. A thread that died
 * at the wrong call would leave a key that never frees (a count whose record is stuck) or a slot
 * or record that never comes back.
 */
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { describe, test } from 'node:test';
import { type Lease, LockTable } from '../src/index.js';
import { hashKey } from '../src/table/key.js';
import { S_BIND, S_SLEEPERS, S_STATE, SLOT_WORDS } from '../src/table/layout.js';
import { prng, seedFor, waitFor } from './harness.js';
import { DIRECTORY, GRANTS, SLOTS } from '../src/table/internals.js';

/** What the table holds for `key`: its state word and the records of its slot (for a failure). */
function describeKey(table: LockTable, key: string): string {
  const slot = table[DIRECTORY].find(key, hashKey(key));
  if (slot < 0) return `${key}: not bound`;
  const base = slot * SLOT_WORDS;
  const s = Atomics.load(table[SLOTS], base + S_STATE);
  const words = new Int32Array(table.buffer);
  const recs: string[] = [];
  for (let r = 0; r < table[GRANTS].recordCount; r++) {
    const w = table[GRANTS].recordWord(r);
    if ((w & 7) !== 0)
      recs.push(`r${r}: word 0x${(w >>> 0).toString(16)} slot ${table[GRANTS].recordSlot(r)}`);
  }
  return (
    `records [${recs.join('; ')}] ` +
    `${key}: slot ${slot}, state 0x${(s >>> 0).toString(16)}, bind ${table[SLOTS][base + S_BIND]}, ` +
    `sleepers ${table[SLOTS][base + S_SLEEPERS]}, holders ${JSON.stringify(table.inspect(key), (_, v) => (typeof v === 'bigint' ? String(v) : v))}` +
    `, header ${Array.from(words.subarray(0, 10)).join(',')}`
  );
}

function describeSlots(table: LockTable): string {
  const out: string[] = [];
  for (let slot = 0; slot < table.capacity; slot++) {
    const base = slot * SLOT_WORDS;
    out.push(
      `slot ${slot}: state 0x${(Atomics.load(table[SLOTS], base + S_STATE) >>> 0).toString(16)} bind 0x${(table[SLOTS][base + S_BIND]! >>> 0).toString(16)}`,
    );
  }
  const words = new Int32Array(table.buffer);
  return out.join('\n') + `\nheader ${Array.from(words.subarray(0, 10)).join(',')}`;
}

const CHURN = new URL('./fixtures/churn.mjs', import.meta.url); // runs on dist/ (npm test builds it)

describe('threads terminated at random moments', () => {
  test('leave nothing behind that deadlines cannot recover', async () => {
    const seed = seedFor('terminations');
    const rand = prng(seed);
    const capacity = 6;
    const records = 8;
    const hold = 20;
    const failTimeout = 20;
    const table = new LockTable({ capacity, maxSharedHolders: records, failTimeout });
    const keys = Array.from({ length: 9 }, (_, i) => `key-${i}`);
    const ctrl = new Int32Array(new SharedArrayBuffer(4 * 2));
    const start = (index: number): Worker =>
      new Worker(CHURN, {
        workerData: {
          buffer: table.buffer,
          ctrl: ctrl.buffer,
          index,
          keys,
          seed: (rand() * 2 ** 32) >>> 0,
          hold,
        },
      });
    const workers = [start(0), start(1)];
    for (let round = 0; round < 40; round++) {
      const index = Math.floor(rand() * 2);
      // Let the victim run (it has counted a few more rounds), then stop it at a random moment.
      const seen = Atomics.load(ctrl, index);
      await waitFor(ctrl, index, (v) => v >= seen + 1 + Math.floor(rand() * 20));
      await workers[index]!.terminate();
      workers[index] = start(index);
    }
    await Promise.all(workers.map((w) => w.terminate()));
    // From here every lease the workers took is past its deadline + failTimeout once this passes.
    const allExpired = LockTable.now() + hold + failTimeout + 1;

    // Every key comes back (by deadline, or free already), exclusively.
    // A record or slot left inside a few-instruction window comes back after a second (stuckMs).
    const budget = hold + failTimeout + 5000;
    for (const key of keys) {
      const lease = await table.acquire(key, { waitTimeout: budget }).catch((error: unknown) => {
        throw new Error(`${String(error)}\n${describeKey(table, key)}`);
      });
      lease.release();
    }
    // Every slot can hold a key at once: none is stuck BINDING, REVOKED or EVICTING.
    const held: Lease[] = [];
    const fresh = async (i: number): Promise<Lease> =>
      table.acquire(`fresh-${i}`, { waitTimeout: budget }).catch((error: unknown) => {
        throw new Error(`${String(error)}\n${describeSlots(table)}`);
      });
    for (let i = 0; i < capacity; i++) held.push(await fresh(i));
    assert.equal(table.held().length, capacity);
    for (const lease of held) lease.release();
    // Every record can be claimed at once: none is stuck CLAIMED, JOINED or RELEASING. (Records of
    // leases not yet expired are in use: a claim then fails at once, as a full table does; so
    // first let the dead workers' leases expire. Waiting for a deadline is the point here.)
    const idle = new Int32Array(new SharedArrayBuffer(4));
    while (LockTable.now() < allExpired) Atomics.wait(idle, 0, 0, allExpired - LockTable.now());
    const shared: Lease[] = [];
    // (acquire, not acquireSync: one thread takes them all, and some may have to wait for records
    // that dead threads left to be seen stuck.)
    for (let i = 0; i < records; i++)
      shared.push(await table.acquire('readers', { mode: 'shared', waitTimeout: budget }));
    assert.equal(table.inspect('readers')!.holders.length, records);
    for (const lease of shared) lease.release();
    assert.equal(table.inspect('readers'), null);
  });
});
