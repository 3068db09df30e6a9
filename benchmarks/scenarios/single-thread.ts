/**
 * Single-thread scenarios: `uncontended` (one key) and `round-robin` (1,000 distinct keys in
 * turn). They run on the job's main thread, or in one worker (place = 'worker'), which is where
 * a lock is usually taken.
 */
import { loadPeer } from '../peers/load.js';
import type { JobResult, JobSpec } from '../spec.js';
import { measureOps, type OpsResult } from './ops.js';
import { startPeerWorkers } from './peer-workers.js';
import type { SingleThreadWorkerData } from './single-thread-worker.js';

export const ROUND_ROBIN_KEYS = 1000;

export function singleThreadKeys(scenario: JobSpec['scenario']): string[] {
  if (scenario === 'uncontended') return ['account:42'];
  return Array.from({ length: ROUND_ROBIN_KEYS }, (_, i) => `account:${i}`);
}

export async function singleThread(spec: JobSpec): Promise<JobResult> {
  const keys = singleThreadKeys(spec.scenario);
  const timeMs = spec.settings.microTimeMs;
  let ops: OpsResult;
  if (spec.place === 'main') {
    const host = await (await loadPeer(spec.peer)).host({ keys });
    ops = await measureOps(host.client, spec.api, keys, timeMs);
  } else {
    const data: SingleThreadWorkerData = { api: spec.api, keys, timeMs };
    const fleet = await startPeerWorkers(
      spec.peer,
      { keys },
      './scenarios/single-thread-worker.js',
      [data],
    );
    try {
      // The worker's port also carries the peer's own messages (web-locks): wait for ours.
      const worker = fleet.started[0]!.worker;
      const result = new Promise<OpsResult>((resolve) => {
        const listener = (message: { opsResult?: OpsResult }) => {
          if (message?.opsResult === undefined) return;
          worker.off('message', listener);
          resolve(message.opsResult);
        };
        worker.on('message', listener);
      });
      ops = await Promise.race([result, fleet.failed]);
    } finally {
      await fleet.terminate();
    }
  }
  return {
    metrics: { opsPerSecond: ops.opsPerSecond },
    lostUpdates: ops.lostUpdates,
    notes: [`batch ${ops.batch}`],
  };
}
