// What the Postgres tests share: the server's URL (set by test/run.mjs), the skip rule, and raw
// `pg` clients to look at the server from outside the backend.
import pg from 'pg';
import { PgLockTable, type PgLockTableOptions } from '../../src/postgres/index.js';

/** The server to test against, from test/run.mjs or the environment. */
export const databaseUrl: string | undefined =
  process.env.DATABASE_URL || process.env.PG_CONNECTION_STRING || undefined;

if (databaseUrl === undefined && process.env.CI === 'true') {
  throw new Error('CI=true but no PostgreSQL: run the tests with `npm test` or set DATABASE_URL');
}

/** The `skip` option of a Postgres suite: a reason when there is no server. */
export const skipWithoutPostgres: string | false =
  databaseUrl === undefined
    ? 'no PostgreSQL: run `npm test` (it starts a throwaway cluster when initdb is installed) or set DATABASE_URL'
    : false;

/** A namespace of its own for one test file, so that runs and files never share locks. */
export function freshNamespace(): number {
  return 1_000_000 + Math.floor(Math.random() * 1_000_000_000);
}

/** A raw client, with an 'error' listener (a terminated session must not crash the test). */
export async function rawClient(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: databaseUrl });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Polls `check` every 5 ms until it is true, or fails after `ms`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  ms = 2000,
  what = 'a condition',
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * Opens PgLockTables on the test server, each in a fresh namespace unless the options name one,
 * and remembers them for closeAll() (a suite's `after`).
 */
export function tableOpener(): {
  open: (options?: Partial<PgLockTableOptions>) => PgLockTable;
  closeAll: () => Promise<void>;
} {
  const tables: PgLockTable[] = [];
  return {
    open(options = {}) {
      const table = new PgLockTable({
        connectionString: databaseUrl,
        namespace: freshNamespace(),
        ...options,
      } as PgLockTableOptions);
      tables.push(table);
      return table;
    },
    async closeAll() {
      await Promise.all(tables.map((t) => t.close()));
    },
  };
}

/** The advisory locks (granted or waited for) of `namespace` on the server, seen by `admin`. */
export async function serverLocks(
  admin: pg.Client,
  namespace: number,
): Promise<Array<{ pid: number; id: number; mode: string; granted: boolean }>> {
  const { rows } = await admin.query(
    `SELECT pid, objid::int4 AS id, mode, granted FROM pg_locks
     WHERE locktype = 'advisory' AND objsubid = 2 AND classid = $1::int4::oid`,
    [namespace],
  );
  return rows;
}
