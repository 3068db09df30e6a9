import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { control, CTRL_GO, CTRL_READY, seedFor, signal, spawn, waitFor } from './harness.js';

describe('fencing tokens', () => {
  test('strictly increase for each key across threads and slot reuse', async () => {
    // 8 keys through a 4-slot table: keys are evicted and rebound to other slots constantly.
    const keys = Array.from({ length: 8 }, (_, i) => `t${i}`);
    const table = new LockTable({ capacity: 4 });
    const iterations = 20_000;
    const log = new SharedArrayBuffer(4 * iterations * 16);
    const length = new SharedArrayBuffer(4);
    const ctrl = control();
    const seed = seedFor('tokens');
    const workers = Array.from({ length: 4 }, (_, i) =>
      spawn('tokens', {
        buffer: table.buffer,
        ctrl: ctrl.buffer,
        keys,
        iterations,
        seed: seed + i,
        log,
        length,
      }),
    );
    await waitFor(ctrl, CTRL_READY, (v) => v === 4);
    signal(ctrl, CTRL_GO);
    await Promise.all(workers.map((w) => w.result));
    const n = new Int32Array(length)[0]!;
    assert.equal(n, 4 * iterations);
    const entries = new BigInt64Array(log);
    const last = new Map<number, bigint>();
    for (let i = 0; i < n; i++) {
      const key = Number(entries[i * 2]);
      const token = entries[i * 2 + 1]!;
      const before = last.get(key);
      if (before !== undefined)
        assert.ok(token > before, `token for t${key} went from ${before} to ${token}`);
      last.set(key, token);
    }
  });

  test('a token is 64-bit and keeps increasing across the 32-bit boundary', () => {
    const table = new LockTable({ capacity: 2 });
    const first = table.acquireSync('wrap');
    first.release();
    // Move this slot's counter to just below 2^32 (white-box: tokens live in the slot words).
    const slots = new Int32Array(table.buffer);
    const lo = first.token;
    const at = slots.findIndex((v, i) => v === Number(lo) && slots[i + 1] === 0 && i > 16);
    assert.ok(at > 0);
    slots[at] = -2; // 0xFFFFFFFE
    const tokens = [1, 2, 3].map(() => {
      const l = table.acquireSync('wrap');
      l.release();
      return l.token;
    });
    assert.deepEqual(tokens, [0xffffffffn, 0x100000000n, 0x100000001n]);
  });
});
