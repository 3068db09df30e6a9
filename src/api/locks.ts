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
  mode?: Mode;
  /**
   * ms the lease is valid. LockTable stamps a deadline; a backend without deadlines refuses a
   * finite value (see its documentation).
   */
  hold?: number;
}

/** Options of a request that may wait. */
export interface LockWaitOptions extends LockTryOptions {
  /** ms to wait; 0 = exactly one attempt; Infinity = forever. */
  waitTimeout?: number;
  /** Cancels the wait: the request rejects with an AbortError and holds nothing. */
  signal?: AbortSignal;
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
  acquireAll(keys: readonly string[], options?: LockWaitOptions): Promise<L[]>;
  /**
   * Acquires `key`, runs `fn(lease)`, and releases when `fn` settles (returns, throws, or its
   * promise settles). Holds until then: a signal that aborts while `fn` runs does not release
   * early (it only cancels the wait).
   */
  run<T>(key: string, fn: (lease: L) => T | Promise<T>, options?: LockWaitOptions): Promise<T>;
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

/**
 * run()'s body, once a lease is held: awaits `fn(lease)`, then releases. A release that fails
 * (the lease was lost while `fn` ran) wins over `fn`'s outcome, which becomes its `cause`: the
 * caller must learn that the section may have overlapped the next holder's.
 */
export async function runHolding<L extends LockLease, T>(
  lease: L,
  fn: (lease: L) => T | Promise<T>,
): Promise<T> {
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await fn(lease) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  try {
    await lease.release();
  } catch (error) {
    if (error instanceof Error && error.cause === undefined) {
      Object.defineProperty(error, 'cause', {
        value: outcome.ok ? outcome.value : outcome.error,
        configurable: true,
        writable: true,
      });
    }
    throw error;
  }
  if (outcome.ok) return outcome.value;
  throw outcome.error;
}
