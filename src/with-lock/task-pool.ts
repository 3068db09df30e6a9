/**
 * The pools withLock runs tasks on: the caller's own Piscina, or one default pool per thread,
 * created on first use and shared by both builds (cross-build.ts). Idle piscina workers are
 * unref'd, so the default pool never keeps a finished program alive.
 *
 * Sizes: the main thread's default pool has up to os.availableParallelism() threads; a worker
 * thread's, up to half of that (at least 1), with one kept warm. Every thread of a process shares
 * the same cores: four workers that each grew a pool to the core count would add four times the
 * cores in threads (`npm run bench:threads` counts them). configureDefaultPool() sets them, per
 * thread, before the first withLock call of that thread.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { isMainThread, type Transferable } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { perThread } from '../api/cross-build.js';
import { invalidType, invalidValue, outOfRange } from '../api/errors.js';
import { checkInteger, checkKnownOptions, checkOptionsObject } from '../api/options.js';

/** The options of a pool's run() that withLock passes. */
export interface RunOptions {
  filename?: string | null;
  name?: string;
  signal?: AbortSignal;
  transferList?: readonly Transferable[];
}

/** What withLock needs from a pool (Piscina 4 and 5 have it). */
export interface TaskPool {
  on(event: 'workerCreate', listener: () => void): unknown;
  run(task: unknown, options?: RunOptions): Promise<unknown>;
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

/** The settings of the default pool of one thread (configureDefaultPool). */
export interface DefaultPoolOptions {
  /** Threads kept warm. Default 2 in the main thread (at most maxThreads), 1 in a worker. */
  minThreads?: number | undefined;
  /**
   * Most threads. Default os.availableParallelism() in the main thread, half of it (at least 1)
   * in a worker thread.
   */
  maxThreads?: number | undefined;
  /** ms an idle thread above minThreads lives (an integer, at most 2^31 - 1). Default 10000. */
  idleTimeout?: number | undefined;
}

/** The settings the default pool of this thread is (or will be) created with. */
export interface ResolvedDefaultPoolOptions {
  minThreads: number;
  maxThreads: number;
  idleTimeout: number;
}

const DEFAULT_POOL_OPTIONS = ['minThreads', 'maxThreads', 'idleTimeout'] as const;
/** The longest delay setTimeout honours (piscina's idle timer is one). */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Piscina's own limit would do; this one keeps a typo like 1e9 from starting to make threads. */
const MAX_POOL_THREADS = 1024;

function librarySizes(): ResolvedDefaultPoolOptions {
  const cores = availableParallelism();
  // Two warm threads: when a task is stopped, its thread is replaced (about 40 ms) while the other
  // one serves the next task at once. A worker thread shares the cores with its siblings: one.
  const maxThreads = isMainThread ? cores : Math.max(1, Math.floor(cores / 2));
  return {
    minThreads: Math.min(isMainThread ? 2 : 1, maxThreads),
    maxThreads,
    idleTimeout: 10_000,
  };
}

/** This thread's configuration, shared by both builds (the default pool is too). */
function poolConfig(): { options: ResolvedDefaultPoolOptions | undefined } {
  return perThread('defaultPoolConfig', () => ({ options: undefined }));
}

/**
 * Sets the size and idle timeout of this thread's default withLock pool, before the first withLock
 * call of the thread that uses it (which creates the pool). A setting left out keeps its default.
 * Throws ERR_INVALID_STATE once the pool exists. Returns the settings the pool will have.
 */
export function configureDefaultPool(options: DefaultPoolOptions): ResolvedDefaultPoolOptions {
  if (options === undefined) throw invalidType('options', 'of type object', options);
  checkOptionsObject('options', options);
  checkKnownOptions('options', options, DEFAULT_POOL_OPTIONS);
  if (defaultPoolStarted()) {
    throw Object.assign(
      new Error(
        "configureDefaultPool() was called after this thread's default withLock pool was " +
          'created (by its first withLock call): configure it before any withLock call, or pass ' +
          'your own Piscina as options.pool',
      ),
      { code: 'ERR_INVALID_STATE' },
    );
  }
  const base = librarySizes();
  const maxThreads =
    options.maxThreads === undefined
      ? base.maxThreads
      : checkInteger('options.maxThreads', options.maxThreads, 1, MAX_POOL_THREADS);
  const minThreads =
    options.minThreads === undefined
      ? Math.min(base.minThreads, maxThreads)
      : checkInteger('options.minThreads', options.minThreads, 0, MAX_POOL_THREADS);
  if (minThreads > maxThreads) {
    throw outOfRange('options.minThreads', `<= maxThreads (${maxThreads})`, minThreads);
  }
  const idleTimeout =
    options.idleTimeout === undefined
      ? base.idleTimeout
      : checkInteger('options.idleTimeout', options.idleTimeout, 0, MAX_TIMER_MS);
  const resolved = { minThreads, maxThreads, idleTimeout };
  poolConfig().options = resolved;
  return { ...resolved };
}

/** This thread's default pools, by worker file (see getDefaultPool). */
function defaultPools(): Map<string, Piscina> {
  return perThread('defaultPools', () => new Map<string, Piscina>());
}

function defaultPoolStarted(): boolean {
  return defaultPool !== undefined || defaultPools().has(RUNNER_FILE);
}

let defaultPool: Piscina | undefined;

export function getDefaultPool(): Piscina {
  if (defaultPool !== undefined) return defaultPool;
  // This thread's default pools, by worker file. Both builds of one package run the same worker
  // file (index.cjs finds task-runner.js too), so they share one pool; another copy of the package
  // has its own file, and its own pool.
  const pools = defaultPools();
  defaultPool = pools.get(RUNNER_FILE);
  if (defaultPool === undefined) {
    if (RUNNER_URL.startsWith('file:') && !existsSync(RUNNER_FILE)) {
      throw new Error(
        `withLock cannot find its worker file ${RUNNER_URL}: import locktable from its built ` +
          'package (dist/), not from its TypeScript sources',
      );
    }
    const { minThreads, maxThreads, idleTimeout } = poolConfig().options ?? librarySizes();
    defaultPool = new Piscina({ filename: RUNNER_FILE, minThreads, maxThreads, idleTimeout });
    // Piscina emits 'error' when a thread fails outside any task (e.g. while starting); the
    // withLock calls it affects reject on their own. Without a listener it would crash the process.
    defaultPool.on('error', () => {});
    pools.set(RUNNER_FILE, defaultPool);
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

/** What withLock works out once per pool rather than on every call. */
export interface PoolState {
  readonly pool: TaskPool;
  readonly threads: PoolThreads;
  /**
   * run()'s options: none on a default pool (its file is withLock's runner); on the caller's own
   * pool, withLock's runner file (which imports the named task).
   */
  readonly runOptions: RunOptions | undefined;
  /** The task ids of an own pool's named tasks, by name. */
  readonly names: Map<string, string>;
}

const RUNNER_RUN_OPTIONS: RunOptions = Object.freeze({ filename: RUNNER_FILE, name: 'default' });

let defaultState: PoolState | undefined;
const ownStates = new WeakMap<TaskPool, PoolState>();

/** The state of this thread's default pool (created on first use). */
export function defaultPoolState(): PoolState {
  const pool = getDefaultPool();
  if (defaultState?.pool !== pool) {
    defaultState = { pool, threads: trackThreads(pool), runOptions: undefined, names: new Map() };
  }
  return defaultState;
}

/** The state of the caller's own pool, checked (checkPool) the first time it is seen. */
export function ownPoolState(value: unknown): PoolState {
  let state = ownStates.get(value as TaskPool);
  if (state === undefined) {
    const pool = checkPool(value);
    state = { pool, threads: trackThreads(pool), runOptions: RUNNER_RUN_OPTIONS, names: new Map() };
    ownStates.set(pool, state);
  }
  return state;
}

/** Starts tracking a pool's threads (call before its first task). */
export function trackThreads(pool: TaskPool): PoolThreads {
  // Per thread, shared by both builds: a pool that both use is tracked once (one 'exit' listener
  // per thread).
  poolThreads ??= perThread('poolThreads', () => new WeakMap<TaskPool, PoolThreads>());
  let threads = poolThreads.get(pool);
  if (threads === undefined) poolThreads.set(pool, (threads = new PoolThreads(pool)));
  return threads;
}
