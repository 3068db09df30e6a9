/**
 * The Web Locks cross-thread tests' workers (test/web-locks-threads.test.ts,
 * test/web-locks/fifo.test.ts): a real worker thread running one scenario of
 * fixtures/web-locks-worker.ts.
 */
import { Worker } from 'node:worker_threads';

const BOOT = new URL('../fixtures/boot.mjs', import.meta.url);
const FIXTURE = new URL('../fixtures/web-locks-worker.ts', import.meta.url).href;

export interface Started {
  worker: Worker;
  /** The worker's threadId, read at its start: `worker.threadId` turns -1 once it has exited. */
  threadId: number;
  result: Promise<Record<string, unknown>>;
  exited: Promise<number>;
}

export function start(scenario: string, data: Record<string, unknown>): Started {
  const worker = new Worker(BOOT, { workerData: { fixture: FIXTURE, scenario, ...data } });
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  const result = new Promise<Record<string, unknown>>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    void exited.then((code) => reject(new Error(`worker exited (${code}) before reporting`)));
  });
  result.catch(() => {});
  return { worker, threadId: worker.threadId, result, exited };
}
