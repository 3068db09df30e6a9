/** Imports one peer's adapter, and with it that peer's library, only in the process that uses it. */
import type { PeerAdapter, PeerName } from './types.js';

export async function loadPeer(name: PeerName): Promise<PeerAdapter> {
  switch (name) {
    case 'baseline':
      return (await import('./baseline.js')).baseline;
    case 'locktable':
      return (await import('./locktable.js')).locktable;
    case 'node-locks':
      return (await import('./node-locks.js')).nodeLocks;
    case 'web-locks':
      return (await import('./web-locks.js')).webLocks;
    case 'mortice':
      return (await import('./mortice.js')).mortice;
    case 'async-mutex':
      return (await import('./async-mutex.js')).asyncMutex;
  }
}
