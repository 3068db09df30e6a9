/**
 * Counting semaphores per key: `table.semaphore(key, limit)` lets up to `limit` holders have the
 * key at once. A semaphore is a shared group with a limit; everything else (the per-holder
 * records with their deadlines and fencing tokens, reclaim, forced release by `watch`, waiting,
 * sleeping, every way out of a request) is the shared mode's.
 *
 * The limit lives in the slot (S_LIMIT, layout.ts) and is part of the key's binding:
 *  - the binder writes it inside its bind window, with the key, so it is published by the same
 *    CAS (directory.ts). 0 is a lock (exclusive or shared); n >= 1 a semaphore of n permits.
 *  - it changes only by an eviction and a new binding (Directory.rebind), which needs the key
 *    unheld (isEvictable), and moves the bind generation. While anyone holds the slot, its limit
 *    is frozen, as its key is.
 *  - a request compares the slot's limit with its own before it attempts, and again after its
 *    grant CAS (the authority, as the key compare is: Request.#keyStillOurs). Its grant CAS
 *    counted against its own limit; a slot whose limit is still its own after the CAS had that
 *    limit at the CAS (the slot was held from then on), so no request is ever admitted under a
 *    limit other than the key's.
 *  - a request that finds another limit on a held key fails at once with ERR_LOCK_LIMIT_MISMATCH
 *    naming both values (a lock meets a semaphore, or two semaphores differ). On a key nobody
 *    holds it rebinds the key with its own limit: the key was free, so the last limit is nobody's.
 *    Waiters of the old limit then look the key up again (their generation moved) and fail with
 *    ERR_LOCK_LIMIT_MISMATCH if the new group holds it, or rebind it back if it is free again.
 *  - the lock fast path (LockTable.#fastCached) never reads the limit: its slot cache keeps only
 *    bindings whose limit a lock grant checked (semaphore grants are never remembered), and a
 *    rebinding moves the generation that the cache compares.
 *
 * The semaphore's word is a shared group's: FIELD counts the permits held. Of the flags it uses
 * PARKED, and WAITING | STARVING (Go's starvation mode, as writers do):
 *
 *   FREE / n (n < limit) -> n + 1     a request for a permit (see permitGrantState), unless
 *                                     STARVING: then only a request that has waited STARVATION_MS
 *                                     (or has watched the same word for HANDOFF_PATIENCE_MS: a
 *                                     stale bit cannot wedge the key)
 *   n (n > 1)          -> n - 1       a release (or a reclaim, or a forced release): PARKED is
 *                                     cleared and a sleeper woken (every sleeper when STARVING;
 *                                     one whenever any sleeps, PARKED or not),
 *                                     since a permit came free (a lock's shared group never wakes
 *                                     anyone before its last release: only a semaphore has waiters
 *                                     blocked by a group that is not empty)
 *   1                  -> FREE or HANDOFF   the last release, exactly a shared group's
 *                                     (releaseState): HANDOFF when STARVING, and only a waiting
 *                                     request that has waited STARVATION_MS takes it
 *
 * A grant clears WAITING and STARVING (the waiters that still starve announce again). A waiter
 * announces nothing before it has waited STARVATION_MS: in normal mode the releaser's next
 * request and newcomers barge (the group keeps its cache lines); once a waiter starves, every
 * freed permit goes to a starving waiter, so none waits much longer than STARVATION_MS plus a
 * hand-off for its turn while others take permits.
 *
 * A group that never empties has no last release to withdraw the STARVING of a waiter that is
 * gone, so STARVING is also subject to slot-state.ts's "Stale announcements": a freed permit whose
 * notify woke nobody withdraws it when no waiter runs (WAITING clear; a stale WAITING still
 * counts as a runner), and a tryAcquire (or waitTimeout 0) that only a stale STARVING refuses
 * wakes a sleeper to look again, or, if none answers, withdraws it and takes the free permit. A
 * freed permit that woke a sleeper stamps the announcement afresh: that sleeper's turn.
 */
import { checkFunction, runHolding } from '../api/locks.js';
import { checkInteger, checkKey, checkOptionsObject } from '../api/options.js';
import { invalidValue } from '../api/errors.js';
import { brand } from '../api/cross-build.js';
import type { Lease } from './lease.js';
import {
  EXCLUSIVE,
  FIELD,
  HANDOFF,
  HANDOFF_PATIENCE_MS,
  MAX_SHARED,
  PARKED,
  STARVATION_MS,
  STARVING,
  UNBOUND,
  WAITING,
  type WaiterView,
} from './slot-state.js';

/** Most permits a semaphore can have: the shared count's room in the state word. */
export const MAX_LIMIT = MAX_SHARED;

