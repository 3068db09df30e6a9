/**
 * Seeing contention: the diagnostics_channel events of src/table/diagnostics.ts and table.stats()
 * (src/table/stats.ts), with holders and contenders in real worker threads that coordinate
 * through shared memory.
 */
import assert from 'node:assert/strict';
import dc from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import { threadId } from 'node:worker_threads';
import { describe, test } from 'node:test';
import { CHANNELS, LockTable } from '../src/index.js';
import {
  control,
  CTRL_GO,
  CTRL_HELD,
  CTRL_READY,
  CTRL_STOP,
  signal,
  spawn,
  waitFor,
} from './harness.js';

type Event = { channel: string } & Record<string, unknown>;

/** Subscribes to every channel; returns the events seen and an unsubscribe function. */
function record(): { events: Event[]; stop: () => void } {
  const events: Event[] = [];
  const subs = Object.entries(CHANNELS).map(([channel, name]) => {
    const fn = (message: unknown) => events.push({ channel, ...(message as object) });
    dc.subscribe(name, fn);
    return () => dc.unsubscribe(name, fn);
  });
  return { events, stop: () => subs.forEach((s) => s()) };
}

/** A worker that takes `key` (options) and holds it until CTRL_STOP. */
async function holder(table: LockTable, key: string, options: Record<string, unknown> = {}) {
  const ctrl = control();
  const w = spawn('acquireOnce', {
    buffer: table.buffer,
    ctrl: ctrl.buffer,
    key,
    options,
    keep: true,
  });
  await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
  return {
    worker: w.worker,
    release: async () => {
      signal(ctrl, CTRL_STOP);
      await w.result;
    },
  };
}

describe('diagnostics_channel events', () => {
  test('a request publishes start, then grant, miss (busy or timeout) or abort; a release, release', async () => {
    const table = new LockTable({ capacity: 8 });
    const { events, stop } = record();
    try {
      const own = table.acquireSync('a');
      own.release();
      const h = await holder(table, 'b');
      assert.equal(table.tryAcquire('b'), null);
      await assert.rejects(table.acquire('b', { waitTimeout: 5 }), { code: 'ERR_LOCK_TIMEOUT' });
      const controller = new AbortController();
      const aborted = table.acquire('b', { signal: controller.signal });
      controller.abort(new Error('stop waiting'));
      await assert.rejects(aborted, { name: 'AbortError' });
      const waiting = table.acquire('b', { mode: 'shared' });
      await h.release();
      const lease = await waiting;
      lease.release();
      const permit = table.semaphore('pool', 3).tryAcquire()!;
      permit.release();
    } finally {
      stop();
    }
    const me = threadId;
    const kinds = events.map((e) => `${e.channel} ${String(e.key)} ${String(e.reason ?? '')}`);
    assert.deepEqual(
      kinds.map((k) => k.trim()),
      [
        'start a',
        'grant a',
        'release a',
        'start b',
        'miss b busy',
        'start b',
        'miss b timeout',
        'start b',
        'abort b Error: stop waiting',
        'start b',
        'grant b',
        'release b',
        'start pool',
        'grant pool',
        'release pool',
      ],
    );
    for (const e of events) assert.equal(e.threadId, me);
    const grants = events.filter((e) => e.channel === 'grant');
    assert.equal(grants[0]!.contended, false);
    assert.equal(grants[1]!.contended, true, 'a grant after a wait is contended');
    assert.equal(grants[1]!.mode, 'shared');
    assert.ok((grants[1]!.waitMs as number) > 0);
    assert.equal(typeof grants[1]!.token, 'bigint');
    assert.equal(grants[2]!.limit, 3);
    assert.ok(
      (events.find((e) => e.channel === 'miss' && e.reason === 'timeout')!.waitMs as number) >= 5,
    );
  });

  test('a reclaim is published: a grant past a dead holder deadline, and watch() freeing a dead thread', async () => {
    const table = new LockTable({ capacity: 8, failTimeout: 20 });
    const { events, stop } = record();
    try {
      const dead = await holder(table, 'r', { hold: 30 });
      await dead.worker.terminate();
      const lease = table.acquireSync('r', { waitTimeout: 5000 });
      assert.equal(lease.recovered, true);
      lease.release();
      const watched = await holder(table, 'w');
      table.watch(watched.worker);
      await watched.worker.terminate();
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      stop();
    }
    const reclaims = events.filter((e) => e.channel === 'reclaim');
    assert.equal(reclaims.length, 2);
    assert.equal(reclaims[0]!.key, 'r');
    assert.equal(reclaims[0]!.by, 'deadline');
    assert.equal(reclaims[1]!.by, 'exit');
    assert.equal(reclaims[1]!.leases, 1);
  });

  test('with no subscriber nothing is published; subscribing takes effect at the next request', () => {
    const table = new LockTable({ capacity: 4 });
    table.acquireSync('x').release();
    const seen: unknown[] = [];
    const fn = (m: unknown) => seen.push(m);
    dc.subscribe(CHANNELS.grant, fn);
    table.acquireSync('x').release();
    dc.unsubscribe(CHANNELS.grant, fn);
    table.acquireSync('x').release();
    assert.equal(seen.length, 1);
  });

  test('every way to subscribe and unsubscribe switches the events on and off, in both builds', async () => {
    // The ESM source and the CommonJS build in one thread: two copies of the module, one set of
    // channels (global by name).
    const require = createRequire(import.meta.url);
    const cjs = require('../dist/index.cjs') as typeof import('../src/index.js');
    const tables = [new LockTable({ capacity: 4 }), new cjs.LockTable({ capacity: 4 })];
    const seen: string[] = [];
    const grant = (m: unknown) => seen.push(`grant ${(m as { key: string }).key}`);
    const release = (m: unknown) => seen.push(`release ${(m as { key: string }).key}`);
    const lockAll = (key: string) => {
      for (const table of tables) table.acquireSync(key).release();
    };
    lockAll('a');
    dc.channel(CHANNELS.grant).subscribe(grant);
    dc.subscribe(CHANNELS.release, release);
    lockAll('b');
    dc.channel(CHANNELS.release).unsubscribe(release);
    lockAll('c');
    dc.unsubscribe(CHANNELS.grant, grant);
    lockAll('d');
    assert.deepEqual(seen, ['grant b', 'release b', 'grant b', 'release b', 'grant c', 'grant c']);
  });
});

