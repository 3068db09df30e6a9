/**
 * LockTable: the public face of a lock table in a SharedArrayBuffer. Validates every argument at
 * the edge, runs the fast path inline (hash, probe, one CAS), and hands everything else to the
 * waiting loop (waiting.ts) and the state machine (grants.ts, slot-state.ts).
 */
import { inspect, type InspectOptions } from 'node:util';
import { threadId as currentThreadId, type Worker } from 'node:worker_threads';
import { monotonicNow } from '../api/clock.js';
import { brand } from '../api/cross-build.js';
import { Directory } from './directory.js';
import {
  AbortError,
  invalidType,
  invalidValue,
  limitMismatchError,
  LockError,
  outOfRange,
  recursionError,
  tableFullError,
  timeoutError,
} from '../api/errors.js';
import { Grants } from './grants.js';
import { KeyHandle, type KeyHandleHost } from './key-handle.js';
import { hashKey, readKey } from './key.js';
import {
  bufferBytes,
  createViews,
  type Geometry,
  H_BUFFER_BYTES,
  H_CAPACITY,
  H_MAGIC,
  H_MAX_KEY_LENGTH,
  H_RECORDS,
  H_STATS,
  H_VERSION,
  HEADER_BYTES,
  MAGIC,
  RECORD_ACTIVE,
  RECORD_EXTENDING,
  RECORD_JOINED,
  RECORD_RELEASING,
  RECORD_TAKEN,
  S_BIND,
  S_BIND_GEN,
  S_HASH,
  S_KEY_LENGTH,
  S_LIMIT,
  S_SLEEPERS,
  S_STATE,
  S_TOKEN_HI,
  S_TOKEN_LO,
  SLOT_WORDS,
  VERSION,
  type Views,
} from './layout.js';
import { checkFunction, orderKeys, runHolding, runHoldingSync } from '../api/locks.js';
import { LeaseGroup, leaseGroup } from '../api/lease-group.js';
import { Lease, LEASE_RECOVERED, LEASE_SHARED } from './lease.js';
import {
  type AcquireOptions,
  type AcquireSyncOptions,
  ACQUIRE_OPTIONS_KEYS,
  checkDefaults,
  checkInteger,
  checkKnownOptions,
  checkKey,
  checkMode,
  checkMs,
  checkOptionsObject,
  checkSignal,
  checkSpinDelay,
  DEFAULT_CAPACITY,
  DEFAULT_MAX_KEY_LENGTH,
  type LockTableOptions,
  MAX_CAPACITY,
  LOCK_TABLE_OPTIONS_KEYS,
  MAX_KEY_LENGTH_LIMIT,
  type ResolvedDefaults,
  TABLE_DEFAULTS_KEYS,
  type TableDefaults,
  type TryAcquireOptions,
} from '../api/options.js';
import {
  layerDefaults,
  loadDefaults,
  resolveDefaults,
  storeDefaults,
  TABLE_API_DEFAULTS,
} from './defaults.js';
import { Entries } from './entries.js';
import { DIRECTORY, EXPLICIT_DEFAULTS, GRANTS, HEADER, SLOTS, STAMP } from './internals.js';
import { Records } from './records.js';
import { Semaphore } from './semaphore.js';
import { type LockStats, Stats } from './stats.js';
import {
  abortChannel,
  grantChannel,
  missChannel,
  reclaimChannel,
  releaseChannel,
  noteStatsTable,
  requestObserved,
  startChannel,
} from './diagnostics.js';
import { SlotCache } from './slot-cache.js';
import { testHooks } from './test-hooks.js';
import { BIND_BOUND } from './directory.js';
import {
  ANNOUNCE,
  EXCLUSIVE,
  FIELD,
  HANDOFF,
  MAX_THREAD_ID,
  type Mode,
  UNBOUND,
} from './slot-state.js';
import {
  Request,
  sleepAsync,
  sleepSync,
  spin,
  STEP_FULL,
  STEP_GRANTED,
  STEP_LIMIT_MISMATCH,
  STEP_NO_RECORD,
  STEP_RECURSION,
  STEP_SLEEP,
  STEP_SPIN,
  STEP_TIMEOUT,
} from './waiting.js';

/** What watch() needs of a piscina pool (Piscina 4 and 5 have it). */
export interface WatchedPool {
  readonly threads: readonly Worker[];
  on(event: 'workerCreate', listener: () => void): unknown;
  off(event: 'workerCreate', listener: () => void): unknown;
}

function isPool(value: unknown): value is WatchedPool {
  return (
    value !== null &&
    typeof value === 'object' &&
    Array.isArray((value as WatchedPool).threads) &&
    typeof (value as WatchedPool).on === 'function' &&
    typeof (value as WatchedPool).off === 'function'
  );
}

export interface HolderInfo {
  threadId: number;
  /** The holder's fencing token (0n for a shared grant still under way: its token is not out yet). */
  token: bigint;
  /** Monotonic deadline in ms (compare with LockTable.now()), or Infinity. */
  deadline: number;
}

export interface LockInfo {
  key: string;
  mode: Mode;
  holders: HolderInfo[];
  /** Threads asleep waiting for this key right now. */
  sleepers: number;
  /**
   * True when some request has announced that it waits its turn (a reader, a writer facing
   * readers, or a starving writer).
   */
  contended: boolean;
  /** For a semaphore's key (mode 'shared'): how many permits it has. Absent for a lock. */
  limit?: number;
}

/**
 * What a facade over the table (src/web-locks/) reaches of its internals, through
 * `table[FACADE]()`: the request entries and a request that steals. A registered symbol, so that a
 * table of either build (ESM or CommonJS) answers it.
 */
export const FACADE: unique symbol = Symbol.for('locktable.facade') as never;

/**
 * The failTimeout of a stealing request: so far below any deadline that every holder with a
 * deadline counts as expired at once, and is reclaimed by the usual reclaim (its lease goes stale,
 * its token is passed). Finite, so that Infinity + STEAL_FAIL_TIMEOUT stays Infinity: a holder
 * without a deadline is never stolen (there would be no proof that its token is written).
 */
export const STEAL_FAIL_TIMEOUT = -(2 ** 52);

export interface FacadeCore {
  readonly entries: Entries;
  readonly threadId: number;
  /**
   * Waits for `key` as acquire() does, but takes it from its holders (exclusive or shared) as if
   * their deadlines had passed: a request that steals. Holders without a deadline are waited for.
   */
  steal(key: string, options: AcquireOptions): Promise<Lease>;
  /**
   * tryAcquire(key, { mode, hold }) for a key and hold the facade has checked (a string within
   * maxKeyLength; a finite hold > 0): an uncontended exclusive grant skips the options' checks.
   */
  tryAcquire(key: string, mode: Mode, hold: number): Lease | null;
}

