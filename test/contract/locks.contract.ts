/**
 * The contract of src/api/locks.ts, as one suite that every backend runs (LockTable in
 * test/contract-table.test.ts, PgLockTable in test/contract-postgres.test.ts). What it checks is
 * what the two promise alike; what only one of them does is tested in its own files.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LockLease, Locks } from '../../src/api/locks.js';
import { runQueueSince } from '../run-queue.js';

export interface Backend {
  locks: Locks;
  /**
   * A lease on `key` that has lost its lock, the way this backend loses locks (LockTable: its hold
   * passed and another request reclaimed the key; Postgres: its session was ended).
   */
  lostLease(key: string): Promise<LockLease>;
  /**
   * How late a wait timeout may fire here, in ms, beyond the calling thread's run-queue wait
   * meanwhile (test/run-queue.ts: on a loaded machine the OS alone keeps it off the CPU longer).
   */
  late: number;
  close(): Promise<void>;
}

export interface ContractOptions {
  /** Sections per caller in the exclusion test. */
  sections: number;
}

let unique = 0;
/** Keys of their own for every test: the Postgres keys table outlives a test. */
function keyOf(name: string): string {
  return `${name}:${process.pid}:${Date.now()}:${unique++}`;
}

export function lockContract(
  name: string,
  open: () => Promise<Backend>,
  { sections }: ContractOptions,
): void {
  describe(`the Locks contract: ${name}`, () => {
    let b: Backend;
    before(async () => {
      b = await open();
    });
    after(async () => {
      await b?.close();
    });

    /** Runs 4 async callers of `sections` non-atomic read-modify-writes; returns the count. */
    async function hammer(locked: boolean): Promise<number> {
      const key = keyOf('exclusion');
      let counter = 0;
      const caller = async () => {
        for (let i = 0; i < sections; i++) {
          const lease = locked ? await b.locks.acquire(key) : undefined;
          const seen = counter;
          // Yield while "inside": another caller runs here, and must not be inside too.
          await sleep(0);
          counter = seen + 1;
          await lease?.release();
        }
      };
      await Promise.all([caller(), caller(), caller(), caller()]);
      return counter;
    }

    test('exclusion: concurrent async callers lose no update under the lock', async () => {
      assert.equal(await hammer(true), 4 * sections);
    });

    test('negative control: the same callers without the lock lose updates', async () => {
      assert.ok((await hammer(false)) < 4 * sections);
    });

    test('tryAcquire: a lease when free, null when held incompatibly, never waits', async () => {
      const key = keyOf('try');
      const lease = await b.locks.tryAcquire(key);
      assert.ok(lease);
      assert.equal(lease.key, key);
      assert.equal(lease.mode, 'exclusive');
      assert.equal(lease.held, true);
      assert.equal(typeof lease.token, 'bigint');
      const queued = runQueueSince();
      const t0 = performance.now();
      assert.equal(await b.locks.tryAcquire(key), null);
      assert.equal(await b.locks.tryAcquire(key, { mode: 'shared' }), null);
      const took = performance.now() - t0;
      assert.ok(took - queued() < 500, `took ${took} ms (${queued()} ms on a run queue)`);
      await lease.release();
      assert.equal(lease.held, false);
      const again = await b.locks.tryAcquire(key);
      assert.ok(again);
      await again.release();
    });

    test('waitTimeout: fails with ERR_LOCK_TIMEOUT, never early; 0 = one attempt', async () => {
      const key = keyOf('timeout');
      const lease = await b.locks.acquire(key);
      // The first timeout of the process loads and compiles its path on this thread (8-17 ms of
      // its CPU during a 20 ms wait, measured at load 3-5), which is not lateness of the lock.
      await assert.rejects(b.locks.acquire(key, { waitTimeout: 1 }), { code: 'ERR_LOCK_TIMEOUT' });
      for (const ms of [20, 50]) {
        const queued = runQueueSince();
        const t0 = performance.now();
        await assert.rejects(b.locks.acquire(key, { waitTimeout: ms }), {
          code: 'ERR_LOCK_TIMEOUT',
          key,
        });
        const waited = performance.now() - t0;
        const runQueue = queued();
        assert.ok(
          waited >= ms && waited - runQueue < ms + b.late,
          `waited ${waited} ms for ${ms} ms (${runQueue.toFixed(1)} ms on a run queue)`,
        );
      }
      await assert.rejects(b.locks.acquire(key, { waitTimeout: 0 }), { code: 'ERR_LOCK_TIMEOUT' });
      await lease.release();
      const free = await b.locks.acquire(key, { waitTimeout: 0 });
      await free.release();
    });

    test('abort before the call: AbortError, nothing held', async () => {
      const key = keyOf('abort-before');
      const reason = new Error('stop');
      await assert.rejects(b.locks.acquire(key, { signal: AbortSignal.abort(reason) }), (e) => {
        assert.equal((e as Error).name, 'AbortError');
        assert.equal((e as Error).cause, reason);
        return true;
      });
      assert.equal(await b.locks.inspect(key), null);
      const lease = await b.locks.tryAcquire(key);
      assert.ok(lease);
      await lease.release();
    });

    test('abort while waiting: AbortError at once, nothing held, the key passes on', async () => {
      const key = keyOf('abort-wait');
      const holder = await b.locks.acquire(key);
      const controller = new AbortController();
      const waiting = b.locks.acquire(key, { signal: controller.signal });
      await sleep(30);
      const queued = runQueueSince();
      const t0 = performance.now();
      controller.abort();
      await assert.rejects(waiting, { name: 'AbortError', key });
      const took = performance.now() - t0;
      assert.ok(took - queued() < 200, `took ${took} ms (${queued()} ms on a run queue)`);
      await holder.release();
      const next = await b.locks.acquire(key, { waitTimeout: 1000 });
      assert.ok(next.token > holder.token);
      await next.release();
      assert.equal(await b.locks.inspect(key), null);
    });

    test('shared holders overlap; exclusive excludes them, and they it', async () => {
      const key = keyOf('modes');
      const r1 = await b.locks.acquire(key, { mode: 'shared' });
      const r2 = await b.locks.acquire(key, { mode: 'shared', waitTimeout: 0 });
      assert.equal(r2.mode, 'shared');
      assert.equal(await b.locks.tryAcquire(key), null);
      const info = await b.locks.inspect(key);
      assert.equal(info?.mode, 'shared');
      assert.equal(info?.holders.length, 2);
      const writer = b.locks.acquire(key, { waitTimeout: 2000 });
      await sleep(20);
      await r1.release();
      await r2.release();
      const w = await writer;
      assert.equal(w.mode, 'exclusive');
      assert.equal(await b.locks.tryAcquire(key, { mode: 'shared' }), null);
      await w.release();
    });

    test('acquireAll: canonical order, all or nothing, no deadlock', async () => {
      const [x, y, z] = [keyOf('all-x'), keyOf('all-y'), keyOf('all-z')];
      const leases = await b.locks.acquireAll([z, x, y]);
      assert.deepEqual(
        leases.map((l) => l.key),
        [x, y, z].sort(),
      );
      for (const l of leases) await l.release();
      // Overlapping requests in opposite orders, over and over: each completes.
      const round = async (keys: string[]) => {
        for (let i = 0; i < 10; i++) {
          const ls = await b.locks.acquireAll(keys, { waitTimeout: 5000 });
          await sleep(0);
          for (const l of ls) await l.release();
        }
      };
      await Promise.all([round([x, y, z]), round([z, y, x]), round([y, x])]);
      // All or nothing: one key held elsewhere, the call fails and holds none of the others.
      const blocker = await b.locks.acquire(y);
      await assert.rejects(b.locks.acquireAll([x, y, z], { waitTimeout: 30 }), {
        code: 'ERR_LOCK_TIMEOUT',
      });
      assert.equal(await b.locks.inspect(x), null);
      assert.equal(await b.locks.inspect(z), null);
      await blocker.release();
      assert.deepEqual([...(await b.locks.acquireAll([]))], []);
    });

    test('acquireAll returns one group: an array of leases with one release() for them all', async () => {
      const [x, y] = [keyOf('group-x'), keyOf('group-y')];
      const group = await b.locks.acquireAll([y, x]);
      assert.ok(Array.isArray(group));
      assert.equal(group.length, 2);
      const [first, second] = group;
      assert.deepEqual([first!.key, second!.key], [x, y].sort());
      // A part of a group is a plain array: it does not release the whole.
      assert.equal(Object.getPrototypeOf(group.map((l) => l.key)), Array.prototype);
      assert.equal(group.released, false);
      // A lease released by hand is skipped by the group.
      await first!.release();
      await group.release();
      assert.equal(group.released, true);
      assert.equal(first!.held || second!.held, false);
      assert.equal(await b.locks.inspect(x), null);
      assert.equal(await b.locks.inspect(y), null);
      await assert.rejects(async () => group.release(), { code: 'ERR_LOCK_RELEASED' });
    });

    test('runAll(): holds every key while fn runs, releases the group on return and on throw', async () => {
      const [x, y] = [keyOf('runall-x'), keyOf('runall-y')];
      const value = await b.locks.runAll([y, x], async (group) => {
        assert.equal(group.length, 2);
        assert.equal(await b.locks.tryAcquire(x), null);
        assert.equal(await b.locks.tryAcquire(y), null);
        return 'done';
      });
      assert.equal(value, 'done');
      assert.equal(await b.locks.inspect(x), null);
      const boom = new Error('boom');
      await assert.rejects(
        b.locks.runAll([x, y], () => {
          throw boom;
        }),
        (e) => e === boom,
      );
      assert.equal(await b.locks.inspect(x), null);
      assert.equal(await b.locks.inspect(y), null);
    });

    test('run(): a signal that aborts while waiting rejects with AbortError; fn never runs, nothing is held', async () => {
      const key = keyOf('run-abort');
      const blocker = await b.locks.acquire(key);
      const controller = new AbortController();
      let ran = false;
      const pending = b.locks.run(
        key,
        () => {
          ran = true;
        },
        { signal: controller.signal },
      );
      await sleep(5);
      controller.abort(new Error('no longer needed'));
      await assert.rejects(pending, { name: 'AbortError', code: 'ABORT_ERR' });
      assert.equal(ran, false);
      await blocker.release();
      assert.equal(await b.locks.inspect(key), null);
    });

    test('run(): holds while fn runs, returns its value, releases on return and on throw', async () => {
      const key = keyOf('run');
      const value = await b.locks.run(key, async (lease) => {
        assert.equal(lease.held, true);
        assert.equal(await b.locks.tryAcquire(key), null);
        return 42;
      });
      assert.equal(value, 42);
      assert.equal(await b.locks.inspect(key), null);
      const boom = new Error('boom');
      await assert.rejects(
        b.locks.run(key, () => {
          throw boom;
        }),
        (e) => e === boom,
      );
      assert.equal(await b.locks.inspect(key), null);
      // A signal aborted while fn runs does not release early.
      const controller = new AbortController();
      await b.locks.run(
        key,
        async () => {
          controller.abort();
          await sleep(10);
          assert.notEqual(await b.locks.inspect(key), null);
          assert.equal(await b.locks.tryAcquire(key), null);
        },
        { signal: controller.signal },
      );
      assert.equal(await b.locks.inspect(key), null);
    });

    test('fencing tokens strictly increase per key, across modes', async () => {
      const key = keyOf('tokens');
      let last = -1n;
      for (let i = 0; i < 10; i++) {
        const lease = await b.locks.acquire(key, { mode: i % 3 === 0 ? 'shared' : 'exclusive' });
        assert.ok(lease.token > last, `${lease.token} after ${last}`);
        last = lease.token;
        await lease.release();
      }
    });

    test('release twice: ERR_LOCK_RELEASED; a lost lease: held false, ERR_LOCK_STALE', async () => {
      const key = keyOf('errors');
      const lease = await b.locks.acquire(key);
      await lease.release();
      await assert.rejects(async () => lease.release(), { code: 'ERR_LOCK_RELEASED', key });
      const lost = await b.lostLease(key);
      assert.equal(lost.held, false);
      await assert.rejects(async () => lost.release(), { code: 'ERR_LOCK_STALE', key });
      const next = await b.locks.acquire(key, { waitTimeout: 2000 });
      assert.ok(next.token > lost.token);
      await next.release();
    });

    test('inspect() and held() describe what is held', async () => {
      const key = keyOf('inspect');
      assert.equal(await b.locks.inspect(key), null);
      const lease = await b.locks.acquire(key);
      const info = await b.locks.inspect(key);
      assert.equal(info?.key, key);
      assert.equal(info?.mode, 'exclusive');
      assert.equal(info?.holders.length, 1);
      assert.ok((await b.locks.held()).some((i) => i.key === key));
      await lease.release();
      assert.equal(await b.locks.inspect(key), null);
      assert.ok(!(await b.locks.held()).some((i) => i.key === key));
    });

    test('bad input: typed errors that name the argument, before anything is taken', async () => {
      const key = keyOf('input');
      const bad = async (fn: () => unknown, code: string, name: RegExp) =>
        assert.rejects(
          async () => fn(),
          (e) => {
            assert.equal((e as { code?: string }).code, code);
            assert.match((e as Error).message, name);
            return true;
          },
        );
      const locks = b.locks as unknown as Record<string, (...args: unknown[]) => unknown>;
      await bad(() => locks.acquire!(42), 'ERR_INVALID_ARG_TYPE', /"key"/);
      await bad(() => locks.tryAcquire!(null), 'ERR_INVALID_ARG_TYPE', /"key"/);
      await bad(() => locks.acquire!(key, { mode: 'x' }), 'ERR_INVALID_ARG_VALUE', /mode/);
      await bad(() => locks.acquire!(key, { waitTimeout: -1 }), 'ERR_OUT_OF_RANGE', /waitTimeout/);
      await bad(() => locks.acquire!(key, { waitTimeout: NaN }), 'ERR_OUT_OF_RANGE', /waitTimeout/);
      await bad(() => locks.acquire!(key, { signal: {} }), 'ERR_INVALID_ARG_TYPE', /signal/);
      await bad(() => locks.acquire!(key, 'x'), 'ERR_INVALID_ARG_TYPE', /options/);
      await bad(() => locks.acquireAll!('ab'), 'ERR_INVALID_ARG_TYPE', /keys/);
      await bad(() => locks.acquireAll!([key, 1]), 'ERR_INVALID_ARG_TYPE', /keys\[1\]/);
      await bad(() => locks.acquireAll!([key, key]), 'ERR_INVALID_ARG_VALUE', /twice/);
      await bad(() => locks.run!(key, 'fn'), 'ERR_INVALID_ARG_TYPE', /"fn"/);
      await bad(() => locks.inspect!(7), 'ERR_INVALID_ARG_TYPE', /"key"/);
      assert.equal(await b.locks.inspect(key), null);
    });
  });
}
