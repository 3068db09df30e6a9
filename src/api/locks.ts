/**
 * The contract every locktable backend implements: the shared-memory table (LockTable) and the
 * PostgreSQL backend (PgLockTable). Written once, so that code (and the contract test suite) can
 * take either. A backend whose operation completes at once returns a value, one that needs a
 * round trip returns a promise: `await` works on both.
 */
import { invalidType, invalidValue } from './errors.js';
import type { Mode } from './options.js';

/** Options of a request that never waits. */
export interface LockTryOptions {
  /** 'exclusive' (default) or 'shared'. */
  mode?: Mode | undefined;
  /**
   * ms the lease is valid. LockTable stamps a deadline; a backend without deadlines refuses a
   * finite value (see its documentation).
   */
  hold?: number | undefined;
}

/** Options of a request that may wait. */
export interface LockWaitOptions extends LockTryOptions {
  /** ms to wait; 0 = exactly one attempt; Infinity = forever. */
  waitTimeout?: number | undefined;
  /** Cancels the wait: the request rejects with an AbortError and holds nothing. */
  signal?: AbortSignal | undefined;
}

/** One grant of one key. */
export interface LockLease {
  readonly key: string;
  readonly mode: Mode;
  /** Fencing token: strictly increasing per key across every grant. */
  readonly token: bigint;
  /** True while the lease holds its lock: false once released or lost. */
  readonly held: boolean;
  /**
   * Releases the lock. Throws (or rejects with) ERR_LOCK_RELEASED when already released,
   * ERR_LOCK_STALE when the lock was lost before.
   */
  release(): void | Promise<void>;
}

/**
 * What acquireAll returns: the leases in the canonical key order, as an array, and one release()
 * for them all (LeaseGroup for LockTable, AsyncLeaseGroup for PgLockTable: lease-group.ts).
 */
export interface LockGroup<L extends LockLease = LockLease> extends Array<L> {
  /** True once release() ran. */
  readonly released: boolean;
  /** Releases every lease of the group (see lease-group.ts for the errors). */
  release(): void | Promise<void>;
}

/** What inspect() and held() describe: a key, its mode, and who holds it. */
export interface LockDescription {
  key: string;
  mode: Mode;
  holders: readonly object[];
}

/** The interface both backends implement. */
export interface Locks<
  L extends LockLease = LockLease,
  D extends LockDescription = LockDescription,
> {
  /** One attempt, never waits for the key: a lease, or null when the key is held incompatibly. */
  tryAcquire(key: string, options?: LockTryOptions): L | null | Promise<L | null>;
  /** Waits for the key, within options.waitTimeout and options.signal. */
  acquire(key: string, options?: LockWaitOptions): Promise<L>;
  /**
   * All the keys or none, taken in one canonical order (compareKeys), so that overlapping
   * multi-key requests never deadlock. waitTimeout bounds the whole call.
   */
  acquireAll(keys: readonly string[], options?: LockWaitOptions): Promise<LockGroup<L>>;
  /**
   * Acquires `key`, runs `fn(lease)`, and releases when `fn` settles (returns, throws, or its
   * promise settles). Holds until then: a signal that aborts while `fn` runs does not release
   * early (it only cancels the wait), as with navigator.locks.request.
   */
  run<T>(key: string, fn: (lease: L) => T | Promise<T>, options?: LockWaitOptions): Promise<T>;
  /** acquireAll(keys), then as run(): `fn(group)`, and the group is released when `fn` settles. */
  runAll<T>(
    keys: readonly string[],
    fn: (group: LockGroup<L>) => T | Promise<T>,
    options?: LockWaitOptions,
  ): Promise<T>;
  /** Who holds `key` right now, or null when nobody does. */
  inspect(key: string): D | null | Promise<D | null>;
  /** Every key held right now. */
  held(): D[] | Promise<D[]>;
}

