/**
 * Where each default comes from. Every entry point (the table's own API and withLock) takes each
 * setting from the first layer that sets it:
 *
 *   1. the call's option
 *   2. the handle's defaults: LockTable.attach(buffer, defaults)
 *   3. the table's defaults: new LockTable(options), stored in the buffer's header, so every
 *      thread that attaches sees them
 *   4. the library's default for that entry point: TABLE_API_DEFAULTS or WITH_LOCK_DEFAULTS
 *
 * The library's defaults differ per entry point (acquire waits forever, withLock 5 s), so a table
 * must record whether a default was set, not only its value: a table made with
 * `{ waitTimeout: Infinity }` makes withLock wait forever, one made without it does not. The header
 * stores NaN for a default that was not set (no valid setting is NaN: options.ts refuses it).
 *
 * A table's `hold` is the table API's only: a withLock lease is held for the task's execTimeout,
 * which is withLock's own option (call, then WITH_LOCK_DEFAULTS).
 */
import {
  HF_DEFAULT_FAIL_TIMEOUT,
  HF_DEFAULT_HOLD,
  HF_DEFAULT_SPIN_DELAY,
  HF_DEFAULT_WAIT_TIMEOUT,
} from './layout.js';
import {
  DEFAULT_FAIL_TIMEOUT,
  DEFAULT_SPIN_DELAY,
  type ResolvedDefaults,
  type TableDefaults,
} from '../api/options.js';

/** The library's defaults for tryAcquire, acquire, acquireSync, acquireAll and acquireAllSync. */
export const TABLE_API_DEFAULTS: Readonly<ResolvedDefaults> = Object.freeze({
  waitTimeout: Infinity,
  hold: Infinity,
  failTimeout: DEFAULT_FAIL_TIMEOUT,
  spinDelay: DEFAULT_SPIN_DELAY,
});

/**
 * withLock's library defaults. It gives up waiting after 5 s rather than never (a task queued
 * forever behind a stuck holder is seldom what its caller wants), and a task's lease always has a
 * deadline (execTimeout), so that a dead caller's lock is reclaimed.
 */
export const WITH_LOCK_DEFAULTS = Object.freeze({
  waitTimeout: 5000,
  execTimeout: 5000,
  failTimeout: DEFAULT_FAIL_TIMEOUT,
  spinDelay: DEFAULT_SPIN_DELAY,
});

/** `over`'s settings where set, else `under`'s (both validated: see checkDefaults). */
export function layerDefaults(over: TableDefaults, under: TableDefaults): TableDefaults {
  return {
    waitTimeout: over.waitTimeout ?? under.waitTimeout,
    hold: over.hold ?? under.hold,
    failTimeout: over.failTimeout ?? under.failTimeout,
    spinDelay: over.spinDelay ?? under.spinDelay,
  };
}

/** Every setting: the one set, else the library's. */
export function resolveDefaults(set: TableDefaults, library: ResolvedDefaults): ResolvedDefaults {
  // layerDefaults keeps every setting of `library`, which has them all.
  return layerDefaults(set, library) as ResolvedDefaults;
}

/** Writes a new table's defaults into its header: NaN for each one that was not set. */
export function storeDefaults(headerF64: Float64Array, set: TableDefaults): void {
  headerF64[HF_DEFAULT_WAIT_TIMEOUT] = set.waitTimeout ?? NaN;
  headerF64[HF_DEFAULT_HOLD] = set.hold ?? NaN;
  headerF64[HF_DEFAULT_FAIL_TIMEOUT] = set.failTimeout ?? NaN;
  headerF64[HF_DEFAULT_SPIN_DELAY] = set.spinDelay ?? NaN;
}

/** The defaults a table was made with, read from its header (unset ones left out). */
export function loadDefaults(headerF64: Float64Array): TableDefaults {
  const read = (index: number): number | undefined => {
    const value = headerF64[index]!;
    return Number.isNaN(value) ? undefined : value;
  };
  return {
    waitTimeout: read(HF_DEFAULT_WAIT_TIMEOUT),
    hold: read(HF_DEFAULT_HOLD),
    failTimeout: read(HF_DEFAULT_FAIL_TIMEOUT),
    spinDelay: read(HF_DEFAULT_SPIN_DELAY),
  };
}
