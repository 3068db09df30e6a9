/**
 * locktable as a peer, loaded from dist/ (library.ts). The table is sized to twice the scenario's
 * keys (at least the default 1024), as a user sizes it: a table kept almost full pays for long
 * probes, which is a configuration mistake, not the cost of a lock.
 */
import type { Worker } from 'node:worker_threads';
import { LockTable } from '../library.js';
import type { LockClient, PeerAdapter } from './types.js';

interface Shared {
  table: SharedArrayBuffer;
  hold: number | undefined;
}

function client(table: LockTable, hold: number | undefined): LockClient {
  // An option-less call allocates nothing; pass options only when a scenario sets a hold.
  const options = hold === undefined ? undefined : { hold };
  return {
    sync(key, section) {
      const lease = table.acquireSync(key, options);
      try {
        section();
      } finally {
        lease.release();
      }
    },
    async async(key, section) {
      const lease = await table.acquire(key, options);
      try {
        section();
      } finally {
        lease.release();
      }
    },
    prepare(keys) {
      return keys.map((key) => {
        const handle = table.key(key);
        return {
          sync(section) {
            const lease = handle.acquireSync(options);
            try {
              section();
            } finally {
              lease.release();
            }
          },
          async async(section) {
            const lease = await handle.acquire(options);
            try {
              section();
            } finally {
              lease.release();
            }
          },
        };
      });
    },
  };
}

export const locktable: PeerAdapter = {
  async host({ keys, watch, hold, failTimeout }) {
    const capacity = Math.max(1024, 2 * keys.length);
    const table = new LockTable(
      failTimeout === undefined ? { capacity } : { capacity, failTimeout },
    );
    const shared: Shared = { table: table.buffer, hold };
    return {
      shared,
      adopt(worker: Worker) {
        if (watch) table.watch(worker);
      },
      async prepare() {},
      client: client(table, hold),
    };
  },
  async connect(shared) {
    const { table, hold } = shared as Shared;
    return client(LockTable.attach(table), hold);
  },
};
