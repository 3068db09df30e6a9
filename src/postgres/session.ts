/**
 * One session: a `pg.Client` the backend opened itself and never shares with a pool. Session
 * advisory locks belong to the server process behind it, so every statement about a lease goes
 * through the lease's own session, and a release never queues behind another request's lock wait.
 *
 * Its lifecycle: open (connect + SESSION_START) -> idle in the backend's set <-> holding leases
 * -> ended (by close(), or lost: the server or the network ended it). A lock session's
 * idle_session_timeout is the lease from its start, so it sends a heartbeat every lease / 4 from
 * then to its end, idle or holding. An 'error' listener is always attached, so a session the
 * server ends never crashes the process.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { monotonicNow } from '../api/clock.js';
import { POOLER_STATES, SharedSessionError, sqlState } from './errors.js';
import { BoundStatements, type QueryConfig, RawQuery, type RawRow } from './raw-query.js';
import { HEARTBEAT, SESSION_START } from './sql.js';

export type { QueryConfig };

export type { RawRow };

/**
 * A statement's parameters, or a function that makes them when the statement is sent: a lock
 * wait's lock_timeout is what is left of the request's waitTimeout then, after any time spent
 * queued behind another statement of the session (a heartbeat).
 */
export type Values = unknown[] | (() => unknown[]);

function valuesOf(values: Values): unknown[] {
  return typeof values === 'function' ? values() : values;
}

/**
 * A statement withdrawn before it was sent (Session.withdraw): it waited for its turn behind
 * another statement of the session, and its request was aborted. Nothing of it reached the server.
 */
export class StatementWithdrawn extends Error {
  constructor() {
    super('locktable: the statement was withdrawn before it was sent');
  }
}

/** A statement's reply bound: a time (monotonicNow ms), a tick (Session.#ticks), or both Infinity. */
interface Bound {
  /** When its reply is overdue (monotonicNow ms; Infinity: never): see Session.#overdue. */
  readonly due: number;
  /** The tick (Session.#ticks) at which its reply is overdue (Infinity: none): see rowsHolding. */
  readonly dueTick: number;
}

/** A statement waiting for its turn (Session.#turn). */
interface Waiting {
  /** Its turn has come: it is sent now. */
  go(): void;
  /** Withdrawn before its turn (Session.withdraw). */
  withdraw(): void;
  /** What Session.withdraw matches: the request's signal. */
  signal: AbortSignal | undefined;
  /** Its reply's bound, counted from when it was handed to the session. */
  bound: Bound;
}

/** No bound: neither a time nor a tick. */
const NO_BOUND: Bound = { due: Infinity, dueTick: Infinity };

/** Why a tick cut the session: a statement's reply `due` (ms; Infinity: its bound was a tick). */
function overdueReason(now: number, due: number): string {
  const past = Number.isFinite(due) ? `${Math.round(now - due)} ms past it, ` : '';
  return `no reply from the server by its bound (${past}at a tick)`;
}

/** The lease in ticks: the heartbeat, and so the tick, runs every lease / 4. */
const LEASE_TICKS = 4;

/**
 * How long end() waits for the server to close the connection after Terminate before it destroys
 * the socket itself (a frozen server process, a cut network): see Session.end.
 */
export const END_GRACE_MS = 1000;

