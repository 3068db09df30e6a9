// The Locks contract against PostgreSQL (a throwaway cluster started by test/run.mjs).
import { PgLockTable } from '../../src/postgres/index.js';
import {
  databaseUrl,
  eventually,
  freshNamespace,
  rawClient,
  skipWithoutPostgres,
} from '../postgres/db.js';
import { lockContract } from './locks.contract.js';
import type { PgLease } from '../../src/postgres/index.js';

if (skipWithoutPostgres) {
  const { test } = await import('node:test');
  test('the Locks contract: PgLockTable', { skip: skipWithoutPostgres }, () => {});
} else {
  lockContract(
    'PgLockTable',
    async () => {
      const table = new PgLockTable({ connectionString: databaseUrl, namespace: freshNamespace() });
      const admin = await rawClient();
      return {
        locks: table,
        late: 15,
        async lostLease(key) {
          const lease = (await table.acquire(key)) as PgLease;
          await admin.query('SELECT pg_terminate_backend($1)', [lease.pid]);
          await eventually(() => !lease.held, 2000, 'the lease to see its session end');
          return lease;
        },
        async close() {
          await table.close();
          await admin.end();
        },
      };
    },
    { sections: 25 },
  );
}
