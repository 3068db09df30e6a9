// A request's grant statement may have to wait for its turn behind a statement of its session that
// is on the wire: the session's heartbeat, which runs whether the session is idle in the set or not.
// Each test freezes the session's server process (SIGSTOP) as its heartbeat goes out, so that the
// heartbeat's reply does not come until the test lets it (SIGCONT), and the request's statement
// waits behind it.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { Session } from '../../src/postgres/session.js';
import { skipWithoutPostgres, tableOpener } from './db.js';

/** Long enough that the frozen heartbeat's reply is waited for (a lease) without a cut. */
const LEASE = 8000;

/** The grant statements (sql.ts): locktable.grant, and fastGrant's six forms. */
const isGrant = (name: string): boolean =>
  name === 'locktable_grant' || name.startsWith('locktable_fast_');

/**
 * Freezes server process `pid` (SIGSTOP) when its session's next heartbeat goes to pg, and from
 * then records the names of the statements pg is given for it. `stopped` resolves once frozen
 * (false: the server is not this machine's, or not ours to signal); `thaw()` lets it go on.
 * `queued` resolves when a grant statement is handed to the session (Session.rows or query)
 * while the heartbeat is on the wire: it waits for its turn.
 */
function freezeAtHeartbeat(pid: number) {
  const client = pg.Client.prototype as unknown as { query: (...a: unknown[]) => unknown };
  const originalQuery = client.query;
  const session = Session.prototype as unknown as Record<
    'rows' | 'query',
    (...a: unknown[]) => unknown
  >;
  const originalRows = session.rows;
  const originalSessionQuery = session.query;
  const sent: string[] = [];
  let frozen = false;
  let resolveStopped: (ok: boolean) => void = () => {};
  const stopped = new Promise<boolean>((resolve) => (resolveStopped = resolve));
  let resolveQueued: () => void = () => {};
  const queued = new Promise<void>((resolve) => (resolveQueued = resolve));
  client.query = function (this: pg.Client, ...args: unknown[]) {
    const name = (args[0] as { name?: string } | undefined)?.name ?? '';
    if ((this as unknown as { processID: number }).processID === pid) {
      if (frozen) sent.push(name);
      else if (name === 'locktable_heartbeat') {
        try {
          process.kill(pid, 'SIGSTOP');
          frozen = true;
          resolveStopped(true);
        } catch {
          resolveStopped(false); // a server on another machine, or another user's
        }
      }
    }
    return originalQuery.apply(this, args);
  };
  const watch = (original: (...a: unknown[]) => unknown) =>
    function (this: Session, ...args: unknown[]) {
      const name = (args[0] as { name: string }).name;
      if (frozen && this.pid === pid && isGrant(name)) resolveQueued();
      return original.apply(this, args);
    };
  session.rows = watch(originalRows);
  session.query = watch(originalSessionQuery);
  return {
    stopped,
    queued,
    sent,
    thaw(): void {
      client.query = originalQuery;
      session.rows = originalRows;
      session.query = originalSessionQuery;
      if (!frozen) return;
      frozen = false;
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone already
      }
    },
  };
}

const settle = <T>(promise: Promise<T>) =>
  promise.then(
    (value) => ({ value, error: undefined }),
    (error: unknown) => ({ value: undefined, error: error as { name?: string; code?: string } }),
  );

describe(
  'PgLockTable statements queued behind the heartbeat',
  { skip: skipWithoutPostgres },
  () => {
    const { open, closeAll } = tableOpener();
    after(async () => {
      await closeAll();
    });

    /** A table of one session, its server process, and another table holding `key` there. */
    async function setUp(key: string, known: boolean) {
      const table = open({ lease: LEASE, poolSize: 1 });
      const holder = open({ namespace: table.namespace });
      // A key the table has granted before goes through fastGrant; a new one through
      // locktable.grant.
      if (known) await (await table.acquire(key)).release();
      const first = await table.acquire('open-the-session');
      const pid = first.pid;
      await first.release();
      const held = await holder.acquire(key);
      return { table, held, pid };
    }

    for (const known of [true, false]) {
      const via = known ? 'fastGrant' : 'locktable.grant';
      test(`an abort while the grant waits behind the heartbeat withdraws it: never sent, AbortError at once (${via})`, async (t) => {
        const key = `withdrawn-${via}`;
        const { table, held, pid } = await setUp(key, known);
        const freeze = freezeAtHeartbeat(pid);
        try {
          if (!(await freeze.stopped)) return t.skip('the server process is not ours to stop');
          const controller = new AbortController();
          const request = settle(table.acquire(key, { signal: controller.signal }));
          await freeze.queued;
          controller.abort();
          // While the server process is still frozen: nothing of the request is on the wire, so
          // nothing has to be answered or cancelled first.
          const outcome = await Promise.race([
            request,
            new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), LEASE / 2)),
          ]);
          assert.notEqual(
            outcome,
            'pending',
            'the aborted request waited for the frozen heartbeat',
          );
          assert.equal((outcome as Awaited<typeof request>).error?.name, 'AbortError');
        } finally {
          freeze.thaw();
        }
        // The heartbeat answers; the session serves the next request, and the withdrawn grant was
        // never given to pg.
        await (await table.acquire(`${key}-next`, { waitTimeout: 10_000 })).release();
        assert.deepEqual(freeze.sent.filter(isGrant), [], 'the withdrawn grant was sent');
        await held.release();
        await (await table.acquire(key, { waitTimeout: 10_000 })).release();
      });

      test(`a timed grant waits on the server only for what is left after its wait behind the heartbeat (${via})`, async (t) => {
        const key = `queued-wait-${via}`;
        const { table, held, pid } = await setUp(key, known);
        const waitTimeout = 2000;
        const queuedFor = 1500;
        const freeze = freezeAtHeartbeat(pid);
        let took: number;
        try {
          if (!(await freeze.stopped)) return t.skip('the server process is not ours to stop');
          const start = performance.now();
          const request = settle(table.acquire(key, { waitTimeout }));
          await freeze.queued;
          // The heartbeat's reply comes queuedFor ms after the request was made.
          await new Promise((resolve) => setTimeout(resolve, queuedFor));
          freeze.thaw();
          const { error } = await request;
          took = performance.now() - start;
          assert.equal(error?.code, 'ERR_LOCK_TIMEOUT');
        } finally {
          freeze.thaw();
          await held.release();
        }
        assert.ok(
          took >= waitTimeout - 1,
          `timed out after ${took.toFixed(0)} ms, before waitTimeout`,
        );
        // A lock_timeout of the whole waitTimeout, set when the request was made, would end it
        // about queuedFor + waitTimeout after the start.
        assert.ok(
          took < waitTimeout + queuedFor / 2,
          `timed out after ${took.toFixed(0)} ms: the time queued behind the heartbeat was waited again`,
        );
      });
    }
  },
);