/** The longest delay setTimeout takes; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Session {
  readonly client: pg.Client;
  /** The server process id seen when the session opened. */
  pid = 0;
  /**
   * When that server process started (sql.ts, SESSION_START): with `pid`, its identity for
   * TERMINATE, since a pid is reused once its process has ended.
   */
  started = '';
  /**
   * This session's marker, set on its server process by SESSION_START and checked by every grant
   * and heartbeat: a process that carries another marker is shared (a pooler).
   */
  readonly marker = `locktable:${randomUUID()}`;
  /**
   * Called when a statement of this session turned out to run on a server process that is not
   * its own (a pooler): the session's own process may still hold its locks, and ending this
   * client does not end it, so the owner terminates it by pid and start (from its control
   * session).
   */
  onShared: (session: Session) => void = () => {};
  /**
   * Set once a grant on this session ran locktable.grant (ACQUIRE), which makes sure the token
   * epoch was started after the server's last crash. A crash ends every session, so from then on,
   * for this session's whole life, the fast grant (sql.ts, fastGrant) may draw tokens without looking at `alive`.
   */
  epochSeen = false;
  /**
   * When the server this session reached last started (pg_postmaster_start_time): another value
   * is another server run, maybe a restore or a failover, whose key ids may differ.
   */
  serverStart = '';
  /** Set once the connection is gone, for whatever reason. */
  #ended = false;
  /** Why it ended: undefined while alive; the error the connection reported, if any. */
  endReason: unknown;
  /** Set by end(): the backend ended it on purpose (close(), a discarded session). */
  endedOnPurpose = false;
  readonly #onEnd = new Set<(reason: unknown) => void>();
  /** The hot statements' Bind + Execute + Sync bytes, for their last parameters (raw-query.ts). */
  readonly #bound = new BoundStatements();
  /** Statements sent and not answered yet (0 or 1: see #turn). */
  #inflight = 0;
  /** Statements waiting for the one in flight (see #turn), first first. */
  readonly #waiting: Waiting[] = [];
  /**
   * The session's tick, every lease / 4 from startHeartbeat to the session's end (or to
   * stopHeartbeat, once nothing is in flight): it sends a
   * heartbeat when no statement is in flight (while #beating), and cuts the session when a
   * statement's reply is overdue (#overdue). undefined: no tick (the control session, a lease
   * of Infinity, an ended session).
   */
  #tick: NodeJS.Timeout | undefined;
  /** True while the tick sends heartbeats: from startHeartbeat to stopHeartbeat or end(). */
  #beating = false;
  /**
   * The bound of the reply to the statement in flight, counted from when it was handed to the
   * session (queued time included); NO_BOUND for none, or no statement in flight.
   */
  #inflightBound = NO_BOUND;
  /** Ticks so far: each #onTick counts one before it checks the bounds. */
  #ticks = 0;

  private constructor(client: pg.Client) {
    this.client = client;
    // A server-ended session makes pg emit 'error' (when idle) and then 'end'. Both only mark the
    // session ended: whoever uses it learns it from `alive`, onEnd and its failed statements.
    client.on('error', (error) => this.#markEnded(error));
    client.on('end', () => this.#markEnded(undefined));
    // A NOTICE or WARNING (pg_advisory_unlock of a lock not held) is not an error of ours.
    client.on('notice', () => {});
  }

  /**
   * Connects and runs SESSION_START. Rejects (with the connection closed) on any failure, with
   * ERR_LOCK_POOLER when the server process is already another session's. `leaseMs`: a lock
   * session's idle_session_timeout for its whole life (the caller starts its heartbeat);
   * undefined for the control session, which keeps the server's own. `config`'s
   * connectionTimeoutMillis (0: none) bounds the whole opening, SESSION_START's reply included:
   * pg's own bound ends at the startup's ReadyForQuery, and a server that answers the startup and
   * then nothing (its process frozen, a pooler whose server never comes) would leave the session
   * opening, and its request waiting, as long as TCP does. `cancel`: aborting it destroys the
   * socket of a session still opening, and open() rejects.
   */
  static async open(
    config: pg.ClientConfig,
    leaseMs?: number,
    cancel?: AbortSignal,
  ): Promise<Session> {
    const session = new Session(new pg.Client(config));
    // cut() without client.end(): pg fails a connect whose socket closes unless end() was called.
    const onCancel = () => session.cut('the session was cancelled while it opened');
    cancel?.addEventListener('abort', onCancel, { once: true });
    const bound = config.connectionTimeoutMillis ?? 0;
    let late: Error | undefined;
    // Set before pg's own timer of the same ms (client.connect), so it fires first.
    const timer =
      bound > 0
        ? setTimeout(() => {
            late = new Error(`the server did not open a session within ${bound} ms`);
            session.cut(late.message);
          }, bound)
        : undefined;
    try {
      if (cancel?.aborted === true) throw new Error('the session was cancelled before it opened');
      await session.client.connect();
      let rows;
      try {
        ({ rows } = await session.query(SESSION_START, [
          session.marker,
          leaseMs === undefined ? null : String(leaseMs),
        ]));
      } catch (error) {
        const state = sqlState(error);
        if (state !== undefined && POOLER_STATES.has(state)) {
          throw new SharedSessionError(`a new session found server state it never made (${state})`);
        }
        throw error;
      }
      const previous: unknown = rows[0].previous;
      if (typeof previous === 'string' && previous.startsWith('locktable:')) {
        throw new SharedSessionError(
          `a new session's server process ${rows[0].pid} already carries another locktable session`,
        );
      }
      session.pid = Number(rows[0].pid);
      session.started = String(rows[0].started);
      session.serverStart = String(rows[0].server_start);
      return session;
    } catch (error) {
      clearTimeout(timer);
      await session.end();
      throw late ?? error;
    } finally {
      clearTimeout(timer);
      cancel?.removeEventListener('abort', onCancel);
    }
  }

  get alive(): boolean {
    return !this.#ended;
  }

  /** True while a statement is on the wire (a lock wait, say). */
  get busy(): boolean {
    return this.#inflight > 0;
  }

  /** Calls `fn` once when the session ends (at once if it has). Returns an unsubscribe function. */
  onEnd(fn: (reason: unknown) => void): () => void {
    if (this.#ended) {
      fn(this.endReason);
      return () => {};
    }
    this.#onEnd.add(fn);
    return () => this.#onEnd.delete(fn);
  }

  /**
   * One statement at a time goes to pg: a statement that comes while another is in flight (a
   * request that took an idle session while its heartbeat ran, a release during a heartbeat)
   * waits here for its turn, instead of in pg's queue (pg deprecates a query sent while one runs,
   * with a DeprecationWarning, and will remove it). undefined: the turn is this statement's now;
   * else a promise of it, which rejects with StatementWithdrawn if withdraw(signal) takes the
   * statement out of the queue first. Each turn ends with #done.
   */
  #turn(signal: AbortSignal | undefined, bound: Bound): Promise<void> | undefined {
    if (this.#inflight === 0) {
      this.#inflight = 1;
      this.#inflightBound = bound;
      return undefined;
    }
    return new Promise<void>((resolve, reject) =>
      this.#waiting.push({
        go: resolve,
        withdraw: () => reject(new StatementWithdrawn()),
        signal,
        bound,
      }),
    );
  }

  /**
   * The statement in flight is answered (called in the same task as the reply is read, so a
   * tick never finds an answered statement overdue): the next waiting one goes (the session
   * stays busy), its reply due when it was when queued.
   */
  #done(): void {
    const next = this.#waiting.shift();
    if (next !== undefined) {
      this.#inflightBound = next.bound;
      next.go();
    } else {
      this.#inflight = 0;
      this.#inflightBound = NO_BOUND;
      if (!this.#beating) this.#stopTick();
    }
  }

  /**
   * On each tick: whether a statement's reply is overdue, in flight or queued behind it (the one
   * in flight is then overdue too, or was answered in this very task: #done runs as its reply is
   * read). Two kinds of bound: a time, `ms` after its statement was handed to the session
   * (rowsWithin), which the tick sees at most one interval (lease / 4) later, so the bound a
   * caller gets is `ms` plus that interval (plus the event loop's own lateness, which a timer has
   * too); or a tick (rowsHolding), counted, so that a bound of exactly four intervals is not left
   * to whether the fourth tick ran a few microseconds late. A string for the cut's reason, or
   * undefined.
   */
  #overdue(now: number, tick: number): string | undefined {
    const overdue = (b: Bound) => b.due < now || b.dueTick <= tick;
    if (overdue(this.#inflightBound)) return overdueReason(now, this.#inflightBound.due);
    for (const waiting of this.#waiting) {
      if (overdue(waiting.bound)) return overdueReason(now, waiting.bound.due);
    }
    return undefined;
  }

  /**
   * Takes the statements sent with `signal` out of the queue, if they still wait for their turn
   * (behind a heartbeat, say): they are never sent, and reject with StatementWithdrawn. True when
   * one was: nothing of it reached the server, so there is nothing to cancel there. Called by the
   * request's own abort listener.
   */
  withdraw(signal: AbortSignal): boolean {
    let found = false;
    for (let i = this.#waiting.length - 1; i >= 0; i--) {
      const waiting = this.#waiting[i]!;
      if (waiting.signal !== signal) continue;
      this.#waiting.splice(i, 1);
      waiting.withdraw();
      found = true;
    }
    return found;
  }

  /**
   * A statement through pg's own Query (rows as objects, parsed by pg). `signal`: the request's,
   * for withdraw().
   */
  async query(
    statement: QueryConfig,
    values: Values,
    signal?: AbortSignal,
    bound: Bound = NO_BOUND,
    // pg's row type is `any`: each caller reads its own columns.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ): Promise<pg.QueryResult<any>> {
    const turn = this.#turn(signal, bound);
    // Withdrawn: the turn never was this statement's (no #done).
    if (turn !== undefined) await turn;
    try {
      return await this.client.query({
        name: statement.name,
        text: statement.text,
        values: valuesOf(values),
      });
    } catch (error) {
      this.#endedBy(error);
      throw error;
    } finally {
      this.#done();
    }
  }

  /**
   * A FATAL (class 57P: the server ended the session, e.g. idle_session_timeout's 57P05) reaches
   * the statement in flight, whichever it is (a heartbeat too), and pg emits no 'error' for it:
   * the session's end reason is that error, so that a statement queued behind it, failed by pg
   * as "Connection terminated" with no SQLSTATE, is known to have met a session the server ended
   * (Sessions' retry of an idle session the server ended).
   */
  #endedBy(error: unknown): void {
    if (error !== null && error !== undefined && sqlState(error)?.startsWith('57P'))
      this.#markEnded(error);
  }

  /**
   * The hot statements (a known key's grant, a release, a heartbeat): sent as a RawQuery, their
   * rows as the server's text, columns by position.
   */
  rows(
    statement: QueryConfig,
    values: Values,
    signal?: AbortSignal,
    bound: Bound = NO_BOUND,
  ): Promise<RawRow[]> {
    const turn = this.#turn(signal, bound);
    if (turn === undefined) return this.#sendRows(statement, values);
    // Withdrawn: the rejection passes on, and the turn never was this statement's (no #done).
    return turn.then(() => this.#sendRows(statement, values));
  }

  #sendRows(statement: QueryConfig, values: Values): Promise<RawRow[]> {
    let bytes: Buffer;
    try {
      // Before pg sees the statement (see RawQuery): a throw here (a parameter with no text, a
      // values function that throws) rejects it, and its turn ends, with nothing sent.
      bytes = this.#bound.bytes(statement.name, valuesOf(values));
    } catch (error) {
      this.#done();
      return Promise.reject(error as Error);
    }
    return new Promise<RawRow[]>((resolve, reject) => {
      const query = new RawQuery(statement, bytes, (error, rows) => {
        this.#endedBy(error);
        this.#done();
        if (error === null) resolve(rows!);
        else reject(error);
      });
      try {
        this.client.query(query);
      } catch (error) {
        // pg refused it at once (it answers a dead client through the callback): the turn ends.
        query.handleError(error as Error);
      }
    });
  }

  /**
   * rows() for a statement of a session that may hold leases (a release, a heartbeat), whose reply
   * must come within the lease: a reply that has not come by then never will in time (the network
   * is cut, or the server is frozen), and waiting for TCP to notice could take hours, during which
   * the key would stay taken in this process (the front) although the server may have freed it.
   * So the session is cut: its socket destroyed, the session ended, the statement rejected. That
   * is safe: the server either ran the statement (an unlock) or, silent for the lease, ends the
   * session itself (idle_session_timeout), which frees its locks. The bound is counted in ticks
   * (the lease is four of them): the cut comes at the fifth tick after the statement was handed
   * over, the first that is sure to be a lease after it (it was handed between two ticks), so
   * between the lease and a lease and a quarter after it. A heartbeat, sent at a tick, is cut
   * at the fourth tick after (#heartbeat).
   */
  rowsHolding(statement: QueryConfig, values: Values): Promise<RawRow[]> {
    return this.#rowsForTicks(statement, values, LEASE_TICKS + 1);
  }

  /** rows() whose reply is overdue at the `ticks`-th tick from now (none without a heartbeat). */
  #rowsForTicks(statement: QueryConfig, values: Values, ticks: number): Promise<RawRow[]> {
    if (!this.#beating) return this.rows(statement, values);
    return this.rows(statement, values, undefined, {
      due: Infinity,
      dueTick: this.#ticks + ticks,
    });
  }

  /**
   * rows() whose reply must come within `ms` (Infinity: no bound), else the session is cut. On a
   * session with a tick (a lock session with a finite lease), the tick checks the bound: the cut
   * comes at most one tick (lease / 4) after `ms` (#overdue). Without one, a timer does.
   */
  rowsWithin(
    statement: QueryConfig,
    values: Values,
    ms: number,
    signal?: AbortSignal,
  ): Promise<RawRow[]> {
    if (!(ms <= MAX_TIMER_MS)) return this.rows(statement, values, signal);
    if (this.#tick !== undefined) {
      return this.rows(statement, values, signal, { due: monotonicNow() + ms, dueTick: Infinity });
    }
    return this.#timed(ms, () => this.rows(statement, values, signal));
  }

  /**
   * A statement whose reply must come within `ms` (Infinity: no bound), else the session is cut
   * (see rowsHolding, rowsWithin): a lock wait with a finite waitTimeout, a cancel on the control
   * session.
   */
  queryWithin(
    statement: QueryConfig,
    values: Values,
    ms: number,
    signal?: AbortSignal,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ): Promise<pg.QueryResult<any>> {
    if (!(ms <= MAX_TIMER_MS)) return this.query(statement, values, signal);
    if (this.#tick !== undefined) {
      return this.query(statement, values, signal, { due: monotonicNow() + ms, dueTick: Infinity });
    }
    return this.#timed(ms, () => this.query(statement, values, signal));
  }

  /** Runs `send`, cutting the session if its reply has not come in `ms` (a session with no tick). */
  async #timed<T>(ms: number, send: () => Promise<T>): Promise<T> {
    const timer = setTimeout(() => this.cut(`no reply from the server in ${ms} ms`), ms);
    try {
      return await send();
    } finally {
      clearTimeout(timer);
    }
  }

  /** A statement of this session ran on another session's server process: see onShared. */
  shared(): void {
    if (this.#ended) return;
    this.onShared(this);
    this.cut('its statement ran on another session’s server process (a transaction-mode pooler)');
  }

  /**
   * Destroys the socket of a session whose reply did not come in `ms` (see rowsHolding): the
   * session ends, and its statement in flight rejects.
   */
  cut(why: string): void {
    if (this.#ended) return;
    this.#markEnded(new Error(`${why}: the session was cut off`));
    this.#destroySocket();
  }

  /** pg's Connection keeps its socket as `stream`: destroying it rejects the pending query. */
  #destroySocket(): void {
    const stream = (this.client as unknown as { connection?: { stream?: { destroy(): void } } })
      .connection?.stream;
    stream?.destroy();
  }

  /**
   * From a lock session's opening to its end: a HEARTBEAT every `intervalMs` when no statement is
   * in flight, so the server's idle_session_timeout (the lease, set by SESSION_START) ends the
   * session only if this process stops talking, whether the session holds leases or waits idle in
   * the set (an idle session ended by the server would fail the next request that takes it). A
   * heartbeat that finds another server process (a pooler) ends the session: its locks are not
   * where the leases think they are. The same tick cuts the session when a statement's reply is
   * overdue (rowsWithin); after stopHeartbeat it runs only until no statement is in flight or
   * queued, so that a statement sent before still has its bound.
   */
  startHeartbeat(intervalMs: number): void {
    if (this.#tick !== undefined || this.#ended || !Number.isFinite(intervalMs)) return;
    this.#beating = true;
    this.#tick = setInterval(() => this.#onTick(), intervalMs);
    this.#tick.unref();
  }

  #onTick(): void {
    if (this.#ended) return;
    const why = this.#overdue(monotonicNow(), ++this.#ticks);
    if (why !== undefined) {
      this.cut(why);
      return;
    }
    if (this.#inflight > 0 || !this.#beating) return;
    // Sent at this tick: its reply is overdue at the fourth tick from this one, the lease.
    this.#rowsForTicks(HEARTBEAT, [], LEASE_TICKS).then(
      (rows) => {
        const row = rows[0];
        if (row === undefined || Number(row[0]) !== this.pid || row[1] !== this.marker) {
          this.shared();
        }
      },
      () => {
        // A failed heartbeat means the connection is gone: 'end' reports it.
      },
    );
  }

  /**
   * No more heartbeats (end()): the tick stops now if no statement is in flight, else it goes on
   * checking replies until the last one is answered (#done) or the session ends, and later
   * statements get no bound from rowsHolding. A session whose server never answers end() (its
   * process frozen) keeps no timer firing.
   */
  stopHeartbeat(): void {
    this.#beating = false;
    if (this.#inflight === 0) this.#stopTick();
  }

  /** True while the session's tick runs (startHeartbeat to stopHeartbeat and idle, or the end). */
  get ticking(): boolean {
    return this.#tick !== undefined;
  }

  /** The tick stops: the session ended, or stopped its heartbeat with nothing in flight. */
  #stopTick(): void {
    clearInterval(this.#tick);
    this.#tick = undefined;
    this.#beating = false;
  }

  /**
   * Ends the connection. An idle session sends Terminate (the server releases its locks at once)
   * and waits for the server to close the connection, which a healthy server does within a round
   * trip; one with a statement in flight is cut (pg destroys the socket), so the caller should
   * also end the server process (TERMINATE) if it may be waiting for a lock. A server that has not
   * closed the connection within END_GRACE_MS (its process frozen, the network cut) has the
   * socket destroyed instead, so that end(), and PgLockTable.close() with it, returns in bounded
   * time: the server frees the session's locks when it sees the connection gone, or, if it never
   * does (a cut network), at its idle_session_timeout (the lease).
   */
  async end(): Promise<void> {
    this.endedOnPurpose = true;
    this.stopHeartbeat();
    // cut() does nothing to a session already marked ended (a FATAL error reply leaves the socket
    // open): the socket goes either way.
    const grace = setTimeout(() => {
      this.cut(`the server did not close the connection ${END_GRACE_MS} ms after Terminate`);
      this.#destroySocket();
    }, END_GRACE_MS);
    try {
      await this.client.end();
    } catch {
      // Already gone.
    } finally {
      clearTimeout(grace);
    }
    this.#markEnded(undefined);
  }

  #markEnded(reason: unknown): void {
    if (this.#ended) {
      if (this.endReason === undefined && reason !== undefined) this.endReason = reason;
      return;
    }
    this.#ended = true;
    this.endReason = reason;
    this.#stopTick();
    const callbacks = [...this.#onEnd];
    this.#onEnd.clear();
    for (const fn of callbacks) fn(reason);
  }
}
