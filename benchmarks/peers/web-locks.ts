/**
 * metarhia web-locks 0.0.9. Its setup, as its design requires (README example plus source):
 * - the main thread must `locks.attach(worker)` every worker: lock creation and release messages
 *   travel worker -> main -> other workers;
 * - every lock name must be created once, on the main thread, after the workers are attached and
 *   before any worker requests it. A name that two workers create concurrently gets two different
 *   SharedArrayBuffers, one per worker, and then excludes nothing (checked: lost updates);
 * - the request callback must return a promise (the library calls `.then` on its result).
 * A worker therefore connects, says hello, and waits for the main thread's "go" (posted after the
 * creations, so it arrives after them on the same port) before it requests anything.
 */
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import type { LockClient, PeerAdapter } from './types.js';

interface LockManager {
  request(name: string, callback: () => Promise<unknown>): Promise<unknown>;
  attach(worker: Worker): void;
}

const { locks } = createRequire(import.meta.url)('web-locks') as { locks: LockManager };

function client(): LockClient {
  return {
    async async(key, section) {
      await locks.request(key, async () => section());
    },
  };
}

export const webLocks: PeerAdapter = {
  async host({ keys }) {
    return {
      shared: null,
      adopt(worker) {
        locks.attach(worker);
      },
      async prepare() {
        // Creates every name here and announces it to every attached worker.
        await Promise.all(keys.map((key) => locks.request(key, async () => undefined)));
      },
      client: client(),
    };
  },
  async connect() {
    return client();
  },
};
