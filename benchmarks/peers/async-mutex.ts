/**
 * async-mutex: a Mutex excludes async tasks of ONE thread (it lives in that thread's heap), so it
 * runs only in the single-thread scenarios. It has no keys: one Mutex per key in a Map, the usual
 * way to use it.
 */
import { Mutex } from 'async-mutex';
import type { LockClient, PeerAdapter } from './types.js';

function client(keys: readonly string[]): LockClient {
  const mutexes = new Map(keys.map((key) => [key, new Mutex()]));
  return {
    async async(key, section) {
      let mutex = mutexes.get(key);
      if (mutex === undefined) mutexes.set(key, (mutex = new Mutex()));
      const release = await mutex.acquire();
      try {
        section();
      } finally {
        release();
      }
    },
  };
}

export const asyncMutex: PeerAdapter = {
  async host({ keys }) {
    return { shared: keys, adopt() {}, async prepare() {}, client: client(keys) };
  },
  async connect(shared) {
    return client(shared as readonly string[]);
  },
};
