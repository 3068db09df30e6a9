/**
 * The errors of the PostgreSQL backend. They are LockErrors (src/api/errors.ts), with the table's
 * codes wherever the semantics meet (ERR_LOCK_TIMEOUT, ERR_LOCK_STALE, ERR_LOCK_RELEASED,
 * ERR_LOCK_TABLE_FULL) and four of their own: the table was closed, a connection failed, a
 * transaction-mode pooler stands between the backend and the server, the schema is too new.
 */
import { describeKey, LockError } from '../api/errors.js';

export function closedError(key: string | undefined): LockError {
  return new LockError(
    'ERR_LOCK_CLOSED',
    key,
    `Cannot lock ${describeKey(key)}: this PgLockTable was closed (close() released its locks ` +
      'and ended its sessions). Create a new PgLockTable',
  );
}

export function closedLeaseError(key: string, what: string): LockError {
  return new LockError(
    'ERR_LOCK_CLOSED',
    key,
    `Cannot ${what}: the PgLockTable of this lease on ${describeKey(key)} was closed, which ` +
      'released it',
  );
}

export function connectionError(key: string | undefined, cause: unknown): LockError {
  if (cause instanceof SharedSessionError) return poolerError(key, cause.seen);
  const detail = cause instanceof Error ? `: ${cause.message}` : '';
  return new LockError(
    'ERR_LOCK_CONNECTION',
    key,
    `The PostgreSQL session for ${describeKey(key)} failed${detail}. Nothing is held by this ` +
      'request; check the server and the connection options, then retry',
    { cause },
  );
}

/**
 * A transaction-mode pooler between the backend and the server. `seen` says what gave it away:
 * the server process changed, the process already had another session's marker, or a named
 * prepared statement of the session was missing or already there.
 */
export function poolerError(key: string | undefined, seen: string): LockError {
  return new LockError(
    'ERR_LOCK_POOLER',
    key,
    `The lock request for ${describeKey(key)} found its PostgreSQL session shared: ${seen}. ` +
      'A transaction-mode pooler (PgBouncer, a cloud proxy) sits between locktable and ' +
      'PostgreSQL. Session advisory locks need a session of their own: connect directly to the ' +
      'server, or through a session-mode pool',
  );
}

/** A new session found its server process shared (a pooler); `seen` says how. */
export class SharedSessionError extends Error {
  constructor(readonly seen: string) {
    super(seen);
  }
}

/**
 * SQLSTATEs that only a pooler explains on a session the backend opened itself: a named
 * prepared statement it never prepared on this connection exists (42P05), or one it prepared is
 * gone (26000).
 */
export const POOLER_STATES: ReadonlySet<string> = new Set(['42P05', '26000']);

export function schemaError(found: number, supported: number): LockError {
  return new LockError(
    'ERR_LOCK_SCHEMA',
    undefined,
    `The database's locktable schema is version ${found}, newer than this locktable's ` +
      `(${supported}). Upgrade locktable in this program`,
  );
}

/** A request that found every one of the backend's sessions busy, and may not wait. */
export function poolFullError(key: string, poolSize: number): LockError {
  return new LockError(
    'ERR_LOCK_TABLE_FULL',
    key,
    `No free session for ${describeKey(key)}: all ${poolSize} sessions (poolSize) hold leases ` +
      'right now. Raise poolSize, release leases sooner, or give the request a waitTimeout',
  );
}

export function sessionWaitTimeoutError(key: string, waitTimeout: number, poolSize: number) {
  return new LockError(
    'ERR_LOCK_TIMEOUT',
    key,
    `Timed out after ${waitTimeout} ms waiting for one of the ${poolSize} sessions (poolSize) ` +
      `to request the lock on ${describeKey(key)}: they all held leases. Raise poolSize or ` +
      'options.waitTimeout',
  );
}

/** PostgreSQL's SQLSTATE of an error from `pg`, if it has one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}
