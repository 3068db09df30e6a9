/**
 * withLock(table, key, task, options): take the lock in the calling thread (never blocking its
 * event loop), run the task in a piscina worker while the lock is held, release it when the task
 * settles. A task that runs longer than execTimeout (or is aborted while running) has its worker
 * terminated, and the lock is released only after that thread has exited: piscina rejects an
 * aborted run before the thread is dead (DESIGN.md, "withLock"; with-lock.test.ts, "negative
 * control: releasing on piscina's AbortError lets the runaway write on"), so its 'exit' event is
 * what we wait for.
 *
 * The life of one call (a TaskRun):
 *
 *   acquire (waitTimeout, signal)            nothing held until it resolves
 *   QUEUED   lease held, hold = execTimeout, renewed while the task waits for a worker
 *   STARTED  the worker claimed the control block (its thread id, its start time); the next timer
 *            tick stamps deadline = start + execTimeout and fires again at that time
 *   settle   value / task error       -> release, resolve / reject
 *            worker exited, STARTED   -> release, ERR_LOCK_WORKER_EXIT (exit code): the task may
 *            (or DONE)                   have run in part, or in full with its answer lost
 *            worker exited, QUEUED    -> the task never started: it was handed to a thread that
 *                                        was dying (terminated for another call's exec timeout,
 *                                        say). CAS the block to CANCELLED, post the task again
 *                                        with a fresh block, lease kept: QUEUED again (a re-run;
 *                                        at most MAX_RERUNS, none with a transferList, none once
 *                                        the lease is lost: then ERR_LOCK_WORKER_EXIT, as before)
 *            exec timeout / abort     -> keep the lease alive, terminate, await 'exit', release,
 *                                        ERR_LOCK_EXEC_TIMEOUT / AbortError
 *            abort while QUEUED       -> CAS the control block to CANCELLED (the body will never
 *                                        run), release, AbortError
 *
 * If the calling thread dies, nothing renews or releases the lease: its deadline (start +
 * execTimeout) stands, and a contender reclaims it failTimeout later (`recovered: true`). The
 * task's worker belongs to the dead thread's pool and dies with it.
 */
import type { Transferable, Worker } from 'node:worker_threads';
import {
  AbortError,
  execTimeoutError,
  invalidType,
  invalidValue,
  staleError,
  workerExitError,
} from '../api/errors.js';
import type { Lease } from '../table/lease.js';
import { layerDefaults, TABLE_API_DEFAULTS, WITH_LOCK_DEFAULTS } from '../table/defaults.js';
import { EXPLICIT_DEFAULTS } from '../table/internals.js';
import { LockTable } from '../table/lock-table.js';
import {
  checkDefaults,
  checkKnownOptions,
  checkMode,
  checkMs,
  checkOptionsObject,
  checkSignal,
  type TableDefaults,
} from '../api/options.js';
import type { AcquireOptions, Mode } from '../api/options.js';
import {
  CONTROL_BYTES,
  CTRL_OUTCOME,
  CTRL_START_TIME_F64,
  CTRL_STATE,
  CTRL_THREAD_ID,
  FLAG_RECOVERED,
  FLAG_SHARED,
  type FlatError,
  moduleTaskId,
  moduleUrl,
  OUTCOME_ERROR,
  OUTCOME_VALUE,
  P_CONTROL,
  reviveError,
  sourceTaskId,
  surelyCloneable,
  TASK_CANCELLED,
  TASK_QUEUED,
  TASK_STARTED,
  TASK_STOPPING,
  type TaskId,
  type TaskLock,
  type TaskPayload,
} from './task.js';
import {
  defaultPoolState,
  ownPoolState,
  type PoolState,
  type RunOptions,
  type TaskPool,
} from './task-pool.js';

/** A self-contained function: it runs from its source text in a worker (no closure, no imports). */
export type TaskFunction<A, R> = (args: A, lock: TaskLock) => R | Promise<R>;

/** An exported function of a module file: `{ module: new URL('./tasks.js', import.meta.url), name }`. */
export interface ModuleTask {
  module: string | URL;
  /** The export to call. Default 'default'. */
  name?: string | undefined;
}

