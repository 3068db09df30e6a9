/**
 * Node's built-in Web Locks, `worker_threads.locks` (Node >= 24.5 only; this process runs under
 * the Node 24 binary that runtimes.ts fetches). Nothing to set up: every thread of the process
 * shares one lock manager. `request(name, callback)` holds the lock until the callback's result
 * settles; a synchronous callback is allowed.
 */
import * as threads from 'node:worker_threads';
import type { LockClient, PeerAdapter } from './types.js';

/** The part of the Web Locks API used here (@types/node 20 does not declare it). */
interface LockManager {
  request(name: string, callback: () => unknown): Promise<unknown>;
}

function manager(): LockManager {
  const locks = (threads as unknown as { locks?: LockManager }).locks;
  if (locks === undefined) {
    throw new Error(
      `worker_threads.locks does not exist on Node ${process.version} (needs >= 24.5)`,
    );
  }
  return locks;
}

function client(locks: LockManager): LockClient {
  return {
    async async(key, section) {
      await locks.request(key, section);
    },
  };
}

export const nodeLocks: PeerAdapter = {
  async host() {
    const locks = manager();
    return { shared: null, adopt() {}, async prepare() {}, client: client(locks) };
  },
  async connect() {
    return client(manager());
  },
};
