/**
 * What crosses the thread boundary for withLock: the task's description, the lock it runs under,
 * the control block through which the worker says "started", and the outcome (a value, or an
 * error flattened so that its name, message, code, stack and own fields survive structured clone).
 *
 * Shared by the calling side (with-lock.ts) and the worker side (task-runner.ts); it imports
 * nothing heavier than node:url, so the worker's start-up stays small.
 */
import { pathToFileURL } from 'node:url';
import { types } from 'node:util';

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

/**
 * How the worker finds the function to run: one string, the key of the worker's cache too.
 *   's' + source text                          a self-contained function
 *   'm' + url.length + ':' + url + export name  an exported function of a module
 * (A URL given as a string may hold any character, a name too: the length says where they part.)
 */
export type TaskId = string;

export function sourceTaskId(source: string): TaskId {
  return `s${source}`;
}

export function moduleTaskId(url: string, name: string): TaskId {
  return `m${url.length}:${url}${name}`;
}

export function isSourceTask(id: TaskId): boolean {
  return id.charCodeAt(0) === 0x73; // 's'
}

export function taskSource(id: TaskId): string {
  return id.slice(1);
}

export function taskModule(id: TaskId): { url: string; name: string } {
  const colon = id.indexOf(':');
  const end = colon + 1 + Number(id.slice(1, colon));
  return { url: id.slice(colon + 1, end), name: id.slice(end) };
}

/**
 * What withLock posts to its runner: one flat array. Each object in a message costs its own
 * clone on both sides; the nested payload this replaced (the payload, its task and its lock)
 * took about 0.7 µs more to clone (structuredClone, one thread). The lock's mode and
 * `recovered` travel as FLAG_* bits.
 */
export type TaskPayload = [
  task: TaskId,
  args: unknown,
  /** The control block (see CTRL_*). */
  control: SharedArrayBuffer,
  key: string,
  token: bigint,
  table: SharedArrayBuffer,
  /** The task's exec timeout, so that the worker can stamp `lock.deadline` from its own start. */
  execTimeout: number,
  flags: number,
];

export const P_TASK = 0;
export const P_ARGS = 1;
export const P_CONTROL = 2;
export const P_KEY = 3;
export const P_TOKEN = 4;
export const P_TABLE = 5;
export const P_EXEC_TIMEOUT = 6;
export const P_FLAGS = 7;

export const FLAG_SHARED = 1;
export const FLAG_RECOVERED = 2;

/*
 * The control block: Int32 words, then the start time as a Float64.
 *
 *   QUEUED  --(worker, CAS)--> STARTED     the task body is about to run; THREAD_ID is set
 *   QUEUED  --(caller, CAS)--> CANCELLED   the body will never run under this block (abort before
 *                                          start, lost lease, pool failure; or the thread the
 *                                          block was posted to exited: see below)
 *   STARTED --(worker, CAS)--> DONE        the body has settled; the worker is about to answer
 *   STARTED --(caller, CAS)--> STOPPING    the caller will terminate the thread (exec timeout,
 *                                          abort, lost lease, pool failure)
 *
 * The worker writes THREAD_ID and START_TIME before its first CAS, so a caller that sees STARTED
 * (or loses its own CAS) can read both. The caller terminates a thread only after winning
 * STARTED -> STOPPING, so it never terminates a thread that has finished the task (and may have
 * moved on to another one).
 *
 * A block is posted once. Piscina hands a thread its next task as soon as the thread has answered,
 * and a thread that answered just after its caller won STARTED -> STOPPING is being terminated:
 * the task it is handed dies with it, its block still QUEUED. When piscina reports that exit, the
 * caller wins QUEUED -> CANCELLED (the dead thread never started the body, and after the CAS
 * nothing can under this block) and posts the task again with a fresh QUEUED block, under the
 * same lease (with-lock.ts, TaskRun #rerun). The body runs at most once per call, whatever the
 * pool reports: only QUEUED -> STARTED starts it, and a new block is posted only after the caller
 * won QUEUED -> CANCELLED on the previous one, so at most one block of a call ever reaches
 * STARTED. The old block is dropped, never reused (its thread will not answer for it). If the
 * exit finds the block STARTED or DONE, the body ran (in part, or in full with its answer lost):
 * no re-run, the call fails with the exit.
 *
 * The worker answers with the task's value, or a FlatError, or nothing (cancelled), and says
 * which in OUTCOME, written before it answers: the answer's postMessage publishes it. The worker
 * writes nothing in the block after it has answered, so a caller that has its answer may hand the
 * block to its next call (with-lock.ts, takeControl), which resets STATE, THREAD_ID and OUTCOME
 * before it posts the block again.
 */
