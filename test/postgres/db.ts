// What the Postgres tests share: the server's URL (set by test/run.mjs), the skip rule, and raw
// `pg` clients to look at the server from outside the backend.
import pg from 'pg';

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
