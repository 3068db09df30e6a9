/**
 * Every error locktable throws about a lock extends LockError and carries a stable `code`, the
 * key involved, and a message that says what to do. Wrong arguments throw Node-style TypeError /
 * RangeError with `code` ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE / ERR_OUT_OF_RANGE, before
 * anything touches shared memory.
 */
import { brand } from './cross-build.js';

export type LockErrorCode =
  | 'ERR_LOCK_TIMEOUT'
  | 'ERR_LOCK_RECURSION'
  | 'ERR_LOCK_STALE'
  | 'ERR_LOCK_RELEASED'
  | 'ERR_LOCK_TABLE_FULL'
  | 'ERR_LOCK_EXEC_TIMEOUT'
  | 'ERR_LOCK_WORKER_EXIT'
  | 'ERR_LOCK_LIMIT_MISMATCH'
  // The PostgreSQL backend (src/postgres/errors.ts):
  | 'ERR_LOCK_CLOSED'
  | 'ERR_LOCK_CONNECTION'
  | 'ERR_LOCK_POOLER'
  | 'ERR_LOCK_SCHEMA';

export class LockError extends Error {
  readonly code: LockErrorCode;
  /** The key the failed operation was about (undefined for table-wide errors). */
  readonly key: string | undefined;

  constructor(
    code: LockErrorCode,
    key: string | undefined,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'LockError';
    this.code = code;
    this.key = key;
  }
}
brand(LockError, 'LockError');

/** The rejection of an aborted acquire; `cause` is the signal's reason, as with fetch() and piscina. */
export class AbortError extends Error {
  readonly code = 'ABORT_ERR';
  readonly key: string | undefined;
  constructor(key: string | undefined, reason: unknown) {
    super(`The lock request for ${describeKey(key)} was aborted`, { cause: reason });
    this.name = 'AbortError';
    this.key = key;
  }
}
brand(AbortError, 'AbortError');

export function describeKey(key: string | undefined): string {
  if (key === undefined) return 'the lock table';
  const shown = key.length > 60 ? `${key.slice(0, 57)}...` : key;
  return JSON.stringify(shown);
}

export function timeoutError(key: string, waitTimeout: number): LockError {
  return new LockError(
    'ERR_LOCK_TIMEOUT',
    key,
    `Timed out after ${waitTimeout} ms waiting for the lock on ${describeKey(key)}; ` +
      'raise options.waitTimeout, or use table.inspect(key) to see who holds it',
  );
}

export function recursionError(key: string): LockError {
  return new LockError(
    'ERR_LOCK_RECURSION',
    key,
    `This thread already holds the lock on ${describeKey(key)}; a blocking acquire would never ` +
      'return. Release the held lease first, or use the async acquire() to queue behind it',
  );
}

export function staleError(key: string, what: string): LockError {
  return new LockError(
    'ERR_LOCK_STALE',
    key,
    `Cannot ${what}: this lease on ${describeKey(key)} lost its slot (its deadline passed and it ` +
      'was reclaimed, or it was force-released); whatever it protected may have been changed by ' +
      'the next holder. Use a longer hold, or lease.extend() before the deadline',
  );
}

export function releasedError(key: string, what: string): LockError {
  return new LockError(
    'ERR_LOCK_RELEASED',
    key,
    `Cannot ${what}: this lease on ${describeKey(key)} was already released`,
  );
}

/** A limit as a message shows it: 0 is a lock (exclusive or shared). */
function describeLimit(limit: number): string {
  return limit === 0 ? 'a lock (limit 0)' : `a semaphore of ${limit} permits (limit ${limit})`;
}

/** A request met its key in use under another permit limit (src/table/semaphore.ts). */
export function limitMismatchError(key: string, requested: number, found: number): LockError {
  return new LockError(
    'ERR_LOCK_LIMIT_MISMATCH',
    key,
    `${describeKey(key)} is in use as ${describeLimit(found)}, but this request is for ` +
      `${describeLimit(requested)}. Every caller must use one limit for a key while it is held ` +
      '(and locks and semaphores need different keys)',
  );
}

export function tableFullError(key: string, capacity: number): LockError {
  return new LockError(
    'ERR_LOCK_TABLE_FULL',
    key,
    `No free slot for ${describeKey(key)}: all ${capacity} slots are held right now. Create the ` +
      'table with a larger capacity, or release leases sooner',
  );
}

export function execTimeoutError(key: string, execTimeout: number): LockError {
  return new LockError(
    'ERR_LOCK_EXEC_TIMEOUT',
    key,
    `The task under the lock on ${describeKey(key)} ran longer than its execTimeout of ` +
      `${execTimeout} ms: its worker thread was terminated, and the lock was released once that ` +
      'thread had exited. Raise options.execTimeout, or make the task finish sooner',
  );
}

/** The task's worker thread exited while it ran (process.exit(), a crash, a terminated pool). */
export class WorkerExitError extends LockError {
  /** The worker's exit code. */
  readonly exitCode: number;
  constructor(key: string, exitCode: number, cause: unknown) {
    super(
      'ERR_LOCK_WORKER_EXIT',
      key,
      `The worker thread running the task under the lock on ${describeKey(key)} exited with ` +
        `code ${exitCode} before the task settled; the lock was released after it exited. A task ` +
        'must not call process.exit(); check the worker for crashes',
      { cause },
    );
    this.exitCode = exitCode;
  }
}
brand(WorkerExitError, 'WorkerExitError');

export function workerExitError(key: string, exitCode: number, cause: unknown): WorkerExitError {
  return new WorkerExitError(key, exitCode, cause);
}

type NodeErrorCode = 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE';

function describeValue(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  if (value === null) return 'null';
  if (typeof value === 'object') {
    const ctor = (value as object).constructor;
    return ctor && ctor.name ? `an instance of ${ctor.name}` : 'an object';
  }
  if (typeof value === 'number' && Object.is(value, -0)) return '-0';
  return String(value);
}

function withCode<E extends Error>(error: E, code: NodeErrorCode): E & { code: NodeErrorCode } {
  return Object.assign(error, { code });
}

export function invalidType(name: string, expected: string, value: unknown) {
  return withCode(
    new TypeError(`The "${name}" argument must be ${expected}. Received ${describeValue(value)}`),
    'ERR_INVALID_ARG_TYPE',
  );
}

export function invalidValue(name: string, expected: string, value: unknown, cause?: unknown) {
  return withCode(
    new TypeError(
      `The "${name}" argument ${expected}. Received ${describeValue(value)}`,
      cause === undefined ? undefined : { cause },
    ),
    'ERR_INVALID_ARG_VALUE',
  );
}

export function outOfRange(name: string, expected: string, value: unknown) {
  return withCode(
    new RangeError(
      `The value of "${name}" is out of range. It must be ${expected}. Received ${describeValue(value)}`,
    ),
    'ERR_OUT_OF_RANGE',
  );
}
