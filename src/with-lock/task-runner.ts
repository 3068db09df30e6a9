/**
 * The piscina task file of withLock: runs in a pool worker. It claims the control block
 * (QUEUED -> STARTED, after writing its thread id and start time), so the caller can start the exec
 * timer and knows which thread to terminate; then it loads and runs the task and returns its
 * outcome, with errors flattened so that they survive structured clone (see task.ts).
 *
 * If the caller cancelled first (QUEUED -> CANCELLED), the task body never runs.
 */
import { threadId } from 'node:worker_threads';
import { monotonicNow } from '../api/clock.js';
import {
  CONTROL_BYTES,
  CTRL_OUTCOME,
  CTRL_START_TIME_F64,
  CTRL_STATE,
  CTRL_THREAD_ID,
  CTRL_WORDS,
  FLAG_RECOVERED,
  FLAG_SHARED,
  flattenError,
  isSourceTask,
  OUTCOME_CANCELLED,
  OUTCOME_ERROR,
  P_ARGS,
  P_CONTROL,
  P_EXEC_TIMEOUT,
  P_FLAGS,
  P_KEY,
  P_TABLE,
  P_TASK,
  P_TOKEN,
  surelyCloneable,
  TASK_DONE,
  TASK_QUEUED,
  TASK_STARTED,
  type FlatError,
  type TaskId,
  type TaskLock,
  type TaskPayload,
  taskModule,
  taskSource,
} from './task.js';

type TaskFunction = (args: unknown, lock: TaskLock) => unknown;

/**
 * Task functions by task id: compiled sources and imported exports (a worker serves many calls of
 * the same task). Cleared when full: a module's exports come back from the module cache.
 */
const functions = new Map<TaskId, TaskFunction>();
const FUNCTIONS_LIMIT = 256;

function remember(id: TaskId, fn: TaskFunction): TaskFunction {
  if (functions.size >= FUNCTIONS_LIMIT) functions.clear();
  functions.set(id, fn);
  return fn;
}

const CLOSURE_HINT =
  ' (withLock runs a task function from its source text in a worker thread, so it cannot see ' +
  "the caller's variables, imports or closure: pass values through options.args, import " +
  'modules inside the task with await import(), or use a task { module, name })';

function nameFunction<T>(target: T, value: string): T {
  return Object.defineProperty(target, 'name', { value, configurable: true });
}

function compile(id: TaskId): TaskFunction {
  // The caller already checked that the source parses as an expression (with-lock.ts).
  // esbuild (tsx, tsup, vite) with keepNames wraps nested functions in `__name(fn, "name")`,
  // a helper of the caller's module: give the source its own.
  const fn = new Function('__name', `return (${taskSource(id)}\n);`)(nameFunction) as TaskFunction;
  return remember(id, fn);
}

async function importTask(id: TaskId): Promise<TaskFunction> {
  const { url, name } = taskModule(id);
  const mod = (await import(url)) as Record<string, unknown>;
  const found = mod[name];
  if (typeof found !== 'function') {
    throw new TypeError(
      `The module ${url} has no exported function "${name}" (found ${typeof found})`,
    );
  }
  return remember(id, found as TaskFunction);
}

function failed(error: unknown, id: TaskId, control: Int32Array): FlatError {
  const flat = flattenError(error);
  if (isSourceTask(id) && error instanceof ReferenceError) {
    flat.message += CLOSURE_HINT;
    if (flat.stack !== undefined) flat.stack = flat.stack.replace(error.message, flat.message);
  }
  control[CTRL_OUTCOME] = OUTCOME_ERROR;
  return flat;
}

/**
 * A value that cannot be posted back would crash the worker inside piscina, with an unreadable
 * error: check objects here (a structured clone, unless surelyCloneable vouches for the value)
 * and say what went wrong.
 */
function succeeded(value: unknown, id: TaskId, control: Int32Array): unknown {
  if (!surelyCloneable(value)) {
    try {
      structuredClone(value);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return failed(
        new TypeError(
          `The task's result cannot be sent back to the calling thread (${reason}): return ` +
            'structured-cloneable values (no functions or symbols)',
        ),
        id,
        control,
      );
    }
  }
  return value;
}

/** STARTED -> DONE: from here on the caller will not terminate this thread for this task. */
function done(control: Int32Array): void {
  Atomics.compareExchange(control, CTRL_STATE, TASK_STARTED, TASK_DONE);
}

async function settle(
  value: PromiseLike<unknown>,
  id: TaskId,
  control: Int32Array,
): Promise<unknown> {
  let result: unknown;
  try {
    result = await value;
  } catch (error) {
    done(control);
    return failed(error, id, control);
  }
  done(control);
  return succeeded(result, id, control);
}

/**
 * Piscina calls this with the payload; it answers with the task's value, or a FlatError, or
 * nothing, and OUTCOME in the control block says which (see task.ts). A synchronous task whose
 * function is already compiled or imported in this worker is answered synchronously (no
 * promise): the common case stays cheap.
 */
export default function runTask(payload: TaskPayload): unknown {
  const control = new Int32Array(payload[P_CONTROL], 0, CTRL_WORDS);
  const started = monotonicNow();
  control[CTRL_THREAD_ID] = threadId;
  new Float64Array(payload[P_CONTROL], 0, CONTROL_BYTES / 8)[CTRL_START_TIME_F64] = started;
  // ORDER: the thread id and start time are published by this CAS.
  if (Atomics.compareExchange(control, CTRL_STATE, TASK_QUEUED, TASK_STARTED) !== TASK_QUEUED) {
    control[CTRL_OUTCOME] = OUTCOME_CANCELLED;
    return undefined;
  }
  const id = payload[P_TASK];
  const args = payload[P_ARGS];
  const flags = payload[P_FLAGS];
  const lock: TaskLock = {
    key: payload[P_KEY],
    mode: (flags & FLAG_SHARED) !== 0 ? 'shared' : 'exclusive',
    token: payload[P_TOKEN],
    deadline: started + payload[P_EXEC_TIMEOUT],
    recovered: (flags & FLAG_RECOVERED) !== 0,
    table: payload[P_TABLE],
  };
  try {
    let fn = functions.get(id);
    if (fn === undefined) {
      // A module is imported after the start, so that a module that hangs while loading is
      // stopped by the exec timeout too.
      if (!isSourceTask(id)) {
        return settle(
          importTask(id).then((f) => f(args, lock)),
          id,
          control,
        );
      }
      fn = compile(id);
    }
    const value = fn(args, lock);
    if (value !== null && typeof (value as PromiseLike<unknown>)?.then === 'function') {
      return settle(value as PromiseLike<unknown>, id, control);
    }
    done(control);
    return succeeded(value, id, control);
  } catch (error) {
    done(control);
    return failed(error, id, control);
  }
}
