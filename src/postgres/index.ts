/**
 * locktable/postgres: the PostgreSQL backend. The only entry point that imports `pg`.
 */
export { PgLockTable, type PgLockInfo, type PgHolderInfo } from './pg-lock-table.js';
export { PgLease } from './lease.js';
export type { PgLockTableOptions } from './options.js';
export type { FrontStats } from './front.js';
export { LockError, AbortError, type LockErrorCode } from '../api/errors.js';
export {
  compareKeys,
  type Locks,
  type LockLease,
  type LockDescription,
  type LockTryOptions,
  type LockWaitOptions,
  type LockGroup,
} from '../api/locks.js';
export { AsyncLeaseGroup } from '../api/lease-group.js';
export type { Mode } from '../api/options.js';