describe('table.stats()', () => {
  test('counts the requests of every thread: grants, contended grants, releases, wait percentiles', async () => {
    const table = new LockTable({ capacity: 8, stats: true });
    const ctrl = control();
    const WORKERS = 3;
    const workers = Array.from({ length: WORKERS }, () =>
      spawn<{ sections: number }>('hotKey', {
        buffer: table.buffer,
        ctrl: ctrl.buffer,
        key: 'hot',
        holdLoops: 300,
      }),
    );
    await waitFor(ctrl, CTRL_READY, (v) => v === WORKERS);
    signal(ctrl, CTRL_GO);
    await waitFor(ctrl, CTRL_GO, () => table.stats().contendedGrants >= 50, 20_000);
    signal(ctrl, CTRL_STOP);
    const sections = (await Promise.all(workers.map((w) => w.result))).reduce(
      (a, r) => a + r.sections,
      0,
    );
    const s = table.stats();
    assert.equal(s.enabled, true);
    assert.equal(s.grants, sections, 'every grant of every worker is counted');
    assert.equal(s.requests, sections);
    assert.equal(s.releases, sections);
    assert.ok(s.contendedGrants >= 50 && s.contendedGrants <= s.grants);
    assert.ok(s.wait.p50 <= s.wait.p90 && s.wait.p90 <= s.wait.p99 && s.wait.p99 <= s.wait.max);
    assert.ok(s.wait.max > 0);
    // A miss, a timeout and an abort, from this thread, on a key another thread holds.
    const h = await holder(table, 'held');
    assert.equal(table.tryAcquire('held'), null);
    assert.throws(() => table.acquireSync('held', { waitTimeout: 2 }), {
      code: 'ERR_LOCK_TIMEOUT',
    });
    await assert.rejects(table.acquire('held', { signal: AbortSignal.abort() }), {
      name: 'AbortError',
    });
    await h.release();
    const after = table.stats();
    assert.equal(after.misses, 1);
    assert.equal(after.timeouts, 1);
    assert.equal(after.aborts, 1);
    // The holder's grant and release count too, from its own thread.
    assert.equal(after.grants, sections + 1);
    assert.equal(after.releases, sections + 1);
    assert.equal(after.requests, sections + 4);
  });

  test('a table made without stats counts nothing, and says so', () => {
    const table = new LockTable({ capacity: 4 });
    table.acquireSync('x').release();
    const s = table.stats();
    assert.equal(s.enabled, false);
    assert.equal(s.grants, 0);
    assert.throws(() => new LockTable({ stats: 1 as unknown as boolean }), {
      code: 'ERR_INVALID_ARG_TYPE',
      message: /options\.stats/,
    });
  });
});
