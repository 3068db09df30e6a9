/**
 * The workers a test started through the harness (harness.spawn), terminated when the test ends,
 * whether it passed or failed: a failed assertion must not leave a worker holding a key forever,
 * which would keep the test file's process alive and hang the run.
 *
 * Importing this module from the main thread registers a root-level afterEach hook, which Node's
 * test runner runs after every test of the file (including tests inside describe). Fixtures import
 * harness.ts in worker threads too; there the hook is not registered.
 */
import { afterEach } from 'node:test';
import { isMainThread, type Worker } from 'node:worker_threads';

const live = new Set<Worker>();

/** Remembers `worker` until it exits or the current test ends. */
export function track(worker: Worker): Worker {
  live.add(worker);
  worker.once('exit', () => live.delete(worker));
  return worker;
}

/** Terminates every tracked worker still running; resolves once they have all exited. */
export async function terminateTracked(): Promise<void> {
  const running = [...live];
  live.clear();
  await Promise.all(running.map((worker) => worker.terminate()));
}

if (isMainThread) afterEach(terminateTracked);
