/**
 * The pools withLock runs tasks on: the caller's own Piscina, or one default pool per thread,
 * created on first use, sized to the machine. Idle piscina workers are unref'd, so the default pool
 * never keeps a finished program alive.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { invalidType } from './errors.js';

/** What withLock needs from a pool (Piscina 4 and 5 have it). */
export interface TaskPool {
  run(
    task: unknown,
    options?: { filename?: string | null; name?: string; signal?: AbortSignal },
  ): Promise<unknown>;
  readonly threads: readonly Worker[];
  readonly options: { readonly filename?: string | null };
}

/** The worker-side file of withLock, next to this module in dist/. */
export const RUNNER_URL = new URL('./task-runner.js', import.meta.url).href;
/** The same as a path: piscina converts a URL to a path on every run. */
export const RUNNER_FILE = RUNNER_URL.startsWith('file:') ? fileURLToPath(RUNNER_URL) : RUNNER_URL;

let defaultPool: Piscina | undefined;

export function getDefaultPool(): Piscina {
  if (defaultPool === undefined) {
    if (RUNNER_URL.startsWith('file:') && !existsSync(RUNNER_FILE)) {
      throw new Error(
        `withLock cannot find its worker file ${RUNNER_URL}: import locktable from its built ` +
          'package (dist/), not from its TypeScript sources',
      );
    }
    const threads = availableParallelism();
    defaultPool = new Piscina({
      filename: RUNNER_FILE,
      // Two warm threads: when a task is stopped, its thread is replaced (about 40 ms) while the
      // other one serves the next task at once. Idle extra threads go away after 10 s.
      minThreads: Math.min(2, threads),
      maxThreads: threads,
      idleTimeout: 10_000,
    });
  }
  return defaultPool;
}

export function checkPool(value: unknown): TaskPool {
  const pool = value as Partial<TaskPool> | null;
  if (
    pool === null ||
    typeof pool !== 'object' ||
    typeof pool.run !== 'function' ||
    !Array.isArray(pool.threads)
  ) {
    throw invalidType('options.pool', 'an instance of Piscina', value);
  }
  return pool as TaskPool;
}

/** The pool's worker thread with this id, if the pool still has it. */
export function findWorker(pool: TaskPool, threadId: number): Worker | undefined {
  for (const worker of pool.threads) if (worker.threadId === threadId) return worker;
  return undefined;
}
