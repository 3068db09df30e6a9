// close() ends the server process of a session still waiting for a lock (TERMINATE, from the
// control session): the server would otherwise keep it waiting. It names that process by its pid
// and by when it started, since a process that has ended meanwhile may have left its pid to
// another session, which must not be ended.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { eventually, rawClient, skipWithoutPostgres, tableOpener } from './db.js';

/** The kernel's last pid given out: writing n makes the next process n + 1 (root only). */
const LAST_PID = '/proc/sys/kernel/ns_last_pid';

function canChooseNextPid(): boolean {
  try {
    writeFileSync(LAST_PID, readFileSync(LAST_PID, 'utf8'));
    return true;
  } catch {
    return false;
  }
}

describe('PgLockTable close() and its TERMINATE', { skip: skipWithoutPostgres }, () => {
  const { open, closeAll } = tableOpener();
  let admin: pg.Client;
  before(async () => {
    admin = await rawClient();
  });
  after(async () => {
    await closeAll();
    await admin.end();
  });

  const alive = async (pid: number): Promise<boolean> =>
    (await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid]))
      .rows[0].n === 1;

  /**
   * A table with a request waiting on the server for `key`, which another table holds (`held`);
   * `waiting` resolves with the request's error code; `pid`: its server process.
   */
  async function waitingOn(key: string) {
    const holder = open();
    const table = open({ namespace: holder.namespace });
    const held = await holder.acquire(key);
    const waiting = table.acquire(key).then(
      () => undefined,
      (e: { code?: string }) => e.code,
    );
    let pid = 0;
    await eventually(
      async () => {
        const { rows } = await admin.query(
          "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 " +
            'AND classid = $1::int4::oid AND NOT granted',
          [holder.namespace],
        );
        pid = Number(rows[0]?.pid ?? 0);
        return pid !== 0;
      },
      5000,
      'a session waiting on the server',
    );
    return { table, held, waiting, pid };
  }

  test('close() ends the server process of a session still waiting for a lock', async () => {
    const { table, held, waiting, pid } = await waitingOn('waited-for');
    await table.close();
    assert.equal(await waiting, 'ERR_LOCK_CLOSED');
    // Ended by close(), not by the grant that would come at the holder's release.
    await eventually(async () => !(await alive(pid)), 5000, 'the waiting process to end');
    await held.release();
  });

  test('close() leaves alone a process that took the pid of the waiting session’s ended one', async (t) => {
    if (!canChooseNextPid()) return t.skip(`needs root, to write ${LAST_PID}`);
    const { table, held, waiting, pid } = await waitingOn('reused-pid');
    // As close() sends its TERMINATE, the waiting process has ended (here: terminated), and
    // another session's process has its pid.
    const proto = pg.Client.prototype as unknown as { query: (...a: unknown[]) => unknown };
    const original = proto.query;
    let other: pg.Client | undefined;
    proto.query = function (this: pg.Client, ...args: unknown[]) {
      if ((args[0] as { name?: string } | undefined)?.name !== 'locktable_terminate') {
        return original.apply(this, args);
      }
      return (async () => {
        await original.call(admin, 'SELECT pg_terminate_backend($1)', [pid]);
        await eventually(async () => !(await alive(pid)), 5000, 'the waiting process to end');
        for (let attempt = 0; attempt < 20 && other === undefined; attempt++) {
          writeFileSync(LAST_PID, String(pid - 1));
          const client = await rawClient();
          const { rows } = await client.query('SELECT pg_backend_pid() AS pid');
          if (Number(rows[0].pid) === pid) other = client;
          else await client.end();
        }
        return original.apply(this, args);
      })();
    };
    try {
      await table.close();
    } finally {
      proto.query = original;
    }
    assert.equal(await waiting, 'ERR_LOCK_CLOSED');
    await held.release();
    if (other === undefined) return t.skip(`pid ${pid} went to another process first`);
    try {
      const { rows } = await other.query('SELECT pg_backend_pid() AS pid');
      assert.equal(Number(rows[0].pid), pid);
    } catch (error) {
      assert.fail(`close() ended the session that took pid ${pid}: ${(error as Error).message}`);
    } finally {
      await other.end().catch(() => {});
    }
  });
});
