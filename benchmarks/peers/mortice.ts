/**
 * mortice 3.3.1 (run under Node 24: NODE-NOTES records it failing on Node 20). The main thread
 * owns every lock and grants them to workers over a BroadcastChannel. Its setup, as its README and
 * source require: the main thread must create each named mutex (`mortice({ name })`) before a
 * worker asks for it, or the request is dropped and the worker waits forever. In a worker,
 * `mortice({ name })` is the documented way to get the lock of that name "from different
 * contexts"; it is called the same way here (see PEERS.md for what it actually returns).
 */
import createMortice from 'mortice';
import type { LockClient, PeerAdapter } from './types.js';

type Mutex = ReturnType<typeof createMortice>;

function client(): LockClient {
  const mutexes = new Map<string, Mutex>();
  return {
    async async(key, section) {
      let mutex = mutexes.get(key);
      if (mutex === undefined) mutexes.set(key, (mutex = createMortice({ name: key })));
      const release = await mutex.writeLock();
      try {
        section();
      } finally {
        release();
      }
    },
  };
}

export const mortice: PeerAdapter = {
  async host({ keys }) {
    for (const key of keys) createMortice({ name: key });
    return { shared: null, adopt() {}, async prepare() {}, client: client() };
  },
  async connect() {
    return client();
  },
};
