/**
 * The shared table in front of the server. Every request of a PgLockTable first takes its keys in
 * a LockTable (the process's shared-memory table, or a private one), under front keys of their
 * own, and only then the server locks: so of the requests of one process for one key, one at a
 * time talks to the server, and the others wait in shared memory.
 *
 * A single exclusive acquire goes further, through this PgLockTable's in-thread FIFO for the key
 * (KeyQueue): only the head of the queue waits on the table and the server. When the holder
 * releases and the queue has waiters, the whole holding (session, server lock, table lease) is
 * handed to the next of them, with no round trip and no shared-memory write: lock cohorting (Dice,
 * Marathe and Shavit, "Lock Cohorting", PPoPP 2012). The streak is bounded by cohortLimit grants
 * and cohortMs since the server grant; at the bound the server lock is given back first (so
 * another process's waiter, queued on the server, gets it), then the table lease.
 *
 * Tokens: server fence F, cohort grant i of its streak (0 for the server grant itself):
 * token = (F << 12n) | i, strictly increasing because i < cohortLimit <= 2^12 and the next
 * server grant has a larger F.
 */
import { callAt, monotonicNow } from '../api/clock.js';
import { AbortError, describeKey, LockError, outOfRange, timeoutError } from '../api/errors.js';
import type { Mode } from '../api/options.js';
import type { Lease } from '../table/lease.js';
import { LockTable } from '../table/lock-table.js';
import { closedError } from './errors.js';
import type { FrontPart, Holding, PgLease } from './lease.js';
import { COHORT_BITS, MAX_PG_KEY_LENGTH } from './options.js';

/**
 * Front keys start with U+0000 'pg' U+0000, then the namespace and U+0000: an application key of
 * the table would have to start with a NUL character to meet one, and PgLockTable's own keys
 * cannot contain U+0000, so the key after the prefix is read back exactly.
 */
export const FRONT_PREFIX = '\u0000pg\u0000';

interface LocalWaiter {
  /** Handed the holding: its new lease. */
  take(lease: PgLease): void;
  /** The request ahead left the queue: this one is head now, and goes to the table. */
  go(): void;
  fail(error: unknown): void;
}

/** This PgLockTable's exclusive single-key requests for one key, in FIFO order. */
class KeyQueue {
  /** One request is past the queue: at the table, at the server, or holding. */
  busy = false;
  readonly waiters: LocalWaiter[] = [];
}

export interface FrontStats {
  /** Grants that the server made (each one a round trip). */
  serverGrants: number;
  /** Exclusive grants handed from one local holder to the next (no round trip). */
  handoffs: number;
}

export class Front {
  readonly table: LockTable;
  readonly #prefix: string;
  readonly cohortLimit: number;
  readonly cohortMs: number;
  readonly #queues = new Map<string, KeyQueue>();
  readonly stats: FrontStats = { serverGrants: 0, handoffs: 0 };
  /** Aborted by close(): ends the waits on the table. */
  readonly #closing = new AbortController();