interface Resolved {
  mode: Mode;
  hold: number;
  waitTimeout: number;
  spinDelay: number;
  signal: AbortSignal | undefined;
  /** 0 for a lock; n for a permit of a semaphore of n (semaphore.ts). */
  limit: number;
}

// Not `implements WaitCore, LeaseHost`: the published types would then show the internals those
// interfaces name. Request and Lease take a LockTable as either, checked where they are made.
export class LockTable {
  readonly #buffer: SharedArrayBuffer;
  readonly #views: Views;
  readonly #defaults: ResolvedDefaults;
  /** The defaults set on this handle or its table, without the library's (see defaults.ts). */
  readonly #explicitDefaults: Readonly<TableDefaults>;
  readonly #records: Records;
  readonly #entries: Entries;
  /** @internal */ readonly [DIRECTORY]: Directory;
  /** @internal */ readonly [GRANTS]: Grants;
  /** @internal */ readonly [SLOTS]: Int32Array;
  /** @internal */ readonly [HEADER]: Int32Array;
  readonly #slotCache: SlotCache;
  /**
   * Set when this thread's fast path saw a busy key look free and lost it (or when it just handed
   * the key off); the next waiting request starts as one that has lost a race (Request.hasLostRace).
   */
  #lostRace = false;
  readonly #maxKeyLength: number;
  /** The table collects stats (H_STATS): every request takes the observed path (stats.ts). */
  readonly #statsOn: boolean;
  readonly #stats: Stats;
  /** The resolved options of a call without options (shared, so that such a call allocates nothing). */
  readonly #plain: Resolved;
  /** #plain for permits, by limit (Semaphore calls without options). */
  readonly #plainPermits = new Map<number, Resolved>();