export interface WithLockOptions<A = unknown> {
  /**
   * The task's first argument (structured clone; SharedArrayBuffers inside are shared). Args that
   * cannot be cloned are refused before the lock is taken.
   */
  args?: A | undefined;
  mode?: Mode | undefined;
  /**
   * ms to wait for the lock; 0 = one attempt; Infinity = forever. Default: the handle's, else the
   * table's, else 5000.
   */
  waitTimeout?: number | undefined;
  /**
   * ms the task may run once it has started in its worker; Infinity allowed. Default 5000 (a
   * table's `hold` does not apply: the lease is held for execTimeout).
   */
  execTimeout?: number | undefined;
  /**
   * ms past a dead holder's deadline before this call may reclaim its lock. Default: the handle's,
   * else the table's, else 1000.
   */
  failTimeout?: number | undefined;
  /**
   * ms this call spins before it sleeps while waiting for the lock. Default: the handle's, else the
   * table's, else 0.05.
   */
  spinDelay?: number | undefined;
  /** Cancels the wait, or stops a running task like an exec timeout (rejects with AbortError). */
  signal?: AbortSignal | undefined;
  /** Your own Piscina; a string task is then the name of one of its file's exports. */
  pool?: TaskPool | undefined;
  /**
   * Objects in `args` to move to the task's worker instead of copying them (ArrayBuffers,
   * MessagePorts...), as with postMessage: after the call they are detached in the caller.
   */
  transferList?: readonly Transferable[] | undefined;
}

const WITH_LOCK_OPTIONS = [
  'args',
  'mode',
  'waitTimeout',
  'execTimeout',
  'failTimeout',
  'spinDelay',
  'signal',
  'pool',
  'transferList',
] as const;

/**
 * While a task is queued, its lease is renewed this many times per execTimeout, so that the slot's
 * deadline stays within execTimeout / RENEWALS of start + execTimeout until it is stamped exactly.
 */
const RENEWALS = 8;
/** The longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** While a stopped task's thread is being torn down, its lease is kept alive this long at a time. */
const KEEP_ALIVE_MS = 1000;
/**
 * Re-runs of one call whose task was handed to a thread that exited before starting it. A landing
 * on a dying thread needs another task to answer within microseconds of being stopped, so a
 * second one in a row is already unlikely; more mean that the pool's threads keep exiting
 * (terminated from outside): the call then fails rather than chase new threads forever.
 */
const MAX_RERUNS = 3;

/** run()'s options with a transferList added. */
function withTransferList(
  options: RunOptions | undefined,
  transferList: readonly Transferable[],
): RunOptions {
  return { ...options, transferList };
}

/**
 * Not an async function: its promise is settled by the TaskRun itself, two microtask turns
 * fewer per call than awaiting the acquire and then the run. Errors of the arguments reject it,
 * as they would an async function's.
 */
export function withLock<R = unknown, A = unknown>(
  table: LockTable,
  key: string,
  task: TaskFunction<A, R> | ModuleTask | string,
  options?: WithLockOptions<A>,
): Promise<Awaited<R>> {
  let acquiring: Promise<Lease>;
  let pool: PoolState;
  let spec: RunSpec;
  try {
    if (!(table instanceof LockTable))
      throw invalidType('table', 'an instance of LockTable', table);
    if (typeof key !== 'string') throw invalidType('key', 'of type string', key);
    checkOptionsObject('options', options);
    const o = options ?? {};
    checkKnownOptions('options', o, WITH_LOCK_OPTIONS);
    const own = o.pool === undefined ? undefined : ownPoolState(o.pool);
    if (o.transferList !== undefined && !Array.isArray(o.transferList)) {
      throw invalidType('options.transferList', 'an array', o.transferList);
    }
    const taskId = describeTask(task, own);
    const { handle, acquire, execTimeout, signal } = acquireFor(table, o);
    // With a transferList, args are checked when sent: a clone here would copy what the caller
    // means to move (and could not clone a MessagePort at all).
    if (o.transferList === undefined) checkArgs(o.args);
    pool = own ?? defaultPoolState();
    acquiring = handle.acquire(key, acquire);
    spec = { task: taskId, args: o.args, transferList: o.transferList, execTimeout, signal };
  } catch (error) {
    return Promise.reject(error as Error);
  }
  return new Promise((resolve, reject) => {
    acquiring.then((lease) => {
      try {
        new TaskRun(pool, lease, table, spec, resolve as (value: unknown) => void, reject);
      } catch (error) {
        // Nothing throws there short of running out of memory. The lease is kept (the task may
        // have been posted): it expires with its deadline, as when withLock was an async
        // function; the call rejects rather than hangs.
        reject(error);
      }
    }, reject);
  });
}

