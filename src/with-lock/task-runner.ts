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
  CTRL_START_TIME_F64,
  CTRL_STATE,
  CTRL_THREAD_ID,
  flattenError,
  TASK_DONE,
  TASK_QUEUED,
  TASK_STARTED,
  type TaskLock,
  type TaskOutcome,
  type TaskPayload,
  type TaskSource,
} from './task.js';

type TaskFunction = (args: unknown, lock: TaskLock) => unknown;

/** Compiled function sources, by source text (a worker serves many calls of the same task). */
const compiled = new Map<string, TaskFunction>();
const COMPILED_LIMIT = 256;

const CLOSURE_HINT =
  ' (withLock runs a task function from its source text in a worker thread, so it cannot see ' +
  "the caller's variables, imports or closure: pass values through options.args, import " +
  'modules inside the task with await import(), or use a task { module, name })';

function nameFunction<T>(target: T, value: string): T {
  return Object.defineProperty(target, 'name', { value, configurable: true });
}

function compile(source: string): TaskFunction {
  let fn = compiled.get(source);
  if (fn === undefined) {
    // The caller already checked that the source parses as an expression (with-lock.ts).
    // esbuild (tsx, tsup, vite) with keepNames wraps nested functions in `__name(fn, "name")`,
    // a helper of the caller's module: give the source its own.
    fn = new Function('__name', `return (${source}\n);`)(nameFunction) as TaskFunction;
    if (compiled.size >= COMPILED_LIMIT) compiled.clear();
    compiled.set(source, fn);
  }
  return fn;
}

/** Exported task functions, by module URL and export name. */
const imported = new Map<string, TaskFunction>();

function moduleId(task: { url: string; name: string }): string {
  return `${task.name}@${task.url}`;
}

async function importTask(task: { url: string; name: string }): Promise<TaskFunction> {
  const mod = (await import(task.url)) as Record<string, unknown>;
  const found = mod[task.name];
  if (typeof found !== 'function') {
    throw new TypeError(
      `The module ${task.url} has no exported function "${task.name}" (found ${typeof found})`,
    );
  }
  imported.set(moduleId(task), found as TaskFunction);
  return found as TaskFunction;
}

function failed(error: unknown, task: TaskSource): TaskOutcome {
  const flat = flattenError(error);
  if (task.kind === 'source' && error instanceof ReferenceError) {
    flat.message += CLOSURE_HINT;
    if (flat.stack !== undefined) flat.stack = flat.stack.replace(error.message, flat.message);
  }
  return { ok: false, error: flat };
}

/**
 * A value that cannot be posted back would crash the worker inside piscina, with an unreadable
 * error: check objects here (a structured clone; primitives always pass) and say what went wrong.
 */
function succeeded(value: unknown, task: TaskSource): TaskOutcome {
  if (
    (typeof value === 'object' && value !== null) ||
    typeof value === 'function' ||
    typeof value === 'symbol'
  ) {
    try {
      structuredClone(value);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return failed(
        new TypeError(
          `The task's result cannot be sent back to the calling thread (${reason}): return ` +
            'structured-cloneable values (no functions or symbols)',
        ),
        task,
      );
    }
  }
  return { ok: true, value };
}

/** STARTED -> DONE: from here on the caller will not terminate this thread for this task. */
function done(control: Int32Array): void {
  Atomics.compareExchange(control, CTRL_STATE, TASK_STARTED, TASK_DONE);
}

async function settle(
  value: PromiseLike<unknown>,
  task: TaskSource,
  control: Int32Array,
): Promise<TaskOutcome> {
  let result: unknown;
  try {
    result = await value;
  } catch (error) {
    done(control);
    return failed(error, task);
  }
  done(control);
  return succeeded(result, task);
}

/**
 * Piscina calls this with the payload. A synchronous task whose function is already compiled or
 * imported in this worker is answered synchronously (no promise): the common case stays cheap.
 */
export default function runTask(payload: TaskPayload): TaskOutcome | Promise<TaskOutcome> {
  const control = new Int32Array(payload.control, 0, CONTROL_BYTES / 4);
  const started = monotonicNow();
  control[CTRL_THREAD_ID] = threadId;
  new Float64Array(payload.control, 0, CONTROL_BYTES / 8)[CTRL_START_TIME_F64] = started;
  // ORDER: the thread id and start time are published by this CAS.
  if (Atomics.compareExchange(control, CTRL_STATE, TASK_QUEUED, TASK_STARTED) !== TASK_QUEUED) {
    return { ok: false, cancelled: true };
  }
  const task = payload.task;
  const lock: TaskLock = payload.lock;
  lock.deadline = started + payload.execTimeout;
  try {
    const fn = task.kind === 'source' ? compile(task.source) : imported.get(moduleId(task));
    // The module is imported after the start, so that a module that hangs while loading is
    // stopped by the exec timeout too.
    if (fn === undefined && task.kind === 'module') {
      return settle(
        importTask(task).then((f) => f(payload.args, lock)),
        task,
        control,
      );
    }
    const value = fn!(payload.args, lock);
    if (value !== null && typeof (value as PromiseLike<unknown>)?.then === 'function') {
      return settle(value as PromiseLike<unknown>, task, control);
    }
    done(control);
    return succeeded(value, task);
  } catch (error) {
    done(control);
    return failed(error, task);
  }
}
