export { LockTable, type LockInfo, type HolderInfo, type WatchedPool } from './table/lock-table.js';
export type { LeaseConstructor } from './table/lease.js';
// The class's type under its name, with the constructor that only throws as its value.
import { PublicLease, type Lease as LeaseClass } from './table/lease.js';
export const Lease = PublicLease;
export type Lease = LeaseClass;
export type { KeyHandle } from './table/key-handle.js';
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
  type LockGroup,
} from './api/locks.js';
export { LeaseGroup } from './api/lease-group.js';
export {
  withLock,
  type WithLockOptions,
  type ModuleTask,
  type TaskFunction,
} from './with-lock/with-lock.js';
export type { TaskLock } from './with-lock/task.js';
export {
  configureDefaultPool,
  type TaskPool,
  type DefaultPoolOptions,
  type ResolvedDefaultPoolOptions,
} from './with-lock/task-pool.js';