  constructor(table: LockTable | undefined, namespace: number, limit: number, ms: number) {
    this.#prefix = `${FRONT_PREFIX}${namespace}\u0000`;
    // A private table: room for the longest PostgreSQL key behind the prefix.
    this.table = table ?? new LockTable({ maxKeyLength: MAX_PG_KEY_LENGTH + this.#prefix.length });
    this.cohortLimit = limit;
    this.cohortMs = ms;
  }

  /** The longest key the front's table takes (its maxKeyLength less the prefix). */
  get maxKeyLength(): number {
    return Math.min(MAX_PG_KEY_LENGTH, this.table.maxKeyLength - this.#prefix.length);
  }

  /** The front key of `key`; refuses a key too long for the table. */
  frontKey(key: string): string {
    const max = this.table.maxKeyLength - this.#prefix.length;
    if (key.length > max) {
      throw outOfRange(
        'key.length',
        `<= ${max} (UTF-16 code units): the front table's maxKeyLength (${this.table.maxKeyLength}) ` +
          `less ${this.#prefix.length} for the reserved prefix; create the LockTable with a larger maxKeyLength`,
        key.length,
      );
    }
    return this.#prefix + key;
  }

  /**
   * Waits for this request's turn in the key's FIFO: null when it is head (it goes to the table),
   * or the lease of a holding handed to it. With `isTry`, never waits: false when the key has a
   * request or holder of this table already.
   */
  enter(
    fk: string,
    key: string,
    waitTimeout: number,
    start: number,
    signal: AbortSignal | undefined,
  ): Promise<PgLease | null> {
    let queue = this.#queues.get(fk);
    if (queue === undefined) {
      queue = new KeyQueue();
      this.#queues.set(fk, queue);
    }
    if (!queue.busy) {
      queue.busy = true;
      return Promise.resolve(null);
    }
    if (this.#closing.signal.aborted) return Promise.reject(closedError(key));
    const left = waitTimeout - (monotonicNow() - start);
    if (left <= 0) return Promise.reject(timeoutError(key, waitTimeout));
    const q = queue;
    return new Promise<PgLease | null>((resolve, reject) => {
      let cancelTimer = (): void => {};
      const leave = () => {
        cancelTimer();
        signal?.removeEventListener('abort', onAbort);
        const i = q.waiters.indexOf(waiter);
        if (i >= 0) q.waiters.splice(i, 1);
      };
      const waiter: LocalWaiter = {
        take: (lease) => {
          leave();
          resolve(lease);
        },
        go: () => {
          leave();
          resolve(null);
        },
        fail: (error) => {
          leave();
          reject(error);
        },
      };
      // An abort or a timeout takes the waiter out of the queue at once: nothing is left behind,
      // and a holder releasing later never hands it anything.
      const onAbort = () => waiter.fail(new AbortError(key, signal!.reason));
      if (Number.isFinite(left)) {
        // Never early (callAt): the contract's waitTimeout is a lower bound.
        cancelTimer = callAt(start + waitTimeout, () =>
          waiter.fail(timeoutError(key, waitTimeout)),
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      q.waiters.push(waiter);
    });
  }

  /** A try: head at once, or false (a request of this table has the key). */
  tryEnter(fk: string): boolean {
    if (this.#queues.has(fk)) return false;
    const queue = new KeyQueue();
    queue.busy = true;
    this.#queues.set(fk, queue);
    return true;
  }

  /** The head (or holder) is gone: the next waiter becomes head, or the queue goes. */
  next(fk: string): void {
    const queue = this.#queues.get(fk);
    if (queue === undefined) return;
    const waiter = queue.waiters.shift();
    if (waiter !== undefined) waiter.go();
    else this.#queues.delete(fk);
  }

  /** The next waiter for a hand-over, if any. */
  takeWaiter(fk: string): LocalWaiter | undefined {
    return this.#queues.get(fk)?.waiters.shift();
  }

  hasWaiters(fk: string): boolean {
    return (this.#queues.get(fk)?.waiters.length ?? 0) > 0;
  }

  /**
   * One try at a single front key, in the caller's task (the uncontended path: no promise to
   * await): its lease, or null when the key is held (the caller then waits in take(), or a try
   * gives up). Throws as take() does (a full table, close()).
   */
  tryTakeOne(fk: string, key: string, mode: Mode, signal: AbortSignal | undefined): Lease | null {
    try {
      return this.table.tryAcquire(fk, { mode, hold: Infinity });
    } catch (error) {
      throw this.#failure(error, key, 0, signal);
    }
  }

  /** Takes the front keys in the table: leases, or null for a try that found one held. */
  async take(
    fks: string[],
    key: string,
    mode: Mode,
    waitTimeout: number,
    start: number,
    signal: AbortSignal | undefined,
    isTry: boolean,
  ): Promise<Lease[] | null> {
    // The wait's signal: close() or the caller's. Not AbortSignal.any: on Node 20 every signal it
    // makes stays registered on its long-lived input (#closing) until that aborts, a leak per wait.
    const closing = this.#closing.signal;
    let onAbort: (() => void) | undefined;
    try {
      if (isTry || fks.length === 1) {
        // One attempt first: the uncontended path makes no combined signal.
        const lease = this.table.tryAcquire(fks[0]!, { mode, hold: Infinity });
        if (lease !== null) return [lease];
        if (isTry) return null;
      }
      const left = Math.max(0, waitTimeout - (monotonicNow() - start));
      const either = new AbortController();
      onAbort = () => either.abort();
      closing.addEventListener('abort', onAbort, { once: true });
      signal?.addEventListener('abort', onAbort, { once: true });
      if (closing.aborted || signal?.aborted === true) either.abort();
      const options = { mode, hold: Infinity, waitTimeout: left, signal: either.signal };
      if (fks.length === 1) return [await this.table.acquire(fks[0]!, options)];
      return await this.table.acquireAll(fks, options);
    } catch (error) {
      throw this.#failure(error, key, waitTimeout, signal);
    } finally {
      if (onAbort !== undefined) {
        closing.removeEventListener('abort', onAbort);
        signal?.removeEventListener('abort', onAbort);
      }
    }
  }

  /** What a failure of the table's acquire becomes for the caller of take() or tryTakeOne(). */
  #failure(
    error: unknown,
    key: string,
    waitTimeout: number,
    signal: AbortSignal | undefined,
  ): unknown {
    if (this.#closing.signal.aborted) return closedError(key);
    if (signal?.aborted) return new AbortError(key, signal.reason);
    if (error instanceof LockError && error.code === 'ERR_LOCK_TIMEOUT') {
      return timeoutError(key, waitTimeout);
    }
    if (error instanceof LockError && error.code === 'ERR_LOCK_TABLE_FULL') {
      return new LockError(
        'ERR_LOCK_TABLE_FULL',
        key,
        `Cannot lock ${describeKey(key)}: the LockTable in front of the server (options.table) ` +
          `has no free slot (capacity ${this.table.capacity}, shared with the application's ` +
          'own keys). Create it with a larger capacity',
        { cause: error },
      );
    }
    return error;
  }

  /** close(): every queued request fails with ERR_LOCK_CLOSED, every table wait ends. */
  close(): void {
    this.#closing.abort();
    for (const [fk, queue] of this.#queues) {
      for (const waiter of queue.waiters.splice(0))
        waiter.fail(closedError(fk.slice(this.#prefix.length)));
    }
  }
}

/** Releases table leases, whatever state they are in. */
export function releaseAll(leases: readonly Lease[]): void {
  for (const lease of leases) {
    try {
      if (lease.held) lease.release();
    } catch {
      // Already lost (forced off the table): nothing to give back.
    }
  }
}

/**
 * The front part of one holding: its table leases and, for a single exclusive key (`cohort`),
 * the streak that hands it among this table's waiters.
 */
export class FrontHold implements FrontPart {
  readonly #front: Front;
  readonly #fk: string;
  readonly #leases: readonly Lease[];
  readonly #cohort: boolean;
  #left = false;
  /** The server's fence of this holding's grant, and the cohort grant index (0 = the server's). */
  #fence = 0n;
  #index = 0;
  #grantAt = 0;
  #lockId = 0;
  #key = '';

  constructor(front: Front, fk: string, leases: readonly Lease[], cohort: boolean) {
    this.#front = front;
    this.#fk = fk;
    this.#leases = leases;
    this.#cohort = cohort;
  }

  /** The server granted the (first) key: its token in the front's format. */
  granted(key: string, lockId: number, fence: bigint): bigint {
    this.#key = key;
    this.#lockId = lockId;
    this.#fence = fence;
    this.#grantAt = monotonicNow();
    this.#front.stats.serverGrants++;
    return fence << COHORT_BITS;
  }

  passOn(holding: Holding): boolean {
    if (!this.#cohort || this.#left) return false;
    const front = this.#front;
    if (this.#index + 1 >= front.cohortLimit) return false;
    if (monotonicNow() - this.#grantAt >= front.cohortMs) return false;
    const waiter = front.takeWaiter(this.#fk);
    if (waiter === undefined) return false;
    this.#index++;
    front.stats.handoffs++;
    const token = (this.#fence << COHORT_BITS) | BigInt(this.#index);
    waiter.take(holding.add(this.#key, 'exclusive', this.#lockId, token));
    return true;
  }

  leave(): void {
    if (this.#left) return;
    this.#left = true;
    releaseAll(this.#leases);
    if (this.#cohort) this.#front.next(this.#fk);
  }
}
