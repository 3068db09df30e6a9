/**
 * PgLockTable: locks by key across processes and machines, through PostgreSQL's session advisory
 * locks, with exact keys (a keys table maps each key to its own id), durable fencing tokens
 * issued in the grant's round trip, sessions of its own (never pooled), server-side waits that
 * time out and cancel on the server, and holders that lose their locks when they die, hang or are
 * cut off. The same contract as LockTable (src/api/locks.ts); the SQL is in sql.ts.
 */
import { monotonicNow } from '../api/clock.js';
import { AbortError, invalidValue, LockError, timeoutError } from '../api/errors.js';
import {
  checkFunction,
  compareKeys,
  orderKeys,
  type LockTryOptions,
  type LockWaitOptions,
  type Locks,
  runHolding,
} from '../api/locks.js';
import { AsyncLeaseGroup, asyncLeaseGroup } from '../api/lease-group.js';
import {
  checkKnownOptions,
  checkMode,
  checkMs,
  checkOptionsObject,
  checkSignal,
  type Mode,
} from '../api/options.js';

/** The options of tryAcquire, acquire, acquireAll, run and runAll (the Locks contract's). */
const PG_ACQUIRE_OPTIONS_KEYS = ['mode', 'hold', 'waitTimeout', 'signal'] as const;
import {
  closedError,
  connectionError,
  poolerError,
  POOLER_STATES,
  schemaError,
  sqlState,
} from './errors.js';
import { Front, FrontHold, type FrontStats, releaseAll } from './front.js';
import { Holding, PgLease } from './lease.js';
import {
  checkPgKey,
  COHORT_BITS,
  MAX_SERVER_MS,
  type PgLockTableOptions,
  type ResolvedPgOptions,
  resolvePgOptions,
} from './options.js';
import { END_GRACE_MS, type RawRow, Session, StatementWithdrawn, type Values } from './session.js';
import { Sessions } from './sessions.js';
import { untilAborted } from './until-aborted.js';
import type { Lease } from '../table/lease.js';
import type { LockTable } from '../table/lock-table.js';
import {
  ACQUIRE,
  CANCEL,
  fastGrant,
  type GrantWait,
  INSPECT,
  installStatement,
  READ_VERSION,
  POOLER_SQLSTATE,
  releaseStatement,
  RENEW_TOKENS,
  RESET_SESSION,
  SCHEMA_VERSION,
  TERMINATE,
} from './sql.js';

export interface PgHolderInfo {
  /** The PostgreSQL server process (pg_backend_pid()) of the holder's session. */
  pid: number;
  mode: Mode;
}

export interface PgLockInfo {
  key: string;
  mode: Mode;
  holders: PgHolderInfo[];
  /** Sessions waiting for the key right now (any process). */
  waiters: number;
}

interface Request {
  mode: Mode;
  waitTimeout: number;
  signal: AbortSignal | undefined;
}

/** #acquire's request, as each session it tries takes it. */
interface Attempt {
  keys: string[];
  r: Request;
  isTry: boolean;
  start: number;
  front: FrontHold;
}

interface Grant {
  lockId: number;
  token: bigint;
}

/**
 * fastGrant's wait ran out (55P03). Unlike ACQUIRE's timeout, the session may hold the lock: it
 * was granted in the instant the server's lock_timeout fired (DESIGN.md, "One round trip per
 * grant"), so the caller resets the session.
 */
class ServerTimeout extends Error {}

/**
 * The server had ended the request's session for idleness (57P05, its idle_session_timeout: the
 * lease) before the request's first statement ran on it. A session in the set sends heartbeats,
 * so this happens only when this process stopped for longer than the lease (a blocked event
 * loop) and took the session before it read the server's FATAL. Nothing of the request happened:
 * the session had ended, and with it anything it held. #acquire takes another session.
 */
class IdleSessionEnded extends Error {
  readonly failure: unknown;
  constructor(failure: unknown) {
    super('the session had ended for idleness');
    this.failure = failure;
  }
}

/** Sessions tried by one request whose sessions turn out ended for idleness (IdleSessionEnded). */
const MAX_IDLE_RETRIES = 3;

/** 57P05, idle_session_timeout: the server ended the session for idleness. */
function endedIdle(session: Session, error: unknown): boolean {
  if (session.alive) {
    // pg hands the FATAL to the statement in flight before the connection's end is seen.
    return sqlState(error) === '57P05';
  }
  const code = (error as { code?: unknown }).code;
  if (code !== 'ERR_LOCK_CONNECTION' && sqlState(error) !== '57P05') return false;
  return (
    sqlState(session.endReason) === '57P05' ||
    sqlState(error) === '57P05' ||
    sqlState((error as { cause?: unknown }).cause) === '57P05'
  );
}

