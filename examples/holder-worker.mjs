// A worker that takes a lock with a 300 ms hold and then dies without releasing it.
import process from 'node:process';
import { workerData } from 'node:worker_threads';
import { LockTable } from '../dist/index.js';

const table = LockTable.attach(workerData.buffer);
table.acquireSync(workerData.key, { hold: workerData.hold });
process.exit(1);
