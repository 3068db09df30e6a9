/**
 * The registry's waiting hint (src/table/entries.ts, waitingHint): a LockManager request skips the
 * registry scan only when it reads 0, so it must never read 0 while a PENDING entry exists, and a
 * count left too high (a thread stopped between an entry's CAS and its count-off) must come back
 * to 0 at the next scan that finds nothing. Driven on one thread through the Entries of a table,
 * with the stopped thread's half-done steps made by hand on the shared words.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../../src/index.js';
import { FACADE, type FacadeCore } from '../../src/table/lock-table.js';
import { ENTRY_LEASE_MS } from '../../src/table/entries.js';
import { testHooks } from '../../src/table/test-hooks.js';
import { clientFor } from '../../src/web-locks/client.js';
import {
  createViews,
  E_COUNTED,
  E_STATE,
  EF_LIVE_UNTIL,
  ENTRY_F64,
  ENTRY_CLIENT,
  ENTRY_FREE,
  ENTRY_PENDING,
  ENTRY_WORDS,
  ENTRY_WRITING,
} from '../../src/table/layout.js';

function setup() {
  const table = new LockTable({ capacity: 8 });
  const core = (table as unknown as { [FACADE]: () => FacadeCore })[FACADE]();
  const views = createViews(table.buffer, {
    capacity: 8,
    maxKeyLength: table.maxKeyLength,
    records: 16,
  });
  const words = views.entries;
  /** The hint's count (bits 0-31) and epoch (bits 32-47). */
  const hint = () => {
    const h = BigInt.asUintN(64, Atomics.load(views.entryWaiting64, 0));
    return { count: Number(h & 0xffffffffn), epoch: Number((h >> 32n) & 0xffffn) };
  };
  return { table, entries: core.entries, views, words, hint };
}