/** The announcement bits of a permit's waiter that has waited `waitedMs` (0: none yet). */
export function permitAnnouncement(waitedMs: number): number {
  return waitedMs >= STARVATION_MS ? WAITING | STARVING : 0;
}

/**
 * The word to CAS to for a permit from `s` under `limit`, or -1 when none may be granted now by
 * the turn rules (a HANDOFF past its reservation is Grants' lapsed rule, as for locks).
 */
export function permitGrantState(s: number, limit: number, w: WaiterView | undefined): number {
  if ((s & (UNBOUND | EXCLUSIVE)) !== 0) return -1;
  const keep = s & PARKED;
  const patient = w !== undefined && w.waits && w.watchedMs(s) >= HANDOFF_PATIENCE_MS;
  const starved = w !== undefined && w.waits && w.waitedMs >= STARVATION_MS;
  if ((s & HANDOFF) !== 0) {
    if (w === undefined || !w.waits) return -1;
    if (!patient) {
      if ((s & STARVING) !== 0 && !starved) return -1;
      // The releaser's own thread takes it back only with a request that was already waiting.
      if ((s & FIELD) === w.threadId && w.startReleaseSeq >= w.releaseSeq) return -1;
    }
    return 1 | keep;
  }
  const count = s & FIELD;
  if (count >= limit) return -1;
  if ((s & STARVING) !== 0 && !starved && !patient) return -1;
  return keep | (count + 1);
}

/** What `Semaphore` needs from its table (LockTable implements it; not part of the API). */
export interface PermitHost {
  readonly maxKeyLength: number;
  /** @internal */
  permitTry(key: string, limit: number, options: unknown): Lease | null;
  /** @internal */
  permitSync(key: string, limit: number, options: unknown): Lease;
  /** @internal */
  permitAsync(key: string, limit: number, options: unknown): Promise<Lease>;
}

/** Options of a permit request: those of a shared lock request, without `mode`. */
export interface PermitTryOptions {
  hold?: number | undefined;
}
export interface PermitSyncOptions extends PermitTryOptions {
  waitTimeout?: number | undefined;
  spinDelay?: number | undefined;
}
export interface PermitOptions extends PermitSyncOptions {
  signal?: AbortSignal | undefined;
}

/** Refuses options.mode: a permit is neither exclusive nor shared. */
export function checkPermitOptions(options: unknown): void {
  checkOptionsObject('options', options);
  if (options !== undefined && (options as { mode?: unknown }).mode !== undefined) {
    throw invalidValue(
      'options.mode',
      'is not an option of a semaphore (a permit is one of its `limit` holders)',
      (options as { mode?: unknown }).mode,
    );
  }
}

/**
 * A counting semaphore on one key of a LockTable: at most `limit` permits held at once, across
 * every thread of the table. Each permit is a Lease (mode 'shared'): its own fencing token
 * (strictly increasing per key), its own deadline (`hold`), and it comes back when its holder dies
 * (at once with `watch(worker)`, else after its deadline plus failTimeout).
 * Every handle of a key must name the same limit while the key is in use: a request that finds
 * another limit there fails with ERR_LOCK_LIMIT_MISMATCH.
 */
export class Semaphore {
  readonly #host: PermitHost;
  /** The key. */
  readonly key: string;
  /** How many holders may have the key at once. */
  readonly limit: number;

  /** @internal Made by `table.semaphore(key, limit)`. */
  constructor(host: PermitHost, key: string, limit: number) {
    this.key = checkKey('key', key, host.maxKeyLength);
    this.limit = checkInteger('limit', limit, 1, MAX_LIMIT);
    this.#host = host;
  }

  /** One attempt, never waits: a permit, or null when all `limit` are held. */
  tryAcquire(options?: PermitTryOptions): Lease | null {
    checkPermitOptions(options);
    return this.#host.permitTry(this.key, this.limit, options);
  }

  /** Blocks this thread (Atomics.wait) until a permit is free, or throws ERR_LOCK_TIMEOUT. */
  acquireSync(options?: PermitSyncOptions): Lease {
    checkPermitOptions(options);
    return this.#host.permitSync(this.key, this.limit, options);
  }

  /** Waits without blocking the event loop. Rejects on timeout (ERR_LOCK_TIMEOUT) or abort. */
  acquire(options?: PermitOptions): Promise<Lease> {
    try {
      checkPermitOptions(options);
    } catch (error) {
      return Promise.reject(error as Error);
    }
    return this.#host.permitAsync(this.key, this.limit, options);
  }

  /** Takes a permit (as acquire does), runs `fn(permit)`, and releases it when `fn` settles. */
  async run<T>(fn: (permit: Lease) => T | Promise<T>, options?: PermitOptions): Promise<T> {
    checkFunction('fn', fn);
    return runHolding(await this.acquire(options), fn);
  }
}
brand(Semaphore, 'Semaphore');
