export { LockTable, type LockInfo, type HolderInfo } from './lock-table.js';
export { Lease } from './lease.js';
export { LockError, AbortError, type LockErrorCode } from './errors.js';
export type { Mode } from './slot-state.js';
export type {
  LockTableOptions,
  TableDefaults,
  ResolvedDefaults,
  TryAcquireOptions,
  AcquireSyncOptions,
  AcquireOptions,
} from './options.js';
export { WorkerExitError } from './errors.js';
export { withLock, type WithLockOptions, type ModuleTask, type TaskFunction } from './with-lock.js';
export type { TaskLock } from './task.js';
export type { TaskPool } from './task-pool.js';
