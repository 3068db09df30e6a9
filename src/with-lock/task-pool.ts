/**
 * The pools withLock runs tasks on: the caller's own Piscina, or one default pool per thread,
 * created on first use, sized to the machine, and shared by both builds (cross-build.ts). Idle
 * piscina workers are unref'd, so the default pool never keeps a finished program alive.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { perThread } from '../api/cross-build.js';
import { invalidType, invalidValue } from '../api/errors.js';

/** What withLock needs from a pool (Piscina 4 and 5 have it). */
export interface TaskPool {
  on(event: 'workerCreate', listener: () => void): unknown;
  run(
    task: unknown,
    options?: { filename?: string | null; name?: string; signal?: AbortSignal },
  ): Promise<unknown>;
  readonly threads: readonly Worker[];
  readonly options: {
    readonly filename?: string | null;
    readonly concurrentTasksPerWorker?: number;
  };
}

/** The worker-side file of withLock, next to this module in dist/. */
export const RUNNER_URL = new URL('./task-runner.js', import.meta.url).href;
/** The same as a path: piscina converts a URL to a path on every run. */
export const RUNNER_FILE = RUNNER_URL.startsWith('file:') ? fileURLToPath(RUNNER_URL) : RUNNER_URL;

let defaultPool: Piscina | undefined;

export function getDefaultPool(): Piscina {
  if (defaultPool !== undefined) return defaultPool;
  // This thread's default pools, by worker file. Both builds of one package run the same worker
  // file (index.cjs finds task-runner.js too), so they share one pool; another copy of the package
  // has its own file, and its own pool.
  const defaultPools = perThread('defaultPools', () => new Map<string, Piscina>());
  defaultPool = defaultPools.get(RUNNER_FILE);
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
    // Piscina emits 'error' when a thread fails outside any task (e.g. while starting); the
    // withLock calls it affects reject on their own. Without a listener it would crash the process.
    defaultPool.on('error', () => {});
    defaultPools.set(RUNNER_FILE, defaultPool);
  }
  return defaultPool;
}

export function checkPool(value: unknown): TaskPool {
  const pool = value as Partial<TaskPool> | null;
  if (
    pool === null ||
    typeof pool !== 'object' ||
    typeof pool.run !== 'function' ||
    typeof pool.on !== 'function' ||
    !Array.isArray(pool.threads)
  ) {
    throw invalidType('options.pool', 'an instance of Piscina', value);
  }
  const perThread = pool.options?.concurrentTasksPerWorker ?? 1;
  if (perThread !== 1) {
    throw invalidValue(
      'options.pool',
      `runs ${perThread} tasks per thread (concurrentTasksPerWorker): stopping one task ` +
        'terminates its thread, which would kill the others; use a pool with ' +
        'concurrentTasksPerWorker: 1',
      value,
    );
  }
  return pool as TaskPool;
}

/**
 * The threads of one pool, by thread id, kept until each has exited. Piscina drops a thread from
 * `pool.threads` when it starts terminating it (an abort, destroy(), close()), before the thread
 * has exited; withLock must still find that thread to wait for its 'exit'. One 'exit' listener per
 * thread, removed by the exit itself.
 */
class PoolThreads {
  readonly #pool: TaskPool;
  readonly #byId = new Map<number, Worker>();

  constructor(pool: TaskPool) {
    this.#pool = pool;
    // A thread is announced before piscina gives it a task.
    pool.on('workerCreate', () => this.#refresh());
    this.#refresh();
  }

  #refresh(): void {
    for (const worker of this.#pool.threads) {
      const id = worker.threadId;
      if (id < 0 || this.#byId.has(id)) continue;
      this.#byId.set(id, worker);
      worker.once('exit', () => this.#byId.delete(id));
    }
  }

  /** The live thread with this id; undefined once it has exited. */
  find(threadId: number): Worker | undefined {
    let worker = this.#byId.get(threadId);
    if (worker === undefined) {
      this.#refresh();
      worker = this.#byId.get(threadId);
    }
    return worker;
  }
}

let poolThreads: WeakMap<TaskPool, PoolThreads> | undefined;

/** Starts tracking a pool's threads (call before its first task). */
export function trackThreads(pool: TaskPool): PoolThreads {
  // Per thread, shared by both builds: a pool that both use is tracked once (one 'exit' listener
  // per thread).
  poolThreads ??= perThread('poolThreads', () => new WeakMap<TaskPool, PoolThreads>());
  let threads = poolThreads.get(pool);
  if (threads === undefined) poolThreads.set(pool, (threads = new PoolThreads(pool)));
  return threads;
}
