// The shared table in front of the server (src/postgres/front.ts): local contention handed over
// without round trips (lock cohorting), tokens (F << 12n) | i, the streak bound, one server
// session per key per process, and every way out leaving the table and the server free.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import type pg from 'pg';
import { LockTable } from '../../src/index.js';
import { type PgLease, PgLockTable } from '../../src/postgres/index.js';
import {
  databaseUrl,
  eventually,
  freshNamespace,
  rawClient,
  serverLocks,
  skipWithoutPostgres,
  tableOpener,
} from './db.js';
import { runQueueSince } from '../run-queue.js';

describe('PgLockTable: the shared table in front', { skip: skipWithoutPostgres }, () => {
  let admin: pg.Client;
  const { open, closeAll } = tableOpener();
  const locksOf = (namespace: number) => serverLocks(admin, namespace);
  /** Neither the front table nor the server holds or waits for anything of `table`. */
  const assertFree = async (table: PgLockTable) => {
    await eventually(async () => (await locksOf(table.namespace)).length === 0, 2000, 'server');
    assert.deepEqual(table.table.held(), []);
  };

  /** `callers` async callers, `rounds` sections each, a read-modify-write with a wait inside. */
  async function hammer(table: PgLockTable, key: string, callers: number, rounds: number) {
    const data = { value: 0 };
    const tokens: bigint[] = [];
    await Promise.all(
      Array.from({ length: callers }, async () => {
        for (let i = 0; i < rounds; i++) {
          const lease = await table.acquire(key);
          tokens.push(lease.token);
          const seen = data.value;
          await sleep(0);
          data.value = seen + 1;
          await lease.release();
        }
      }),
    );
    return { value: data.value, tokens };
  }

  const assertIncreasing = (tokens: bigint[]) => {
    for (let i = 1; i < tokens.length; i++) {
      assert.ok(tokens[i]! > tokens[i - 1]!, `token ${tokens[i]} after ${tokens[i - 1]}`);
    }
  };

  before(async () => {
    admin = await rawClient();
  });
  after(async () => {
    await closeAll();
    await admin.end();
  });

  test('8 callers, one hot key: far fewer server grants than sections, tokens increase, 0 lost', async (t) => {
    const table = open({ cohortMs: Infinity });
    const { value, tokens } = await hammer(table, 'hot', 8, 25);
    assert.equal(value, 200, 'no lost update');
    assertIncreasing(tokens);
    const { serverGrants, handoffs } = table.stats;
    assert.equal(serverGrants + handoffs, 200);
    t.diagnostic(`200 sections: ${serverGrants} server grants, ${handoffs} hand-overs`);
    // At most cohortLimit (32) sections per server grant.
    assert.ok(serverGrants <= 20, `${serverGrants} server grants for 200 sections`);
    assert.ok(tokens.every((t) => (t & 0xfffn) < 32n));
    await assertFree(table);
  });

  test('the streak bound: at most cohortLimit grants per server grant, and cohortMs', async () => {
    const table = open({ cohortLimit: 4, cohortMs: Infinity });
    const { value, tokens } = await hammer(table, 'bound', 8, 10);
    assert.equal(value, 80);
    assertIncreasing(tokens);
    assert.ok(tokens.every((t) => (t & 0xfffn) < 4n));
    assert.ok(table.stats.serverGrants >= 20, `${table.stats.serverGrants} server grants`);
    // cohortMs 0: never hands over.
    const plain = open({ cohortMs: 0 });
    await hammer(plain, 'bound', 4, 5);
    assert.deepEqual(plain.stats, { serverGrants: 20, handoffs: 0 });
    await assertFree(table);
  });

  test('another process (its own front) gets the key within the bound while one hammers it', async (t) => {
    const first = open(); // cohortLimit 32, cohortMs 2
    const second = open({ namespace: first.namespace });
    let stop = false;
    const hammering = Promise.all(
      Array.from({ length: 8 }, async () => {
        while (!stop) {
          const lease = await first.acquire('fair');
          await sleep(0);
          await lease.release();
        }
      }),
    );
    await (await second.acquire('warm-up')).release(); // its sessions open, the schema checked
    await sleep(50);
    const waits: number[] = [];
    // Each wait beyond this thread's run-queue wait meanwhile (test/run-queue.ts): both tables'
    // fronts run on it.
    const runQueues: number[] = [];
    for (let i = 0; i < 10; i++) {
      const queued = runQueueSince();
      const t0 = performance.now();
      const lease = await second.acquire('fair', { waitTimeout: 1000 });
      waits.push(performance.now() - t0);
      runQueues.push(queued());
      await lease.release();
      await sleep(5);
    }
    stop = true;
    await hammering;
    assert.ok(first.stats.handoffs > 0, 'the first table did hand over');
    // The bound: 2 ms of streak plus one section and the server's hand-over (< 1 ms here); the
    // check leaves room for a loaded 2-core machine.
    const worst = Math.max(...waits.map((w, i) => w - runQueues[i]!));
    const shown = waits.map((w, i) => `${w.toFixed(1)} (${runQueues[i]!.toFixed(1)})`).join(', ');
    t.diagnostic(`waits of the second table (run-queue waits): ${shown} ms`);
    assert.ok(worst < 100, `waits (run-queue waits) ${shown} ms`);
    await assertFree(first);
  });

  test('tokens strictly increase across cohort grants, server grants, tables and reconnects', async () => {
    const namespace = freshNamespace();
    const a = open({ namespace, application_name: 'cohort-tokens' });
    const b = open({ namespace });
    const all: bigint[] = [];
    for (let round = 0; round < 3; round++) {
      for (const t of [a, b]) {
        const r = await hammer(t, 'tok', 4, 3);
        all.push(...r.tokens);
      }
      // A reconnect: every session of `a` ended by the server.
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND application_name = 'cohort-tokens'`,
      );
      await sleep(50); // the clients see their sessions end
    }
    assertIncreasing(all);
    assert.ok(
      all.some((t) => (t & 0xfffn) > 0n),
      'some grants were cohort grants',
    );
    const info = await a.inspect('tok');
    assert.equal(info, null);
  });

  test('two PgLockTables sharing one LockTable: at most one session of the process per key on the server', async () => {
    const shared = new LockTable({ maxKeyLength: 128 });
    const namespace = freshNamespace();
    const a = open({ namespace, table: shared });
    const b = open({ namespace, table: shared });
    let stop = false;
    let most = 0;
    const watching = (async () => {
      while (!stop) {
        most = Math.max(most, (await locksOf(namespace)).length);
        await sleep(1);
      }
    })();
    const [ra, rb] = await Promise.all([hammer(a, 'one', 4, 15), hammer(b, 'one', 4, 15)]);
    stop = true;
    await watching;
    assert.equal(ra.value + rb.value, 120);
    assert.equal(most, 1, 'one session holds or waits for the key at a time');
    assertIncreasing([...ra.tokens, ...rb.tokens].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
    assert.equal(new Set([...ra.tokens, ...rb.tokens]).size, 120);
    await assertFree(a);
  });

  test('two worker threads, a PgLockTable each, one LockTable: one session of the process per key at a time', async () => {
    // The workers load the built package (npm run build comes first); dist's LockTable.attach
    // takes the buffer of src's table (the builds recognise each other's tables).
    const shared = new LockTable({ maxKeyLength: 128 });
    const namespace = freshNamespace();
    const counter = new SharedArrayBuffer(4);
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      (async () => {
        const { LockTable } = await import(workerData.index);
        const { PgLockTable } = await import(workerData.postgres);
        const table = LockTable.attach(workerData.buffer);
        const locks = new PgLockTable({ connectionString: workerData.url, namespace: workerData.namespace, table });
        const count = new Int32Array(workerData.counter);
        const tokens = [];
        await Promise.all(Array.from({ length: 4 }, async () => {
          for (let i = 0; i < 15; i++) {
            const lease = await locks.acquire('w');
            tokens.push(lease.token);
            const seen = Atomics.load(count, 0);
            await new Promise((r) => setImmediate(r));
            Atomics.store(count, 0, seen + 1);
            await lease.release();
          }
        }));
        parentPort.postMessage({ tokens: tokens.map(String), stats: locks.stats });
        await locks.close();
      })().catch((e) => { parentPort.postMessage({ error: String(e && e.stack || e) }); });
    `;
    const workerData = {
      index: new URL('../../dist/index.js', import.meta.url).href,
      postgres: new URL('../../dist/postgres.js', import.meta.url).href,
      buffer: shared.buffer,
      url: databaseUrl,
      namespace,
      counter,
    };
    let stop = false;
    let most = 0;
    const watching = (async () => {
      while (!stop) {
        most = Math.max(most, (await locksOf(namespace)).length);
        await sleep(1);
      }
    })();
    const results = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<{ tokens: string[]; stats: { serverGrants: number }; error?: string }>(
            (resolve, reject) => {
              const worker = new Worker(code, { eval: true, workerData });
              worker.once('message', resolve);
              worker.once('error', reject);
            },
          ),
      ),
    );
    stop = true;
    await watching;
    for (const r of results) assert.equal(r.error, undefined, r.error);
    assert.equal(new Int32Array(counter)[0], 120, 'no lost update');
    assert.equal(most, 1, 'one session of the process holds or waits for the key at a time');
    const tokens = results.flatMap((r) => r.tokens.map(BigInt));
    assert.equal(new Set(tokens).size, 120);
    for (const r of results) assertIncreasing(r.tokens.map(BigInt));
    await eventually(async () => (await locksOf(namespace)).length === 0, 2000, 'server');
    assert.deepEqual(shared.held(), []);
  });

  test('a key too long for the front table is refused, naming maxKeyLength; a full one names the key', async () => {
    const table = open({ table: new LockTable({ maxKeyLength: 32 }) });
    assert.ok(table.maxKeyLength < 32);
    await assert.rejects(table.acquire('x'.repeat(table.maxKeyLength + 1)), (error: Error) => {
      assert.equal((error as { code?: string }).code, 'ERR_OUT_OF_RANGE');
      assert.match(error.message, /maxKeyLength \(32\)/);
      return true;
    });
    await (await table.acquire('x'.repeat(table.maxKeyLength))).release();
    await assertFree(table);
    // A full front table: the error names the application's key.
    const small = open({ table: new LockTable({ capacity: 1 }) });
    const one = await small.acquire('one');
    await assert.rejects(small.acquire('two', { waitTimeout: 0 }), (error: Error) => {
      assert.equal((error as { code?: string }).code, 'ERR_LOCK_TABLE_FULL');
      assert.equal((error as { key?: string }).key, 'two');
      return true;
    });
    await one.release();
    await assertFree(small);
  });

  test('ways out of a queued waiter: timeout, abort, close(); nothing left behind', async () => {
    const table = open({ cohortMs: Infinity }); // the holder holds for > 2 ms
    const holder = await table.acquire('out');
    await assert.rejects(table.acquire('out', { waitTimeout: 20 }), { code: 'ERR_LOCK_TIMEOUT' });
    const controller = new AbortController();
    const aborted = table.acquire('out', { signal: controller.signal });
    const behind = table.acquire('out');
    await sleep(10);
    controller.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    assert.equal(await table.tryAcquire('out'), null, 'a try never jumps the queue');
    await holder.release();
    const next = await behind;
    assert.ok(next.token > holder.token);
    assert.equal(next.token >> 12n, holder.token >> 12n, 'handed over, same server grant');
    await next.release();
    await assertFree(table);

    const closing = open();
    const held = await closing.acquire('out');
    const queued = assert.rejects(closing.acquire('out'), { code: 'ERR_LOCK_CLOSED' });
    const atTable = assert.rejects(closing.acquireAll(['out', 'z']), { code: 'ERR_LOCK_CLOSED' });
    await sleep(10);
    await closing.close();
    await queued;
    await atTable;
    await assert.rejects(held.release(), { code: 'ERR_LOCK_CLOSED' });
    await assertFree(closing);
  });

  test('ways out of a wait on the front table: timeout and abort name the key, leave nothing', async () => {
    const shared = new LockTable({ maxKeyLength: 128 });
    const namespace = freshNamespace();
    const a = open({ namespace, table: shared });
    const b = open({ namespace, table: shared });
    const holder = await a.acquire('front-wait');
    await assert.rejects(b.acquire('front-wait', { waitTimeout: 30 }), (error: Error) => {
      assert.equal((error as { code?: string }).code, 'ERR_LOCK_TIMEOUT');
      assert.equal((error as { key?: string }).key, 'front-wait');
      return true;
    });
    const controller = new AbortController();
    const aborted = b.acquire('front-wait', { signal: controller.signal });
    const behind = b.acquire('front-wait');
    await sleep(10);
    assert.equal((await locksOf(namespace)).length, 1, 'only the holder is on the server');
    controller.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    await holder.release();
    const next = await behind;
    assert.ok(next.token > holder.token);
    await next.release();
    await assertFree(a);
    assert.deepEqual(b.stats, { serverGrants: 1, handoffs: 0 });
  });

  test('a way out by error: a head whose server request fails lets its queue go, leaves the table free', async () => {
    const shared = new LockTable({ maxKeyLength: 128 });
    const url = new URL(databaseUrl!);
    url.port = '1'; // nobody listens there
    const broken = open({ connectionString: url.toString(), table: shared });
    const results = await Promise.allSettled([
      broken.acquire('err'),
      broken.acquire('err'),
      broken.acquire('err', { mode: 'shared' }),
    ]);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.equal((r.reason as { code?: string }).code, 'ERR_LOCK_CONNECTION');
    }
    assert.deepEqual(shared.held(), []);
  });

  test('a session lost during a streak: its lease is stale, the table lease goes, waiters go on', async () => {
    const table = open();
    const holder = await table.acquire('lost');
    const waiters = [table.acquire('lost'), table.acquire('lost')];
    await sleep(10);
    await admin.query('SELECT pg_terminate_backend($1)', [holder.pid]);
    await eventually(() => !holder.held, 2000, 'the holder to learn of the loss');
    assert.ok(holder.signal.aborted);
    const leases: PgLease[] = [];
    for (const w of waiters) {
      const lease = await w;
      leases.push(lease);
      assert.ok(lease.token > holder.token);
      await lease.release();
    }
    await assert.rejects(holder.release(), { code: 'ERR_LOCK_STALE' });
    await assertFree(table);
  });
});
