/**
 * Worker side of startPeerWorkers: load this worker's peer (and its companions, if any), connect
 * to each host's shared state, say hello, and wait for "go" (which the main thread posts after
 * every host has prepared).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadPeer } from '../peers/load.js';
import type { LockClient } from '../peers/types.js';
import type { PeerWorkerData } from './peer-workers.js';

/**
 * Some peers' pending requests do not keep a thread alive (worker_threads.locks, like a bare
 * Atomics.waitAsync: see PEERS.md): a worker whose only pending work is a lock request would exit
 * mid-run. A real program has other work that keeps it alive; this ref'd timer stands in for it,
 * the same for every peer. It never fires during a run.
 */
const KEEP_ALIVE_MS = 2 ** 30;

export async function connectPeer(): Promise<LockClient> {
  return (await connectPeers())[0]!;
}

/** The clients of this worker's peer and of its companions, in that order. */
export async function connectPeers(): Promise<LockClient[]> {
  setInterval(() => undefined, KEEP_ALIVE_MS);
  const { peer, companions = [] } = workerData as PeerWorkerData;
  const clients: LockClient[] = [];
  for (const { name, shared } of [peer, ...companions]) {
    clients.push(await (await loadPeer(name)).connect(shared));
  }
  const port = parentPort!;
  await new Promise<void>((resolve) => {
    const listener = (message: unknown) => {
      if (message !== 'go') return;
      port.off('message', listener);
      resolve();
    };
    port.on('message', listener);
    port.postMessage('hello');
  });
  return clients;
}
