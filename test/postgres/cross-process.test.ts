// Across processes, against a real PostgreSQL: several Node processes (test/postgres/fixtures/,
// run on the built package: `npm test` builds it first), each with several worker threads, each
// worker with its own PgLockTable. Lost updates with and without the lock, fencing tokens in grant
// order, and holders that are killed (SIGKILL), frozen (SIGSTOP), or cut off by the server
// (pg_terminate_backend). Every step is coordinated through IPC messages or the server's own
// view (inspect()'s waiters), never by sleeping.
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { PgLockTable } from '../../src/postgres/index.js';
import { databaseUrl, eventually, freshNamespace, rawClient, skipWithoutPostgres } from './db.js';

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const built = existsSync(fileURLToPath(new URL('../../dist/postgres.js', import.meta.url)));

const PROCESSES = 3;
const WORKERS = 2;

interface Reply {
  id: number;
  error?: { code?: string; message: string };
  [field: string]: unknown;
}

/** A holder process (fixtures/xproc-holder.mjs), driven by request/reply over IPC. */
class Holder {
  readonly child: ChildProcess;
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>;
  #next = 0;
  readonly #pending = new Map<number, (reply: Reply) => void>();

  constructor(config: object) {
    this.child = fork(fixture('xproc-holder.mjs'), [JSON.stringify(config)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.exited = once(this.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    this.child.on('message', (m: Reply) => this.#pending.get(m.id)?.(m));
  }

  async ready(): Promise<void> {
    const [message] = await once(this.child, 'message');
    assert.deepEqual(message, { ready: true });
  }

  async call(op: string, args: object = {}): Promise<Reply> {
    const id = this.#next++;
    const reply = new Promise<Reply>((resolve) => this.#pending.set(id, resolve));
    this.child.send({ id, op, ...args });
    const r = await reply;
    this.#pending.delete(id);
    if (r.error !== undefined) throw Object.assign(new Error(r.error.message), r.error);
    return r;
  }

  /** Asks it to exit; resolves with its exit code (0: it never crashed). */
  async exit(): Promise<number | null> {
    this.child.send({ id: -1, op: 'exit' });
    return (await this.exited)[0];
  }
}

describe('PgLockTable across processes', { skip: skipWithoutPostgres }, () => {
  let admin: pg.Client;
  const namespace = freshNamespace();
  const schema = `xproc_${namespace}`;
  const children: ChildProcess[] = [];
  const tables: PgLockTable[] = [];
  const contender = () => {
    const table = new PgLockTable({ connectionString: databaseUrl, namespace });
    tables.push(table);
    return table;
  };
  const holder = async (lease?: number) => {
    const h = new Holder({ url: databaseUrl, namespace, schema, lease });
    children.push(h.child);
    await h.ready();
    return h;
  };
  /** Waits until `n` sessions wait for `key` on the server. */
  const queued = (table: PgLockTable, key: string, n = 1) =>
    eventually(async () => ((await table.inspect(key))?.waiters ?? 0) >= n, 5000, `${key} waiters`);

  before(async () => {
    assert.ok(built, 'dist/postgres.js is missing: run `npm run build` first (npm test does)');
    admin = await rawClient();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.query(`CREATE TABLE ${schema}.counters (id text PRIMARY KEY, v int NOT NULL)`);
    await admin.query(
      `CREATE TABLE ${schema}.grants (seq bigserial PRIMARY KEY, key text NOT NULL, token bigint)`,
    );
    await admin.query(
      `CREATE TABLE ${schema}.fenced (id text PRIMARY KEY, v int NOT NULL, token bigint NOT NULL)`,
    );
  });
  after(async () => {
    if (counters !== undefined) {
      const { procs, exits } = await counters;
      for (const p of procs) p.send('exit');
      for (const [code] of await Promise.all(exits)) assert.equal(code, 0, 'a counter process');
    }
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
    }
    await Promise.all(tables.map((t) => t.close()));
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  });

  /** PROCESSES counter processes of WORKERS workers each, started once for every run. */
  let counters: Promise<{ procs: ChildProcess[]; exits: Promise<unknown[]>[] }> | undefined;
  const counterProcesses = () =>
    (counters ??= (async () => {
      const config = { url: databaseUrl, namespace, schema, workers: WORKERS };
      const procs = Array.from({ length: PROCESSES }, () => {
        const child = fork(fixture('xproc-counter.mjs'), [JSON.stringify(config)], {
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        });
        children.push(child);
        return child;
      });
      const exits = procs.map((p) => once(p, 'exit'));
      const ready = await Promise.all(procs.map((p) => once(p, 'message').then(([m]) => m)));
      assert.deepEqual(ready, Array(PROCESSES).fill('ready'));
      return { procs, exits };
    })());

  /**
   * Every worker of every counter process does `iterations` read-modify-writes of random keys
   * among `keyCount` keys, all started together. Returns what the counters lost and the grant
   * log (in grant order).
   */
  async function counterRun(run: string, keyCount: number, iterations: number, useLock: boolean) {
    const keys = Array.from({ length: keyCount }, (_, i) => `${run}:${i}`);
    await admin.query(`INSERT INTO ${schema}.counters SELECT unnest($1::text[]), 0`, [keys]);
    const { procs } = await counterProcesses();
    const results = procs.map((p) => once(p, 'message').then(([m]) => m as { done: number }));
    const t0 = performance.now();
    for (const p of procs) p.send({ keys, iterations, useLock });
    const done = (await Promise.all(results)).reduce((a, r) => a + r.done, 0);
    const seconds = (performance.now() - t0) / 1000;
    assert.equal(done, PROCESSES * WORKERS * iterations);
    const { rows } = await admin.query(
      `SELECT coalesce(sum(v), 0)::int AS total FROM ${schema}.counters WHERE id = ANY($1)`,
      [keys],
    );
    const grants = (
      await admin.query(
        `SELECT key, token::text AS token FROM ${schema}.grants WHERE key = ANY($1) ORDER BY seq`,
        [keys],
      )
    ).rows as Array<{ key: string; token: string | null }>;
    return { done, lost: done - rows[0].total, grants, seconds };
  }

  /** Per key, in grant order, every token is greater than the one before. */
  function assertTokensIncrease(grants: Array<{ key: string; token: string | null }>) {
    const last = new Map<string, bigint>();
    for (const { key, token } of grants) {
      assert.notEqual(token, null);
      const t = BigInt(token!);
      const before = last.get(key);
      assert.ok(before === undefined || t > before, `${key}: token ${t} after ${before}`);
      last.set(key, t);
    }
  }

  test(`one hot key, ${PROCESSES} processes x ${WORKERS} workers: 0 lost updates, tokens increase`, async (t) => {
    const r = await counterRun('hot', 1, 60, true);
    t.diagnostic(`${r.done} sections in ${r.seconds.toFixed(2)} s, lost ${r.lost}`);
    assert.equal(r.lost, 0);
    assert.equal(r.grants.length, r.done);
    assertTokensIncrease(r.grants);
  });

  test(`64 keys, ${PROCESSES} processes x ${WORKERS} workers: 0 lost updates, tokens increase`, async (t) => {
    const r = await counterRun('many', 64, 100, true);
    t.diagnostic(`${r.done} sections in ${r.seconds.toFixed(2)} s, lost ${r.lost}`);
    assert.equal(r.lost, 0);
    assert.equal(r.grants.length, r.done);
    assertTokensIncrease(r.grants);
  });

  test('negative control: the same read-modify-writes without the lock lose updates', async (t) => {
    const r = await counterRun('unlocked', 1, 60, false);
    t.diagnostic(`${r.done} sections in ${r.seconds.toFixed(2)} s, lost ${r.lost}`);
    assert.ok(r.lost > 0, 'no update lost without the lock: the harness cannot see a race');
  });

  test('a holder killed with SIGKILL: the key is free to a waiter at once', async (t) => {
    const h = await holder();
    const held = await h.call('acquire', { key: 'killed' });
    const table = contender();
    const waiting = table.acquire('killed', { waitTimeout: 5000 });
    await queued(table, 'killed');
    const t0 = performance.now();
    h.child.kill('SIGKILL');
    const lease = await waiting;
    const took = performance.now() - t0;
    t.diagnostic(`SIGKILL -> next grant: ${took.toFixed(1)} ms`);
    assert.ok(lease.token > BigInt(held.token as string));
    assert.deepEqual(await h.exited, [null, 'SIGKILL']);
    await lease.release();
    assert.ok(took < 1000, `recovered after ${took} ms`);
  });

  test('a holder frozen with SIGSTOP: lost within its lease, its late write refused by its token', async (t) => {
    const LEASE = 500;
    await admin.query(`INSERT INTO ${schema}.fenced VALUES ('frozen', 0, 0)`);
    const h = await holder(LEASE);
    const held = await h.call('acquire', { key: 'frozen' });
    assert.equal((await h.call('write', { key: 'frozen', v: 1 })).rows, 1);
    const table = contender();
    const waiting = table.acquire('frozen', { waitTimeout: 10_000 });
    await queued(table, 'frozen');
    const t0 = performance.now();
    h.child.kill('SIGSTOP');
    // How long its session had been idle at the stop (its last heartbeat's end, on the server's
    // clock): a heartbeat of the holder that came late (its process kept off the CPU) leaves
    // less of the lease after the stop. At most, for the query's own time.
    const { rows: idle } = await admin.query(
      'SELECT extract(epoch FROM clock_timestamp() - state_change) * 1000 AS ms FROM pg_stat_activity WHERE pid = $1',
      [held.pid],
    );
    const idleAtStop = Number(idle[0]?.ms ?? 0);
    const lease = await waiting.finally(() => h.child.kill('SIGCONT'));
    const took = performance.now() - t0;
    t.diagnostic(
      `SIGSTOP -> next grant: ${took.toFixed(1)} ms, idle ${idleAtStop.toFixed(1)} ms before (lease ${LEASE} ms)`,
    );
    // The new holder writes, fenced by its own (greater) token.
    const mine = await admin.query(
      `UPDATE ${schema}.fenced SET v = 2, token = $1 WHERE id = 'frozen' AND token < $1`,
      [String(lease.token)],
    );
    assert.equal(mine.rowCount, 1);
    // SIGCONT was sent at the grant: the frozen holder wakes up and writes as if it still held the key: refused by its token.
    assert.equal((await h.call('write', { key: 'frozen', v: 99 })).rows, 0);
    const { rows } = await admin.query(`SELECT v FROM ${schema}.fenced WHERE id = 'frozen'`);
    assert.equal(rows[0].v, 2);
    const lost = await h.call('lost', { key: 'frozen' });
    assert.deepEqual(
      { held: lost.held, aborted: lost.aborted, reason: lost.reason, release: lost.release },
      { held: false, aborted: true, reason: 'ERR_LOCK_STALE', release: 'ERR_LOCK_STALE' },
    );
    // It carries on: a new request works (and finds the key held by the new holder).
    assert.equal((await h.call('try', { key: 'frozen' })).granted, false);
    await lease.release();
    assert.equal((await h.call('try', { key: 'frozen' })).granted, true);
    assert.equal(await h.exit(), 0);
    // The server ended its session about LEASE ms after its last statement (a heartbeat every
    // LEASE / 4): not before, and within the lease plus a margin.
    assert.ok(
      took + idleAtStop > LEASE / 2,
      `lost after ${took} ms, idle ${idleAtStop} ms before: before its lease`,
    );
    assert.ok(took < LEASE + 1500, `lost after ${took} ms`);
  });

  test('a holder whose session the server terminates: told, no crash, key free', async (t) => {
    const h = await holder();
    const held = await h.call('acquire', { key: 'terminated' });
    const table = contender();
    const waiting = table.acquire('terminated', { waitTimeout: 5000 });
    await queued(table, 'terminated');
    const t0 = performance.now();
    await admin.query('SELECT pg_terminate_backend($1)', [held.pid]);
    const lease = await waiting;
    const took = performance.now() - t0;
    t.diagnostic(`pg_terminate_backend -> next grant: ${took.toFixed(1)} ms`);
    assert.ok(lease.token > BigInt(held.token as string));
    const lost = await h.call('lost', { key: 'terminated' });
    assert.deepEqual(
      { held: lost.held, aborted: lost.aborted, reason: lost.reason, release: lost.release },
      { held: false, aborted: true, reason: 'ERR_LOCK_STALE', release: 'ERR_LOCK_STALE' },
    );
    assert.equal((await h.call('try', { key: 'terminated' })).granted, false);
    await lease.release();
    assert.equal((await h.call('try', { key: 'terminated' })).granted, true);
    assert.equal(await h.exit(), 0);
    assert.ok(took < 1000, `recovered after ${took} ms`);
  });

  test('keys whose hashtext collides: held at once by two processes, each exclusive to itself', async () => {
    const [k1, k2] = ['order:14534', 'order:124147'];
    const { rows } = await admin.query('SELECT hashtext($1) = hashtext($2) AS same', [k1, k2]);
    assert.equal(rows[0].same, true, 'the two keys collide in a 32-bit hash');
    const [a, b] = await Promise.all([holder(), holder()]);
    const ta = await a.call('acquire', { key: k1 });
    // Granted while the other process holds the colliding key (waitTimeout 0: one attempt).
    const tb = await b.call('acquire', { key: k2, waitTimeout: 0 });
    const table = contender();
    const [i1, i2] = [await table.inspect(k1), await table.inspect(k2)];
    assert.deepEqual(i1?.holders, [{ pid: ta.pid, mode: 'exclusive' }]);
    assert.deepEqual(i2?.holders, [{ pid: tb.pid, mode: 'exclusive' }]);
    // Each key still excludes its own contenders, in the other process and in this one.
    assert.equal((await a.call('try', { key: k2 })).granted, false);
    assert.equal((await b.call('try', { key: k1 })).granted, false);
    assert.equal(await table.tryAcquire(k1), null);
    assert.equal(await table.tryAcquire(k2), null);
    await a.call('release', { key: k1 });
    assert.equal((await b.call('try', { key: k1 })).granted, true);
    assert.equal((await a.call('try', { key: k2 })).granted, false);
    await b.call('release', { key: k2 });
    assert.equal((await a.call('try', { key: k2 })).granted, true);
    assert.deepEqual(await Promise.all([a.exit(), b.exit()]), [0, 0]);
  });
});
