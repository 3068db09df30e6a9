export { LockTable, type LockInfo, type HolderInfo } from './lock-table.js';
export { Lease } from './lease.js';
export { LockError, AbortError, type LockErrorCode } from './errors.js';
export type { Mode } from './slot-state.js';
export type {
  LockTableOptions,
  TableDefaults,
  TryAcquireOptions,
  AcquireSyncOptions,
  AcquireOptions,
} from './options.js';
