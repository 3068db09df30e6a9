/**
 * Options are validated once, at the public boundary, and turned into plain numbers; the core never
 * sees `undefined`, NaN or a negative timeout. Every message names the field and the value.
 */
import { invalidType, invalidValue, outOfRange } from './errors.js';

/** A lock's mode: one holder at a time, or any number of holders that only read. */
export type Mode = 'exclusive' | 'shared';

export interface TableDefaults {
  /** ms to wait for a lock; 0 = one attempt; Infinity = forever (the default). */
  waitTimeout?: number | undefined;
  /** ms a lease is valid; its deadline is stamped in the slot. Default Infinity (no deadline). */
  hold?: number | undefined;
  /** ms after a holder's deadline before a waiter may reclaim the lock. Default 1000. */
  failTimeout?: number | undefined;
  /** ms a blocked request spins before it sleeps. Default 0.05 (50 us). */
  spinDelay?: number | undefined;
}

export interface LockTableOptions extends TableDefaults {
  /** Number of slots: how many distinct keys can be held (or waited on) at once. Default 1024. */
  capacity?: number | undefined;
  /** Longest key, in UTF-16 code units. Default 64. */
  maxKeyLength?: number | undefined;
  /** How many shared-mode leases can exist at once across all keys. Default 2 x capacity. */
  maxSharedHolders?: number | undefined;
  /**
   * Count every request of every thread in shared memory, for table.stats(). Default false:
   * counting costs the uncontended fast path an Atomics.add per event.
   */
  stats?: boolean | undefined;
}

export interface TryAcquireOptions {
  mode?: Mode | undefined;
  hold?: number | undefined;
}

export interface AcquireSyncOptions extends TryAcquireOptions {
  waitTimeout?: number | undefined;
  spinDelay?: number | undefined;
}

export interface AcquireOptions extends AcquireSyncOptions {
  signal?: AbortSignal | undefined;
}

/** The option names each entry point knows; any other name is refused (checkKnownOptions). */
export const TABLE_DEFAULTS_KEYS = ['waitTimeout', 'hold', 'failTimeout', 'spinDelay'] as const;
export const LOCK_TABLE_OPTIONS_KEYS = [
  'capacity',
  'maxKeyLength',
  'maxSharedHolders',
  'stats',
  ...TABLE_DEFAULTS_KEYS,
] as const;
/**
 * One list for every acquire call of LockTable: tryAcquire ignores the waiting options rather
 * than refusing them, so that one options object serves all of them.
 */
export const ACQUIRE_OPTIONS_KEYS = ['mode', 'hold', 'waitTimeout', 'spinDelay', 'signal'] as const;

export const DEFAULT_CAPACITY = 1024;
export const DEFAULT_MAX_KEY_LENGTH = 64;
export const DEFAULT_FAIL_TIMEOUT = 1000;
export const DEFAULT_SPIN_DELAY = 0.05;
export const MAX_CAPACITY = 1 << 24;
export const MAX_KEY_LENGTH_LIMIT = 1 << 16;
/** Finite holds are capped so that deadlines stay exact in a double of milliseconds. */
export const MAX_FINITE_MS = 2 ** 40;
export const MAX_SPIN_DELAY = 1000;

export function checkOptionsObject(name: string, value: unknown): void {
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    throw invalidType(name, 'of type object', value);
  }
}

/**
 * Refuses an option name that is not one of `known` (a typo such as `capcity` would otherwise be
 * ignored without a word). Own enumerable string keys only, as object spread sees them.
 */
export function checkKnownOptions(name: string, value: object, known: readonly string[]): void {
  for (const field in value) {
    if (!Object.hasOwn(value, field) || known.includes(field)) continue;
    throw invalidValue(
      `${name}.${field}`,
      `is not a known option; the known options are ${known.join(', ')}`,
      (value as Record<string, unknown>)[field],
    );
  }
}

export function checkInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number') throw invalidType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw outOfRange(name, `an integer >= ${min} and <= ${max}`, value);
  }
  return value;
}

/** A timeout: a number >= 0 (or > 0), or Infinity. NaN and negatives are refused. */
export function checkMs(name: string, value: unknown, allowZero: boolean): number {
  if (typeof value !== 'number') throw invalidType(name, 'of type number', value);
  if (value === Infinity) return value;
  if (Number.isNaN(value) || value < 0 || (!allowZero && value === 0) || value > MAX_FINITE_MS) {
    throw outOfRange(name, `${allowZero ? '>= 0' : '> 0'} and <= 2^40, or Infinity`, value);
  }
  return value;
}

export function checkSpinDelay(name: string, value: unknown): number {
  if (typeof value !== 'number') throw invalidType(name, 'of type number', value);
  if (Number.isNaN(value) || value < 0 || value > MAX_SPIN_DELAY) {
    throw outOfRange(name, `>= 0 and <= ${MAX_SPIN_DELAY} (milliseconds)`, value);
  }
  return value;
}

export function checkMode(name: string, value: unknown): Mode {
  if (value === undefined || value === 'exclusive') return 'exclusive';
  if (value === 'shared') return 'shared';
  throw invalidValue(name, "must be 'exclusive' or 'shared'", value);
}

export function checkSignal(name: string, value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw invalidType(name, 'an instance of AbortSignal', value);
  return value;
}

export function checkKey(name: string, key: unknown, maxKeyLength: number): string {
  if (typeof key !== 'string') throw invalidType(name, 'of type string', key);
  if (key.length > maxKeyLength) {
    throw outOfRange(
      `${name}.length`,
      `<= maxKeyLength (${maxKeyLength} UTF-16 code units); create the table with a larger maxKeyLength`,
      key.length,
    );
  }
  return key;
}

/** Every default of a table handle, resolved (what `table.defaults` returns). */
export interface ResolvedDefaults {
  waitTimeout: number;
  hold: number;
  failTimeout: number;
  spinDelay: number;
}

/**
 * Validates defaults given as `name` (the options of `new LockTable`, the defaults of `attach`, the
 * options of a withLock call). Keeps only the fields that are set: a field left out falls through
 * to the next layer of defaults.ts.
 */
export function checkDefaults(name: string, options: TableDefaults | undefined): TableDefaults {
  const set: TableDefaults = {};
  if (options === undefined) return set;
  if (options.waitTimeout !== undefined)
    set.waitTimeout = checkMs(`${name}.waitTimeout`, options.waitTimeout, true);
  if (options.hold !== undefined) set.hold = checkMs(`${name}.hold`, options.hold, false);
  if (options.failTimeout !== undefined)
    set.failTimeout = checkMs(`${name}.failTimeout`, options.failTimeout, true);
  if (options.spinDelay !== undefined)
    set.spinDelay = checkSpinDelay(`${name}.spinDelay`, options.spinDelay);
  return set;
}
