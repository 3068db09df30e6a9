// Review regressions for the PostgreSQL backend (branch pgreview).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { PgLockTable } from '../../src/postgres/index.js';
import { databaseUrl, freshNamespace, skipWithoutPostgres, tableOpener } from './db.js';

describe('PgLockTable review', { skip: skipWithoutPostgres }, () => {
  const { open, closeAll } = tableOpener();
  after(async () => {
    await closeAll();
  });

  test('a session that ends in the same read as its grant: no lease whose signal never aborts', async () => {
    const table = open();
    await (await table.acquire('warm')).release();
    // The grant's reply and the server's FATAL (idle_session_timeout, pg_terminate_backend)
    // arrive in one read: pg resolves the query (a microtask) and emits 'error' synchronously,
    // so the session is ended before the backend's code after `await pending` runs.
    const proto = pg.Client.prototype as unknown as { query: (...a: unknown[]) => unknown };
    const original = proto.query;
    let armed = true;
    proto.query = function (this: pg.Client, ...args: unknown[]) {
      const config = args[0] as { text?: string } | undefined;
      const result = original.apply(this, args);
      if (armed && typeof config?.text === 'string' && config.text.includes('locktable.grant(')) {
        armed = false;
        return (result as Promise<unknown>).then((value) => {
          this.emit(
            'error',
            new Error('simulated: terminating connection (same read as the reply)'),
          );
          (
            this as unknown as { connection: { stream: { destroy(): void } } }
          ).connection.stream.destroy();
          return value;
        });
      }
      return result;
    };
    let lease;
    try {
      lease = await table.acquire('same-read').catch((error: unknown) => error);
    } finally {
      proto.query = original;
    }
    if (lease instanceof Error) {
      assert.equal((lease as { code?: string }).code, 'ERR_LOCK_CONNECTION');
    } else {
      const l = lease as Awaited<ReturnType<PgLockTable['acquire']>>;
      assert.equal(l.held, false);
      assert.equal(
        l.signal.aborted,
        true,
        'a lease that does not hold its lock must have its signal aborted',
      );
      await assert.rejects(l.release(), { code: 'ERR_LOCK_STALE' });
    }
    // The key is free again, in this process and on the server.
    await (await table.acquire('same-read', { waitTimeout: 2000 })).release();
  });

  test('default_transaction_isolation repeatable read (a role or database setting): contended and concurrent first grants do not fail with 40001', async () => {
    const namespace = freshNamespace();
    const options = { namespace, options: '-c default_transaction_isolation=repeatable\\ read' };
    const many = [open(options), open(options), open(options)];
    await (await many[0]!.acquire('hot')).release();
    const errors: unknown[] = [];
    await Promise.all(
      many.map(async (table, t) => {
        for (let i = 0; i < 8; i++) {
          try {
            // Exclusive on one hot key (separate tables: every grant goes through the server),
            // then shared on a new key that all create at once.
            const lease = await table.acquire('hot', { waitTimeout: 5000 });
            await new Promise((resolve) => setTimeout(resolve, 1));
            await lease.release();
            const shared = await table.acquire(`new-${i}`, { mode: 'shared', waitTimeout: 5000 });
            await shared.release();
          } catch (error) {
            errors.push(`${t}: ${(error as { code?: string }).code} ${(error as Error).message}`);
          }
        }
      }),
    );
    assert.deepEqual(errors, []);
  });

  test("lease Infinity ('never') holds under a server-wide idle_session_timeout", async () => {
    // A role, database or server idle_session_timeout (managed services set one) must not end a
    // holder's session when the table's lease is Infinity: no heartbeat runs then.
    const table = open({ lease: Infinity, options: '-c idle_session_timeout=300' });
    const lease = await table.acquire('forever');
    await new Promise((resolve) => setTimeout(resolve, 900));
    assert.equal(lease.held, true, 'the server ended the session of a lease: Infinity holder');
    await lease.release();
    // Released, the session is back to the server's own idle_session_timeout.
    await (await table.acquire('forever', { waitTimeout: 0 })).release();
  });

  test('a role or server statement_timeout does not cut a wait within waitTimeout', async () => {
    const holder = open();
    const table = open({ namespace: holder.namespace, options: '-c statement_timeout=150' });
    const lease = await holder.acquire('long-wait');
    const start = performance.now();
    await assert.rejects(table.acquire('long-wait', { waitTimeout: 600 }), {
      code: 'ERR_LOCK_TIMEOUT',
    });
    assert.ok(performance.now() - start >= 590, 'the wait ended before its waitTimeout');
    const waiting = table.acquire('long-wait');
    await new Promise((resolve) => setTimeout(resolve, 400));
    await lease.release();
    await (await waiting).release();
  });

  test('a release whose reply never comes (the server frozen) fails within the lease and frees the front', async () => {
    const { LockTable } = await import('../../src/index.js');
    const front = new LockTable({ capacity: 16 });
    const table = open({ lease: 400, table: front });
    const other = open({ namespace: table.namespace, table: front });
    const lease = await table.acquire('frozen');
    const pid = lease.pid;
    try {
      process.kill(pid, 'SIGSTOP');
    } catch {
      return; // a server on another machine, or another user's: the test needs a local one
    }
    try {
      const start = performance.now();
      const error = await lease.release().then(
        () => undefined,
        (e: unknown) => e as { code?: string },
      );
      const took = performance.now() - start;
      assert.equal(error?.code, 'ERR_LOCK_STALE', 'the release reports the lock as lost');
      assert.ok(took < 400 + 1000, `the release came back in ${took.toFixed(0)} ms, not never`);
      assert.equal(lease.held, false);
      // The front no longer holds the key: another table of this process gets to the server,
      // where it waits (the frozen server process still has the lock) until that ends.
      const waiting = other.acquire('frozen', { waitTimeout: 30_000 });
      process.kill(pid, 'SIGCONT');
      const next = await waiting;
      assert.ok(next.held, 'the other table holds it once the frozen server process let go');
      await next.release();
    } finally {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone already
      }
    }
  });

  test('a lock wait whose reply never comes (server process frozen): a bounded wait fails after waitTimeout + a margin (twice the lease, at least 1 s each), an aborted one within the lease', async () => {
    const holder = open({ lease: 400 });
    const waiter = open({ namespace: holder.namespace, lease: 400 });
    const lease = await holder.acquire('cut-wait');
    const admin = new pg.Client({ connectionString: databaseUrl });
    admin.on('error', () => {});
    await admin.connect();
    /** The server process of the session waiting for the key (not granted). */
    const waitingPid = async (): Promise<number> => {
      for (;;) {
        const { rows } = await admin.query(
          'SELECT pid FROM pg_locks WHERE locktype = $1 AND classid = $2 AND objsubid = 2 AND NOT granted',
          ['advisory', holder.namespace],
        );
        if (rows[0] !== undefined) return Number(rows[0].pid);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    const frozen: number[] = [];
    const freeze = (pid: number): boolean => {
      try {
        process.kill(pid, 'SIGSTOP');
      } catch {
        return false; // a server on another machine, or another user's: the test needs a local one
      }
      frozen.push(pid);
      return true;
    };
    /** Is the server process `pid` still waiting for the key (pg_locks: it needs nothing of it)? */
    const stillWaiting = async (pid: number): Promise<boolean> => {
      const { rows } = await admin.query(
        'SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = $2 AND classid = $3 AND objsubid = 2 AND NOT granted',
        [pid, 'advisory', holder.namespace],
      );
      return rows.length > 0;
    };
    try {
      // A bounded wait: the server would answer at waitTimeout, but its process is frozen. It is
      // frozen waiting only if it still waits once stopped: a test thread (or a server) kept off
      // the CPU for those 300 ms finds it answered already, and sets up again, at most 5 times.
      let start: number;
      let error: { code?: string } | undefined;
      for (let attempt = 1; ; attempt++) {
        start = performance.now();
        const bounded = waiter.acquire('cut-wait', { waitTimeout: 300 }).then(
          () => undefined,
          (e: unknown) => e as { code?: string },
        );
        const pid = await waitingPid();
        if (!freeze(pid)) return;
        if (await stillWaiting(pid)) {
          error = await bounded;
          break;
        }
        process.kill(pid, 'SIGCONT');
        await bounded;
        assert.ok(attempt < 5, 'the waiting server process answered before it was frozen, 5 times');
      }
      let took = performance.now() - start;
      assert.equal(error?.code, 'ERR_LOCK_CONNECTION');
      assert.ok(
        took >= 300 + 2000 - 5,
        `failed after ${took.toFixed(0)} ms, before waitTimeout + lease`,
      );
      assert.ok(took < 300 + 2000 + 1500, `failed after ${took.toFixed(0)} ms`);
      // An aborted wait forever: the cancel reaches a frozen process, which does not answer.
      const controller = new AbortController();
      const forever = waiter.acquire('cut-wait', { signal: controller.signal }).then(
        () => undefined,
        (e: unknown) => e as { name?: string },
      );
      freeze(await waitingPid());
      start = performance.now();
      controller.abort();
      const aborted = await forever;
      took = performance.now() - start;
      assert.equal(aborted?.name, 'AbortError');
      assert.ok(took < 400 + 1500, `the abort settled after ${took.toFixed(0)} ms, not never`);
    } finally {
      for (const pid of frozen) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone already
        }
      }
      await admin.end();
    }
    // Nothing is left behind: the holder releases, and the key is free to a third table.
    await lease.release();
    const third = open({ namespace: holder.namespace });
    await (await third.acquire('cut-wait', { waitTimeout: 5000 })).release();
  });

  test('a lost lease that is never released does not keep its session’s place', async () => {
    const table = open({ poolSize: 1 });
    const lease = await table.acquire('lost-place');
    const admin = new pg.Client({ connectionString: databaseUrl });
    admin.on('error', () => {});
    await admin.connect();
    try {
      await admin.query('SELECT pg_terminate_backend($1)', [lease.pid]);
    } finally {
      await admin.end();
    }
    if (!lease.signal.aborted)
      await new Promise<void>((resolve) => lease.signal.addEventListener('abort', () => resolve()));
    // Not released: the only place of poolSize 1 must still be free for the next request.
    const next = await table.acquire('another', { waitTimeout: 5000 });
    assert.ok(next.held);
    await next.release();
    await assert.rejects(lease.release(), { code: 'ERR_LOCK_STALE' });
  });
});