/** Key ids a table remembers for fastGrant (a Map, the oldest forgotten first). */
const MAX_REMEMBERED_IDS = 10_000;

/** A grant found the token range used up: renew it (RENEW_TOKENS) and ask again. */
const RENEW = Symbol('renew');
/** Renewals in a row before a grant gives up (one is enough unless 2^40 grants come between). */
const MAX_RENEWALS = 3;

/** Control-session retries of a cancel that found the statement not yet started (ms). */
const CANCEL_RETRY_MS = 10;

// Not `implements HoldingHost`: the published types would show the internal interface. Holding
// takes a PgLockTable as one, checked where it is made.
export class PgLockTable implements Locks<PgLease, PgLockInfo> {
  readonly #options: ResolvedPgOptions;
  readonly #sessions: Sessions;
  readonly #holdings = new Set<Holding>();
  /** A session of its own for cancels, terminations and inspect(): never holds a lock. */
  #control: Promise<Session> | undefined;
  /** Aborted by close() when the control session has not opened within END_GRACE_MS. */
  readonly #cancelControl = new AbortController();
  #installed: Promise<void> | undefined;
  /** Set once #installed has resolved: the schema is there and no request awaits it again. */
  #schemaReady = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #front: Front;
  /** Key → its id in locktable.keys (ids are never reused), learnt from ACQUIRE. */
  readonly #ids = new Map<string, number>();
  /** The server run (Session.serverStart) whose ids #ids holds. */
  #idsServer = '';

