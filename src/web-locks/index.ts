/**
 * locktable/web-locks: the W3C Web Locks API (`LockManager`) over a locktable, for every thread
 * attached to the table. Its own entry point: `locktable` alone never loads it.
 */
export {
  LockManager,
  type LockManagerOptions,
  type LockManagerSnapshot,
  type LockInfo,
  type LockOptions,
  type LockGrantedCallback,
} from './lock-manager.js';
export { Lock, type LockMode } from './lock.js';
export { LockTable } from '../table/lock-table.js';
export { LockError, type LockErrorCode } from '../api/errors.js';
