// What only the PostgreSQL backend does: exact keys in a namespace, tokens across instances and
// reconnects, lost sessions, server-side cancels and timeouts, hung holders, close(), install.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { PgLockTable } from '../../src/postgres/index.js';
import {
  fastGrant,
  type GrantWait,
  installStatement,
  releaseStatement,
  RESET_SESSION,
} from '../../src/postgres/sql.js';
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

describe('PgLockTable', { skip: skipWithoutPostgres }, () => {
  let admin: pg.Client;
  const { open, closeAll } = tableOpener();
  const locksOf = (namespace: number) => serverLocks(admin, namespace);

  before(async () => {
    admin = await rawClient();
  });
  after(async () => {
    await closeAll();
    await admin.end();
  });

  test('exact keys: keys whose hashtext collides are independent locks', async () => {
    const { rows } = await admin.query(
      "SELECT hashtext('order:14534') = hashtext('order:124147') AS same",
    );
    assert.equal(rows[0].same, true, 'the two keys collide in a 32-bit hash');
    const table = open();
    const a = await table.acquire('order:14534');
    const b = await table.acquire('order:124147', { waitTimeout: 0 });
    assert.notEqual(a.lockId, b.lockId);
    assert.equal(await table.tryAcquire('order:14534'), null);
    await a.release();
    await b.release();
  });

  test("namespace: never collides with an application's bigint locks of the same numbers", async () => {
    const table = open();
    const lease = await table.acquire('ns-key');
    const ns = BigInt(table.namespace);
    const id = BigInt(lease.lockId);
    // The application locks 1, the key's id, and the bigint that packs (namespace, id).
    const app = await rawClient();
    const { rows } = await app.query(
      'SELECT pg_try_advisory_lock(1) AS a, pg_try_advisory_lock($1::int8) AS b, pg_try_advisory_lock($2::int8) AS c',
      [id, (ns << 32n) | id],
    );
    assert.deepEqual(rows[0], { a: true, b: true, c: true });
    // The application's hold on those does not block locktable either.
    const other = await table.acquire('ns-key-2', { waitTimeout: 0 });
    await other.release();
    const locks = await locksOf(table.namespace);
    assert.deepEqual(
      locks.map((l) => [l.id, l.pid]),
      [[lease.lockId, lease.pid]],
    );
    // Another namespace, same key: an independent lock.
    const elsewhere = open();
    const same = await elsewhere.acquire('ns-key', { waitTimeout: 0 });
    await same.release();
    await lease.release();
    await app.end();
  });

  test('tokens strictly increase across instances and reconnects', async () => {
    const namespace = freshNamespace();
    let last = 0n;
    const take = async (table: PgLockTable) => {
      const lease = await table.acquire('tokens');
      assert.ok(lease.token > last, `${lease.token} after ${last}`);
      last = lease.token;
      return lease;
    };
    const first = open({ namespace });
    for (let i = 0; i < 3; i++) await (await take(first)).release();
    const second = open({ namespace });
    await (await take(second)).release();
    // Reconnects: end every session of the first table from the server.
    const lease = await take(first);
    await admin.query('SELECT pg_terminate_backend($1)', [lease.pid]);
    await eventually(() => !lease.held);
    await assert.rejects(lease.release(), { code: 'ERR_LOCK_STALE' });
    await (await take(first)).release();
    await first.close();
    await (await take(open({ namespace }))).release();
  });

  test('a terminated session: lease lost (held, signal, ERR_LOCK_STALE), no crash, key free', async () => {
    const table = open();
    const lease = await table.acquire('terminated');
    let aborted: unknown;
    lease.signal.addEventListener('abort', () => (aborted = lease.signal.reason));
    const t0 = performance.now();
    await admin.query('SELECT pg_terminate_backend($1)', [lease.pid]);
    await eventually(() => !lease.held, 2000, 'the loss');
    const noticed = performance.now() - t0;
    assert.ok(lease.signal.aborted);
    assert.equal((aborted as { code?: string }).code, 'ERR_LOCK_STALE');
    await assert.rejects(lease.release(), { code: 'ERR_LOCK_STALE', key: 'terminated' });
    const next = await open({ namespace: table.namespace }).acquire('terminated', {
      waitTimeout: 1000,
    });
    assert.ok(next.token > lease.token);
    await next.release();
    // The table itself carries on with new sessions.
    await (await table.acquire('terminated', { waitTimeout: 1000 })).release();
    assert.ok(noticed < 1000, `noticed after ${noticed} ms`);
  });

  test('abort cancels the wait on the server: no waiting backend is left', async () => {
    // Two tables, two fronts: the waiter waits on the server, not in the holder's front.
    const holderTable = open();
    const table = open({ namespace: holderTable.namespace });
    const holder = await holderTable.acquire('abort');
    const controller = new AbortController();
    const waiting = table.acquire('abort', { signal: controller.signal });
    await eventually(
      async () => (await locksOf(table.namespace)).some((l) => !l.granted),
      2000,
      'the server-side wait',
    );
    const queued = runQueueSince();
    const t0 = performance.now();
    controller.abort();
    await assert.rejects(waiting, { name: 'AbortError' });
    const took = performance.now() - t0;
    const rq = queued();
    const locks = await locksOf(table.namespace);
    assert.deepEqual(
      locks.map((l) => [l.pid, l.granted]),
      [[holder.pid, true]],
    );
    // Beyond this thread's run-queue wait (test/run-queue.ts): the OS alone can keep it off the
    // CPU that long on a loaded machine.
    assert.ok(took - rq < 100, `the abort took ${took} ms (${rq.toFixed(1)} ms on a run queue)`);
    await holder.release();
  });

  test('an abort in the same task as a shared acquire: its grant is already on the wire, so it is cancelled on the server; nothing is left held', async () => {
    const name = `abort-same-task-${freshNamespace()}`;
    const table = open({ application_name: name });
    // Warm: the schema installed, an idle session, the key's id known (the fast grant): acquire()
    // writes the grant statement before it returns its promise (DESIGN, "Timeouts and cancels").
    for (let i = 0; i < 2; i++) await (await table.acquire('k', { mode: 'shared' })).release();
    const controller = new AbortController();
    const request = table.acquire('k', { mode: 'shared', signal: controller.signal });
    controller.abort();
    await assert.rejects(request, { name: 'AbortError' });
    assert.deepEqual(await locksOf(table.namespace), []);
    // Not withdrawn unsent: the control session cancelled it on the server.
    const { rows } = await admin.query(
      'SELECT query FROM pg_stat_activity WHERE application_name = $1 ORDER BY backend_start',
      [name],
    );
    assert.ok(
      rows.some((row: { query: string }) => row.query.includes('pg_cancel_backend')),
      `no cancel among the table's sessions' last statements: ${JSON.stringify(rows)}`,
    );
    await (await table.acquire('k', { mode: 'shared', waitTimeout: 1000 })).release();
  });

  test('waitTimeout is the server lock_timeout: a 50 ms wait fails after 50 to ~60 ms', async () => {
    const holderTable = open();
    const table = open({ namespace: holderTable.namespace });
    const holder = await holderTable.acquire('accuracy');
    await (await table.tryAcquire('warm-up'))!.release(); // a session, connected
    const waits: number[] = [];
    // Each wait beyond this thread's run-queue wait meanwhile (test/run-queue.ts).
    const lateness: number[] = [];
    for (let i = 0; i < 7; i++) {
      const queued = runQueueSince();
      const t0 = performance.now();
      await assert.rejects(table.acquire('accuracy', { waitTimeout: 50 }), {
        code: 'ERR_LOCK_TIMEOUT',
      });
      const waited = performance.now() - t0;
      waits.push(waited);
      lateness.push(waited - queued());
    }
    waits.sort((a, b) => a - b);
    lateness.sort((a, b) => a - b);
    const median = lateness[3]!;
    assert.ok(waits[0]! >= 50, `fired early: ${waits.join(', ')}`);
    assert.ok(median < 60, `median ${median} ms beyond run-queue waits: ${waits.join(', ')}`);
    await holder.release();
  });

  test('a grant that races a cancel leaves nothing held', async (t) => {
    const table = open();
    const other = open({ namespace: table.namespace });
    let granted = 0;
    let aborted = 0;
    for (let i = 0; i < 30; i++) {
      const holder = await other.acquire('race');
      const controller = new AbortController();
      const waiting = table.acquire('race', { signal: controller.signal });
      waiting.catch(() => {}); // it may reject while the release is awaited; checked below
      await eventually(async () => (await locksOf(table.namespace)).some((l) => !l.granted));
      // Release and abort together, at varying offsets: the grant and the cancel cross.
      const release = holder.release();
      if (i % 3 === 1) await sleep(0);
      if (i % 3 === 2) await release;
      controller.abort();
      await release;
      try {
        const lease = await waiting;
        granted++;
        await lease.release();
      } catch (error) {
        assert.equal((error as Error).name, 'AbortError');
        aborted++;
      }
      await eventually(
        async () => (await locksOf(table.namespace)).length === 0,
        2000,
        'no lock left',
      );
    }
    assert.equal(granted + aborted, 30);
    t.diagnostic(`granted ${granted}, aborted ${aborted}`);
  });

  test('the grant refuses a server process whose session marker is not the caller’s, before it locks', async () => {
    const table = open();
    await (await table.acquire('marked')).release(); // the schema and the key exist
    const raw = await rawClient();
    try {
      await raw.query("SELECT set_config('locktable.session', 'another session', false)");
      await assert.rejects(
        raw.query("SELECT * FROM locktable.grant($1, 'marked', true, -1, 0, 'mine')", [
          table.namespace,
        ]),
        { code: 'LT001' },
      );
      assert.deepEqual(await locksOf(table.namespace), [], 'nothing was locked');
    } finally {
      await raw.end();
    }
  });

  test('fastGrant, in each of its six forms, locks nothing on a server process whose marker is not the caller’s', async () => {
    const table = open();
    await (await table.acquire('fast-marked')).release(); // the schema and the key exist
    const raw = await rawClient();
    try {
      await raw.query("SELECT set_config('locktable.session', 'locktable:owner', false)");
      const { rows } = await raw.query(
        "SELECT id FROM locktable.keys WHERE namespace = $1 AND key = 'fast-marked'",
        [table.namespace],
      );
      const id = rows[0].id as number;
      for (const wait of ['try', 'forever', 'timed'] as GrantWait[]) {
        for (const exclusive of [true, false]) {
          const statement = fastGrant(wait, exclusive);
          const values = (marker: string) =>
            wait === 'timed' ? [table.namespace, id, marker, 100] : [table.namespace, id, marker];
          // Another session's statement, routed here by a pooler: no row, nothing locked.
          const other = await raw.query(statement.text, values('locktable:other'));
          assert.equal(other.rows.length, 0, statement.name);
          assert.deepEqual(await locksOf(table.namespace), [], statement.name);
          // The owner's own: granted, with a token.
          const own = await raw.query(statement.text, values('locktable:owner'));
          assert.match(String(own.rows[0].token), /^[0-9]+$/, statement.name);
          assert.equal((await locksOf(table.namespace)).length, 1, statement.name);
          await raw.query('SELECT pg_advisory_unlock_all()');
        }
      }
    } finally {
      await raw.end();
    }
  });

  test('release and reset act only on the session’s own server process (its marker)', async () => {
    const table = open();
    await (await table.acquire('guarded')).release();
    const raw = await rawClient();
    try {
      await raw.query("SELECT set_config('locktable.session', 'locktable:owner', false)");
      const { rows } = await raw.query(
        "SELECT lock_id FROM locktable.grant($1, 'guarded', true, -1, 0, 'locktable:owner')",
        [table.namespace],
      );
      const id = rows[0].lock_id as number;
      // Another session's release or reset, routed here by a pooler: no row, nothing unlocked.
      const release = await raw.query(releaseStatement(true).text, [
        table.namespace,
        id,
        'locktable:other',
      ]);
      const reset = await raw.query(RESET_SESSION.text, ['locktable:other']);
      assert.equal(release.rows.length, 0);
      assert.equal(reset.rows.length, 0);
      assert.equal((await locksOf(table.namespace)).length, 1, 'still held');
      // The owner's own release does unlock.
      const own = await raw.query(releaseStatement(true).text, [
        table.namespace,
        id,
        'locktable:owner',
      ]);
      assert.equal(own.rows[0].released, true);
      assert.deepEqual(await locksOf(table.namespace), []);
    } finally {
      await raw.end();
    }
  });

  test('a locktable.session setting that is not a locktable marker (a role default) is no pooler', async () => {
    const table = open({ options: '-c locktable.session=x' });
    const lease = await table.acquire('role-default');
    assert.equal(lease.held, true);
    await lease.release();
  });

  test('a lock granted in the instant its lock_timeout fires is a grant, never left held', async (t) => {
    // The holder unlocks at about the waiter's lock_timeout, again and again: whichever way each
    // race goes, the waiter either holds the lock (and says so) or holds nothing.
    const table = open();
    await (await table.acquire('edge')).release();
    const holder = await rawClient();
    const waiter = await rawClient();
    try {
      const { rows } = await holder.query(
        'SELECT id FROM locktable.keys WHERE namespace = $1 AND key = $2',
        [table.namespace, 'edge'],
      );
      const id = rows[0].id as number;
      await waiter.query("SELECT set_config('locktable.session', 'w', false)");
      let granted = 0;
      let refused = 0;
      for (let i = 0; i < 150; i++) {
        await holder.query('SELECT pg_advisory_lock($1::int4, $2::int4)', [table.namespace, id]);
        const waiting = waiter.query(
          "SELECT token FROM locktable.grant($1, 'edge', true, 5, 0, 'w')",
          [table.namespace],
        );
        await new Promise((resolve) => setTimeout(resolve, 4 + (i % 3)));
        await holder.query('SELECT pg_advisory_unlock($1::int4, $2::int4)', [table.namespace, id]);
        const { rows: got } = await waiting;
        const held = (await locksOf(table.namespace)).some((l) => l.granted);
        if (got.length === 1) {
          granted++;
          assert.ok(held, 'a grant holds the lock');
          await waiter.query('SELECT pg_advisory_unlock_all()');
        } else {
          refused++;
          assert.ok(!held, `attempt ${i}: reported not granted, but the lock is held`);
        }
      }
      t.diagnostic(`${granted} granted, ${refused} timed out`);
    } finally {
      await holder.end();
      await waiter.end();
    }
  });

  test('through the fast grant too: a timed wait racing the release is a grant or holds nothing', async (t) => {
    // The table's one session learns the key's id with a first grant; later grants are the plain
    // statement (fastGrant), whose lock_timeout raises 55P03 even when the lock came in that
    // instant: the client must reset the session then. (Negative control, run by hand: a client
    // that takes that 55P03 for "nothing held" left the lock held within 100 attempts, 3 runs of 3.)
    const pgModule = (await import('pg')).default;
    const sent = new Map<string, number>();
    const query = pgModule.Client.prototype.query;
    pgModule.Client.prototype.query = function counted(
      this: pg.Client,
      config: unknown,
      ...rest: unknown[]
    ) {
      const name = (config as { name?: string } | null)?.name;
      if (name !== undefined) sent.set(name, (sent.get(name) ?? 0) + 1);
      return (query as (...args: unknown[]) => unknown).call(this, config, ...rest);
    } as typeof query;
    const table = open({ poolSize: 1 });
    const holder = await rawClient();
    try {
      await (await table.acquire('edge-fast')).release();
      const { rows } = await holder.query(
        'SELECT id FROM locktable.keys WHERE namespace = $1 AND key = $2',
        [table.namespace, 'edge-fast'],
      );
      const id = rows[0].id as number;
      let granted = 0;
      let refused = 0;
      for (let i = 0; i < 100; i++) {
        await holder.query('SELECT pg_advisory_lock($1::int4, $2::int4)', [table.namespace, id]);
        const waiting = table.acquire('edge-fast', { waitTimeout: 5 }).catch((error) => error);
        await sleep(4 + (i % 3));
        await holder.query('SELECT pg_advisory_unlock($1::int4, $2::int4)', [table.namespace, id]);
        const got = await waiting;
        if (got instanceof Error) {
          assert.equal((got as { code?: string }).code, 'ERR_LOCK_TIMEOUT');
          refused++;
          assert.deepEqual(await locksOf(table.namespace), [], `attempt ${i}: nothing held`);
        } else {
          granted++;
          assert.ok((await locksOf(table.namespace)).some((l) => l.granted));
          await got.release();
        }
      }
      t.diagnostic(`${granted} granted, ${refused} timed out; statements: ${[...sent]}`);
      // Every grant after the first (a wait whose time ran out before it was sent is one try).
      const fast =
        (sent.get('locktable_fast_timed_x') ?? 0) + (sent.get('locktable_fast_try_x') ?? 0);
      assert.equal(fast, 100, 'every later grant was the fast statement');
    } finally {
      pgModule.Client.prototype.query = query;
      await holder.end();
    }
  });

  test('a statement that fails after it took the lock leaves nothing held', async () => {
    const table = open();
    // Make a first grant, so the key's row exists (and the table knows its id: the next grant is
    // the plain statement); then hold the token sequence from outside (an ALTER SEQUENCE in an
    // open transaction blocks nextval until it ends), so that the next grant takes the advisory
    // lock and then blocks drawing its token.
    await (await table.acquire('late-failure')).release();
    const blocker = await rawClient();
    await blocker.query('BEGIN');
    await blocker.query('ALTER SEQUENCE locktable.tokens CACHE 1');
    // Without the backend's reset, the lock stays held: a raw session shows it.
    const raw = await rawClient();
    const rawPid = (await raw.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    const rawCall = raw
      .query(
        "SELECT * FROM locktable.grant($1, $2, true, 0, 0, current_setting('locktable.session', true))",
        [table.namespace, 'late-failure'],
      )
      .catch((error: unknown) => error);
    await eventually(async () =>
      (await locksOf(table.namespace)).some((l) => l.pid === rawPid && l.granted),
    );
    await admin.query('SELECT pg_cancel_backend($1)', [rawPid]);
    assert.equal(((await rawCall) as { code?: string }).code, '57014');
    assert.ok(
      (await locksOf(table.namespace)).some((l) => l.pid === rawPid && l.granted),
      'a cancelled statement keeps the session lock it took',
    );
    await raw.end();
    await eventually(async () => (await locksOf(table.namespace)).length === 0);
    // Through the backend: the same failure, then nothing held.
    const controller = new AbortController();
    const waiting = table.acquire('late-failure', { signal: controller.signal });
    await eventually(async () => (await locksOf(table.namespace)).some((l) => l.granted));
    controller.abort();
    await assert.rejects(waiting, { name: 'AbortError' });
    assert.deepEqual(await locksOf(table.namespace), []);
    await blocker.query('ROLLBACK');
    await blocker.end();
    await (await table.acquire('late-failure', { waitTimeout: 1000 })).release();
  });

  test('a hung holder loses its locks within its lease; a live one keeps them', async () => {
    const table = open({ lease: 200 });
    const alive = await table.acquire('live');
    await sleep(700); // heartbeats keep it
    assert.equal(alive.held, true);
    await alive.release();
    const lease = await table.acquire('hung');
    // Another session waits for the key on the server while this process freezes.
    const contender = await rawClient();
    const waited = contender.query('SELECT pg_advisory_lock($1, $2)', [
      table.namespace,
      lease.lockId,
    ]);
    const t0 = performance.now();
    while (performance.now() - t0 < 600); // the event loop is frozen: no heartbeat
    await waited; // granted while this process was frozen
    await eventually(() => !lease.held, 1000, 'the hung lease to be lost');
    assert.ok(lease.signal.aborted);
    await assert.rejects(lease.release(), { code: 'ERR_LOCK_STALE' });
    await contender.end();
  });

  test('close(): releases everything, ends sessions, later calls fail typed', async () => {
    const table = open({ application_name: 'locktable-close-test' });
    const leases = await table.acquireAll(['c1', 'c2']);
    const shared = await table.acquire('c3', { mode: 'shared' });
    const blocker = open({ namespace: table.namespace });
    const blocking = await blocker.acquire('c4');
    const waiting = table.acquire('c4');
    await eventually(async () => (await locksOf(table.namespace)).some((l) => !l.granted));
    const refused = assert.rejects(waiting, { code: 'ERR_LOCK_CLOSED' });
    await table.close();
    await refused;
    await blocking.release();
    for (const lease of [...leases, shared]) {
      assert.equal(lease.held, false);
      assert.ok(lease.signal.aborted);
      await assert.rejects(lease.release(), { code: 'ERR_LOCK_CLOSED' });
    }
    await eventually(async () => (await locksOf(table.namespace)).length === 0);
    await eventually(
      async () =>
        (
          await admin.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'locktable-close-test'",
          )
        ).rows[0].n === 0,
    );
    await assert.rejects(table.acquire('c1'), { code: 'ERR_LOCK_CLOSED' });
    await assert.rejects(table.tryAcquire('c1'), { code: 'ERR_LOCK_CLOSED' });
    await assert.rejects(table.inspect('c1'), { code: 'ERR_LOCK_CLOSED' });
    await table.close(); // twice: fine
  });

  test('close() while requests are in every state: each one that had not settled fails with ERR_LOCK_CLOSED', async () => {
    // Closed at a few offsets into the requests' start, so that close() meets each of them in
    // more than one state (opening a session, waiting for one, on the server, in the front).
    for (const delay of [0, 5, 20]) {
      const table = open({ poolSize: 2 });
      const blocker = open({ namespace: table.namespace });
      const blocking = await blocker.acquire('busy');
      const held = await table.acquire('mine');
      const outcomes = new Map<string, string>();
      const track = (name: string, request: Promise<unknown>) =>
        request.then(
          () => outcomes.set(name, 'settled'),
          (e: { code?: string; name?: string }) => outcomes.set(name, e.code ?? e.name ?? '?'),
        );
      const requests = [
        track('on the server', table.acquire('busy')),
        track('in the front', table.acquire('mine')),
        track('for a session', table.acquire('third')),
        track('acquireAll', table.acquireAll(['busy', 'other'])),
        track('tryAcquire', table.tryAcquire('free')),
      ];
      await new Promise((resolve) => setTimeout(resolve, delay));
      await table.close();
      await Promise.all(requests);
      for (const [name, outcome] of outcomes) {
        assert.ok(
          outcome === 'ERR_LOCK_CLOSED' || (outcome === 'settled' && name === 'tryAcquire'),
          `${name} (close after ${delay} ms): ${outcome}`,
        );
      }
      await assert.rejects(held.release(), { code: 'ERR_LOCK_CLOSED' });
      await blocking.release();
      assert.deepEqual(await locksOf(table.namespace), []);
    }
  });

  test('poolSize: requests beyond it wait for a session within waitTimeout; try fails at once', async () => {
    const table = open({ poolSize: 2 });
    const a = await table.acquire('p1');
    const b = await table.acquire('p2');
    await assert.rejects(table.tryAcquire('p3'), { code: 'ERR_LOCK_TABLE_FULL' });
    await assert.rejects(table.acquire('p3', { waitTimeout: 30 }), { code: 'ERR_LOCK_TIMEOUT' });
    const c = table.acquire('p3', { waitTimeout: 2000 });
    await sleep(20);
    await a.release();
    await (await c).release();
    await b.release();
  });

  test('keys PostgreSQL cannot store exactly are refused; a finite hold is refused', async () => {
    const table = open();
    await assert.rejects(table.acquire('a\0b'), { code: 'ERR_INVALID_ARG_VALUE' });
    await assert.rejects(table.acquire('a\uD800'), { code: 'ERR_INVALID_ARG_VALUE' });
    await assert.rejects(table.acquire('x'.repeat(513)), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(table.acquire('k', { hold: 1000 }), { code: 'ERR_INVALID_ARG_VALUE' });
    (await table.acquire('\u{1F512}', { hold: Infinity })).release();
    assert.throws(() => new PgLockTable({ namespace: 2 ** 31 }), { code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => new PgLockTable({ poolSize: 0 }), { code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => new PgLockTable({ lease: 10 }), { code: 'ERR_INVALID_ARG_VALUE' });
  });

  /** Runs `fn` with a new database (its URL and a client connected to it), dropped afterwards. */
  async function withDatabase(
    prefix: string,
    fn: (url: string, db: pg.Client) => Promise<void>,
  ): Promise<void> {
    const name = `${prefix}_${process.pid}_${Date.now()}`;
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(databaseUrl!);
    url.pathname = `/${name}`;
    const db = new (await import('pg')).default.Client({ connectionString: url.toString() });
    await db.connect();
    try {
      await fn(url.toString(), db);
    } finally {
      await db.end();
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
    }
  }

  test('the schema installs once when several first users start at once', async () => {
    const name = `locktable_install_${process.pid}_${Date.now()}`;
    await admin.query(`CREATE DATABASE ${name}`);
    try {
      const url = new URL(databaseUrl!);
      url.pathname = `/${name}`;
      const fresh = Array.from({ length: 4 }, () =>
        open({ connectionString: url.toString(), namespace: 1 }),
      );
      const leases = await Promise.all(fresh.map((t, i) => t.acquire(`first-${i}`)));
      for (const lease of leases) await lease.release();
      await Promise.all(fresh.map((t) => t.close()));
      const db = new (await import('pg')).default.Client({ connectionString: url.toString() });
      await db.connect();
      const { rows } = await db.query('SELECT version FROM locktable.schema_version ORDER BY 1');
      await db.end();
      assert.deepEqual(rows, [{ version: 1 }, { version: 2 }, { version: 3 }]);
    } finally {
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
    }
  });

  test("another role locks with the privileges README lists; start_epoch is the owner's alone", async () => {
    const role = `locktable_user_${process.pid}`;
    await admin.query(`DROP ROLE IF EXISTS ${role}`);
    await admin.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await (await open().acquire('role-key')).release(); // installs the schema as the owner
      // README, "PostgreSQL backend": the grants another role needs.
      await admin.query(`GRANT USAGE ON SCHEMA locktable TO ${role}`);
      await admin.query(`GRANT SELECT, INSERT ON locktable.keys TO ${role}`);
      await admin.query(`GRANT SELECT ON locktable.alive, locktable.schema_version TO ${role}`);
      await admin.query(`GRANT USAGE ON SEQUENCE locktable.tokens TO ${role}`);
      const url = new URL(databaseUrl!);
      url.username = role;
      const table = open({ connectionString: url.toString() });
      const tokens: bigint[] = [];
      for (const key of ['role-key', 'role-key', 'role-new-key']) {
        const lease = await table.acquire(key);
        tokens.push(lease.token);
        await lease.release();
      }
      assert.ok(tokens[1]! > tokens[0]! && tokens[2]! > tokens[1]!);
      await table.close();
      const client = new (await import('pg')).default.Client({ connectionString: url.toString() });
      await client.connect();
      try {
        await assert.rejects(client.query('SELECT locktable.start_epoch()'), { code: '42501' });
      } finally {
        await client.end();
      }
    } finally {
      await admin.query(`DROP OWNED BY ${role}`);
      await admin.query(`DROP ROLE ${role}`);
    }
  });

  test('an upgrade from schema version 1 keeps tokens increasing', async () => {
    await withDatabase('locktable_upgrade', async (url, db) => {
      await db.query(installStatement(1));
      // Version 1's grants: its token was the fence << 20 (and its front's hand-overs below the next).
      let v1Token = 0n;
      for (let i = 0; i < 3; i++) {
        const { rows } = await db.query(
          "SELECT token::text AS token FROM locktable.acquire(1, 'upgraded', true, -1, 0)",
        );
        v1Token = (BigInt(rows[0].token) << 20n) | ((1n << 20n) - 1n);
        await db.query('SELECT pg_advisory_unlock_all()');
      }
      const table = open({ connectionString: url, namespace: 1 });
      const lease = await table.acquire('upgraded');
      await lease.release();
      await table.close();
      assert.ok(lease.token > v1Token, `${lease.token} > ${v1Token}`);
      // A version-1 process still running after the upgrade fails, rather than take version-2
      // tokens and shift them by its own 20 bits.
      await assert.rejects(
        db.query("SELECT token FROM locktable.acquire(1, 'upgraded', true, -1, 0)"),
        { code: '42883' },
      );
      const { rows } = await db.query('SELECT version FROM locktable.schema_version ORDER BY 1');
      assert.deepEqual(rows, [{ version: 1 }, { version: 2 }, { version: 3 }]);
    });
  });

  test('an upgrade from schema version 2 keeps tokens increasing', async () => {
    await withDatabase('locktable_upgrade2', async (url, db) => {
      await db.query(installStatement(2));
      // Version 2's tokens were (epoch << 30 | fence) << 12; an epoch of many crashes (5,000)
      // checks the migration's shift, not only the first epoch.
      await db.query('UPDATE locktable.epoch SET epoch = 5000');
      await db.query("SELECT set_config('locktable.session', 'locktable:v2', false)");
      let v2Token = 0n;
      for (let i = 0; i < 3; i++) {
        const { rows } = await db.query(
          "SELECT token::text AS token FROM locktable.grant(1, 'upgraded', true, -1, 0, 'locktable:v2')",
        );
        v2Token = (BigInt(rows[0].token) << 12n) | ((1n << 12n) - 1n);
        await db.query('SELECT pg_advisory_unlock_all()');
      }
      assert.equal(
        v2Token >> 42n,
        5001n,
        'version 2 tokens carry the epoch (the first grant started 5,001)',
      );
      const table = open({ connectionString: url, namespace: 1 });
      const tokens: bigint[] = [];
      for (const key of ['upgraded', 'upgraded', 'new-key']) {
        const lease = await table.acquire(key);
        tokens.push(lease.token);
        await lease.release();
      }
      await table.close();
      assert.ok(tokens[0]! > v2Token, `${tokens[0]} > ${v2Token}`);
      assert.ok(tokens[1]! > tokens[0]! && tokens[2]! > tokens[1]!);
      const { rows } = await db.query('SELECT version FROM locktable.schema_version ORDER BY 1');
      assert.deepEqual(rows, [{ version: 1 }, { version: 2 }, { version: 3 }]);
    });
  });
});
