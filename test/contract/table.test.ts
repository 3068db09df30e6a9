// The Locks contract against the shared-memory table.
import { setTimeout as sleep } from 'node:timers/promises';
import { LockTable, type Lease, type LockInfo, type Locks } from '../../src/index.js';
import { lockContract } from './locks.contract.js';

// LockTable implements the contract (checked by the compiler).
export const implementsLocks: (table: LockTable) => Locks<Lease, LockInfo> = (table) => table;

lockContract(
  'LockTable',
  async () => {
    // failTimeout 0: a lease past its hold is reclaimed by the next request at once.
    const table = new LockTable({ capacity: 256, failTimeout: 0 });
    return {
      locks: table,
      late: 25,
      async lostLease(key) {
        const lease = await table.acquire(key, { hold: 30 });
        await sleep(40);
        (await table.acquire(key)).release();
        return lease;
      },
      async close() {},
    };
  },
  { sections: 200 },
);
