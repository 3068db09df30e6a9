/** The worker of a single-thread scenario run in a worker: measure, post the result. */
import { parentPort, workerData } from 'node:worker_threads';
import type { Api } from '../peers/types.js';
import { connectPeer } from './connect.js';
import { measureOps } from './ops.js';

export interface SingleThreadWorkerData {
  api: Api;
  keys: readonly string[];
  timeMs: number;
}

const data = workerData as SingleThreadWorkerData;
const client = await connectPeer();
parentPort!.postMessage({ opsResult: await measureOps(client, data.api, data.keys, data.timeMs) });