/** How a call takes its lock: the handle (its failTimeout) and acquire's options. */
interface AcquireSpec {
  handle: LockTable;
  acquire: AcquireOptions;
  execTimeout: number;
  signal: AbortSignal | undefined;
}

/**
 * The AcquireSpec of a call that sets none of withLock's settings, per table handle: a handle's
 * defaults never change, so the common call skips their layering, their checks and a few objects.
 */
const plainAcquires = new WeakMap<LockTable, AcquireSpec>();

function acquireFor(table: LockTable, o: WithLockOptions): AcquireSpec {
  const plain =
    o.mode === undefined &&
    o.waitTimeout === undefined &&
    o.execTimeout === undefined &&
    o.failTimeout === undefined &&
    o.spinDelay === undefined &&
    o.signal === undefined;
  let spec = plain ? plainAcquires.get(table) : undefined;
  if (spec === undefined) {
    const { mode, waitTimeout, execTimeout, failTimeout, spinDelay, signal } = withLockSettings(
      table,
      o,
    );
    spec = {
      handle: handleFor(table, failTimeout),
      acquire: { mode, waitTimeout, hold: execTimeout, spinDelay, signal },
      execTimeout,
      signal,
    };
    if (plain) plainAcquires.set(table, spec);
  }
  return spec;
}

export interface WithLockSettings {
  mode: Mode;
  waitTimeout: number;
  execTimeout: number;
  failTimeout: number;
  spinDelay: number;
  signal: AbortSignal | undefined;
}

/**
 * The validated settings of one call: each is the call's option, else the table handle's default
 * (attach, then new LockTable), else withLock's own (defaults.ts says why in that order).
 */
export function withLockSettings(table: LockTable, o: WithLockOptions): WithLockSettings {
  const call = checkDefaults('options', {
    waitTimeout: o.waitTimeout,
    failTimeout: o.failTimeout,
    spinDelay: o.spinDelay,
  });
  const set = layerDefaults(call, table[EXPLICIT_DEFAULTS]);
  return {
    mode: checkMode('options.mode', o.mode),
    waitTimeout: set.waitTimeout ?? WITH_LOCK_DEFAULTS.waitTimeout,
    execTimeout:
      o.execTimeout === undefined
        ? WITH_LOCK_DEFAULTS.execTimeout
        : checkMs('options.execTimeout', o.execTimeout, false),
    failTimeout: set.failTimeout ?? WITH_LOCK_DEFAULTS.failTimeout,
    spinDelay: set.spinDelay ?? WITH_LOCK_DEFAULTS.spinDelay,
    signal: checkSignal('options.signal', o.signal),
  };
}

/**
 * Refuses args that structured clone cannot send (a function, a symbol, a class with private
 * state...) before the lock is taken: piscina would fail only once the lock is held. The clone is
 * only the check and is dropped: the task is sent the caller's own args, so SharedArrayBuffers in
 * them are still shared. (It costs a copy of any ArrayBuffer in args, and a few µs even for
 * `{ counter: sab }`: args that surelyCloneable vouches for skip it.)
 */
function checkArgs(args: unknown): void {
  // Primitives, SharedArrayBuffers and small plain objects of them need no clone to be sure.
  if (surelyCloneable(args)) return;
  try {
    structuredClone(args);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw invalidValue(
      'options.args',
      `cannot be sent to the task's worker by structured clone (${reason}); pass plain data, and ` +
        'share memory through SharedArrayBuffers in it',
      args,
      error,
    );
  }
}

/** Handles of a table with another failTimeout (the reclaim patience of this call's acquire). */
const handles = new WeakMap<LockTable, Map<number, LockTable>>();