  constructor(options?: PgLockTableOptions) {
    this.#options = resolvePgOptions(options);
    this.#sessions = new Sessions(
      this.#options.client,
      this.#options.poolSize,
      this.#options.lease,
      (session) => this.#terminateShared(session),
    );
    const o = this.#options;
    this.#front = new Front(o.table, o.namespace, o.cohortLimit, o.cohortMs);
  }

  /** The shared-memory table in front of the server (options.table, or a private one). */
  get table(): LockTable {
    return this.#front.table;
  }

  /** The longest key this table takes: 512, or less when the front table's maxKeyLength is short. */
  get maxKeyLength(): number {
    return this.#front.maxKeyLength;
  }

  /** Most exclusive grants handed among this table's own waiters on one server grant. */
  get cohortLimit(): number {
    return this.#options.cohortLimit;
  }

  /** ms after a server grant after which no hand-over starts. */
  get cohortMs(): number {
    return this.#options.cohortMs;
  }

  /** Counts of grants since creation: made by the server, and handed over locally (a copy). */
  get stats(): FrontStats {
    return { ...this.#front.stats };
  }

  /** The namespace: the first int4 of every lock this table takes. */
  get namespace(): number {
    return this.#options.namespace;
  }

  get poolSize(): number {
    return this.#options.poolSize;
  }

  /** ms a holder may be silent before the server ends its session (Infinity: never). */
  get lease(): number {
    return this.#options.lease;
  }

  /** One attempt, never waits for the key: a lease, or null when the key is held incompatibly. */
  async tryAcquire(key: string, options?: LockTryOptions): Promise<PgLease | null> {
    const k = checkPgKey('key', key);
    const r = this.#resolve(options, false);
    const [lease] = (await this.#acquireFront([k], r, true)) ?? [];
    return lease ?? null;
  }

  /**
   * Waits for the key on the server (pg_advisory_lock), within options.waitTimeout (the server's
   * lock_timeout) and options.signal (cancels the wait on the server).
   */
  async acquire(key: string, options?: LockWaitOptions): Promise<PgLease> {
    const k = checkPgKey('key', key);
    const r = this.#resolve(options, true);
    const leases = await this.#acquireFront([k], r, false);
    return leases![0]!;
  }

  /**
   * All the keys or none, on one session, in the canonical order (compareKeys). waitTimeout
   * bounds the whole call; on any failure everything taken is released. Returns the leases in
   * that order as an AsyncLeaseGroup: an array with one `await release()` (and `await using`).
   */
  async acquireAll(
    keys: readonly string[],
    options?: LockWaitOptions,
  ): Promise<AsyncLeaseGroup<PgLease>> {
    const ordered = orderKeys(keys, checkPgKey);
    const r = this.#resolve(options, true);
    if (ordered.length === 0) {
      if (r.signal?.aborted) throw new AbortError(undefined, r.signal.reason);
      return asyncLeaseGroup([]);
    }
    return asyncLeaseGroup((await this.#acquireFront(ordered, r, false))!);
  }

  /** acquireAll(keys, options), then as run(): `fn(group)`, released when `fn` settles. */
  async runAll<T>(
    keys: readonly string[],
    fn: (group: AsyncLeaseGroup<PgLease>) => T | Promise<T>,
    options?: LockWaitOptions,
  ): Promise<T> {
    checkFunction('fn', fn);
    return runHolding(await this.acquireAll(keys, options), fn);
  }

  /**
   * Acquires `key`, runs `fn(lease)`, and releases when `fn` settles. Holds until then:
   * options.signal cancels only the wait. Pass `lease.signal` to `fn`'s work to stop it if the
   * lock is lost; a lease lost while `fn` ran rejects with ERR_LOCK_STALE (`cause`: `fn`'s
   * outcome).
   */
  async run<T>(
    key: string,
    fn: (lease: PgLease) => T | Promise<T>,
    options?: LockWaitOptions,
  ): Promise<T> {
    checkFunction('fn', fn);
    return runHolding(await this.acquire(key, options), fn);
  }

  /** Who holds `key` right now (pg_locks), or null. One round trip on the control session. */
  async inspect(key: string): Promise<PgLockInfo | null> {
    const k = checkPgKey('key', key);
    return (await this.#describe(k))[0] ?? null;
  }

  /** Every key of this namespace held right now, in the canonical order. */
  async held(): Promise<PgLockInfo[]> {
    return this.#describe(null);
  }

  /**
   * Releases every lock (by ending every session: the server frees their locks), cancels every
   * request (they reject with ERR_LOCK_CLOSED), and makes every later call fail with
   * ERR_LOCK_CLOSED. Leases it released report held false and abort their signal; their
   * release() rejects with ERR_LOCK_CLOSED.
   */
  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#closed = true;
    this.#front.close();
    this.#closing = this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#sessions.close();
    // A control session still opening (a server that does not answer) gets END_GRACE_MS.
    const cancelControl = setTimeout(() => this.#cancelControl.abort(), END_GRACE_MS);
    try {
      for (const holding of this.#holdings) holding.close(closedError(undefined));
      this.#holdings.clear();
      const sessions = this.#sessions.all;
      const waiting = sessions.filter((s) => s.alive && s.busy);
      await Promise.all(sessions.map((s) => s.end()));
      // A session cut while its statement waited for a lock: its server process would wait on
      // (a server notices a gone client only when it next writes), so end it from the control
      // session; only that process, which may have ended meanwhile and left its pid to another
      // (TERMINATE).
      if (waiting.length > 0 && this.#control !== undefined) {
        try {
          const control = await this.#control;
          await control.queryWithin(TERMINATE, terminateValues(waiting), END_GRACE_MS);
        } catch {
          // No control session: those processes leave when their wait ends.
        }
      }
      const control = this.#control;
      this.#control = undefined;
      if (control !== undefined) await control.then((s) => s.end()).catch(() => {});
    } finally {
      clearTimeout(cancelControl);
      // Any control session opened from now on (a late inspect()) fails at once.
      this.#cancelControl.abort();
    }
  }

  /** @internal HoldingHost: every lease of `holding` was released. */
  finished(holding: Holding): void {
    this.#holdings.delete(holding);
    this.#sessions.checkin(holding.session);
  }

  /** @internal HoldingHost: `holding`'s session is in an unknown state. */
  discard(holding: Holding): void {
    this.#holdings.delete(holding);
    this.#sessions.discard(holding.session);
  }

  #resolve(options: LockWaitOptions | undefined, waits: boolean): Request {
    checkOptionsObject('options', options);
    if (options !== undefined) checkKnownOptions('options', options, PG_ACQUIRE_OPTIONS_KEYS);
    const mode = checkMode('options.mode', options?.mode);
    if (options?.hold !== undefined && checkMs('options.hold', options.hold, false) !== Infinity) {
      throw invalidValue(
        'options.hold',
        "must be Infinity or left out: PgLockTable has no lease deadlines (its 'lease' option " +
          'bounds how long a silent holder keeps its locks)',
        options.hold,
      );
    }
    if (!waits) return { mode, waitTimeout: 0, signal: undefined };
    return {
      mode,
      waitTimeout:
        options?.waitTimeout === undefined
          ? this.#options.waitTimeout
          : checkMs('options.waitTimeout', options.waitTimeout, true),
      signal: checkSignal('options.signal', options?.signal),
    };
  }

  /**
   * Takes `keys` in the front table, then on the server (#acquire). A single exclusive key first
   * waits its turn in this table's FIFO for the key, and may be handed a holding there. Whatever
   * fails, the table leases are released and the next waiter of the FIFO goes on.
   */
  async #acquireFront(keys: string[], r: Request, isTry: boolean): Promise<PgLease[] | null> {
    const first = keys[0]!;
    if (this.#closed) throw closedError(first);
    if (r.signal?.aborted) throw new AbortError(first, r.signal.reason);
    const start = monotonicNow();
    const front = this.#front;
    const fks = keys.map((k) => front.frontKey(k));
    const fk = fks[0]!;
    const cohort = keys.length === 1 && r.mode === 'exclusive';
    if (cohort) {
      if (isTry) {
        if (!front.tryEnter(fk)) return null;
      } else {
        const handed = await front.enter(fk, first, r.waitTimeout, start, r.signal);
        if (handed !== null) return [handed];
      }
    }
    let tableLeases: readonly Lease[] = [];
    let done = false;
    try {
      // A single key first tries in this task (the uncontended path awaits nothing for it).
      const one = fks.length === 1 ? front.tryTakeOne(fk, first, r.mode, r.signal) : null;
      const taken =
        one !== null
          ? [one]
          : isTry && fks.length === 1
            ? null
            : await front.take(fks, first, r.mode, r.waitTimeout, start, r.signal, isTry);
      if (taken === null) return null;
      tableLeases = taken;
      const hold = new FrontHold(front, fk, taken, cohort);
      const leases = await this.#acquire(keys, r, isTry, start, hold);
      done = leases !== null;
      return leases;
    } finally {
      if (!done) {
        releaseAll(tableLeases);
        if (cohort) front.next(fk);
      }
    }
  }

  /**
   * Takes `keys` (in order) on one session. Resolves with the leases, or with null for a try that
   * found a key held. Whatever fails, nothing is left held: the session is reset (RESET_SESSION)
   * or ended. A session that the server had ended for idleness before the request's first
   * statement (see IdleSessionEnded) is replaced by another, within the same wait.
   */
  async #acquire(
    keys: string[],
    r: Request,
    isTry: boolean,
    start: number,
    front: FrontHold,
  ): Promise<PgLease[] | null> {
    const first = keys[0]!;
    if (this.#closed) throw closedError(first);
    if (r.signal?.aborted) throw new AbortError(first, r.signal.reason);
    // Once installed, nothing to await (the uncontended path).
    if (!this.#schemaReady) {
      // The first requests wait for the control session and the schema check within their
      // signal; pg's connectionTimeoutMillis bounds the opening (not a wait for the lock).
      try {
        await untilAborted(this.#install(first), first, r.signal);
      } catch (error) {
        // close() cancels a control session still opening: the request was cancelled by close().
        throw this.#closed ? closedError(first) : error;
      }
    }
    const request: Attempt = { keys, r, isTry, start, front };
    for (let attempt = 1; ; attempt++) {
      const session =
        this.#sessions.takeIdle() ??
        (await this.#sessions.checkout(first, r.waitTimeout, start, r.signal));
      try {
        return await this.#acquireOn(session, request);
      } catch (error) {
        if (!(error instanceof IdleSessionEnded)) throw error;
        if (attempt === MAX_IDLE_RETRIES) {
          const failure = error.failure;
          throw failure instanceof LockError ? failure : connectionError(first, failure);
        }
        if (this.#closed) throw closedError(first);
        if (r.signal?.aborted) throw new AbortError(first, r.signal.reason);
      }
    }
  }

  /** #acquire on one session (checked out for the request). */
  async #acquireOn(session: Session, request: Attempt): Promise<PgLease[] | null> {
    const { keys, r, isTry, start, front } = request;
    const first = keys[0]!;
    const grants: Grant[] = [];
    // True while the session provably holds nothing: no grant, and no statement that failed
    // (one may fail after it took the lock).
    let clean = true;
    try {
      for (const key of keys) {
        if (this.#closed) throw closedError(key);
        if (r.signal?.aborted) throw new AbortError(key, r.signal.reason);
        let grant: Grant | null;
        try {
          this.#checkServerRun(session);
          // The common case in one await: a grant, or not granted. A used-up token range renews
          // it and asks again (#grantAfterRenewals).
          const once = await this.#grantOnce(session, key, r, start);
          if (once === RENEW) {
            clean = false;
            grant = await this.#grantAfterRenewals(session, key, r, start);
          } else {
            grant = once;
          }
        } catch (error) {
          // Aborted while it waited behind the heartbeat: never sent, nothing to undo for it.
          if (error instanceof StatementWithdrawn) throw new AbortError(key, r.signal?.reason);
          clean = false;
          // Not granted in time; the session may hold the lock all the same (a grant in the
          // instant the server's lock_timeout fired): reset below, as after any failure.
          if (!(error instanceof ServerTimeout)) throw error;
          grant = null;
        }
        if (grant === null) {
          if (isTry && grants.length === 0) {
            if (clean) this.#sessions.checkin(session);
            else await this.#abandon(session, false);
            return null;
          }
          throw timeoutError(key, r.waitTimeout);
        }
        grants.push(grant);
      }
      if (this.#closed) throw closedError(first);
      // The session may have ended after its last reply was read and before this ran (the
      // server's FATAL in the same read as the grant): its locks are gone, so nothing is held.
      if (!session.alive) throw connectionError(first, session.endReason);
    } catch (error) {
      if (clean && grants.length === 0) this.#sessions.checkin(session);
      else await this.#abandon(session, (error as { code?: unknown }).code === 'ERR_LOCK_POOLER');
      if (grants.length === 0 && endedIdle(session, error)) throw new IdleSessionEnded(error);
      throw error;
    }
    const holding = new Holding(this, session, front);
    this.#holdings.add(holding);
    const token = front.granted(first, grants[0]!.lockId, grants[0]!.token);
    return grants.map((g, i) =>
      holding.add(keys[i]!, r.mode, g.lockId, i === 0 ? token : g.token << COHORT_BITS),
    );
  }

  /**
   * A new server run (a restart, a restore, a failover) for `session`: the key ids learnt from
   * another run may not be this one's, so they are forgotten.
   */
  #checkServerRun(session: Session): void {
    if (session.serverStart !== this.#idsServer) {
      this.#ids.clear();
      this.#idsServer = session.serverStart;
    }
  }

  /**
   * After a grant statement (#grantOnce) found the token range used up: renews it (RENEW_TOKENS)
   * and asks again, at most MAX_RENEWALS times. Resolves as #grantOnce (a grant, or null: not
   * granted, the renewal's wait ran out too). A fastGrant's 2200H came after its lock (unlocked
   * since), and either statement ran into a used-up range: the caller resets the session on
   * failure, as after any statement that locked.
   *
   * With #grantOnce, one grant, in what is left of the request's wait (from `start`): fastGrant
   * when the key's id is known and the session has run ACQUIRE (one plain statement), else, or
   * when that returns no row (a pooler's other session), ACQUIRE (locktable.grant, which also
   * learns the id). Both throw AbortError, ERR_LOCK_CLOSED, ERR_LOCK_CONNECTION, ERR_LOCK_POOLER,
   * ServerTimeout (fastGrant's lock_timeout: the session may hold the lock), StatementWithdrawn
   * (aborted before its statement was sent: it holds nothing more than before), or the server's
   * error. After any other throw the session may hold the lock (a session lock survives the
   * rollback of a statement that failed after taking it): the caller resets it.
   */
  async #grantAfterRenewals(
    session: Session,
    key: string,
    r: Request,
    start: number,
  ): Promise<Grant | null> {
    for (let renewals = 0; ; renewals++) {
      if (renewals === MAX_RENEWALS) {
        throw new Error(`locktable: the token range was used up ${renewals + 1} times in a row`);
      }
      // Within what is left of the wait (a try: 1 ms), as the grant itself: renew_tokens may wait
      // for the install lock and its ALTER SEQUENCE for the sequence. Not in time: not granted
      // (the key was given back; the caller resets the session).
      // What is left when it is sent (after any wait for its turn behind a heartbeat).
      const renewValues = () => {
        const left = waitMs(r.waitTimeout, start);
        return [left < 0 ? '1' : String(left)];
      };
      try {
        await this.#statement(
          session,
          key,
          (ms) => session.queryWithin(RENEW_TOKENS, renewValues, ms, r.signal),
          waitMs(r.waitTimeout, start),
          r.signal,
        );
      } catch (error) {
        if (sqlState(error) === '55P03') return null;
        throw error;
      }
      const grant = await this.#grantOnce(session, key, r, start);
      if (grant !== RENEW) return grant;
    }
  }

  /**
   * One grant statement: fastGrant or ACQUIRE, for what is left of the request's wait (from
   * `start`). Its form (a try, a wait forever, a timed wait) is the wait left now; a timed wait's
   * lock_timeout is what is left when the statement is sent, so that time spent queued behind
   * another statement of the session (a heartbeat) is not waited again on the server.
   */
  async #grantOnce(
    session: Session,
    key: string,
    r: Request,
    start: number,
  ): Promise<Grant | null | typeof RENEW> {
    const namespace = this.#options.namespace;
    const wait0 = waitMs(r.waitTimeout, start);
    const exclusive = r.mode === 'exclusive';
    // The cache may have moved to another server run while this request waited (a reply of
    // another run's session): its ids are not this session's.
    const ours = session.serverStart === this.#idsServer;
    const id = session.epochSeen && ours ? this.#ids.get(key) : undefined;
    if (id !== undefined) {
      const wait: GrantWait = wait0 < 0 ? 'try' : wait0 === 0 ? 'forever' : 'timed';
      const values: Values =
        wait === 'timed'
          ? () => [namespace, id, session.marker, timedWaitMs(r.waitTimeout, start)]
          : [namespace, id, session.marker];
      // (token, backend_pid), as the server's text.
      let row: RawRow | undefined;
      try {
        const statement = fastGrant(wait, exclusive);
        row = (
          await this.#statement(
            session,
            key,
            (ms) => session.rowsWithin(statement, values, ms, r.signal),
            wait0,
            r.signal,
          )
        )[0];
      } catch (error) {
        const state = sqlState(error);
        if (state === '55P03') throw new ServerTimeout();
        if (state !== '2200H') throw error;
        // The epoch's token range is used up, after the lock was taken: undo it, and renew.
        await this.#unlock(session, key, id, exclusive);
        return RENEW;
      }
      if (row !== undefined) {
        this.#checkPid(session, key, row[1]);
        // No token: a try that found the key held (a granted lock always draws one).
        const token = row[0];
        if (token === null || token === undefined) return null;
        return { lockId: id, token: BigInt(token) };
      }
      this.#ids.delete(key);
    }
    // lease_ms 0: the session's idle_session_timeout is the lease already (SESSION_START).
    const acquireValues: Values =
      wait0 > 0
        ? () => [namespace, key, exclusive, timedWaitMs(r.waitTimeout, start), 0, session.marker]
        : [namespace, key, exclusive, wait0, 0, session.marker];
    const result = await this.#statement(
      session,
      key,
      (ms) => session.queryWithin(ACQUIRE, acquireValues, ms, r.signal),
      wait0,
      r.signal,
    );
    const row = result.rows[0];
    if (row === undefined) return null;
    this.#checkPid(session, key, row.backend_pid);
    session.epochSeen = true;
    const lockId = Number(row.lock_id);
    if (session.serverStart === this.#idsServer) this.#rememberId(key, lockId);
    // A used-up token range: locktable.grant gave the lock back.
    if (row.token === null) return RENEW;
    return { lockId, token: BigInt(row.token) };
  }

  #rememberId(key: string, id: number): void {
    const ids = this.#ids;
    if (ids.size >= MAX_REMEMBERED_IDS) ids.delete(ids.keys().next().value!);
    ids.set(key, id);
  }

  #checkPid(session: Session, key: string, pid: unknown): void {
    if (Number(pid) !== session.pid) {
      throw poolerError(
        key,
        `the grant ran on server process ${pid}, the session opened on ${session.pid}`,
      );
    }
  }

  /**
   * Unlocks `key` on `session` after a grant statement that took the lock and then failed (the
   * release statement). Throws as a release would fail: the
   * caller then resets or ends the session.
   */
  async #unlock(session: Session, key: string, id: number, exclusive: boolean): Promise<void> {
    let rows: RawRow[];
    const lease = this.#options.lease;
    try {
      // A reply bounded as a release's (Session.rowsHolding): a cut network does not hang here.
      rows = await session.rowsWithin(
        releaseStatement(exclusive),
        [this.#options.namespace, id, session.marker],
        Number.isFinite(lease) ? 2 * Math.max(lease, 1000) : Infinity,
      );
    } catch (error) {
      if (this.#closed) throw closedError(key);
      if (!session.alive || sqlState(error) === undefined) {
        throw connectionError(key, session.endReason ?? error);
      }
      throw error;
    }
    if (rows.length === 0)
      throw poolerError(key, "an unlock ran on another session's server process");
    // The statement took the lock before it failed: not holding it means another server process
    // (a pooler) or a state we cannot explain; the caller resets or ends the session.
    if (rows[0]![0] !== 't') throw poolerError(key, 'an unlock found the lock not held');
  }

  /**
   * Runs one grant statement on `session` (`send`, given how long its reply may take before the
   * session is cut: see below; it sends with `signal`, for Session.withdraw). Aborted while it
   * waits for its turn behind another statement of the session (a heartbeat), it is withdrawn and
   * never sent; aborted while it runs, it is cancelled on the server from the control session,
   * and this returns only after every cancel has answered, so the caller's next statement on the
   * session cannot be hit by one. Throws StatementWithdrawn (withdrawn), AbortError, ERR_LOCK_CLOSED,
   * ERR_LOCK_CONNECTION, ERR_LOCK_POOLER, or the server's error.
   */
  async #statement<T>(
    session: Session,
    key: string,
    send: (replyWithin: number) => Promise<T>,
    waitMs: number,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    if (this.#closed) throw closedError(key);
    // An abort that came while the previous statement was answered (the listener below hears
    // only later ones).
    if (signal?.aborted) throw new AbortError(key, signal.reason);
    const lease = this.#options.lease;
    // A bounded wait is answered by the server within waitMs (its lock_timeout) plus the rest of
    // the statement (a new key's flushed insert, a new epoch, a loaded server's CPU); a reply not
    // here a margin later (the lease, at least 1 s, twice) never will in time (the network is cut,
    // the server process frozen), and TCP could take hours to say so: the session is cut, and the
    // request fails with ERR_LOCK_CONNECTION. A wait forever has no such bound (a wait may be long
    // by right).
    const replyWithin =
      waitMs !== 0 && Number.isFinite(lease)
        ? Math.max(waitMs, 0) + 2 * Math.max(lease, 1000)
        : Infinity;
    const pending = send(replyWithin);
    let settled = false;
    let cancelling: Promise<void> | undefined;
    let cutTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      // Still queued behind another statement of the session (a heartbeat): taken out, never
      // sent, so there is nothing to cancel on the server.
      if (session.withdraw(signal!)) return;
      cancelling = this.#cancel(session, pending, () => settled);
      // The cancel is answered within a round trip; a statement still running a lease later is
      // cut off from the server (as above), so an abort always settles.
      if (Number.isFinite(lease)) {
        cutTimer = setTimeout(() => session.cut(`no reply ${lease} ms after an abort`), lease);
      }
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let result: Awaited<typeof pending> | undefined;
    let failure: unknown;
    try {
      result = await pending;
    } catch (error) {
      failure = error;
    } finally {
      settled = true;
      clearTimeout(cutTimer);
      signal?.removeEventListener('abort', onAbort);
    }
    if (cancelling !== undefined) await cancelling;
    // Withdrawn (aborted before it was sent): the caller knows the session is as it was.
    if (failure instanceof StatementWithdrawn) throw failure;
    if (signal?.aborted) throw new AbortError(key, signal.reason);
    if (result !== undefined) return result;
    if (this.#closed) throw closedError(key);
    const state = sqlState(failure);
    if (!session.alive || state === undefined) {
      throw connectionError(key, session.endReason ?? failure);
    }
    if (state === POOLER_SQLSTATE) {
      throw poolerError(key, `the grant ran on a server process another session set up`);
    }
    if (POOLER_STATES.has(state)) {
      throw poolerError(key, `the grant found server state it never made (${state})`);
    }
    throw failure;
  }

  /**
   * Cancels `session`'s statement from the control session, again every CANCEL_RETRY_MS until it
   * settles: a cancel that reaches the server before the statement has started is ignored. Without
   * a control session, ends `session` (the server then drops its wait, or its lock).
   */
  async #cancel(session: Session, pending: Promise<unknown>, settled: () => boolean) {
    const done = pending.then(
      () => {},
      () => {},
    );
    // Once `session` has ended, no statement of it can be hit by a late cancel: stop waiting for
    // the control session then (it may be cut off too).
    let unsubscribe = (): void => {};
    const ended = new Promise<'ended'>((resolve) => {
      unsubscribe = session.onEnd(() => resolve('ended'));
    });
    try {
      const lease = this.#options.lease;
      while (!settled() && session.alive) {
        // The whole step (a control session reopened, then the cancel) within the lease.
        let stepTimer: NodeJS.Timeout | undefined;
        const sent = Promise.race([
          this.#controlSession().then((control) =>
            control.queryWithin(CANCEL, [session.pid], lease),
          ),
          new Promise<never>((_, reject) => {
            if (Number.isFinite(lease)) {
              stepTimer = setTimeout(() => reject(new Error('no control session')), lease);
            }
          }),
        ]);
        const answered = await Promise.race([
          sent.then(
            () => 'sent' as const,
            () => 'failed' as const,
          ),
          ended,
        ]);
        clearTimeout(stepTimer);
        if (answered === 'ended') return;
        if (answered === 'failed') {
          // No cancel can be sent: the waiting session goes (cut: a graceful end could wait for
          // a cut network), and with it the server's wait, or the lock it was granted.
          session.cut('no control session to cancel the wait');
          return;
        }
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          done,
          new Promise<void>((resolve) => (timer = setTimeout(resolve, CANCEL_RETRY_MS))),
        ]);
        clearTimeout(timer);
      }
    } finally {
      unsubscribe();
    }
  }

  /**
   * After a failed request: releases whatever the session may hold (RESET_SESSION) and gives it
   * back; with `discard` (a pooler), or when the reset fails, ends it instead (a pooler: also
   * terminates its server process, see Session.onShared).
   */
  async #abandon(session: Session, discard: boolean): Promise<void> {
    if (discard) {
      // A pooler: the session's own server process may hold this request's earlier locks (an
      // acquireAll), and a reset through the pooler could reach another session's process.
      session.shared();
      this.#sessions.discard(session);
      return;
    }
    if (!session.alive) {
      this.#sessions.discard(session);
      return;
    }
    try {
      const { rows } = await session.query(RESET_SESSION, [session.marker]);
      if (rows.length === 0) {
        session.shared();
        this.#sessions.discard(session);
        return;
      }
      this.#sessions.checkin(session);
    } catch {
      this.#sessions.discard(session);
    }
  }

  #controlSession(): Promise<Session> {
    if (this.#control === undefined) {
      const opening = Session.open(this.#options.client, undefined, this.#cancelControl.signal);
      this.#control = opening;
      opening.then(
        (s) =>
          s.onEnd(() => {
            if (this.#control === opening) this.#control = undefined;
          }),
        () => {
          if (this.#control === opening) this.#control = undefined;
        },
      );
    }
    return this.#control;
  }

  /**
   * Ends a session's own server process, found behind a pooler: ending the client does not end
   * it (the pooler keeps it), and it may hold the session's locks. Best effort, from the control
   * session.
   */
  #terminateShared(session: Session): void {
    this.#controlSession()
      .then((control) =>
        control.queryWithin(TERMINATE, terminateValues([session]), this.#options.lease),
      )
      .catch(() => {
        // No control session: the process keeps its locks until the pooler or server drops it.
      });
  }
  /** Installs (or checks) the schema once per table: see sql.ts. */
  #install(key: string): Promise<void> {
    if (this.#installed === undefined) {
      const installing = this.#installSchema().catch((error: unknown) => {
        this.#installed = undefined;
        throw error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_')
          ? error
          : connectionError(key, error);
      });
      this.#installed = installing;
    }
    return this.#installed;
  }

  async #installSchema(): Promise<void> {
    const control = await this.#controlSession();
    const version = async () => {
      try {
        const { rows } = await control.query({ name: '', text: READ_VERSION }, []);
        return Number(rows[0]?.version ?? 0);
      } catch (error) {
        const state = sqlState(error);
        if (state === '42P01' || state === '3F000') return 0;
        throw error;
      }
    };
    let found = await version();
    if (found < SCHEMA_VERSION) {
      await control.query({ name: '', text: installStatement() }, []);
      found = await version();
    }
    if (found > SCHEMA_VERSION) throw schemaError(found, SCHEMA_VERSION);
    this.#schemaReady = true;
  }

  async #describe(key: string | null): Promise<PgLockInfo[]> {
    if (this.#closed) throw closedError(key ?? undefined);
    try {
      await this.#install(key ?? '');
    } catch (error) {
      // As in #acquire: close() cancelled the control session it waited for.
      throw this.#closed ? closedError(key ?? undefined) : error;
    }
    let rows: Array<{
      key: string;
      pid: number;
      mode: string;
      granted: boolean;
    }>;
    try {
      ({ rows } = await (
        await this.#controlSession()
      ).query(INSPECT, [this.#options.namespace, key]));
    } catch (error) {
      throw this.#closed ? closedError(key ?? undefined) : connectionError(key ?? undefined, error);
    }
    const byKey = new Map<string, PgLockInfo>();
    for (const row of rows) {
      let info = byKey.get(row.key);
      if (info === undefined) {
        info = {
          key: row.key,
          mode: 'shared',
          holders: [],
          waiters: 0,
        };
        byKey.set(row.key, info);
      }
      if (!row.granted) {
        info.waiters++;
        continue;
      }
      const mode: Mode = row.mode === 'ExclusiveLock' ? 'exclusive' : 'shared';
      if (mode === 'exclusive') info.mode = 'exclusive';
      info.holders.push({ pid: Number(row.pid), mode });
    }
    return [...byKey.values()]
      .filter((info) => info.holders.length > 0)
      .sort((a, b) => compareKeys(a.key, b.key));
  }
}

/**
 * The wait, in the server's terms, for what is left of `waitTimeout` since `start`: -1 = one try
 * (waitTimeout 0, or none left), 0 = forever, else whole ms (rounded up: never early).
 */
function waitMs(waitTimeout: number, start: number): number {
  if (waitTimeout === Infinity) return 0;
  const left = waitTimeout - (monotonicNow() - start);
  if (left <= 0) return -1;
  return Math.min(Math.ceil(left), MAX_SERVER_MS);
}

/** TERMINATE's parameters for the server processes of `sessions`: pids, and when each started. */
function terminateValues(sessions: readonly Session[]): unknown[] {
  return [sessions.map((s) => s.pid), sessions.map((s) => s.started)];
}

/**
 * A timed wait's ms when its statement is sent: what is left of `waitTimeout` since `start`, at
 * least 1 (0 would be a wait forever; none left: the shortest wait the server has).
 */
function timedWaitMs(waitTimeout: number, start: number): number {
  return Math.max(1, waitMs(waitTimeout, start));
}
