/** Starting benchmark workers (TypeScript files, through worker-boot.mjs). */
import { Worker } from 'node:worker_threads';

const BOOT = new URL('./worker-boot.mjs', import.meta.url);

export interface Started {
  worker: Worker;
  /** Rejects when the worker throws; never resolves. Already marked handled. */
  failed: Promise<never>;
  /** Resolves with the exit code. */
  exited: Promise<number>;
}

/** Starts `script` (a .ts file beside this one) in a worker with `data` as its workerData. */
export function startWorker(script: string, data: object): Started {
  const worker = new Worker(BOOT, {
    workerData: { ...data, script: new URL(script, import.meta.url).href },
  });
  const failed = new Promise<never>((_, reject) => worker.once('error', reject));
  failed.catch(() => undefined);
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  return { worker, failed, exited };
}