/**
 * A handle of `table` whose failTimeout is this call's: failTimeout is a handle's setting, not a
 * call option of acquire. Another handle carries the caller handle's other defaults, so that it
 * differs from the caller's in failTimeout only.
 */
export function handleFor(table: LockTable, failTimeout: number): LockTable {
  // table.defaults.failTimeout, without the copy of every default that getter makes.
  const own = table[EXPLICIT_DEFAULTS].failTimeout ?? TABLE_API_DEFAULTS.failTimeout;
  if (own === failTimeout) return table;
  let byTimeout = handles.get(table);
  if (byTimeout === undefined) handles.set(table, (byTimeout = new Map()));
  let handle = byTimeout.get(failTimeout);
  if (handle === undefined) {
    if (byTimeout.size >= 16) byTimeout.clear();
    const defaults: TableDefaults = { ...table[EXPLICIT_DEFAULTS], failTimeout };
    handle = LockTable.attach(table.buffer, defaults);
    byTimeout.set(failTimeout, handle);
  }
  return handle;
}

/** Checked once per function: its source parses as an expression the worker can evaluate. */
const checkedSources = new WeakMap<object, TaskId>();

function describeTask(task: unknown, own: PoolState | undefined): TaskId {
  if (typeof task === 'function') {
    let id = checkedSources.get(task);
    if (id === undefined) {
      const source = Function.prototype.toString.call(task);
      const problem = /\{\s*\[native code\]\s*\}\s*$/.test(source)
        ? 'is a native or bound function'
        : /^class\b/.test(source)
          ? 'is a class'
          : parses(source)
            ? undefined
            : 'is not a self-contained function expression (a method shorthand?)';
      if (problem !== undefined) {
        throw invalidValue(
          'task',
          `${problem}: withLock runs a task function from its source text in a worker, so it ` +
            'must be a plain function or arrow function that uses only its arguments; or pass ' +
            '{ module, name }',
          task,
        );
      }
      id = sourceTaskId(source);
      checkedSources.set(task, id);
    }
    return id;
  }
  if (typeof task === 'string') {
    if (own === undefined) {
      throw invalidValue(
        'task',
        'is a task name, which needs options.pool (a Piscina whose file exports it); without a ' +
          'pool, pass a function or { module, name }',
        task,
      );
    }
    let id = own.names.get(task);
    if (id === undefined) {
      const filename = own.pool.options.filename;
      if (typeof filename !== 'string' || filename === '') {
        throw invalidValue('options.pool', 'has no filename, so it has no named tasks', own.pool);
      }
      id = moduleTaskId(moduleUrl(filename), task);
      if (own.names.size >= 256) own.names.clear();
      own.names.set(task, id);
    }
    return id;
  }
  if (task !== null && typeof task === 'object' && 'module' in task) {
    const { module, name = 'default' } = task as ModuleTask;
    if (typeof module !== 'string' && !(module instanceof URL)) {
      throw invalidType('task.module', 'of type string or an instance of URL', module);
    }
    if (typeof name !== 'string') throw invalidType('task.name', 'of type string', name);
    return moduleTaskId(moduleUrl(module), name);
  }
  throw invalidType('task', 'a function, { module, name }, or a task name with options.pool', task);
}

function parses(source: string): boolean {
  try {
    // Compiles without running: the worker evaluates the same text.
    new Function(`return (${source}\n);`);
    return true;
  } catch {
    return false;
  }
}

interface RunSpec {
  task: TaskId;
  args: unknown;
  transferList: readonly Transferable[] | undefined;
  execTimeout: number;
  signal: AbortSignal | undefined;
}

/** A control block (task.ts) and its views. */
interface ControlBlock {
  readonly buffer: SharedArrayBuffer;
  readonly words: Int32Array;
  readonly startTime: Float64Array;
}

/**
 * Control blocks whose worker has answered: it writes nothing in a block after its answer
 * (task.ts), so the block can serve this thread's next call, rather than a fresh
 * SharedArrayBuffer per call: an allocation, and a new backing store for both threads' garbage
 * collectors.
 */
