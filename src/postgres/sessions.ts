/**
 * The backend's own sessions: opened lazily, up to poolSize, each lent to one request at a time
 * and kept by the lease (or acquireAll group) it produced until that is released. This is not a
 * connection pool in pg.Pool's sense: a session is never lent while it holds a lock, so no other
 * request's statement (or lock wait) can run on it, and a release always goes through the session
 * that took the lock.
 *
 * A request that finds all poolSize sessions lent waits here, in FIFO order, within its
 * waitTimeout and signal; with waitTimeout 0 it fails at once (ERR_LOCK_TABLE_FULL). One that
 * opens a new session waits for it within its signal (the opening is not a wait for the lock:
 * pg's connectionTimeoutMillis bounds it, see options.ts); if it is aborted first, the session
 * goes on opening and is lent to the next request. close() cancels the sessions still opening.
 */
import { setMaxListeners } from 'node:events';
import type pg from 'pg';
import { AbortError } from '../api/errors.js';
import { callAt, monotonicNow } from '../api/clock.js';
import { closedError, connectionError, poolFullError, sessionWaitTimeoutError } from './errors.js';
import { MAX_SERVER_MS } from './options.js';
import { Session } from './session.js';

interface Waiter {
  key: string;
  resolve: (session: Session) => void;
  reject: (error: unknown) => void;
}

export class Sessions {
  readonly #config: pg.ClientConfig;
  readonly size: number;
  readonly #idle: Session[] = [];
  /** Every session open or opening, lent or idle. */
  readonly #all = new Set<Session>();
  #opening = 0;
  readonly #waiters: Waiter[] = [];
  #closed = false;
  /** Aborted by close(): cancels the sessions still opening (Session.open). */
  readonly #closing = new AbortController();

  readonly #onShared: (session: Session) => void;
  /** The lease (ms, Infinity: none): each session's idle_session_timeout; heartbeats every lease / 4. */
  readonly #lease: number;

