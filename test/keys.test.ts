import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { hashKey } from '../src/table/key.js';
import { control, CTRL_GO, CTRL_READY, seedFor, signal, spawn, waitFor } from './harness.js';
import { runQueueSince } from './run-queue.js';

/** Two distinct keys with the same 32-bit hash, found by brute force (birthday bound). */
function collidingPair(): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0; ; i++) {
    const key = `k${i}`;
    const h = hashKey(key);
    const other = seen.get(h);
    if (other !== undefined) return [other, key];
    seen.set(h, key);
  }
}

describe('key identity', () => {
  test('keys are compared by UTF-16 code units: lone surrogates and U+FFFD are different keys', () => {
    const table = new LockTable({ capacity: 8 });
    const a = table.acquireSync('\uD800');
    const b = table.tryAcquire('\uFFFD');
    const c = table.tryAcquire('\uDC00\uD800');
    assert.ok(b !== null && c !== null);
    assert.equal(table.held().length, 3);
    assert.equal(table.inspect('\uD800')?.key, '\uD800');
    a.release();
    b.release();
    c.release();
  });

  test('two keys with the same hash are two locks', () => {
    const [x, y] = collidingPair();
    assert.equal(hashKey(x), hashKey(y));
    const table = new LockTable({ capacity: 4 });
    const lx = table.acquireSync(x);
    const ly = table.tryAcquire(y);
    assert.ok(ly !== null, 'a colliding key was treated as held');
    assert.equal(table.tryAcquire(x), null);
    assert.equal(table.inspect(y)?.key, y);
    lx.release();
    ly.release();
  });

  test('a full table refuses a new key at once with ERR_LOCK_TABLE_FULL, never hangs', () => {
    const table = new LockTable({ capacity: 4 });
    const held = ['a', 'b', 'c', 'd'].map((k) => table.acquireSync(k));
    const queued = runQueueSince();
    const t0 = performance.now();
    assert.throws(() => table.acquireSync('e'), { code: 'ERR_LOCK_TABLE_FULL', key: 'e' });
    const took = performance.now() - t0;
    // Judged beyond this thread's run-queue wait (test/run-queue.ts): a hang is not made of it.
    assert.ok(took - queued() < 100, `took ${took} ms (${queued()} ms on a run queue)`);
    held[0]!.release();
    // One slot is idle again: the new key takes it (by evicting the idle key), no false "full".
    table.acquireSync('e').release();
    held.slice(1).forEach((l) => l.release());
  });

  test('a key longer than maxKeyLength is refused with a RangeError naming the limit', () => {
    const table = new LockTable({ capacity: 4, maxKeyLength: 8 });
    assert.throws(
      () => table.acquireSync('123456789'),
      (e: Error & { code?: string }) => {
        return (
          e instanceof RangeError &&
          e.code === 'ERR_OUT_OF_RANGE' &&
          /maxKeyLength \(8/.test(e.message)
        );
      },
    );
    table.acquireSync('12345678').release();
  });

  test('churn: 10^5 distinct keys through a 16-slot table from 4 workers, exact counts, no false full', async () => {
    // 64 keys share a 16-slot table, so keys are evicted and rebound all the time; each key
    // guards its own counter, so a key bound to two slots at once (two holders) loses updates.
    const keys = Array.from({ length: 64 }, (_, i) => `churn:${i}`);
    const table = new LockTable({ capacity: 16 });
    const counters = new SharedArrayBuffer(keys.length * 4);
    const ctrl = control();
    const seed = seedFor('churn');
    const per = 25_000;
    const workers = Array.from({ length: 4 }, (_, i) =>
      spawn('counter', {
        buffer: table.buffer,
        ctrl: ctrl.buffer,
        counters,
        keys,
        iterations: per,
        seed: seed + i,
      }),
    );
    await waitFor(ctrl, CTRL_READY, (v) => v === 4);
    signal(ctrl, CTRL_GO);
    await Promise.all(workers.map((w) => w.result));
    const counted = new Int32Array(counters).reduce((a, b) => a + b, 0);
    assert.equal(counted, per * 4);
    assert.deepEqual(table.held(), []);
  });

  test('10^5 distinct keys, each used once, through a small table in one thread', () => {
    const table = new LockTable({ capacity: 8 });
    for (let i = 0; i < 100_000; i++) table.acquireSync(`once:${i}`).release();
    assert.deepEqual(table.held(), []);
  });
});
