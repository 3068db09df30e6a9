// A lock session's idle_session_timeout is the lease for its whole life (SESSION_START), not only
// while it holds: its heartbeat must keep it while it waits idle in the set, and a session that
// the server ended for idleness anyway (this process stopped for longer than the lease) must not
// fail the next request that takes it.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import pg from 'pg';
import { databaseUrl, eventually, rawClient, skipWithoutPostgres, tableOpener } from './db.js';

const LEASE = 200;

/**
 * Blocks this thread's event loop (Atomics.wait) until a worker thread, polling the server on a
 * connection of its own, sees server process `pid` gone. Returns true when it did (false: not
 * within 10 s).
 */
function freezeUntilGone(pid: number): boolean {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const code = `
    const { workerData } = require('node:worker_threads');
    const pg = require('pg');
    (async () => {
      const flag = new Int32Array(workerData.flag);
      const client = new pg.Client({ connectionString: workerData.url });
      await client.connect();
      const deadline = Date.now() + 10000;
      for (;;) {
        const { rows } = await client.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [workerData.pid]);
        if (rows[0].n === 0) { Atomics.store(flag, 0, 1); break; }
        if (Date.now() > deadline) { Atomics.store(flag, 0, 2); break; }
        await new Promise((r) => setTimeout(r, 5));
      }
      Atomics.notify(flag, 0);
      await client.end();
    })().catch(() => { Atomics.store(flag, 0, 2); Atomics.notify(flag, 0); });
  `;
  const worker = new Worker(code, {
    eval: true,
    workerData: { flag: flag.buffer, url: databaseUrl, pid },
  });
  worker.unref();
  // The main thread's event loop stops here: no heartbeat, no read of the server's FATAL.
  Atomics.wait(flag, 0, 0, 15_000);
  return Atomics.load(flag, 0) === 1;
}

/** A raw session with the lease as its idle_session_timeout and no heartbeat, and its pid. */
async function silentSession(): Promise<{
  client: Awaited<ReturnType<typeof rawClient>>;
  pid: number;
}> {
  const client = await rawClient();
  const { rows } = await client.query(
    "SELECT pg_backend_pid() AS pid, set_config('idle_session_timeout', $1, false)",
    [String(LEASE)],
  );
  return { client, pid: rows[0].pid as number };
}

describe('PgLockTable idle sessions', { skip: skipWithoutPostgres }, () => {
  const { open, closeAll } = tableOpener();
  after(async () => {
    await closeAll();
  });

  test('an idle session in the set outlives its lease (its heartbeat), and is reused', async () => {
    const table = open({ lease: LEASE });
    const first = await table.acquire('idle');
    const pid = first.pid;
    await first.release();
    // The session waits idle in the set for at least 5 heartbeats (each one a new state_change
    // on the server): longer than the lease, its idle_session_timeout.
    const admin = await rawClient();
    try {
      const changes = new Set<string>();
      const since = performance.now();
      await eventually(
        async () => {
          const { rows } = await admin.query(
            'SELECT state_change::text AS at FROM pg_stat_activity WHERE pid = $1',
            [pid],
          );
          assert.equal(rows.length, 1, 'the idle session was ended');
          changes.add(rows[0].at as string);
          return changes.size >= 6 && performance.now() - since > 2 * LEASE;
        },
        10_000,
        'heartbeats of the idle session',
      );
      const again = await table.acquire('idle', { waitTimeout: 0 });
      assert.equal(again.pid, pid, 'the same session, alive');
      await again.release();

      // Negative control: a session with the same idle_session_timeout and no heartbeat is ended.
      const { client: silent, pid: silentPid } = await silentSession();
      await eventually(
        async () =>
          (await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [silentPid]))
            .rowCount === 0,
        10_000,
        'the silent session to be ended',
      );
      await silent.end().catch(() => {});
    } finally {
      await admin.end();
    }
  });

  test('a session the server ended for idleness while this process was stopped: the next request takes another', async () => {
    const table = open({ lease: LEASE });
    await (await table.acquire('frozen-idle')).release();
    const held = await table.acquire('frozen-idle-pid');
    const pid = held.pid;
    await held.release();
    // Stopped for longer than the lease, with the session idle in the set: the server ends it,
    // and this process has not read the server's FATAL when the next request takes it.
    assert.equal(freezeUntilGone(pid), true, 'the server ended the idle session');
    const lease = await table.acquire('frozen-idle', { waitTimeout: 5000 });
    assert.equal(lease.held, true);
    assert.notEqual(lease.pid, pid, 'another session');
    await lease.release();

    // Negative control: a plain client in the same state fails its next statement.
    const { client: raw, pid: rawPid } = await silentSession();
    assert.equal(freezeUntilGone(rawPid), true);
    await assert.rejects(raw.query('SELECT 1'));
    await raw.end().catch(() => {});
  });

  test('a session the server ended while this process was stopped, whose FATAL reaches its heartbeat first: the next request takes another', async () => {
    // Review of s8-pg: after the stop, the heartbeat's interval is due before the request's timer;
    // the heartbeat is in flight when the request takes the session, and pg hands the server's
    // FATAL (57P05) to the heartbeat, then fails the request's statement as "Connection
    // terminated" with no SQLSTATE. The session's end reason must still say 57P05.
    const table = open({ lease: LEASE });
    const held = await table.acquire('frozen-beat');
    const pid = held.pid;
    await held.release();
    assert.equal(freezeUntilGone(pid), true, 'the server ended the idle session');
    // A timer due after the heartbeat's: the heartbeat goes first, in the same timers phase.
    await new Promise((resolve) => setTimeout(resolve, 1));
    const lease = await table.acquire('frozen-beat', { waitTimeout: 5000 });
    assert.equal(lease.held, true);
    assert.notEqual(lease.pid, pid, 'another session');
    await lease.release();
  });

  test('a request that takes a session while its heartbeat runs waits for it: never two statements in pg at once', async () => {
    const table = open({ lease: 100 });
    await (await table.acquire('beat')).release();
    const proto = pg.Client.prototype as unknown as { query: (...a: unknown[]) => unknown };
    const original = proto.query;
    let overlaps = 0;
    let heartbeats = 0;
    let request: Promise<void> | undefined;
    proto.query = function (this: pg.Client, ...args: unknown[]) {
      const self = this as unknown as { _activeQuery: unknown; _queryQueue: unknown[] };
      if (self._activeQuery != null || self._queryQueue.length > 0) overlaps++;
      const result = original.apply(this, args);
      // The first heartbeat of the idle session is on the wire: a request takes the session now.
      if ((args[0] as { name?: string }).name === 'locktable_heartbeat' && request === undefined) {
        heartbeats++;
        request = table.acquire('beat').then((lease) => lease.release());
      }
      return result;
    };
    try {
      await eventually(() => request !== undefined, 5000, 'a heartbeat of the idle session');
      await request;
    } finally {
      proto.query = original;
    }
    assert.equal(heartbeats, 1);
    assert.equal(overlaps, 0, 'a statement was sent to pg while another ran');
  });
});