/**
 * The canonical order of keys in acquireAll: by UTF-16 code units (JavaScript's `<` on strings).
 * Every backend, in every process, takes keys in this order, so two overlapping acquireAll calls
 * always meet at their first common key and never deadlock.
 */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The keys of an acquireAll call in the canonical order (compareKeys), each checked by `checkKey`
 * (named `keys[i]`); a repeated key is refused (it would wait for itself).
 */
export function orderKeys(
  keys: readonly string[],
  checkKey: (name: string, key: unknown) => void,
): string[] {
  if (!Array.isArray(keys)) throw invalidType('keys', 'an array of strings', keys);
  keys.forEach((key, i) => checkKey(`keys[${i}]`, key));
  const ordered = [...keys].sort(compareKeys);
  for (let i = 1; i < ordered.length; i++) {
    if (ordered[i] === ordered[i - 1]) {
      throw invalidValue(
        'keys',
        `must not contain a key twice (${JSON.stringify(ordered[i])} is repeated)`,
        keys,
      );
    }
  }
  return ordered;
}

/** Refuses a `fn` that is not a function, before anything is acquired. */
export function checkFunction(name: string, fn: unknown): void {
  if (typeof fn !== 'function') throw invalidType(name, 'of type function', fn);
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** A failed release's error, with `fn`'s outcome as its cause (unless it has one). */
function withOutcome(error: unknown, outcome: Outcome<unknown>): unknown {
  if (error instanceof Error && error.cause === undefined) {
    Object.defineProperty(error, 'cause', {
      value: outcome.ok ? outcome.value : outcome.error,
      configurable: true,
      writable: true,
    });
  }
  return error;
}

/** A lease, or a group of leases. */
interface Releasable {
  release(): void | Promise<void>;
}

/**
 * run()'s body, once a lease is held: awaits `fn(lease)`, then releases. A release that fails
 * (the lease was lost while `fn` ran) wins over `fn`'s outcome, which becomes its `cause`: the
 * caller must learn that the section may have overlapped the next holder's.
 */
export async function runHolding<L extends Releasable, T>(
  lease: L,
  fn: (lease: L) => T | Promise<T>,
): Promise<T> {
  let outcome: Outcome<T>;
  try {
    outcome = { ok: true, value: await fn(lease) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  try {
    await lease.release();
  } catch (error) {
    throw withOutcome(error, outcome);
  }
  if (outcome.ok) return outcome.value;
  throw outcome.error;
}

/**
 * runSync()'s body, once a lease is held: calls `fn(lease)`, then releases, as runHolding does. A
 * `fn` that returns a promise (or any thenable) is refused once the lock is released: runSync
 * holds the lock only while `fn` runs, so the promise's work would run unlocked. Its eventual
 * rejection is swallowed (the TypeError already reports the misuse).
 */
export function runHoldingSync<L extends Releasable, T>(lease: L, fn: (lease: L) => T): T {
  let outcome: Outcome<T>;
  try {
    const value = fn(lease);
    if (isThenable(value)) {
      (value as PromiseLike<unknown>).then(undefined, () => {});
      outcome = { ok: false, error: thenableError() };
    } else {
      outcome = { ok: true, value };
    }
  } catch (error) {
    outcome = { ok: false, error };
  }
  try {
    void lease.release();
  } catch (error) {
    throw withOutcome(error, outcome);
  }
  if (outcome.ok) return outcome.value;
  throw outcome.error;
}

function isThenable(value: unknown): boolean {
  return (
    ((typeof value === 'object' && value !== null) || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

function thenableError(): TypeError & { code: string } {
  return Object.assign(
    new TypeError(
      'The "fn" argument of runSync returned a promise: runSync holds the lock only while fn runs ' +
        'synchronously, so the lock was released before the promise settled. Use ' +
        '`await table.run(key, fn)` for an async fn',
    ),
    { code: 'ERR_INVALID_RETURN_VALUE' },
  );
}
