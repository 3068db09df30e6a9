/**
 * Scenario (a): acquireSync + release of one string key, nobody else using it, in a worker
 * thread; and the baseline's lock + unlock in the same worker. Posts ops/s for both.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BaselineKeys } from './baseline.js';
import { LockTable } from './library.js';
import { BATCH, opsPerSecond } from './micro.js';

export interface UncontendedWorkerData {
  key: string;
  table: SharedArrayBuffer;
  baselineWords: SharedArrayBuffer;
  baselineKeys: string[];
  timeMs: number;
}

export interface UncontendedResult {
  locktable: number;
  baseline: number;
}

const data = workerData as UncontendedWorkerData;
const table = LockTable.attach(data.table);
const keys = new BaselineKeys(data.baselineKeys, data.baselineWords);
const key = data.key;

const ops = await opsPerSecond(
  {
    locktable: () => {
      for (let i = 0; i < BATCH; i++) table.acquireSync(key).release();
    },
    baseline: () => {
      for (let i = 0; i < BATCH; i++) {
        keys.lock(key);
        keys.unlock(key);
      }
    },
  },
  data.timeMs,
);
const result: UncontendedResult = { locktable: ops.locktable!, baseline: ops.baseline! };
parentPort!.postMessage(result);
