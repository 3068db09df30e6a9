export { LockTable, type LockInfo, type HolderInfo } from './table/lock-table.js';
export { Lease } from './table/lease.js';
export { type LockStats } from './table/stats.js';
export {
  CHANNELS,
  type GrantEvent,
  type MissEvent,
  type AbortEvent,
  type ReclaimEvent,
  type ReleaseEvent,
  type RequestEvent,
} from './table/diagnostics.js';
export {
  Semaphore,
  type PermitTryOptions,
  type PermitSyncOptions,
  type PermitOptions,
} from './table/semaphore.js';
export { LockError, AbortError, type LockErrorCode } from './api/errors.js';
export type { Mode } from './api/options.js';
export type {
  LockTableOptions,
  TableDefaults,
  ResolvedDefaults,
  TryAcquireOptions,
  AcquireSyncOptions,
  AcquireOptions,
} from './api/options.js';
export { WorkerExitError } from './api/errors.js';
export {
  compareKeys,
  type Locks,
  type LockLease,
  type LockDescription,
  type LockTryOptions,
  type LockWaitOptions,
} from './api/locks.js';
export {
  withLock,
  type WithLockOptions,
  type ModuleTask,
  type TaskFunction,
} from './with-lock/with-lock.js';
export type { TaskLock } from './with-lock/task.js';
export type { TaskPool } from './with-lock/task-pool.js';
