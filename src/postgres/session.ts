/**
 * One session: a `pg.Client` the backend opened itself and never shares with a pool. Session
 * advisory locks belong to the server process behind it, so every statement about a lease goes
 * through the lease's own session, and a release never queues behind another request's lock wait.
 *
 * Its lifecycle: open (connect + SESSION_START) -> idle in the backend's set <-> holding leases
 * (with a heartbeat) -> ended (by close(), or lost: the server or the network ended it). An
 * 'error' listener is always attached, so a session the server ends never crashes the process.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { POOLER_STATES, SharedSessionError, sqlState } from './errors.js';
import { HEARTBEAT, SESSION_START } from './sql.js';

export type QueryConfig = { name: string; text: string };

/** The longest delay setTimeout takes; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Session {
  readonly client: pg.Client;
  /** The server process id seen when the session opened. */
  pid = 0;
  /**
   * This session's marker, set on its server process by SESSION_START and checked by every grant
   * and heartbeat: a process that carries another marker is shared (a pooler).
   */
  readonly marker = `locktable:${randomUUID()}`;
  /**
   * Called when a statement of this session turned out to run on a server process that is not
   * its own (a pooler): the session's own process may still hold its locks, and ending this
   * client does not end it, so the owner terminates it by pid (from its control session).
   */
  onShared: (pid: number) => void = () => {};
  /** The session's own idle_session_timeout, restored when it stops holding leases. */
  idleTimeout = '0';
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
  /** Statements sent and not answered yet. */
  #inflight = 0;
  #heartbeat: NodeJS.Timeout | undefined;
  /**
   * While the session holds leases: how long (ms) a release or a heartbeat may wait for its
   * reply before the session is taken for cut off (see replyDeadline). Infinity otherwise.
   */
  #replyDeadlineMs = Infinity;

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
   * ERR_LOCK_POOLER when the server process is already another session's.
   */
  static async open(config: pg.ClientConfig): Promise<Session> {
    const session = new Session(new pg.Client(config));
    try {
      await session.client.connect();
      let rows;
      try {
        ({ rows } = await session.query(SESSION_START, [session.marker]));
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
      session.idleTimeout = String(rows[0].idle_timeout);
      session.serverStart = String(rows[0].server_start);
      return session;
    } catch (error) {
      await session.end();
      throw error;
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

  // pg's row type is `any`: each caller reads its own columns.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async query(statement: QueryConfig, values: unknown[]): Promise<pg.QueryResult<any>> {
    this.#inflight++;
    try {
      return await this.client.query({ name: statement.name, text: statement.text, values });
    } finally {
      this.#inflight--;
    }
  }

  /**
   * A statement of a session that holds leases (a release, a heartbeat), whose reply must come
   * within the lease: a reply that has not come by then never will in time (the network is cut,
   * or the server is frozen), and waiting for TCP to notice could take hours, during which the
   * key would stay taken in this process (the front) although the server may have freed it. So
   * the session is cut: its socket destroyed, the session ended, the statement rejected. That is
   * safe: the server either ran the statement (an unlock) or, silent for the lease, ends the
   * session itself (idle_session_timeout), which frees its locks.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async queryHolding(statement: QueryConfig, values: unknown[]): Promise<pg.QueryResult<any>> {
    return this.queryWithin(statement, values, this.#replyDeadlineMs);
  }

  /**
   * A statement whose reply must come within `ms` (Infinity: no bound), else the session is cut
   * (see queryHolding): a lock wait with a finite waitTimeout, a cancel on the control session.
   */
  async queryWithin(
    statement: QueryConfig,
    values: unknown[],
    ms: number,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ): Promise<pg.QueryResult<any>> {
    // Beyond a timer's range (2^31 - 1 ms, about 24.8 days) is no bound at all.
    if (!(ms <= MAX_TIMER_MS)) return this.query(statement, values);
    const timer = setTimeout(() => this.cut(`no reply from the server in ${ms} ms`), ms);
    try {
      return await this.query(statement, values);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A statement of this session ran on another session's server process: see onShared. */
  shared(): void {
    if (this.#ended) return;
    this.onShared(this.pid);
    this.cut('its statement ran on another session’s server process (a transaction-mode pooler)');
  }

  /**
   * Destroys the socket of a session whose reply did not come in `ms` (see queryHolding): the
   * session ends, and its statement in flight rejects.
   */
  cut(why: string): void {
    if (this.#ended) return;
    this.#markEnded(new Error(`${why}: the session was cut off`));
    // pg's Connection keeps its socket as `stream`: destroying it rejects the pending query.
    const stream = (this.client as unknown as { connection?: { stream?: { destroy(): void } } })
      .connection?.stream;
    stream?.destroy();
  }

  /**
   * While the session holds leases: a HEARTBEAT every `intervalMs` when no statement is in flight,
   * so the server's idle_session_timeout (the lease) ends the session only if this process stops
   * talking. A heartbeat that finds another server process (a pooler) ends the session: its locks
   * are not where the leases think they are.
   */
  startHeartbeat(intervalMs: number): void {
    if (this.#heartbeat !== undefined || !Number.isFinite(intervalMs)) return;
    // The heartbeat runs every lease / 4: a reply may take up to the lease (see queryHolding).
    this.#replyDeadlineMs = 4 * intervalMs;
    this.#heartbeat = setInterval(() => {
      if (this.#inflight > 0 || this.#ended) return;
      this.queryHolding(HEARTBEAT, []).then(
        ({ rows }) => {
          if (Number(rows[0].pid) !== this.pid || rows[0].marker !== this.marker) this.shared();
        },
        () => {
          // A failed heartbeat means the connection is gone: 'end' reports it.
        },
      );
    }, intervalMs);
    this.#heartbeat.unref();
  }

  stopHeartbeat(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    this.#replyDeadlineMs = Infinity;
  }

  /**
   * Ends the connection. An idle session sends Terminate (the server releases its locks at once);
   * one with a statement in flight is cut (pg destroys the socket), so the caller should also end
   * the server process (TERMINATE) if it may be waiting for a lock.
   */
  async end(): Promise<void> {
    this.endedOnPurpose = true;
    this.stopHeartbeat();
    try {
      await this.client.end();
    } catch {
      // Already gone.
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
    this.stopHeartbeat();
    const callbacks = [...this.#onEnd];
    this.#onEnd.clear();
    for (const fn of callbacks) fn(reason);
  }
}
