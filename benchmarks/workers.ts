/** Starting benchmark workers from the compiled JavaScript beside this file. */
import { Worker } from 'node:worker_threads';

export interface Started {
  worker: Worker;
  /** Rejects when the worker throws; never resolves. Already marked handled. */
  failed: Promise<never>;
  /** Resolves with the exit code. */
  exited: Promise<number>;
}

/** Starts `script` (a path relative to this file, e.g. './scenarios/x-worker.js') in a worker. */
export function startWorker(script: string, data: object): Started {
  const worker = new Worker(new URL(script, import.meta.url), { workerData: data });
  const failed = new Promise<never>((_, reject) => worker.once('error', reject));
  failed.catch(() => undefined);
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  return { worker, failed, exited };
}
