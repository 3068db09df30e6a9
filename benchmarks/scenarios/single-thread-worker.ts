/**
 * The worker of a single-thread scenario run in a worker: measure, post the result. Paired: this
 * worker's clients are the peer's and its companion's (the baseline), measured in this thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Api } from '../peers/types.js';
import { connectPeers } from './connect.js';
import { measureOps } from './ops.js';
import { measurePaired } from './paired.js';

export interface SingleThreadWorkerData {
  api: Api;
  keys: readonly string[];
  /** tinybench time (ms); unused when paired. */
  timeMs: number;
  paired?: { chunks: number; chunkMs: number };
  /** Lock through prepared keys (locktable's KeyHandle): the handle variants. */
  handles?: boolean;
}

const data = workerData as SingleThreadWorkerData;
const [client, companion] = await connectPeers();
if (data.paired) {
  if (companion === undefined) throw new Error('a paired measurement needs a companion peer');
  const { chunks, chunkMs } = data.paired;
  parentPort!.postMessage({
    pairedResult: await measurePaired(
      companion,
      client!,
      data.api,
      data.keys,
      chunks,
      chunkMs,
      data.handles,
    ),
  });
} else {
  parentPort!.postMessage({
    opsResult: await measureOps(client!, data.api, data.keys, data.timeMs, data.handles),
  });
}
