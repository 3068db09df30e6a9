/**
 * PgLease: one grant of one key, held by one of the backend's sessions. A Holding is what a
 * session holds for one request: one lease (acquire, tryAcquire, run) or the leases of one
 * acquireAll. The session stays with its Holding until every lease of it is released, then goes
 * back to the backend's set; it sends heartbeats all its life (see Session.startHeartbeat).
 *
 * A lease whose session ends (the server ended it: its lease timeout, pg_terminate_backend, a
 * restart, the network) has lost its lock: `held` is false, `signal` aborts, and release()
 * throws ERR_LOCK_STALE. It never reconnects and carries on.
 */
import { inspect, type InspectOptions } from 'node:util';
import { describeKey, LockError, releasedError } from '../api/errors.js';
import type { LockLease } from '../api/locks.js';
import type { Mode } from '../api/options.js';
import { closedLeaseError, sqlState } from './errors.js';
import type { Session } from './session.js';
import { releaseStatement } from './sql.js';

const HELD = 0;
const RELEASED = 1;
const LOST = 2;
const CLOSED = 3;

export function pgStaleError(key: string, what: string, cause?: unknown): LockError {
  return new LockError(
    'ERR_LOCK_STALE',
    key,
    `Cannot ${what}: this lease on ${describeKey(key)} lost its lock when its PostgreSQL session ` +
      'ended (the server ended it: the lease timeout passed without a heartbeat, ' +
      'pg_terminate_backend, a restart, or the network). Whatever it protected may have been ' +
      "changed by the next holder: check the fencing token. Use a longer 'lease' if this process " +
      'stalls',
    cause === undefined ? undefined : { cause },
  );
}

/**
 * The shared-table side of a Holding (front.ts): the table leases it holds in front of the server
 * locks, and, for a single exclusive key, the cohort that may hand the holding on.
 */
export interface FrontPart {
  /**
   * The holding's last lease is being released with its session alive: true when the holding
   * was handed to a waiter of this process (a new lease added to it), so nothing is unlocked.
   */
  passOn(holding: Holding): boolean;
  /**
   * The server locks are gone (unlocked, or the session ended): release the table leases and let
   * the next local waiter go. Idempotent.
   */
  leave(): void;
}

/** What a Holding needs from its table. */
export interface HoldingHost {
  readonly namespace: number;
  /** The session holds nothing any more: give it back (or forget it, if it ended). */
  finished(holding: Holding): void;
  /** The session's state is unknown (a failed release): end it. */
  discard(holding: Holding): void;
}

export class Holding {
  readonly session: Session;
  readonly leases: PgLease[] = [];
  #live = 0;
  readonly #host: HoldingHost;
  readonly #unsubscribe: () => void;
  /** The shared-table leases in front of this holding's server locks. */
  readonly front: FrontPart | undefined;

  constructor(host: HoldingHost, session: Session, front?: FrontPart) {
    this.#host = host;
    this.session = session;
    this.front = front;
    this.#unsubscribe = session.onEnd((reason) => {
      for (const lease of this.leases) lease.lose(reason);
      // The server freed the locks with the session: the table leases go too, and so does the
      // session's place in the backend's set (a lost lease that is never released must not keep
      // it). A later release() of a lost lease finds all this done (each step is idempotent).
      this.front?.leave();
      this.#host.finished(this);
    });
  }

  get namespace(): number {
    return this.#host.namespace;
  }

  add(key: string, mode: Mode, lockId: number, token: bigint): PgLease {
    const lease = new PgLease(this, key, mode, lockId, token);
    this.leases.push(lease);
    this.#live++;
    return lease;
  }

  /** One lease is being released: true when it is the session's last. */
  releasing(): boolean {
    return --this.#live === 0;
  }

  /** Every lease released (its last release answered, or the session ended). */
  finish(): void {
    this.#unsubscribe();
    this.#host.finished(this);
    this.front?.leave();
  }

  discard(): void {
    this.#unsubscribe();
    for (const lease of this.leases) lease.lose(undefined);
    this.#host.discard(this);
    this.front?.leave();
  }

  /** close(): the table ends the session, which releases everything. */
  close(reason: LockError): void {
    this.#unsubscribe();
    for (const lease of this.leases) lease.closeByTable(reason);
    this.front?.leave();
  }
}

