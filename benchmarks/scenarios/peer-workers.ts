/**
 * Main side of every multi-worker scenario: make the peer's host (and its companions' hosts, for a
 * worker that runs two peers: the paired uncontended measurement), start the workers with the
 * host's shared state, let the host adopt each worker, wait until every worker has connected
 * (loaded its peer and said hello), let the host prepare (web-locks creates its names here), then
 * tell the workers to go. The workers' own phases (warm-up, window, stop) then run through the
 * shared control block (control.ts).
 */
import type { HostOptions, PeerHost, PeerName } from '../peers/types.js';
import { phase } from '../control.js';
import { loadPeer } from '../peers/load.js';
import { type Started, startWorker } from '../workers.js';

/** Workers get this long to start and connect; 8 of them share 2 cores. */
const CONNECT_TIMEOUT_MS = 20_000;

export interface PeerWorkerData {
  peer: { name: PeerName; shared: unknown };
  /** More peers this worker connects to, each with its own host (the paired measurement). */
  companions?: { name: PeerName; shared: unknown }[];
}

export interface PeerWorkers {
  host: PeerHost;
  started: Started[];
  /** Rejects as soon as any worker throws, or exits before terminate(). Already marked handled. */
  failed: Promise<never>;
  terminate(): Promise<void>;
}

export async function startPeerWorkers(
  peer: PeerName,
  options: HostOptions,
  script: string,
  data: readonly object[],
  companions: readonly PeerName[] = [],
): Promise<PeerWorkers> {
  const host = await (await loadPeer(peer)).host(options);
  const companionHosts: PeerHost[] = [];
  for (const name of companions) companionHosts.push(await (await loadPeer(name)).host(options));
  const hosts = [host, ...companionHosts];
  const started: Started[] = [];
  const hellos: Promise<void>[] = [];
  for (const item of data) {
    const workerData: PeerWorkerData = {
      ...item,
      peer: { name: peer, shared: host.shared },
      ...(companions.length > 0
        ? { companions: companions.map((name, i) => ({ name, shared: companionHosts[i]!.shared })) }
        : {}),
    };
    const one = startWorker(script, workerData);
    for (const h of hosts) h.adopt(one.worker);
    hellos.push(
      new Promise((resolve) => {
        const listener = (message: unknown) => {
          if (message !== 'hello') return;
          one.worker.off('message', listener);
          resolve();
        };
        one.worker.on('message', listener);
      }),
    );
    started.push(one);
  }
  let terminating = false;
  // A worker that exits before it is terminated has stopped in the middle of the scenario.
  const exitedEarly = started.map((s, i) =>
    s.exited.then((code) => {
      if (!terminating)
        throw new Error(`worker ${i} exited (code ${code}) before the end of the run`);
      return new Promise<never>(() => undefined);
    }),
  );
  const failed = Promise.race([...started.map((s) => s.failed), ...exitedEarly]);
  failed.catch(() => undefined);
  const terminate = async () => {
    terminating = true;
    await Promise.all(started.map((s) => s.worker.terminate()));
  };
  phase(`starting ${data.length} worker(s)`);
  try {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`workers did not connect within ${CONNECT_TIMEOUT_MS} ms`)),
        CONNECT_TIMEOUT_MS,
      );
    });
    await Promise.race([Promise.all(hellos), failed, timeout]).finally(() => clearTimeout(timer));
    phase('workers connected; peer preparing');
    for (const h of hosts) await h.prepare();
    for (const s of started) s.worker.postMessage('go');
  } catch (error) {
    await terminate();
    throw error;
  }
  return { host, started, failed, terminate };
}
