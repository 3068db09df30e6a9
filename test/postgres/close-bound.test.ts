// PgLockTable.close() is bounded against frozen server processes (a cut network): its sessions'
// end() gives up after END_GRACE_MS, and so does the TERMINATE it sends for a session that was
// waiting for a lock (a race review's reproduction: without that bound close() hung for good).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type pg from 'pg';
import { eventually, rawClient, skipWithoutPostgres, tableOpener } from './db.js';

const frozen: number[] = [];

function freeze(pid: number): void {
  process.kill(pid, 'SIGSTOP');
  frozen.push(pid);
}

async function within<T>(ms: number, promise: Promise<T>): Promise<'done' | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)));
  const outcome = await Promise.race([promise.then(() => 'done' as const), hung]);
  clearTimeout(timer);
  return outcome;
}

describe('close() against frozen server processes', { skip: skipWithoutPostgres }, () => {
  let admin: pg.Client;
  const { open } = tableOpener();
  after(async () => {
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
    await admin?.end();
  });

  test('a lock wait in flight and the control session frozen (a cut network): close() returns', async () => {
    admin = await rawClient();
    const holderTable = open();
    const table = open({ namespace: holderTable.namespace });
    const held = await holderTable.acquire('k');
    await table.inspect('k'); // opens the control session
    const waiting = table.acquire('k', { waitTimeout: 60_000 }).catch((e: unknown) => e);
    // The waiter's server process waits on the lock; the control session's is idle.
    let waiterPid = 0;
    await eventually(
      async () => {
        const { rows } = await admin.query(
          "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        );
        waiterPid = rows[0]?.pid ?? 0;
        return waiterPid > 0;
      },
      4000,
      'a lock wait on the server',
    );
    const { rows } = await admin.query(
      "SELECT pid FROM pg_stat_activity WHERE query LIKE '%FROM locktable.keys k%' AND pid <> pg_backend_pid() AND state = 'idle'",
    );
    assert.equal(rows.length, 1, 'the control session not found');
    // A cut network: every server process of the table stops answering.
    freeze(waiterPid);
    freeze(rows[0].pid);
    const started = performance.now();
    const outcome = await within(8000, table.close());
    console.log(`# close(): ${outcome} after ${Math.round(performance.now() - started)} ms`);
    assert.equal(outcome, 'done', 'close() still waiting 8 s later');
    await waiting;
    await held.release();
    await holderTable.close();
  });
});