const freeControls: ControlBlock[] = [];
const FREE_CONTROLS_LIMIT = 16;

function takeControl(): ControlBlock {
  const block = freeControls.pop();
  if (block === undefined) {
    const buffer = new SharedArrayBuffer(CONTROL_BYTES);
    return { buffer, words: new Int32Array(buffer), startTime: new Float64Array(buffer) };
  }
  // ORDER: plain writes: the postMessage that sends the block to a worker publishes them.
  block.words[CTRL_STATE] = TASK_QUEUED;
  block.words[CTRL_THREAD_ID] = 0;
  block.words[CTRL_OUTCOME] = OUTCOME_VALUE;
  return block;
}

/** Only once the worker has answered for this block (see freeControls). */
function giveBackControl(block: ControlBlock): void {
  if (freeControls.length < FREE_CONTROLS_LIMIT) freeControls.push(block);
}

/** One withLock call from the moment it holds the lock. See the life cycle at the top. */
class TaskRun {
  readonly #lease: Lease;
  readonly #pool: PoolState;
  readonly #threads: PoolState['threads'];
  readonly #execTimeout: number;
  readonly #signal: AbortSignal | undefined;
  /** What is posted: kept for a re-run, which posts it again with a fresh control block. */
  readonly #payload: TaskPayload;
  readonly #transferList: readonly Transferable[] | undefined;
  /** The block of the current post (a re-run replaces it; the old one is CANCELLED). */
  #control: ControlBlock;
  #reruns = 0;
  readonly #resolve: (value: unknown) => void;
  readonly #reject: (error: unknown) => void;
  #settled = false;
  /** Set once the task's run is being stopped (exec timeout or abort): the error to settle with. */
  #stopping: Error | undefined;
  /** The deadline in the slot is start + execTimeout (set at the first tick after the start). */
  #deadlineStamped = false;
  #worker: Worker | undefined;
  #onExit: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #onAbort: (() => void) | undefined;

