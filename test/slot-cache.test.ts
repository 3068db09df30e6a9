import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { SLOT_CACHE_LIMIT, SlotCache } from '../src/table/slot-cache.js';
import { churn } from './churn.js';

/** Runs `fn` with a slot cache that trusts remembered slots blindly (the negative control). */
function withBrokenCache<T>(fn: () => T): T {
  const isCurrent = Object.getOwnPropertyDescriptor(SlotCache.prototype, 'isCurrent')!;
  SlotCache.prototype.isCurrent = () => true;
  try {
    return fn();
  } finally {
    Object.defineProperty(SlotCache.prototype, 'isCurrent', isCurrent);
  }
}

/** In a one-slot table: use 'a', let 'b' take its slot, then acquire 'a' again. */
function reuseOneSlot(): LockTable {
  const table = new LockTable({ capacity: 1 });
  table.acquireSync('a').release(); // 'a' is now in this thread's cache, at slot 0
  table.acquireSync('b').release(); // 'b' evicts 'a' and is bound to slot 0
  table.acquireSync('a'); // must evict 'b' and bind 'a', not take 'b''s lock
  return table;
}

function cacheChurn(brokenCache: boolean) {
  return churn('cacheChurn', `slot cache churn${brokenCache ? ' (broken cache)' : ''}`, {
    brokenCache,
  });
}

describe('slot cache', () => {
  test('a key whose slot was rebound to another key is looked up again, not granted that lock', () => {
    const table = reuseOneSlot();
    assert.equal(table.inspect('a')?.key, 'a');
    assert.equal(table.inspect('b'), null);
    assert.deepEqual(
      table.held().map((h) => h.key),
      ['a'],
    );
  });

  test('negative control: a cache without the generation check grants the other key’s lock', () => {
    const table = withBrokenCache(reuseOneSlot);
    // The lease for 'a' really holds 'b''s slot: 'b' looks held, 'a' does not.
    assert.equal(table.inspect('a'), null);
    assert.equal(table.inspect('b')?.key, 'b');
  });

  test('churn across 4 workers: 48 keys through 8 slots, cached slots rebound under them, never confused', async () => {
    const { overlaps, confused, counted, expected, table } = await cacheChurn(false);
    assert.equal(confused, 0, `${confused} leases did not hold their own key's lock`);
    assert.equal(overlaps, 0, `${overlaps} sections overlapped under one key`);
    assert.equal(counted, expected);
    assert.deepEqual(table.held(), []);
  });

  test('negative control: the same churn with a cache that trusts stale slots is caught', async () => {
    const { overlaps, confused, counted, expected } = await cacheChurn(true);
    console.log(
      `# broken cache: ${confused} leases on another key's lock, ${overlaps} overlaps, ${expected - counted} lost updates`,
    );
    assert.ok(confused > 0, 'the broken cache went unnoticed');
  });

  test('keys named like Object.prototype members or array indices are keys like any other', () => {
    // The cache is an object with no prototype (slot-cache.ts): none of these may find an
    // inherited property or each other's entry.
    const keys = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', '0', '42', '-1', ''];
    const table = new LockTable({ capacity: 64 });
    const slots = new Map<string, number>();
    for (const key of keys) {
      table.acquireSync(key).release(); // bound and remembered
      const lease = table.acquireSync(key); // through the cache
      assert.equal(lease.key, key);
      assert.equal(table.inspect(key)?.key, key);
      slots.set(key, lease['slot'] as number);
      lease.release();
    }
    assert.equal(new Set(slots.values()).size, keys.length, 'two keys shared a slot');
    const cache = new SlotCache(new Int32Array(64 * 10));
    assert.equal(cache.get('__proto__'), undefined);
    assert.equal(cache.get('toString'), undefined);
    cache.remember('__proto__', 3);
    assert.equal(cache.get('__proto__')?.slot, 3);
    assert.equal(cache.size, 1);
    cache.forget('__proto__');
    cache.forget('__proto__');
    assert.equal(cache.size, 0);
    assert.equal(cache.get('__proto__'), undefined);
  });

  test('the cache is bounded: it never holds more than SLOT_CACHE_LIMIT keys', () => {
    const table = new LockTable({ capacity: 64 });
    const cache = new SlotCache(new Int32Array(64 * 10));
    for (let i = 0; i < 3 * SLOT_CACHE_LIMIT; i++) {
      cache.remember(`k${i}`, i % 64);
      assert.ok(cache.size <= SLOT_CACHE_LIMIT);
    }
    // And a table used with many more keys than that still works (entries are dropped, not wrong).
    for (let i = 0; i < 3 * SLOT_CACHE_LIMIT; i++) table.acquireSync(`key:${i}`).release();
    assert.deepEqual(table.held(), []);
  });
});
