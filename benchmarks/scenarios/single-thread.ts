/**
 * Single-thread scenarios: `uncontended` (one key) and `round-robin` (1,000 distinct keys in
 * turn). They run on the job's main thread, or in one worker (place = 'worker'), which is where
 * a lock is usually taken. The `paired` variant of `uncontended` runs the raw baseline and
 * locktable in that same thread, in alternating chunks (paired.ts).
 */
import type { Worker } from 'node:worker_threads';
import { loadPeer } from '../peers/load.js';
import type { LockClient } from '../peers/types.js';
import { type JobResult, type JobSpec, usesHandles } from '../spec.js';
import { measureOps, type OpsResult } from './ops.js';
import { measurePaired, type PairedResult } from './paired.js';
import { startPeerWorkers } from './peer-workers.js';
import type { SingleThreadWorkerData } from './single-thread-worker.js';

export const ROUND_ROBIN_KEYS = 1000;

/** The reference every paired job measures its peer against. */
const PAIRED_WITH = 'baseline';

export function singleThreadKeys(scenario: JobSpec['scenario']): string[] {
  if (scenario === 'uncontended') return ['account:42'];
  return Array.from({ length: ROUND_ROBIN_KEYS }, (_, i) => `account:${i}`);
}

export async function singleThread(spec: JobSpec): Promise<JobResult> {
  if (spec.variant === 'paired' || spec.variant === 'paired-handle') return paired(spec);
  const handles = usesHandles(spec.variant);
  const keys = singleThreadKeys(spec.scenario);
  const timeMs =
    spec.scenario === 'uncontended' ? spec.settings.uncontendedTimeMs : spec.settings.microTimeMs;
  let ops: OpsResult;
  if (spec.place === 'main') {
    const host = await (await loadPeer(spec.peer)).host({ keys });
    ops = await measureOps(host.client, spec.api, keys, timeMs, handles);
  } else {
    const data: SingleThreadWorkerData = { api: spec.api, keys, timeMs, handles };
    ops = await inWorker<OpsResult>(spec, data, 'opsResult');
  }
  return {
    metrics: { opsPerSecond: ops.opsPerSecond },
    lostUpdates: ops.lostUpdates,
    notes: [`batch ${ops.batch}`],
  };
}

async function paired(spec: JobSpec): Promise<JobResult> {
  const keys = singleThreadKeys(spec.scenario);
  const { pairedChunks, pairedChunkMs } = spec.settings;
  let result: PairedResult;
  if (spec.place === 'main') {
    const client = async (name: typeof spec.peer): Promise<LockClient> => {
      const host = await (await loadPeer(name)).host({ keys });
      await host.prepare();
      return host.client;
    };
    const peer = await client(spec.peer);
    const baseline = await client(PAIRED_WITH);
    result = await measurePaired(
      baseline,
      peer,
      spec.api,
      keys,
      pairedChunks,
      pairedChunkMs,
      usesHandles(spec.variant),
    );
  } else {
    const data: SingleThreadWorkerData = {
      api: spec.api,
      keys,
      timeMs: 0,
      paired: { chunks: pairedChunks, chunkMs: pairedChunkMs },
      handles: usesHandles(spec.variant),
    };
    result = await inWorker<PairedResult>(spec, data, 'pairedResult', [PAIRED_WITH]);
  }
  return {
    metrics: {
      opsPerSecond: result.peerOpsPerSecond,
      baselineOpsPerSecond: result.baselineOpsPerSecond,
      pairedRatio: result.ratio,
      pairedRatioLowest: result.lowestRatio,
      pairedRatioHighest: result.highestRatio,
    },
    lostUpdates: result.lostUpdates,
    notes: [
      `paired with the baseline in one thread: ${result.pairs} chunk pairs of ${pairedChunkMs} ms`,
    ],
  };
}

/** Runs the measurement in one worker (single-thread-worker.ts) and returns what it posts. */
async function inWorker<T>(
  spec: JobSpec,
  data: SingleThreadWorkerData,
  field: 'opsResult' | 'pairedResult',
  companions: readonly (typeof spec.peer)[] = [],
): Promise<T> {
  const fleet = await startPeerWorkers(
    spec.peer,
    { keys: data.keys },
    './scenarios/single-thread-worker.js',
    [data],
    companions,
  );
  try {
    // The worker's port also carries the peer's own messages (web-locks): wait for ours.
    const worker: Worker = fleet.started[0]!.worker;
    const result = new Promise<T>((resolve) => {
      const listener = (message: Record<string, unknown> | null) => {
        if (message?.[field] === undefined) return;
        worker.off('message', listener);
        resolve(message[field] as T);
      };
      worker.on('message', listener);
    });
    return await Promise.race([result, fleet.failed]);
  } finally {
    await fleet.terminate();
  }
}