  /** Creates a new table in a new SharedArrayBuffer. */
  constructor(options?: LockTableOptions) {
    let buffer: SharedArrayBuffer;
    let views: Views;
    let explicit: TableDefaults;
    const attaching = pendingAttach;
    pendingAttach = undefined;
    if (attaching !== undefined) {
      ({ buffer, views } = attaching);
      // This handle's defaults over the table's (from the header, as any thread sees them).
      explicit = layerDefaults(attaching.defaults, loadDefaults(views.headerF64));
    } else {
      ({ buffer, views, explicit } = createTable(options));
    }
    const defaults = resolveDefaults(explicit, TABLE_API_DEFAULTS);
    this.#buffer = buffer;
    this.#views = views;
    this.#defaults = defaults;
    this.#explicitDefaults = Object.freeze(explicit);
    this.#plain = Object.freeze({
      mode: 'exclusive',
      hold: defaults.hold,
      waitTimeout: defaults.waitTimeout,
      spinDelay: defaults.spinDelay,
      signal: undefined,
      limit: 0,
    });
    this.#records = new Records(views);
    this[SLOTS] = views.slots;
    this[HEADER] = views.header;
    this[GRANTS] = new Grants(views, this.#records, checkThreadId(), defaults.failTimeout);
    this[DIRECTORY] = new Directory(views, this[GRANTS].threadId);
    this.#entries = new Entries(views);
    this.#slotCache = new SlotCache(views.slots);
    this.#maxKeyLength = views.geometry.maxKeyLength;
    this.#statsOn = views.header[H_STATS] === 1;
    if (this.#statsOn) noteStatsTable();
    this.#stats = new Stats(views.stats);
  }

  /**
   * Attaches to a table made in another thread (pass `table.buffer` in workerData or a message).
   * `defaults` overrides the table's defaults for this handle only.
   */
  static attach(buffer: SharedArrayBuffer, defaults?: TableDefaults): LockTable {
    if (!(buffer instanceof SharedArrayBuffer))
      throw invalidType('buffer', 'an instance of SharedArrayBuffer', buffer);
    checkOptionsObject('defaults', defaults);
    if (defaults !== undefined) checkKnownOptions('defaults', defaults, TABLE_DEFAULTS_KEYS);
    const handleDefaults = checkDefaults('defaults', defaults);
    if (buffer.byteLength < HEADER_BYTES) {
      throw invalidValue(
        'buffer',
        `is not a locktable buffer (only ${buffer.byteLength} bytes)`,
        buffer,
      );
    }
    const h = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    if (Atomics.load(h, H_MAGIC) !== MAGIC)
      throw invalidValue('buffer', 'is not a locktable buffer', buffer);
    if (h[H_VERSION] !== VERSION) {
      throw invalidValue(
        'buffer',
        `is a locktable buffer of version ${h[H_VERSION]}, not ${VERSION}`,
        buffer,
      );
    }
    const geometry: Geometry = {
      capacity: h[H_CAPACITY]!,
      maxKeyLength: h[H_MAX_KEY_LENGTH]!,
      records: h[H_RECORDS]!,
    };
    const bytes = bufferBytes(geometry);
    if (h[H_BUFFER_BYTES] !== bytes || buffer.byteLength !== bytes) {
      throw invalidValue(
        'buffer',
        `has ${buffer.byteLength} bytes but its header describes ${bytes}`,
        buffer,
      );
    }
    pendingAttach = { buffer, views: createViews(buffer, geometry), defaults: handleDefaults };
    try {
      return attachedHandle();
    } finally {
      pendingAttach = undefined;
    }
  }

  /**
   * What console.log and util.inspect show: the table's size and how many keys are held now, not
   * its shared memory.
   */
  [inspect.custom](_depth: number, options: InspectOptions): string {
    const { capacity, maxKeyLength } = this;
    const held = this.held().length;
    return `LockTable ${inspect({ capacity, maxKeyLength, held }, options)}`;
  }

  /** The table itself: share it with other threads and attach to it there. */
  get buffer(): SharedArrayBuffer {
    return this.#buffer;
  }

  get capacity(): number {
    return this.#views.geometry.capacity;
  }

  get maxKeyLength(): number {
    return this.#views.geometry.maxKeyLength;
  }

  /**
   * The defaults of this table's own API, as this handle resolves them: the handle's (attach),
   * else the table's, else the library's. withLock resolves its own (see defaults.ts).
   */
  get defaults(): Readonly<ResolvedDefaults> {
    return { ...this.#defaults };
  }

  /**
   * @internal The defaults set on this handle (attach) or its table (new LockTable); a setting that
   * neither set is undefined. withLock puts its call's options over them and its own library
   * defaults under them.
   */
  get [EXPLICIT_DEFAULTS](): Readonly<TableDefaults> {
    return this.#explicitDefaults;
  }

  /** The monotonic clock (ms) that deadlines use, the same in every thread. */
  static now(): number {
    return monotonicNow();
  }

  /**
   * A prepared key (key-handle.ts): `acquireSync()`, `acquire()` and `tryAcquire()` on it are the
   * table's own methods for `key`, minus the key's lookup on an uncontended exclusive grant. For
   * this thread only, like a Lease.
   */
  key(key: string): KeyHandle {
    checkKey('key', key, this.#maxKeyLength);
    const host: KeyHandleHost = {
      grants: this[GRANTS],
      slots: this[SLOTS],
      plainHold: this.#plain.hold,
    };
    return new KeyHandle(this, host, key);
  }

  /** One attempt, never waits: a Lease, or null when the key is held incompatibly. */
  tryAcquire(key: string, options?: TryAcquireOptions): Lease | null {
    // The fast path runs only when nobody observes (diagnostics.ts: one module read); observed (a
    // subscriber, or a table that collects stats), the same request runs with its events.
    if (options === undefined && !requestObserved()) {
      // A key this thread used before (only validated keys are cached): one CAS.
      const lease = this.#fastCached(key, this.#plain.hold, false);
      if (lease !== undefined) return lease ?? this.#slowSync(key, this.#plain, 0, false);
    }
    if (this.#statsOn || requestObserved()) return this.#observedTry(key, options);
    checkKey('key', key, this.#maxKeyLength);
    const o = options === undefined ? this.#plain : this.#resolve(options, false, false);
    return this.#fast(key, o.mode, o.hold, false) ?? this.#slowSync(key, o, 0, false);
  }

  /** Blocks this thread (Atomics.wait) until granted, or throws ERR_LOCK_TIMEOUT. */
  acquireSync(key: string, options?: AcquireSyncOptions): Lease {
    // The fast path is kept small enough for the JIT to inline into the caller, lease included
    // (DESIGN.md, "The cost of the fast path"): anything else is #acquireSync. It runs only when
    // nobody observes (see tryAcquire).
    if (options === undefined && this[GRANTS].yieldSlot < 0 && !requestObserved()) {
      const plain = this.#plain;
      const lease = this.#fastCached(key, plain.hold, plain.spinDelay > 0);
      if (lease !== undefined) return lease ?? this.#waitSync(key, plain);
    }
    return this.#acquireSync(key, options);
  }

  #acquireSync(key: string, options: AcquireSyncOptions | undefined): Lease {
    if (this.#statsOn || requestObserved()) return this.#observedSync(key, options);
    checkKey('key', key, this.#maxKeyLength);
    const o = options === undefined ? this.#plain : this.#resolve(options, true, false);
    // This thread just handed a key off to a starving writer: see #yieldsTurn.
    if (this[GRANTS].yieldSlot >= 0 && this.#yieldsTurn(key, o.mode)) return this.#waitSync(key, o);
    return this.#fast(key, o.mode, o.hold, o.spinDelay > 0) ?? this.#waitSync(key, o);
  }

  /**
   * The first request after this thread handed a key off to a starving writer (Grants.yieldSlot):
   * true when it is an exclusive request for that same key. It then skips the fast path and waits
   * as a request that has already lost a race (#lostRace): otherwise it would take the key back
   * in the first gap between the new holder's sections, and the starving writer's turn would last
   * one section. Either way the courtesy is used up.
   */
  #yieldsTurn(key: string, mode: Mode): boolean {
    const g = this[GRANTS];
    const yielded = g.yieldSlot;
    g.yieldSlot = -1;
    if (mode !== 'exclusive' || this.#slotCache.lookup(key)?.slot !== yielded) return false;
    this.#lostRace = true;
    return true;
  }

  /** Waits without blocking the event loop (Atomics.waitAsync). Rejects on timeout or abort. */
  acquire(key: string, options?: AcquireOptions): Promise<Lease> {
    if (options === undefined && this[GRANTS].yieldSlot < 0 && !requestObserved()) {
      const plain = this.#plain;
      // The lease and its settled promise are made before the grant CAS (Lease[STAMP]): nothing is
      // allocated while we hold the key. Not granted here, both are dropped unseen.
      const made = new Lease(this, key, -1, 0, 0, 0, 0, Infinity);
      const settled = Lease.settled(made);
      const lease = this.#fastCached(key, plain.hold, plain.spinDelay > 0, made);
      // Busy: straight to the waiting loop. A second fast attempt could win after this one lost a
      // race, and leave #lostRace set for whatever request of this thread waits next.
      if (lease === null) return this.#waitAsync(key, plain);
      if (lease !== undefined) return settled;
    }
    if (this.#statsOn || requestObserved()) return this.#observedAsync(key, options);
    return this.#acquire(key, options);
  }

  async #acquire(key: string, options: AcquireOptions | undefined): Promise<Lease> {
    checkKey('key', key, this.#maxKeyLength);
    const o = options === undefined ? this.#plain : this.#resolve(options, true, true);
    if (o.signal?.aborted) throw new AbortError(key, o.signal.reason);
    const yields = this[GRANTS].yieldSlot >= 0 && this.#yieldsTurn(key, o.mode);
    return (
      (yields ? null : this.#fast(key, o.mode, o.hold, o.spinDelay > 0)) ?? this.#waitAsync(key, o)
    );
  }

  /** The waiting loop, async, for acquire: a lease or ERR_LOCK_TIMEOUT. */
  async #waitAsync(key: string, o: Resolved): Promise<Lease> {
    const lease = await this.#slowAsync(key, o, o.waitTimeout);
    if (lease === null) throw timeoutError(key, o.waitTimeout);
    return lease;
  }

  /**
   * All the keys or none, blocking. Keys are taken in one canonical order (by UTF-16 code units),
   * so overlapping multi-key requests never deadlock; waitTimeout bounds the whole call. On any
   * failure, whatever was taken is released before the error is thrown. Returns the leases in
   * that order as a LeaseGroup: an array with one release() (and `using`) for them all.
   */
  acquireAllSync(keys: readonly string[], options?: AcquireSyncOptions): LeaseGroup<Lease> {
    const ordered = this.#orderKeys(keys);
    const o = this.#resolve(options, true, false);
    const deadline = monotonicNow() + o.waitTimeout;
    const taken: Lease[] = [];
    const observed = this.#statsOn || requestObserved();
    try {
      for (const key of ordered) {
        const remaining = Math.max(0, deadline - monotonicNow());
        const get = (): Lease | null =>
          this.#fast(key, o.mode, o.hold, o.spinDelay > 0) ??
          this.#slowSync(key, o, Math.min(o.waitTimeout, remaining), true);
        const lease = observed ? this.#observe(key, o.mode, 0, o.waitTimeout, get) : get();
        if (lease === null) throw timeoutError(key, o.waitTimeout);
        taken.push(lease);
      }
      return leaseGroup(taken);
    } catch (error) {
      releaseAll(taken);
      throw error;
    }
  }

  /** All the keys or none, without blocking the event loop. See acquireAllSync. */
  async acquireAll(keys: readonly string[], options?: AcquireOptions): Promise<LeaseGroup<Lease>> {
    const ordered = this.#orderKeys(keys);
    const o = this.#resolve(options, true, true);
    if (o.signal?.aborted) throw new AbortError(ordered[0], o.signal.reason);
    const deadline = monotonicNow() + o.waitTimeout;
    const taken: Lease[] = [];
    const observed = this.#statsOn || requestObserved();
    try {
      for (const key of ordered) {
        const remaining = Math.max(0, deadline - monotonicNow());
        const get = async (): Promise<Lease | null> =>
          this.#fast(key, o.mode, o.hold, o.spinDelay > 0) ??
          (await this.#slowAsync(key, o, Math.min(o.waitTimeout, remaining)));
        const lease = observed
          ? await this.#observeAsync(key, o.mode, 0, o.waitTimeout, get)
          : await get();
        if (lease === null) throw timeoutError(key, o.waitTimeout);
        taken.push(lease);
      }
      return leaseGroup(taken);
    } catch (error) {
      releaseAll(taken);
      throw error;
    }
  }

  /**
   * A counting semaphore on `key`: up to `limit` holders at once, across every thread of the
   * table. Each permit is a Lease with its own token and deadline. Every caller must use the same
   * limit for a key while it is in use (else ERR_LOCK_LIMIT_MISMATCH); a key is either a lock or a
   * semaphore while it is in use. See semaphore.ts.
   */
  semaphore(key: string, limit: number): Semaphore {
    return new Semaphore(this, key, limit);
  }

  /** @internal Semaphore.tryAcquire (options checked there but for their values). */
  permitTry(key: string, limit: number, options: unknown): Lease | null {
    const o = this.#resolvePermit(options as AcquireOptions | undefined, limit, false, false);
    if (this.#statsOn || requestObserved())
      return this.#observe(key, 'shared', limit, 0, () => this.#slowSync(key, o, 0, false));
    return this.#slowSync(key, o, 0, false);
  }

  /** @internal Semaphore.acquireSync. */
  permitSync(key: string, limit: number, options: unknown): Lease {
    const o = this.#resolvePermit(options as AcquireOptions | undefined, limit, true, false);
    if (this.#statsOn || requestObserved())
      return this.#observe(key, 'shared', limit, o.waitTimeout, () => this.#waitSync(key, o))!;
    return this.#waitSync(key, o);
  }

  /** @internal Semaphore.acquire. */
  async permitAsync(key: string, limit: number, options: unknown): Promise<Lease> {
    const o = this.#resolvePermit(options as AcquireOptions | undefined, limit, true, true);
    const get = async (): Promise<Lease> => {
      if (o.signal?.aborted) throw new AbortError(key, o.signal.reason);
      return this.#waitAsync(key, o);
    };
    if (this.#statsOn || requestObserved())
      return (await this.#observeAsync(key, 'shared', limit, o.waitTimeout, get))!;
    return get();
  }

  #resolvePermit(
    options: AcquireOptions | undefined,
    limit: number,
    waits: boolean,
    async: boolean,
  ): Resolved {
    if (options === undefined) {
      // A call without options allocates nothing (as #plain): one resolved object per limit.
      let plain = this.#plainPermits.get(limit);
      if (plain === undefined) {
        plain = Object.freeze({ ...this.#plain, mode: 'shared', limit });
        if (this.#plainPermits.size >= 64) this.#plainPermits.clear();
        this.#plainPermits.set(limit, plain);
      }
      return plain;
    }
    return { ...this.#resolve(options, waits, async), mode: 'shared', limit };
  }

  /**
   * Acquires `key` (as acquire() does), runs `fn(lease)`, and releases when `fn` settles: it
   * returned, threw, or its promise settled. Resolves with `fn`'s value or rejects with its error.
   * Holds until then: `options.signal` cancels only the wait; aborted while `fn` runs, it does not
   * release early. A lease lost while `fn` ran rejects with ERR_LOCK_STALE (`cause`: `fn`'s
   * outcome).
   */
  async run<T>(
    key: string,
    fn: (lease: Lease) => T | Promise<T>,
    options?: AcquireOptions,
  ): Promise<T> {
    checkFunction('fn', fn);
    return runHolding(await this.acquire(key, options), fn);
  }

  /**
   * Acquires `key` (as acquireSync() does, blocking this thread), calls `fn(lease)`, and releases
   * when it returns or throws; returns its value. `fn` must be synchronous: one that returns a
   * promise is refused with a TypeError (ERR_INVALID_RETURN_VALUE) once the lock is released. A
   * lease lost while `fn` ran throws ERR_LOCK_STALE (`cause`: `fn`'s outcome).
   */
  runSync<T>(key: string, fn: (lease: Lease) => T, options?: AcquireSyncOptions): T {
    checkFunction('fn', fn);
    return runHoldingSync(this.acquireSync(key, options), fn);
  }

  /** acquireAll(keys, options), then as run(): `fn(group)`, released when `fn` settles. */
  async runAll<T>(
    keys: readonly string[],
    fn: (group: LeaseGroup<Lease>) => T | Promise<T>,
    options?: AcquireOptions,
  ): Promise<T> {
    checkFunction('fn', fn);
    return runHolding(await this.acquireAll(keys, options), fn);
  }

  /** acquireAllSync(keys, options), then as runSync(): `fn(group)`, released when it returns. */
  runAllSync<T>(
    keys: readonly string[],
    fn: (group: LeaseGroup<Lease>) => T,
    options?: AcquireSyncOptions,
  ): T {
    checkFunction('fn', fn);
    return runHoldingSync(this.acquireAllSync(keys, options), fn);
  }

  /**
   * What every thread of this table has done so far (a table made with `stats: true`; else
   * `enabled` is false and every count 0). A snapshot of shared counters: poll it to chart.
   */
  stats(): LockStats {
    return this.#stats.snapshot(this.#statsOn);
  }

  // ---- the observed path (diagnostics.ts, stats.ts) ----------------------------------------

  /** tryAcquire, observed: the generic path of tryAcquire (not the cached one), with events. */
  #observedTry(key: string, options: TryAcquireOptions | undefined): Lease | null {
    checkKey('key', key, this.#maxKeyLength);
    const o = options === undefined ? this.#plain : this.#resolve(options, false, false);
    return this.#observe(
      key,
      o.mode,
      0,
      0,
      () => this.#fast(key, o.mode, o.hold, false) ?? this.#slowSync(key, o, 0, false),
    );
  }

  /** acquireSync, observed. */
  #observedSync(key: string, options: AcquireSyncOptions | undefined): Lease {
    checkKey('key', key, this.#maxKeyLength);
    const o = options === undefined ? this.#plain : this.#resolve(options, true, false);
    return this.#observe(key, o.mode, 0, o.waitTimeout, () => {
      if (this[GRANTS].yieldSlot >= 0 && this.#yieldsTurn(key, o.mode))
        return this.#waitSync(key, o);
      return this.#fast(key, o.mode, o.hold, o.spinDelay > 0) ?? this.#waitSync(key, o);
    })!;
  }

  /** acquire, observed. */
  async #observedAsync(key: string, options: AcquireOptions | undefined): Promise<Lease> {
    checkKey('key', key, this.#maxKeyLength);
    const o = options === undefined ? this.#plain : this.#resolve(options, true, true);
    return (await this.#observeAsync(key, o.mode, 0, o.waitTimeout, async () => {
      if (o.signal?.aborted) throw new AbortError(key, o.signal.reason);
      const yields = this[GRANTS].yieldSlot >= 0 && this.#yieldsTurn(key, o.mode);
      return (
        (yields ? null : this.#fast(key, o.mode, o.hold, o.spinDelay > 0)) ??
        this.#waitAsync(key, o)
      );
    }))!;
  }

  /**
   * Runs one request (`get`: a lease, null for a miss, or a throw) between its start event and
   * its outcome's: counted when the table collects stats, published on the channels that have
   * subscribers. `waitTimeout` 0 makes a null a 'busy' miss, else a 'timeout'.
   */
  #observe(
    key: string,
    mode: Mode,
    limit: number,
    waitTimeout: number,
    get: () => Lease | null,
  ): Lease | null {
    const t0 = this.#started(key, mode, limit);
    let lease: Lease | null;
    try {
      lease = get();
    } catch (error) {
      this.#failed(key, mode, limit, t0, error);
      throw error;
    }
    this.#ended(key, mode, limit, t0, waitTimeout, lease);
    return lease;
  }

  async #observeAsync(
    key: string,
    mode: Mode,
    limit: number,
    waitTimeout: number,
    get: () => Promise<Lease | null>,
  ): Promise<Lease | null> {
    const t0 = this.#started(key, mode, limit);
    let lease: Lease | null;
    try {
      lease = await get();
    } catch (error) {
      this.#failed(key, mode, limit, t0, error);
      throw error;
    }
    this.#ended(key, mode, limit, t0, waitTimeout, lease);
    return lease;
  }

  #started(key: string, mode: Mode, limit: number): number {
    if (this.#statsOn) this.#stats.request();
    if (startChannel.hasSubscribers)
      startChannel.publish({ key, mode, limit, threadId: this[GRANTS].threadId });
    return monotonicNow();
  }

  #ended(
    key: string,
    mode: Mode,
    limit: number,
    t0: number,
    waitTimeout: number,
    lease: Lease | null,
  ): void {
    const waitMs = monotonicNow() - t0;
    const threadId = this[GRANTS].threadId;
    if (lease === null) {
      const reason = waitTimeout === 0 ? 'busy' : 'timeout';
      if (this.#statsOn) {
        if (reason === 'busy') this.#stats.miss();
        else this.#stats.timeout();
      }
      if (missChannel.hasSubscribers)
        missChannel.publish({ key, mode, limit, threadId, waitMs, reason });
      return;
    }
    const contended = waitedLeases.has(lease);
    const recovered = lease.recovered;
    if (this.#statsOn) this.#stats.grant(waitMs, contended, recovered);
    if (grantChannel.hasSubscribers) {
      const token = lease.token;
      grantChannel.publish({ key, mode, limit, threadId, waitMs, token, contended, recovered });
    }
    if (recovered && reclaimChannel.hasSubscribers) {
      const token = lease.token;
      reclaimChannel.publish({ key, mode, limit, threadId, token, by: 'deadline' });
    }
  }

  #failed(key: string, mode: Mode, limit: number, t0: number, error: unknown): void {
    const waitMs = monotonicNow() - t0;
    const threadId = this[GRANTS].threadId;
    if (error instanceof AbortError) {
      if (this.#statsOn) this.#stats.abort();
      if (abortChannel.hasSubscribers) {
        const reason = error.cause;
        abortChannel.publish({ key, mode, limit, threadId, waitMs, reason });
      }
    } else if ((error as { code?: unknown } | null)?.code === 'ERR_LOCK_TIMEOUT') {
      if (this.#statsOn) this.#stats.timeout();
      if (missChannel.hasSubscribers)
        missChannel.publish({ key, mode, limit, threadId, waitMs, reason: 'timeout' });
    }
  }

  /** @internal After `lease` was released (Lease.release, when releaseObserved()). */
  noteRelease(lease: Lease): void {
    if (this.#statsOn) this.#stats.release();
    if (releaseChannel.hasSubscribers) {
      const { key, mode, token } = lease;
      releaseChannel.publish({ key, mode, threadId: this[GRANTS].threadId, token });
    }
  }

  /** Who holds `key` right now (null when nobody does). Reads only; never waits or acquires. */
  inspect(key: string): LockInfo | null {
    checkKey('key', key, this.#views.geometry.maxKeyLength);
    const slot = this[DIRECTORY].find(key, hashKey(key));
    if (slot < 0) return null;
    const info = this.#describe(slot);
    return info !== null && info.key === key ? info : null;
  }

  /** Every key held right now, with its holders. A snapshot: it may be stale when it returns. */
  held(): LockInfo[] {
    const out: LockInfo[] = [];
    for (let slot = 0; slot < this.#views.geometry.capacity; slot++) {
      const info = this.#describe(slot);
      if (info !== null) out.push(info);
    }
    return out;
  }

  /**
   * Frees every lock held by the thread `threadId`, which must have exited (its leases become
   * stale): exclusive holds, shared holds, the table's binding mutex, and what it announced while
   * it waited (every slot's announcements are cleared; live waiters announce again). Returns how many
   * leases it released. `watch(worker)` calls this when a worker exits.
   */
  releaseAllOwnedBy(threadId: number): number {
    checkInteger('threadId', threadId, 0, MAX_THREAD_ID);
    if (threadId === this[GRANTS].threadId) {
      throw outOfRange(
        'threadId',
        'the id of another thread (one that has exited), not the calling thread',
        threadId,
      );
    }
    let released = 0;
    const slots = this[SLOTS];
    for (let slot = 0; slot < this.#views.geometry.capacity; slot++) {
      const s = Atomics.load(slots, slot * SLOT_WORDS + S_STATE);
      if (
        (s & (EXCLUSIVE | FIELD)) === (EXCLUSIVE | threadId) &&
        this[GRANTS].forceReleaseExclusive(slot, threadId)
      ) {
        released++;
      }
    }
    released += this[GRANTS].forceReleaseSharedOf(threadId);
    // What it announced while waiting goes too (the live waiters announce again).
    this[GRANTS].withdrawAll();
    this[DIRECTORY].releaseBindingsOf(threadId);
    if (released > 0 && this.#statsOn) this.#stats.reclaims(released);
    if (released > 0 && reclaimChannel.hasSubscribers) {
      reclaimChannel.publish({
        key: undefined,
        mode: undefined,
        limit: 0,
        threadId: this[GRANTS].threadId,
        owner: threadId,
        leases: released,
        by: 'exit',
      });
    }
    // Its request entries (entries.ts: pending requests, its doorbell) go too.
    this.#entries.freeOwnedBy(threadId);
    return released;
  }

  /**
   * Frees every lock `worker` holds as soon as it exits (crash, terminate(), process.exit()).
   * Given a piscina pool, does so for every thread the pool has now or starts later: locks taken
   * inside a pool's tasks are freed when a task's thread dies. Returns a function that stops
   * watching.
   */
  watch(target: Worker | WatchedPool): () => void {
    if (isPool(target)) return this.#watchPool(target);
    const worker = target;
    if (
      worker === null ||
      typeof worker !== 'object' ||
      typeof (worker as Worker).once !== 'function'
    ) {
      throw invalidType('worker', 'an instance of Worker or of Piscina', worker);
    }
    const id = worker.threadId;
    if (typeof id !== 'number' || id < 0) {
      throw invalidValue('worker', 'must be a running Worker (it has no threadId)', worker);
    }
    return this.#watchWorker(worker, id, () => {});
  }

  #watchWorker(worker: Worker, id: number, exited: () => void): () => void {
    const onExit = (): void => {
      exited();
      this.releaseAllOwnedBy(id);
    };
    worker.once('exit', onExit);
    return () => {
      worker.off('exit', onExit);
    };
  }

  /**
   * Piscina announces a new thread ('workerCreate') before it gives it a task, and lists it in
   * `pool.threads` from its start: each announcement watches the threads not watched yet.
   */
  #watchPool(pool: WatchedPool): () => void {
    const watched = new Map<number, () => void>();
    const refresh = (): void => {
      for (const worker of pool.threads) {
        const id = worker.threadId;
        if (id < 0 || watched.has(id)) continue;
        watched.set(
          id,
          this.#watchWorker(worker, id, () => watched.delete(id)),
        );
      }
    };
    pool.on('workerCreate', refresh);
    refresh();
    return () => {
      pool.off('workerCreate', refresh);
      for (const unwatch of watched.values()) unwatch();
      watched.clear();
    };
  }

  // ---------------------------------------------------------------------------------------

  /**
   * The fast path: one CAS from FREE for an exclusive request. A key this thread used before is
   * found through the slot cache (#fastCached); any other key is hashed and probed (#fastProbe).
   * null: not granted now (the waiting loop takes over).
   */
  #fast(key: string, mode: Mode, hold: number, spin: boolean): Lease | null {
    if (mode !== 'exclusive') return null;
    const lease = this.#fastCached(key, hold, spin);
    return lease === undefined ? this.#fastProbe(key, hold) : lease;
  }

  /**
   * The fast path for a key in the slot cache: CAS, then generation check (slot-cache.ts says
   * why that is exact). A lease; null when the key's slot is busy; undefined
   * when the cache does not know the key (or knew it wrong).
   */
  #fastCached(key: string, hold: number, spin: boolean, made?: Lease): Lease | null | undefined {
    const cache = this.#slotCache;
    const entry = cache.get(key);
    if (entry === undefined) return undefined;
    const slot = entry.slot;
    const g = this[GRANTS];
    // Made before the CAS (here, or by the caller), stamped after it: nothing is allocated while
    // we hold the key, so no garbage collection starts then (Lease[STAMP]).
    const lease = made ?? new Lease(this, key, slot, 0, 0, 0, 0, Infinity);
    if (!g.fastExclusive(slot, hold) && !(spin && this.#fastSpin(slot, hold))) return null;
    // Held now, so the binding is frozen: the same generation means the same key.
    if (cache.isCurrent(entry)) {
      const deadline = hold === Infinity ? Infinity : g.deadline;
      return lease[STAMP](slot, g.tokenLo, g.tokenHi, g.stateWord, deadline);
    }
    g.undoGrant(slot, 'exclusive');
    cache.forget(key);
    return undefined;
  }

  /**
   * The fast path's spin, on a busy key: watch the word for a moment (a hundred-odd loads, as the
   * raw futex mutex does) and try again when it looks free. A CAS that fails right after the word
   * looked free lost the key to another request: the waiting loop hears of it (#lostRace), so
   * that it does not spin for a key that is taken back at once. True: granted.
   */
  #fastSpin(slot: number, hold: number): boolean {
    const g = this[GRANTS];
    testHooks.stall?.('fast:watching');
    if (!g.watchForFree(slot)) return false;
    testHooks.stall?.('fast:sawFree');
    if (g.fastExclusive(slot, hold)) return true;
    this.#lostRace = true;
    return false;
  }

  /** The fast path for a key that is not in the slot cache: hash, probe, CAS, key compare. */
  #fastProbe(key: string, hold: number): Lease | null {
    const slot = this[DIRECTORY].find(key, hashKey(key));
    if (slot < 0 || !this[GRANTS].fastExclusive(slot, hold)) return null;
    // The slot cannot be rebound while we hold it: a key that matches now is the key we hold. A
    // key bound as a semaphore (S_LIMIT > 0) is for the waiting loop (semaphore.ts).
    if (this[DIRECTORY].matches(slot, key) && this[SLOTS][slot * SLOT_WORDS + S_LIMIT] === 0)
      return this.#granted(key, 'exclusive', hold, slot, false);
    this[GRANTS].undoGrant(slot, 'exclusive');
    return null;
  }

  /**
   * A grant whose key was checked by a full compare: remember its slot, then make the lease. An
   * exclusive grant with an infinite hold does not write Grants.deadline: its deadline is Infinity.
   */
  #granted(
    key: string,
    mode: Mode,
    hold: number,
    slot: number,
    recovered: boolean,
    limit = 0,
  ): Lease {
    // Only a lock's binding is remembered: the fast path, which never reads the limit, trusts
    // the cache's (slot, generation) to name a lock's binding (semaphore.ts).
    if (limit === 0) this.#slotCache.remember(key, slot);
    const g = this[GRANTS];
    if (mode === 'exclusive') {
      const flags = recovered ? LEASE_RECOVERED : 0;
      const deadline = hold === Infinity ? Infinity : g.deadline;
      return new Lease(this, key, slot, flags, g.tokenLo, g.tokenHi, g.stateWord, deadline);
    }
    const flags = LEASE_SHARED | (recovered ? LEASE_RECOVERED : 0);
    return new Lease(this, key, slot, flags, g.tokenLo, g.tokenHi, g.record, g.deadline);
  }

  /** The waiting loop, blocking, for acquireSync: a lease or ERR_LOCK_TIMEOUT. */
  #waitSync(key: string, o: Resolved): Lease {
    const lease = this.#slowSync(key, o, o.waitTimeout, true);
    if (lease === null) throw timeoutError(key, o.waitTimeout);
    return lease;
  }

  /** @internal The facade's access (src/web-locks/): see FacadeCore. */
  [FACADE](): FacadeCore {
    return {
      entries: this.#entries,
      threadId: this[GRANTS].threadId,
      steal: async (key, options) => {
        checkKey('key', key, this.#maxKeyLength);
        const o = this.#resolve(options, true, true);
        if (o.signal?.aborted) throw new AbortError(key, o.signal.reason);
        const lease = await this.#slowAsync(key, o, o.waitTimeout, STEAL_FAIL_TIMEOUT);
        if (lease === null) throw timeoutError(key, o.waitTimeout);
        return lease;
      },
      tryAcquire: (key, mode, hold) => {
        // A key of the slot cache, free, and nobody observes (see tryAcquire): one CAS. Anything
        // else (busy, shared, not cached, observed) is tryAcquire's, which tries the CAS again.
        if (mode === 'exclusive' && !this.#statsOn && !requestObserved()) {
          const lease = this.#fastCached(key, hold, false);
          if (lease) return lease;
        }
        return this.tryAcquire(key, { mode, hold });
      },
    };
  }

  #request(
    key: string,
    o: Resolved,
    waitTimeout: number,
    blocking: boolean,
    failTimeout = this.#defaults.failTimeout,
  ): Request {
    // Where the key was last time (a hint, like a lookup: the waiting loop checks the key once it
    // holds the slot, and looks again if the slot's binding moves on).
    const hint = this.#slotCache.lookup(key);
    const req = new Request(
      this,
      key,
      o.mode,
      o.hold,
      waitTimeout,
      failTimeout,
      o.spinDelay,
      blocking,
      hint?.slot ?? -1,
      hint?.genLo ?? 0,
      hint?.genHi ?? 0,
      o.limit,
    );
    if (this.#lostRace) {
      this.#lostRace = false;
      req.hasLostRace();
    }
    return req;
  }

  /** The waiting loop, blocking. null = timed out (or, with waitTimeout 0, not free). */
  #slowSync(key: string, o: Resolved, waitTimeout: number, blocking: boolean): Lease | null {
    const req = this.#request(key, o, waitTimeout, blocking);
    let granted = false;
    let waited = false;
    try {
      for (;;) {
        const step = req.step();
        if (step === STEP_GRANTED) {
          granted = true;
          const lease = this.#granted(key, o.mode, o.hold, req.slot, req.recovered, o.limit);
          if (waited && (this.#statsOn || requestObserved())) waitedLeases.add(lease);
          return lease;
        }
        waited = true;
        if (step === STEP_SPIN) spin(req);
        else if (step === STEP_SLEEP) sleepSync(req);
        else if (step === STEP_TIMEOUT) return null;
        else this.#fail(step, key, req);
      }
    } finally {
      req.leave(granted);
    }
  }

  async #slowAsync(
    key: string,
    o: Resolved,
    waitTimeout: number,
    failTimeout?: number,
  ): Promise<Lease | null> {
    const req = this.#request(key, o, waitTimeout, false, failTimeout);
    const signal = o.signal;
    let onAbort: (() => void) | undefined;
    const aborted =
      signal === undefined
        ? undefined
        : new Promise<void>((resolve) => {
            onAbort = () => resolve();
            signal.addEventListener('abort', onAbort, { once: true });
          });
    let granted = false;
    let waited = false;
    try {
      for (;;) {
        if (signal?.aborted) throw new AbortError(key, signal.reason);
        const step = req.step();
        if (step === STEP_GRANTED) {
          granted = true;
          const lease = this.#granted(key, o.mode, o.hold, req.slot, req.recovered, o.limit);
          if (waited && (this.#statsOn || requestObserved())) waitedLeases.add(lease);
          return lease;
        }
        waited = true;
        if (step === STEP_SPIN) spin(req);
        else if (step === STEP_SLEEP) await sleepAsync(req, aborted);
        else if (step === STEP_TIMEOUT) return null;
        else this.#fail(step, key, req);
      }
    } finally {
      req.leave(granted);
      if (signal !== undefined && onAbort !== undefined)
        signal.removeEventListener('abort', onAbort);
    }
  }

  #fail(step: number, key: string, req: Request): never {
    if (step === STEP_LIMIT_MISMATCH) throw limitMismatchError(key, req.limit, req.foundLimit);
    if (step === STEP_FULL) throw tableFullError(key, this.#views.geometry.capacity);
    if (step === STEP_RECURSION) throw recursionError(key);
    if (step === STEP_NO_RECORD) {
      throw new LockError(
        'ERR_LOCK_TABLE_FULL',
        key,
        `No free shared-holder record for ${JSON.stringify(key)}: all ${this.#records.count} are in use. ` +
          'Create the table with a larger maxSharedHolders',
      );
    }
    throw new Error(`locktable: unexpected step ${step}`);
  }

  #resolve(options: AcquireOptions | undefined, waits: boolean, async: boolean): Resolved {
    const d = this.#defaults;
    if (options === undefined) return this.#plain;
    checkOptionsObject('options', options);
    checkKnownOptions('options', options, ACQUIRE_OPTIONS_KEYS);
    return {
      mode: checkMode('options.mode', options.mode),
      hold: options.hold === undefined ? d.hold : checkMs('options.hold', options.hold, false),
      waitTimeout:
        !waits || options.waitTimeout === undefined
          ? d.waitTimeout
          : checkMs('options.waitTimeout', options.waitTimeout, true),
      spinDelay:
        !waits || options.spinDelay === undefined
          ? d.spinDelay
          : checkSpinDelay('options.spinDelay', options.spinDelay),
      signal: async ? checkSignal('options.signal', options.signal) : undefined,
      limit: 0,
    };
  }

  #orderKeys(keys: readonly string[]): string[] {
    const max = this.#views.geometry.maxKeyLength;
    return orderKeys(keys, (name, key) => checkKey(name, key, max));
  }

  /** A consistent snapshot of one slot's holders, or null when it is free or unbound. */
  #describe(slot: number): LockInfo | null {
    const v = this.#views;
    const base = slot * SLOT_WORDS;
    for (let tries = 0; tries < 8; tries++) {
      const gen = Atomics.load(v.slots, base + S_BIND_GEN);
      const s = Atomics.load(v.slots, base + S_STATE);
      if (Atomics.load(v.slots, base + S_BIND) !== BIND_BOUND || (s & (UNBOUND | HANDOFF)) !== 0)
        return null;
      const exclusive = (s & EXCLUSIVE) !== 0;
      if (!exclusive && (s & FIELD) === 0) return null;
      const key = readKey(v.keys, slot * v.geometry.maxKeyLength, v.slots[base + S_KEY_LENGTH]!);
      const holders: HolderInfo[] = [];
      if (exclusive) {
        holders.push({
          threadId: s & FIELD,
          token:
            (BigInt(v.slots[base + S_TOKEN_HI]!) << 32n) |
            BigInt(v.slots[base + S_TOKEN_LO]! >>> 0),
          deadline: this[GRANTS].exclusiveDeadline(slot, s),
        });
      } else {
        const records = this.#records;
        for (let r = 0; r < records.count; r++) {
          // Every record whose count is on the word: ACTIVE and EXTENDING, JOINED, RELEASING or TAKEN
          // (a grant or a release under way, or a thread that died in one: it holds the key until
          // its record is taken over). So inspect() lists exactly the holders that keep a try out.
          if (countsOnWord(records.state(r)) && records.slot(r) === slot) {
            holders.push({
              threadId: records.owner(r),
              token: (BigInt(records.tokenHi(r)) << 32n) | BigInt(records.tokenLo(r) >>> 0),
              deadline: records.deadline(r),
            });
          }
        }
      }
      if (
        Atomics.load(v.slots, base + S_BIND_GEN) !== gen ||
        v.slots[base + S_HASH] !== hashKey(key)
      )
        continue;
      const limit = v.slots[base + S_LIMIT]!;
      const info: LockInfo = {
        key,
        mode: exclusive ? 'exclusive' : 'shared',
        holders,
        sleepers: Atomics.load(v.slots, base + S_SLEEPERS),
        contended: (s & ANNOUNCE) !== 0,
      };
      if (limit > 0 && !exclusive) info.limit = limit;
      return info;
    }
    return null;
  }
}

brand(LockTable, 'LockTable');

/**
 * attach()'s constructor call, outside the class: a class body that names its own class makes
 * esbuild rename it (`class _LockTable`), a name that messages and util.inspect would show.
 */
function attachedHandle(): LockTable {
  return new LockTable();
}

/** Does a record of this kind have its count on the slot's word (records.ts, "Invariant")? */
function countsOnWord(kind: number): boolean {
  return (
    kind === RECORD_ACTIVE ||
    kind === RECORD_EXTENDING ||
    kind === RECORD_JOINED ||
    kind === RECORD_RELEASING ||
    kind === RECORD_TAKEN
  );
}

/** Leases whose request waited (spun or slept) first: a grant's `contended`, when observed. */
const waitedLeases = new WeakSet<Lease>();

/** Set by attach() for the constructor call it makes (a constructor cannot be overloaded privately). */
let pendingAttach: { buffer: SharedArrayBuffer; views: Views; defaults: TableDefaults } | undefined;

function createTable(options: LockTableOptions | undefined) {
  checkOptionsObject('options', options);
  const o = options ?? {};
  checkKnownOptions('options', o, LOCK_TABLE_OPTIONS_KEYS);
  const capacity =
    o.capacity === undefined
      ? DEFAULT_CAPACITY
      : checkInteger('options.capacity', o.capacity, 1, MAX_CAPACITY);
  const maxKeyLength =
    o.maxKeyLength === undefined
      ? DEFAULT_MAX_KEY_LENGTH
      : checkInteger('options.maxKeyLength', o.maxKeyLength, 1, MAX_KEY_LENGTH_LIMIT);
  const records =
    o.maxSharedHolders === undefined
      ? Math.min(2 * capacity, MAX_CAPACITY)
      : checkInteger('options.maxSharedHolders', o.maxSharedHolders, 1, MAX_CAPACITY);
  const explicit = checkDefaults('options', o);
  if (o.stats !== undefined && typeof o.stats !== 'boolean')
    throw invalidType('options.stats', 'of type boolean', o.stats);
  const geometry: Geometry = { capacity, maxKeyLength, records };
  const bytes = bufferBytes(geometry);
  const buffer = new SharedArrayBuffer(bytes);
  const views = createViews(buffer, geometry);
  const h = views.header;
  h[H_CAPACITY] = capacity;
  h[H_MAX_KEY_LENGTH] = maxKeyLength;
  h[H_RECORDS] = records;
  h[H_BUFFER_BYTES] = bytes;
  h[H_VERSION] = VERSION;
  storeDefaults(views.headerF64, explicit);
  h[H_STATS] = o.stats === true ? 1 : 0;
  for (let i = 0; i < capacity; i++) views.slots[i * SLOT_WORDS + S_STATE] = UNBOUND;
  // ORDER: the magic number is written last; attach() refuses a buffer without it.
  Atomics.store(h, H_MAGIC, MAGIC);
  return { buffer, views, explicit };
}

function releaseAll(leases: Lease[]): void {
  for (let i = leases.length - 1; i >= 0; i--) {
    try {
      leases[i]!.release();
    } catch {
      // A lease that lost its lock meanwhile has nothing left to release.
    }
  }
}

function checkThreadId(): number {
  if (currentThreadId > MAX_THREAD_ID) {
    throw new RangeError(
      `locktable supports thread ids up to ${MAX_THREAD_ID}; this thread is ${currentThreadId}`,
    );
  }
  return currentThreadId;
}