  /** Settles the call with `resolve` or `reject`. */
  constructor(
    pool: PoolState,
    lease: Lease,
    table: LockTable,
    { task, args, transferList, execTimeout, signal }: RunSpec,
    resolve: (value: unknown) => void,
    reject: (error: unknown) => void,
  ) {
    this.#resolve = resolve;
    this.#reject = reject;
    this.#lease = lease;
    this.#pool = pool;
    this.#threads = pool.threads;
    this.#execTimeout = execTimeout;
    this.#signal = signal;
    this.#transferList = transferList;
    const control = (this.#control = takeControl());
    this.#payload = [
      task,
      args,
      control.buffer,
      lease.key,
      lease.token,
      table.buffer,
      execTimeout,
      (lease.mode === 'shared' ? FLAG_SHARED : 0) | (lease.recovered ? FLAG_RECOVERED : 0),
    ];
    this.#post();
    if (this.#settled) return;
    if (execTimeout !== Infinity) this.#arm(execTimeout / RENEWALS);
    if (signal !== undefined) {
      this.#onAbort = () => this.#cancelOrStop(new AbortError(lease.key, signal.reason));
      signal.addEventListener('abort', this.#onAbort, { once: true });
      if (signal.aborted) this.#onAbort();
    }
  }

  /** Posts the payload with the current control block; the pool's answer settles the call. */
  #post(): void {
    this.#payload[P_CONTROL] = this.#control.buffer;
    const pool = this.#pool;
    let running: Promise<unknown>;
    try {
      running = pool.pool.run(
        this.#payload,
        this.#transferList === undefined
          ? pool.runOptions
          : withTransferList(pool.runOptions, this.#transferList),
      );
    } catch (error) {
      this.#finish(error);
      return;
    }
    // One post is live at a time: a re-run posts only once the previous run has rejected.
    running.then(
      (answer) => this.#onAnswer(answer),
      (error: unknown) => this.#onRunRejected(error),
    );
  }

  #arm(ms: number): void {
    // setTimeout fires at once for delays over 2^31 - 1 ms: a long wait is taken in steps (each
    // tick re-reads the time left).
    this.#timer = setTimeout(() => this.#tick(), Math.min(Math.max(1, ms), MAX_TIMER_MS));
    this.#timer.unref();
  }

  /**
   * The one timer of a finite execTimeout. While the task is queued it renews the lease every
   * execTimeout / RENEWALS. At the first tick after the worker started the task, it stamps the
   * deadline start + execTimeout (the start time is in the control block), and it fires again
   * then to stop the task. No wake-up from the worker is needed (one would cost the calling
   * thread an event-loop turn per call).
   */
  #tick(): void {
    if (this.#settled || this.#stopping !== undefined) return;
    if (Atomics.load(this.#control.words, CTRL_STATE) === TASK_QUEUED) {
      if (this.#extend(this.#execTimeout)) this.#arm(this.#execTimeout / RENEWALS);
      return;
    }
    const remaining =
      this.#control.startTime[CTRL_START_TIME_F64]! + this.#execTimeout - LockTable.now();
    if (remaining <= 0) {
      // If the task has just finished (DONE), its answer is on its way: let it through.
      if (this.#claimStop()) this.#stop(execTimeoutError(this.#lease.key, this.#execTimeout));
      return;
    }
    if (!this.#deadlineStamped) {
      if (!this.#extend(remaining)) return;
      this.#deadlineStamped = true;
    }
    this.#arm(remaining);
  }

  #extend(ms: number): boolean {
    try {
      this.#lease.extend(ms);
      return true;
    } catch (error) {
      // The lease was lost: this thread's event loop stalled past its deadline + failTimeout.
      this.#cancelOrStop(error as Error);
      return false;
    }
  }

  /**
   * Before the task starts: make sure it never does. While it runs: stop it. Once it has finished
   * (DONE), nothing: its answer is on its way and settles the call.
   */
  #cancelOrStop(error: Error): void {
    if (this.#settled || this.#stopping !== undefined) return;
    if (this.#cancel()) {
      // The body will never run: when a worker picks the task up, it returns at once.
      this.#finish(error);
    } else if (this.#claimStop()) {
      this.#stop(error);
    }
  }

  /** STARTED -> STOPPING: true when the task is still running and this call will stop it. */
  #claimStop(): boolean {
    return (
      Atomics.compareExchange(this.#control.words, CTRL_STATE, TASK_STARTED, TASK_STOPPING) ===
      TASK_STARTED
    );
  }

  /** QUEUED -> CANCELLED: true when the task body will never run. */
  #cancel(): boolean {
    return (
      Atomics.compareExchange(this.#control.words, CTRL_STATE, TASK_QUEUED, TASK_CANCELLED) ===
      TASK_QUEUED
    );
  }

  /**
   * Terminates the task's thread (after #claimStop won: the thread is still inside this task);
   * releases the lock once that thread has exited.
   */
  #stop(error: Error): void {
    this.#stopping = error;
    clearTimeout(this.#timer);
    // The stopped thread may outlive its deadline (a native call is not interruptible): keep the
    // lease alive so that nobody reclaims the lock while that thread can still write.
    const keepAlive = (): void => {
      try {
        this.#lease.extend(KEEP_ALIVE_MS);
      } catch {
        // Lost already: there is nothing left to protect.
      }
      this.#timer = setTimeout(keepAlive, KEEP_ALIVE_MS / 4);
      this.#timer.unref();
    };
    keepAlive();
    this.#whenExited(() => this.#finish(error));
    // Piscina sees the exit, rejects the run (ignored: we are stopping) and replaces the thread.
    // (Its own abort would terminate the same way; a signal per run costs more than the rest of
    // withLock's overhead, so there is none.)
    void this.#worker?.terminate();
  }

  /**
   * Calls `then` once the thread that started the task has exited (in a microtask if it already
   * has: the pool's threads are tracked until their exit, see task-pool.ts).
   *
   * Called from the thread's 'exit' event itself, which Node emits only once the thread has
   * stopped: so the lock is never released while the task can still run. The listener goes
   * first (prependOnceListener) and releases synchronously: piscina's own 'exit' listener starts
   * a replacement thread, which takes milliseconds of this thread's time, and the lock's next
   * holder need not wait for that (with-lock.test.ts, "exec timeout: the lock is released as
   * soon as the thread has exited, before piscina replaces it").
   */
  #whenExited(then: () => void): void {
    const worker = this.#threads.find(Atomics.load(this.#control.words, CTRL_THREAD_ID));
    if (worker === undefined) {
      queueMicrotask(then);
      return;
    }
    this.#worker = worker;
    this.#onExit = then;
    worker.prependOnceListener('exit', then);
  }

  /**
   * The worker answered: with the task's value, a FlatError, or nothing (it found the task
   * cancelled); OUTCOME in the control block says which. The worker is done with the block.
   */
  #onAnswer(answer: unknown): void {
    if (this.#stopping !== undefined) return;
    if (!this.#settled) {
      const outcome = Atomics.load(this.#control.words, CTRL_OUTCOME);
      if (outcome === OUTCOME_VALUE) this.#finish(undefined, answer, true);
      else if (outcome === OUTCOME_ERROR) this.#finish(reviveError(answer as FlatError));
      else this.#finish(new Error('withLock: the task was cancelled before it started'));
    }
    // Settled (by now, or before: cancelled) and not stopping: nothing here reads the block again.
    giveBackControl(this.#control);
  }

  #onRunRejected(error: unknown): void {
    if (this.#settled || this.#stopping !== undefined) return;
    const message = error instanceof Error ? error.message : String(error);
    const exit = /worker exited with code: (-?\d+)/.exec(message);
    if (exit !== null) {
      // Piscina reports "worker exited" from the worker's 'exit' event: that thread is gone.
      // Still QUEUED: the task was handed to a thread that died before it started it (piscina
      // gave it a thread that was being terminated for another call); after the CAS it never
      // will there, and it runs again under the same lease. STARTED or DONE: it ran, in part or
      // in full, and the exit is its failure.
      if (this.#cancel() && this.#rerun()) return;
      this.#finish(workerExitError(this.#lease.key, Number(exit[1]), error));
      return;
    }
    const failure = error instanceof Error ? error : new Error(message);
    // A task that never started never will (after the CAS); one that is DONE has left its thread.
    // One that is still running must be stopped before the lock is let go.
    if (this.#cancel() || !this.#claimStop()) {
      this.#finish(failure);
      return;
    }
    this.#stop(failure);
  }

  /**
   * After a thread exit while QUEUED (the block is CANCELLED now): posts the task again with a
   * fresh block; the lease, the exec timer (still renewing: nothing started) and the abort
   * listener carry on, and act on the new block. The old block is dropped: its thread is dead and
   * will never answer for it. False when there is no re-run: objects in a transferList went to
   * the dead thread; MAX_RERUNS are spent; or the lease is lost, or cannot be renewed for a full
   * execTimeout (the task would run unlocked).
   */
  #rerun(): boolean {
    if (this.#transferList !== undefined || this.#reruns >= MAX_RERUNS) return false;
    // A full lease for the re-run: `held` alone would pass a lease past its deadline that nobody
    // has reclaimed yet (the calling thread stalled), and the task could start on it.
    try {
      if (Number.isFinite(this.#execTimeout)) this.#lease.extend(this.#execTimeout);
      else if (!this.#lease.held) return false;
    } catch {
      return false;
    }
    this.#reruns++;
    this.#control = takeControl();
    this.#post();
    return true;
  }

  #finish(error: unknown, value?: unknown, ok = false): void {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#timer);
    if (this.#onAbort !== undefined) this.#signal?.removeEventListener('abort', this.#onAbort);
    if (this.#onExit !== undefined) this.#worker?.off('exit', this.#onExit);
    let lost = false;
    try {
      this.#lease.release();
    } catch {
      lost = true;
    }
    if (!lost) {
      if (ok) this.#resolve(value);
      else this.#reject(error);
      return;
    }
    // The lease expired and was reclaimed while the task ran or was being stopped (this thread's
    // event loop stalled past deadline + failTimeout): say so, whatever else happened.
    const stale = staleError(this.#lease.key, 'finish the task under its lock');
    if (!ok)
      Object.defineProperty(stale, 'cause', { value: error, configurable: true, writable: true });
    this.#reject(stale);
  }
}