describe('the waiting hint', () => {
  test('counts a PENDING entry from before it is listed until it is freed', () => {
    const { entries, hint } = setup();
    assert.equal(entries.waitingHint(), false);
    const a = entries.claim(ENTRY_PENDING, 1, entries.nextSeq(), 0, 'k');
    const b = entries.claim(ENTRY_PENDING, 1, entries.nextSeq(), 1, 'j');
    assert.equal(entries.waitingHint(), true);
    assert.equal(hint().count, 2);
    assert.ok(entries.free(a, entries.wordOf(a)));
    assert.equal(entries.waitingHint(), true);
    // A second free of the same word fails, and takes nothing off.
    const bw = entries.wordOf(b);
    assert.ok(entries.free(b, bw));
    assert.equal(entries.free(b, bw), false);
    assert.deepEqual(hint(), { count: 0, epoch: 0 });
    assert.equal(entries.waitingHint(), false);
  });

  test("per name: a name whose bucket has no PENDING entry reads 0 while another name's waits", () => {
    const { entries, views } = setup();
    const a = entries.claim(ENTRY_PENDING, 1, entries.nextSeq(), 0, 'k');
    assert.equal(entries.waitingHint('k'), true);
    // Some name among a few falls in another of the 64 buckets.
    const other = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].find((n) => !entries.waitingHint(n));
    assert.ok(other !== undefined);
    assert.equal(entries.waitingHint(), true);
    // The bucket is counted off with the entry, also when another thread's claim takes it over.
    assert.ok(entries.free(a, entries.wordOf(a)));
    assert.equal(entries.waitingHint('k'), false);
    const b = entries.claim(ENTRY_PENDING, 1, entries.nextSeq(), 0, 'k');
    const w = entries.wordOf(b);
    views.entriesF64[b * ENTRY_F64 + EF_LIVE_UNTIL] = LockTable.now() - 1;
    assert.equal(entries.waitingHint('k'), true, 'lapsed, not yet taken');
    assert.deepEqual(entries.pending(), []);
    assert.notEqual(entries.wordOf(b), w);
    assert.equal(entries.waitingHint('k'), false, 'counted off by the taker');
    assert.equal(entries.waitingHint(), false);
  });

  test('a count left by a thread stopped after its free CAS is reset by the next scan that finds no entry', () => {
    const { entries, words, hint } = setup();
    const a = entries.claim(ENTRY_PENDING, 1, entries.nextSeq(), 0, 'k');
    // The stopped thread's free: the CAS, without the count-off after it.
    const w = entries.wordOf(a);
    assert.equal(Atomics.compareExchange(words, a * ENTRY_WORDS + E_STATE, w, ENTRY_FREE), w);
    assert.equal(entries.waitingHint(), true, 'too high: requests scan');
    // A scan that finds an entry keeps the count.
    const b = entries.claim(ENTRY_PENDING, 2, entries.nextSeq(), 0, 'other');
    assert.equal(entries.blocked('k', false, undefined, -1), false);
    assert.equal(hint().count, 2);
    assert.ok(entries.free(b, entries.wordOf(b)));
    // Now nothing is PENDING: the scan resets it, in a new epoch.
    assert.equal(entries.blocked('k', false, undefined, -1), false);
    assert.deepEqual(hint(), { count: 0, epoch: 1 });
    // An entry counted in the new epoch is counted off in it.
    const c = entries.claim(ENTRY_PENDING, 1, entries.nextSeq(), 0, 'k');
    assert.equal(words[c * ENTRY_WORDS + E_COUNTED], 1);
    assert.equal(entries.blocked('k', false, undefined, -1), true);
    assert.ok(entries.free(c, entries.wordOf(c)));
    assert.deepEqual(hint(), { count: 0, epoch: 1 });
  });

  test('a lapsed entry taken by a scan is counted off by it', () => {
    const { entries, views, hint } = setup();
    const a = entries.claim(ENTRY_PENDING, 1, entries.nextSeq(), 0, 'k');
    views.entriesF64[a * ENTRY_F64 + EF_LIVE_UNTIL] = LockTable.now() - 1;
    assert.equal(entries.blocked('k', false, undefined, -1), false);
    assert.deepEqual(hint(), { count: 0, epoch: 0 }, 'counted off, not reset');
    assert.deepEqual(entries.pending(), []);
  });

  test('a WRITING entry of a thread stopped after its count is counted off when taken back', async () => {
    const { entries, words, hint } = setup();
    const a = entries.claim(ENTRY_PENDING, 1, entries.nextSeq(), 0, 'k');
    // Back to WRITING, as a writer stopped at its publish CAS leaves it (counted, not published).
    const w = entries.wordOf(a);
    const writing = (w & ~7) | ENTRY_WRITING;
    assert.equal(Atomics.compareExchange(words, a * ENTRY_WORDS + E_STATE, w, writing), w);
    assert.equal(
      entries.blocked('k', false, undefined, -1),
      false,
      'a WRITING entry blocks nobody',
    );
    assert.equal(hint().count, 1, 'seen WRITING: no reset');
    // Taken back once this thread has seen the same WRITING word for ENTRY_LEASE_MS.
    const t0 = LockTable.now();
    while (LockTable.now() - t0 <= ENTRY_LEASE_MS) await new Promise((r) => setTimeout(r, 50));
    assert.equal(entries.blocked('k', false, undefined, -1), false);
    assert.equal(entries.wordOf(a) & 7, ENTRY_FREE);
    assert.deepEqual(hint(), { count: 0, epoch: 0 }, 'counted off by the taker');
  });
  test('a registration stalled past its lease between its two counts leaves a newer epoch alone', () => {
    // Review of s8-fifo: W counts its PENDING entry in the hint (epoch E), stalls past
    // ENTRY_LEASE_MS; a scan takes W's WRITING entry back and resets the hint to E + 1; Q
    // registers for the same name in E + 1. When W resumes, its bucket count in E must not
    // overwrite Q's bucket (E + 1, 1) with (E, 1): Q's name would read "nobody waits".
    const { entries, hint } = setup();
    let q = -1;
    let stalled = false;
    testHooks.stall = (point) => {
      if (point !== 'claim:counted' || stalled) return;
      stalled = true;
      const epoch = hint().epoch;
      entries.blocked('other', false, undefined, -1); // sees W's WRITING entry
      const t0 = LockTable.now();
      while (LockTable.now() - t0 <= ENTRY_LEASE_MS + 20); // W stalls past its lease
      entries.blocked('other', false, undefined, -1); // takes it back, finds nothing: resets
      assert.equal(hint().epoch, epoch + 1, 'the scan reset the hint');
      q = entries.claim(ENTRY_PENDING, 7, entries.nextSeq(), 0, 'k');
      assert.ok(entries.waitingHint('k'));
    };
    try {
      entries.claim(ENTRY_PENDING, 5, entries.nextSeq(), 0, 'k');
    } finally {
      testHooks.stall = undefined;
    }
    assert.ok(stalled && q >= 0);
    assert.ok(
      entries.pending('k').some((e) => e.owner === 7),
      "Q's entry is listed",
    );
    assert.equal(entries.waitingHint('k'), true, "Q's name still reads as waited for");
  });
  test("the sync-wait mark goes only into this thread's own client entry", () => {
    // Review of s8-fifo: the mark shares a word with an entry's mode. A thread whose client entry
    // lapsed (its event loop blocked past the lease) and was claimed by another thread's exclusive
    // request must not mark that entry: the request would read as shared.
    const { table, entries, words } = setup();
    const core = (table as unknown as { [FACADE]: () => FacadeCore })[FACADE]();
    const client = clientFor(table.buffer, core, 1000);
    const views = createViews(table.buffer, {
      capacity: 8,
      maxKeyLength: table.maxKeyLength,
      records: 16,
    });
    let own = -1;
    for (let i = 0; i < 8; i++)
      if ((Atomics.load(words, i * ENTRY_WORDS + E_STATE) & 7) === ENTRY_CLIENT) own = i;
    assert.ok(own >= 0);
    views.entriesF64[own * ENTRY_F64 + EF_LIVE_UNTIL] = 0; // lapsed
    const other = entries.claim(ENTRY_PENDING, 42, entries.nextSeq(), 0, 'n');
    assert.equal(other, own, 'the lapsed entry went to the other request');
    client.ringWait(true);
    assert.equal(entries.pending('n')[0]!.mode, 'exclusive');
    assert.equal(entries.blocked('n', true, undefined, -1), true, 'a shared request still waits');
    client.ringWait(false);
    assert.equal(entries.pending('n')[0]!.mode, 'exclusive');
  });
});