  /**
   * `lease`: the table's (ms, or Infinity). `onShared`: a session found its statements on
   * another's server process (Session.onShared).
   */
  constructor(
    config: pg.ClientConfig,
    size: number,
    lease: number,
    onShared: (session: Session) => void = () => {},
  ) {
    this.#onShared = onShared;
    this.#config = config;
    this.size = size;
    this.#lease = lease;
    // Each session opening listens to #closing (Session.open), up to size at once: above Node's
    // default of 10 listeners a signal warns of a leak (MaxListenersExceededWarning).
    setMaxListeners(size, this.#closing.signal);
  }

  /** Sessions open or opening. */
  get count(): number {
    return this.#all.size + this.#opening;
  }

  /** Every open session (for close()). */
  get all(): Session[] {
    return [...this.#all];
  }

  /**
   * A session for one request: an idle one, a new one (up to size), or the next one checked in.
   * `waitTimeout` (from `start`) and `signal` bound the wait for a session lent to others (0: do
   * not wait); `signal` and close() the wait for a new one to open, which is not a wait for the
   * lock: pg's connectionTimeoutMillis bounds it (options.ts gives it a default).
   */
  async checkout(key: string, waitTimeout: number, start: number, signal: AbortSignal | undefined) {
    if (this.#closed) throw closedError(key);
    const idle = this.takeIdle();
    if (idle !== undefined) return idle;
    if (this.count < this.size) {
      if (signal?.aborted === true) throw new AbortError(key, signal.reason);
      const opening = this.#open(key);
      if (signal === undefined) return opening;
      return this.#wait(key, signal, undefined, (waiter) => {
        opening.then(waiter.resolve, waiter.reject);
      });
    }
    if (waitTimeout === 0) throw poolFullError(key, this.size);
    if (monotonicNow() - start >= waitTimeout) {
      throw sessionWaitTimeoutError(key, waitTimeout, this.size);
    }
    const deadline = {
      at: start + waitTimeout,
      error: () => sessionWaitTimeoutError(key, waitTimeout, this.size),
    };
    return this.#wait(key, signal, deadline, (waiter) => {
      this.#waiters.push(waiter);
    });
  }

  /**
   * A waiter for a session, passed to `register` (the FIFO queue, or a session opening), that
   * gives up when `signal` aborts or at `deadline.at` (monotonicNow() ms; Infinity: never) with
   * `deadline.error()`. A session that reaches it after it gave up is checked in for the next
   * request.
   */
  #wait(
    key: string,
    signal: AbortSignal | undefined,
    deadline: { at: number; error: () => Error } | undefined,
    register: (waiter: Waiter) => void,
  ): Promise<Session> {
    if (signal?.aborted === true) return Promise.reject(new AbortError(key, signal.reason));
    return new Promise<Session>((resolve, reject) => {
      let cancelTimer = (): void => {};
      const done = () => {
        cancelTimer();
        signal?.removeEventListener('abort', onAbort);
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
      };
      let settled = false;
      const waiter: Waiter = {
        key,
        resolve: (session) => {
          // Timed out or aborted while a session was being opened for it: pass the session on.
          if (settled) return this.checkin(session);
          settled = true;
          done();
          resolve(session);
        },
        reject: (error) => {
          if (settled) return;
          settled = true;
          done();
          reject(error);
        },
      };
      const onAbort = () => waiter.reject(new AbortError(key, signal!.reason));
      if (deadline !== undefined && Number.isFinite(deadline.at)) {
        // What is left of the request's wait, never early (callAt).
        cancelTimer = callAt(deadline.at, () => waiter.reject(deadline.error()));
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      register(waiter);
    });
  }

  /**
   * An idle session, in the caller's task (the uncontended path: no promise to await), or
   * undefined when none is idle (or the set is closed): the caller then goes through checkout().
   */
  takeIdle(): Session | undefined {
    if (this.#closed) return undefined;
    while (this.#idle.length > 0) {
      const session = this.#idle.pop()!;
      if (session.alive) return session;
    }
    return undefined;
  }

  /** Gives back a session that holds nothing: to the first waiter, or to the idle list. */
  checkin(session: Session): void {
    if (!session.alive || this.#closed) {
      this.#forget(session);
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter.resolve(session);
    else this.#idle.push(session);
  }

  /** Ends a session whose state is unknown (a failed reset, a pooler) and frees its place. */
  discard(session: Session): void {
    void session.end();
    this.#forget(session);
  }

  /** Refuses every later checkout and every waiter; the caller ends the sessions. */
  close(): void {
    this.#closed = true;
    this.#closing.abort();
    for (const waiter of this.#waiters.splice(0)) waiter.reject(closedError(waiter.key));
    this.#idle.length = 0;
  }

  async #open(key: string): Promise<Session> {
    this.#opening++;
    let session: Session;
    try {
      // lease Infinity: the longest timeout the server takes (~24.8 days), so that a role's,
      // database's or server's own idle_session_timeout cannot end a holder that sends no
      // heartbeat.
      const lease = this.#lease;
      session = await Session.open(
        this.#config,
        lease === Infinity ? MAX_SERVER_MS : Math.ceil(lease),
        this.#closing.signal,
      );
    } catch (error) {
      this.#opening--;
      this.#serveWaiterWithNewSession();
      if (this.#closed) throw closedError(key);
      throw connectionError(key, error);
    }
    this.#opening--;
    if (this.#closed) {
      await session.end();
      throw closedError(key);
    }
    session.onShared = this.#onShared;
    // From now to its end, idle or holding: the server ends a session silent for the lease.
    session.startHeartbeat(this.#lease / 4);
    this.#all.add(session);
    // A session that ends while idle (the server restarted, an admin ended it) leaves the set.
    session.onEnd(() => this.#forget(session));
    return session;
  }

  #forget(session: Session): void {
    const i = this.#idle.indexOf(session);
    if (i >= 0) this.#idle.splice(i, 1);
    if (this.#all.delete(session)) this.#serveWaiterWithNewSession();
  }

  /** A place came free while requests wait for a session: open one for the first of them. */
  #serveWaiterWithNewSession(): void {
    if (this.#closed || this.count >= this.size) return;
    const waiter = this.#waiters.shift();
    if (waiter === undefined) return;
    this.#open(waiter.key).then(waiter.resolve, waiter.reject);
  }
}
