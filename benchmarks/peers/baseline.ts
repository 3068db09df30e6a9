/** The raw Atomics baseline (raw-mutex.ts) as a peer: one futex word per key, found by hashing the key on every call. */
import { BaselineKeys } from './raw-mutex.js';
import type { LockClient, PeerAdapter } from './types.js';

interface Shared {
  words: SharedArrayBuffer;
}

function client(keys: BaselineKeys): LockClient {
  return {
    sync(key, section) {
      keys.lock(key);
      try {
        section();
      } finally {
        keys.unlock(key);
      }
    },
    async async(key, section) {
      await keys.lockAsync(key);
      try {
        section();
      } finally {
        keys.unlock(key);
      }
    },
  };
}

export const baseline: PeerAdapter = {
  async host({ keys }) {
    const words = new BaselineKeys(keys.length);
    const shared: Shared = { words: words.buffer };
    return { shared, adopt() {}, async prepare() {}, client: client(words) };
  },
  async connect(shared) {
    const { words } = shared as Shared;
    return client(new BaselineKeys(0, words));
  },
};