export class PgLease implements LockLease, AsyncDisposable {
  /** The key this lease holds. */
  readonly key: string;
  /** 'exclusive' or 'shared'. */
  readonly mode: Mode;
  /**
   * The fencing token: strictly increasing for this key (in this namespace and database) across
   * every grant, process, reconnect and server crash: drawn after the grant, in the same round
   * trip, from a sequence whose range is an epoch committed durably before (sql.ts, version 3).
   */
  readonly token: bigint;
  /** @internal The key's id in locktable.keys: the lock is (namespace, lockId). */
  readonly lockId: number;
  readonly #holding: Holding;
  #state = HELD;
  /** Made when `signal` is first read, or when the lease is lost or closed: most never are. */
  #lost: AbortController | undefined;

  /** @internal Leases are made by PgLockTable. */
  constructor(holding: Holding, key: string, mode: Mode, lockId: number, token: bigint) {
    this.#holding = holding;
    this.key = key;
    this.mode = mode;
    this.lockId = lockId;
    this.token = token;
  }

  [inspect.custom](_depth: number, options: InspectOptions): string {
    const { key, mode, token, held, pid } = this;
    return `PgLease ${inspect({ key, mode, token, held, pid }, options)}`;
  }

  /** True while this lease holds its lock: false once released, lost or closed. */
  get held(): boolean {
    return this.#state === HELD && this.#holding.session.alive;
  }

  /**
   * Aborts when the lease loses its lock (its session ended), with an ERR_LOCK_STALE as reason;
   * also when close() releases it. Not aborted by a release. Pass it to the work the lock guards.
   */
  get signal(): AbortSignal {
    return (this.#lost ??= new AbortController()).signal;
  }

  /** The PostgreSQL server process that holds the lock (as inspect() shows it). */
  get pid(): number {
    return this.#holding.session.pid;
  }

  /**
   * Releases the lock, through the session that took it (one round trip). Rejects with
   * ERR_LOCK_RELEASED when already released, ERR_LOCK_STALE when the lock was lost (its session
   * ended, now or before), ERR_LOCK_CLOSED when close() released it.
   */
  async release(): Promise<void> {
    const state = this.#state;
    if (state === RELEASED) throw releasedError(this.key, 'release the lease');
    if (state === CLOSED) throw closedLeaseError(this.key, 'release the lease');
    this.#state = RELEASED;
    const holding = this.#holding;
    const session = holding.session;
    if (state === HELD && session.alive && holding.front?.passOn(holding) === true) {
      // Handed to a waiter of this process (lock cohorting): the locks stay, nothing to send.
      holding.releasing();
      return;
    }
    const last = holding.releasing();
    if (state === LOST || !session.alive) {
      if (last) holding.finish();
      throw pgStaleError(this.key, 'release the lease', session.endReason);
    }
    let released: boolean;
    try {
      const rows = await session.rowsHolding(releaseStatement(this.mode === 'exclusive'), [
        holding.namespace,
        this.lockId,
        session.marker,
      ]);
      if (rows.length === 0) {
        // It ran on another session's server process (a pooler): the lock is still on this
        // session's own, which is terminated (Session.shared); the lease reports it lost.
        session.shared();
        if (last) holding.finish();
        throw pgStaleError(this.key, 'release the lease', session.endReason);
      }
      released = rows[0]![0] === 't';
    } catch (error) {
      if (!session.alive || sqlState(error) === undefined) {
        if (last) holding.finish();
        throw pgStaleError(this.key, 'release the lease', error);
      }
      // A server error on an unlock: the session's state is unknown, so it is ended, which
      // releases whatever it held.
      holding.discard();
      throw error;
    }
    if (!released) {
      // The session did not hold the lock: it is not the session that took it (a pooler).
      holding.discard();
      throw pgStaleError(this.key, 'release the lease');
    }
    if (last) holding.finish();
  }

  /** Releases unless already released or closed. A lost lease throws ERR_LOCK_STALE. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#state === HELD || this.#state === LOST) await this.release();
  }

  /** @internal The session ended. */
  lose(reason: unknown): void {
    if (this.#state !== HELD) return;
    this.#state = LOST;
    (this.#lost ??= new AbortController()).abort(pgStaleError(this.key, 'hold the lock', reason));
  }

  /** @internal close() released it. */
  closeByTable(reason: LockError): void {
    if (this.#state !== HELD) return;
    this.#state = CLOSED;
    (this.#lost ??= new AbortController()).abort(reason);
  }
}
