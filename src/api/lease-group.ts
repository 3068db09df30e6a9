/**
 * What acquireAll returns: its leases in the canonical key order (compareKeys), as an array
 * (index it, iterate it, destructure it), that also releases them all in one call. LeaseGroup is
 * the shared-memory table's (release() returns at once, so `using` works); AsyncLeaseGroup is the
 * PostgreSQL backend's (release() is a round trip, so `await using`).
 *
 * A group releases its leases in reverse order. A lease its holder already released by hand is
 * skipped; a lease that lost its lock (ERR_LOCK_STALE) does not stop the others from being
 * released, and its error is thrown once they are. Releasing a group twice throws
 * ERR_LOCK_RELEASED, as a lease does; disposing of a released group does nothing.
 *
 * map(), filter() and slice() of a group return plain arrays (Symbol.species): a part of a group
 * does not release the whole.
 */
import { brand } from './cross-build.js';
import { describeKey, LockError } from './errors.js';
import type { LockLease } from './locks.js';

function groupReleasedError(keys: readonly { key: string }[]): LockError {
  const first = keys[0]?.key;
  return new LockError(
    'ERR_LOCK_RELEASED',
    first,
    `Cannot release the group of ${keys.length} lease(s) from ${describeKey(first)}: it was ` +
      'already released',
  );
}

/** A lease released by hand before its group was: nothing left to do for it. */
function alreadyReleased(error: unknown): boolean {
  return error instanceof LockError && error.code === 'ERR_LOCK_RELEASED';
}

/** The leases of one acquireAll / acquireAllSync call of LockTable. */
export class LeaseGroup<L extends LockLease> extends Array<L> implements Disposable {
  static override get [Symbol.species](): ArrayConstructor {
    return Array;
  }

  #released = false;

  /** True once release() (or dispose) ran. */
  get released(): boolean {
    return this.#released;
  }

  /**
   * Releases every lease, last key first. Throws ERR_LOCK_RELEASED when the group was already
   * released, and the first ERR_LOCK_STALE of a lease that had lost its lock (after releasing the
   * rest).
   */
  release(): void {
    if (this.#released) throw groupReleasedError(this);
    this.#released = true;
    let failure: unknown;
    for (let i = this.length - 1; i >= 0; i--) {
      try {
        void this[i]!.release();
      } catch (error) {
        if (!alreadyReleased(error)) failure ??= error;
      }
    }
    if (failure !== undefined) throw failure;
  }

  /** release(), unless the group was already released (then nothing). */
  [Symbol.dispose](): void {
    if (!this.#released) this.release();
  }
}
brand(LeaseGroup, 'LeaseGroup');

/** The leases of one acquireAll call of PgLockTable: release() is asynchronous. */
export class AsyncLeaseGroup<L extends LockLease> extends Array<L> implements AsyncDisposable {
  static override get [Symbol.species](): ArrayConstructor {
    return Array;
  }

  #released = false;

  /** True once release() (or dispose) was called. */
  get released(): boolean {
    return this.#released;
  }

  /** As LeaseGroup.release(), awaiting each lease's release in turn. */
  async release(): Promise<void> {
    if (this.#released) throw groupReleasedError(this);
    this.#released = true;
    let failure: unknown;
    for (let i = this.length - 1; i >= 0; i--) {
      try {
        await this[i]!.release();
      } catch (error) {
        if (!alreadyReleased(error)) failure ??= error;
      }
    }
    if (failure !== undefined) throw failure;
  }

  /** release(), unless the group was already released (then nothing). */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#released) await this.release();
  }
}
brand(AsyncLeaseGroup, 'AsyncLeaseGroup');

/** A group of `leases` (an acquireAll's result). */
export function leaseGroup<L extends LockLease>(leases: readonly L[]): LeaseGroup<L> {
  const group = new LeaseGroup<L>();
  for (const lease of leases) group.push(lease);
  return group;
}

export function asyncLeaseGroup<L extends LockLease>(leases: readonly L[]): AsyncLeaseGroup<L> {
  const group = new AsyncLeaseGroup<L>();
  for (const lease of leases) group.push(lease);
  return group;
}