export const CTRL_STATE = 0;
export const CTRL_THREAD_ID = 1;
export const CTRL_OUTCOME = 2;
export const CTRL_WORDS = 4;
export const CTRL_START_TIME_F64 = 2; // index in the Float64 view (byte 16)
export const CONTROL_BYTES = 24;

export const OUTCOME_VALUE = 0;
export const OUTCOME_ERROR = 1;
export const OUTCOME_CANCELLED = 2;

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

/** Objects and properties surelyCloneable looks at before it leaves the answer to a clone. */
const CLONE_WALK_BUDGET = 64;

/**
 * True when structured clone surely sends `value`: a primitive other than a symbol, a
 * SharedArrayBuffer, or a plain object or array (not a proxy) of those, small enough to walk.
 * False means "not sure": ask structuredClone, which copies (a few µs even for a small object
 * holding a SharedArrayBuffer, the common withLock args). It reads properties as a clone does
 * (getters run). An object whose prototype was swapped for Object.prototype while it keeps a
 * non-cloneable internal type (a WeakMap, say) passes here and fails when posted.
 */
export function surelyCloneable(value: unknown): boolean {
  return walkCloneable(value, CLONE_WALK_BUDGET) >= 0;
}

/** The budget left after walking `value`, or -1 when not sure. */
function walkCloneable(value: unknown, budget: number): number {
  if (typeof value !== 'object') {
    return typeof value === 'symbol' || typeof value === 'function' ? -1 : budget;
  }
  if (value === null) return budget;
  if (--budget < 0) return -1;
  if (types.isSharedArrayBuffer(value)) return budget;
  // Before getPrototypeOf, which a proxy could trap; structured clone refuses proxies anyway.
  if (types.isProxy(value) || exotic(value)) return -1;
  const proto: unknown = Object.getPrototypeOf(value);
  if (
    proto === Array.prototype ? !Array.isArray(value) : proto !== Object.prototype && proto !== null
  ) {
    return -1;
  }
  for (const field of Object.keys(value)) {
    // A getter is not read here (it could answer differently when the clone reads it).
    const own = Object.getOwnPropertyDescriptor(value, field);
    if (own === undefined || !('value' in own)) return -1;
    budget = walkCloneable(own.value, budget - 1);
    if (budget < 0) return -1;
  }
  return budget;
}

/**
 * Objects whose prototype looks plain but that structured clone treats apart or refuses: an
 * `arguments` object, a module namespace, and objects with internal slots whose prototype was
 * swapped (a Promise, a WeakMap, ...). Such a value goes to structuredClone's own check.
 * The tag already names an `arguments` object, a module namespace (its own @@toStringTag), and
 * a Date, RegExp, Error or boxed primitive by their internal slots, whatever their prototype;
 * the rest keep no tag once their prototype is swapped, so they are asked for by kind.
 */
function exotic(value: object): boolean {
  const tag = Object.prototype.toString.call(value);
  if (tag !== '[object Object]' && tag !== '[object Array]') return true;
  return (
    types.isPromise(value) ||
    types.isWeakMap(value) ||
    types.isWeakSet(value) ||
    types.isMap(value) ||
    types.isSet(value) ||
    types.isArrayBufferView(value) ||
    types.isAnyArrayBuffer(value) ||
    types.isGeneratorObject(value) ||
    types.isMapIterator(value) ||
    types.isSetIterator(value) ||
    types.isExternal(value)
  );
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
