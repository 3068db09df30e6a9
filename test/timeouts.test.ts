import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { control, spawn } from './harness.js';

/** How late a timeout may fire on this 2-core VM: a few ms, plus scheduling noise. */
const LATE_MS = 25;

describe('wait timeouts', () => {
  test('a blocking wait in a worker times out on time: never early, not late by more than a few ms', async () => {
    const table = new LockTable({ capacity: 8 });
    const lease = table.acquireSync('t');
    for (const ms of [5, 20, 60]) {
      const ctrl = control();
      const w = spawn<{ ok: boolean; code: string; waited: number }>('acquireOnce', {
        buffer: table.buffer,
        ctrl: ctrl.buffer,
        key: 't',
        options: { waitTimeout: ms },
      });
      const r = await w.result;
      assert.equal(r.code, 'ERR_LOCK_TIMEOUT');
      assert.ok(r.waited >= ms, `timed out after ${r.waited} ms, before ${ms} ms`);
      assert.ok(r.waited < ms + LATE_MS, `timed out after ${r.waited} ms, for ${ms} ms`);
    }
    lease.release();
  });

  test('an async wait on the main thread times out on time', async () => {
    const table = new LockTable({ capacity: 8 });
    const ctrl = control();
    const holder = spawn('holdForever', { buffer: table.buffer, ctrl: ctrl.buffer, key: 'a' });
    await import('./harness.js').then((h) => h.waitFor(ctrl, h.CTRL_HELD, (v) => v === 1));
    for (const ms of [1, 10, 50]) {
      const t0 = LockTable.now();
      await assert.rejects(table.acquire('a', { waitTimeout: ms }), {
        code: 'ERR_LOCK_TIMEOUT',
        key: 'a',
      });
      const waited = LockTable.now() - t0;
      assert.ok(waited >= ms && waited < ms + LATE_MS, `waited ${waited} ms for ${ms} ms`);
    }
    await holder.worker.terminate();
  });

  test('waitTimeout 0 means exactly one attempt', async () => {
    const table = new LockTable({ capacity: 8 });
    const lease = table.acquireSync('z');
    const t0 = performance.now();
    table.acquireSync('y', { waitTimeout: 0 }).release();
    assert.throws(() => table.acquireSync('z', { waitTimeout: 0 }), { code: 'ERR_LOCK_RECURSION' });
    await assert.rejects(table.acquire('z', { waitTimeout: 0 }), { code: 'ERR_LOCK_TIMEOUT' });
    assert.equal(table.tryAcquire('z'), null);
    assert.ok(performance.now() - t0 < 20);
    lease.release();
    assert.ok(table.acquireSync('z', { waitTimeout: 0 }).held);
  });
});
