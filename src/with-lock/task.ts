/**
 * What crosses the thread boundary for withLock: the task's description, the lock it runs under,
 * the control block through which the worker says "started", and the outcome (a value, or an
 * error flattened so that its name, message, code, stack and own fields survive structured clone).
 *
 * Shared by the calling side (with-lock.ts) and the worker side (task-runner.ts); it imports
 * nothing heavier than node:url, so the worker's start-up stays small.
 */
import { pathToFileURL } from 'node:url';

/** What the task receives as its second argument: the lock it runs under. */
export interface TaskLock {
  key: string;
  mode: 'exclusive' | 'shared';
  /** The fencing token of the lease held for this task: pass it with every write it protects. */
  token: bigint;
  /** Monotonic deadline in ms (compare with LockTable.now()): start + execTimeout, or Infinity. */
  deadline: number;
  /** True when the lock was reclaimed from a holder that died. */
  recovered: boolean;
  /** The lock table's buffer: `LockTable.attach(lock.table)` works inside the task. */
  table: SharedArrayBuffer;
}

/** How the worker finds the function to run. */
export type TaskSource =
  { kind: 'source'; source: string } | { kind: 'module'; url: string; name: string };

export interface TaskPayload {
  task: TaskSource;
  args: unknown;
  lock: TaskLock;
  /** The control block (see CTRL_*). */
  control: SharedArrayBuffer;
  /** The task's exec timeout, so that the worker can stamp `lock.deadline` from its own start. */
  execTimeout: number;
}

export type TaskOutcome =
  { ok: true; value: unknown } | { ok: false; error: FlatError } | { ok: false; cancelled: true };

/*
 * The control block: Int32 words, then the start time as a Float64.
 *
 *   QUEUED  --(worker, CAS)--> STARTED     the task body is about to run; THREAD_ID is set
 *   QUEUED  --(caller, CAS)--> CANCELLED   the body will never run (abort before start)
 *   STARTED --(worker, CAS)--> DONE        the body has settled; the worker is about to answer
 *   STARTED --(caller, CAS)--> STOPPING    the caller will terminate the thread (exec timeout,
 *                                          abort, lost lease, pool failure)
 *
 * The worker writes THREAD_ID and START_TIME before its first CAS, so a caller that sees STARTED
 * (or loses its own CAS) can read both. The caller terminates a thread only after winning
 * STARTED -> STOPPING, so it never terminates a thread that has finished the task (and may have
 * moved on to another one).
 */
export const CTRL_STATE = 0;
export const CTRL_THREAD_ID = 1;
export const CTRL_WORDS = 4;
export const CTRL_START_TIME_F64 = 2; // index in the Float64 view (byte 16)
export const CONTROL_BYTES = 24;

export const TASK_QUEUED = 0;
export const TASK_STARTED = 1;
export const TASK_CANCELLED = 2;
export const TASK_DONE = 3;
export const TASK_STOPPING = 4;

/** An Error flattened for structured clone. */
export interface FlatError {
  name: string;
  message: string;
  stack: string | undefined;
  code: unknown;
  /** Other own enumerable fields that survive structured clone. */
  fields: Record<string, unknown>;
  cause: FlatError | { value: unknown } | undefined;
  /** The thrown value was not an Error (e.g. `throw 42`). */
  notAnError: boolean;
}

function cloneable(value: unknown): boolean {
  try {
    structuredClone(value);
    return true;
  } catch {
    return false;
  }
}

/** Flattens whatever a task threw. Never throws itself (getters may; proxies may). */
export function flattenError(thrown: unknown, depth = 0): FlatError {
  try {
    return flattenUnsafe(thrown, depth);
  } catch (readError) {
    let name = 'Error';
    let message = 'the task threw an error that could not be read';
    try {
      if (thrown instanceof Error)
        ({ name, message } = { name: String(thrown.name), message: String(thrown.message) });
    } catch {
      // keep the defaults
    }
    return {
      name,
      message: `${message} (reading it failed: ${describeThrown(readError)})`,
      stack: undefined,
      code: undefined,
      fields: {},
      cause: undefined,
      notAnError: !(thrown instanceof Error),
    };
  }
}

function flattenUnsafe(thrown: unknown, depth: number): FlatError {
  if (!(thrown instanceof Error)) {
    return {
      name: 'Error',
      message: `The task threw a non-Error value: ${describeThrown(thrown)}`,
      stack: undefined,
      code: undefined,
      fields: cloneable(thrown) ? { value: thrown } : {},
      cause: undefined,
      notAnError: true,
    };
  }
  const fields: Record<string, unknown> = {};
  for (const name of Object.keys(thrown)) {
    if (name === 'code' || name === 'cause' || name === 'name' || name === 'message') continue;
    try {
      const value = (thrown as unknown as Record<string, unknown>)[name];
      if (cloneable(value)) fields[name] = value;
    } catch {
      // A getter that throws: leave the field out.
    }
  }
  let cause: FlatError['cause'];
  if ('cause' in thrown && thrown.cause !== undefined) {
    if (thrown.cause instanceof Error && depth < 4) cause = flattenError(thrown.cause, depth + 1);
    else if (cloneable(thrown.cause)) cause = { value: thrown.cause };
  }
  const code = (thrown as { code?: unknown }).code;
  return {
    name: String(thrown.name),
    message: String(thrown.message),
    stack: typeof thrown.stack === 'string' ? thrown.stack : undefined,
    code: code === undefined || cloneable(code) ? code : String(code),
    fields,
    cause,
    notAnError: false,
  };
}

function describeThrown(value: unknown): string {
  try {
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    return typeof value === 'string' ? JSON.stringify(value) : String(value);
  } catch {
    return typeof value;
  }
}

const BUILTIN_ERRORS: Record<string, ErrorConstructor> = {
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
};

/** Rebuilds an Error in the calling thread: same class for built-in errors, same name otherwise. */
export function reviveError(flat: FlatError): Error {
  const Ctor = BUILTIN_ERRORS[flat.name] ?? Error;
  const error = new Ctor(flat.message);
  if (error.name !== flat.name) {
    Object.defineProperty(error, 'name', {
      value: flat.name,
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }
  if (flat.stack !== undefined) error.stack = flat.stack;
  if (flat.code !== undefined) Object.assign(error, { code: flat.code });
  Object.assign(error, flat.fields);
  if (flat.cause !== undefined) {
    const cause = 'value' in flat.cause ? flat.cause.value : reviveError(flat.cause);
    Object.defineProperty(error, 'cause', {
      value: cause,
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }
  return error;
}

/** A module reference as a URL string that `import()` accepts (absolute paths become file URLs). */
export function moduleUrl(module: string | URL): string {
  if (module instanceof URL) return module.href;
  if (/^[a-zA-Z][a-zA-Z\d+.-]*:/.test(module) && !/^[a-zA-Z]:[\\/]/.test(module)) return module;
  return pathToFileURL(module).href;
}
