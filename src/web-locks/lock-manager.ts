/**
 * LockManager: the W3C Web Locks API (https://w3c.github.io/web-locks/) over a locktable. A name is
 * a table key, held through the table, so exclusion holds across every thread attached to the
 * table (and against the table API on the same key); waiting requests are published in the table's
 * request registry, so query() in any thread sees every thread's.
 *
 * Requests for a name are granted in request order across threads (the registry's order, by the
 * specification's "grantable" rule); the table decides exclusion. What follows the specification's
 * algorithms, step by step, and where the table decides instead (whether the lock is held, the
 * time a robbed thread learns of a steal, table-API requests for the same key), is in DESIGN.md,
 * "Web Locks".
 */
import { LockError, outOfRange } from '../api/errors.js';
import { checkMs, MAX_FINITE_MS } from '../api/options.js';
import { ENTRY_REFRESH_MS } from '../table/entries.js';
import { LockTable } from '../table/lock-table.js';
import { FACADE, type FacadeCore } from '../table/lock-table.js';
import type { Lease } from '../table/lease.js';
import type { TableDefaults } from '../api/options.js';
import { clientFor, clientIdOf, type Client, type PendingRequest } from './client.js';
import { notSupported, typeError } from './errors.js';
import { HeldRequest } from './held-request.js';
import type { Lock, LockMode } from './lock.js';

export interface LockOptions {
  /** 'exclusive' (default) or 'shared'. */
  mode?: LockMode;
  /** Call back with null instead of waiting when the lock cannot be granted at once. */
  ifAvailable?: boolean;
  /** Take the lock from its holders (their requests reject with an AbortError). Exclusive only. */
  steal?: boolean;
  /** Aborts the request while it waits (it rejects with the signal's reason). */
  signal?: AbortSignal;
  /** Extension: ms to wait at most; then the request rejects with ERR_LOCK_TIMEOUT. */
  waitTimeout?: number;
  /**
   * Extension: a fixed hold (ms), stamped as the lease's deadline: past it (plus the table's
   * failTimeout) another request may take the lock, and this request then rejects with an
   * AbortError. Default: a lease that this thread renews while it lives (LockManagerOptions.lease).
   * Finite: Infinity is refused (a RangeError), so that a steal can take every LockManager lock.
   */
  hold?: number;
}

export interface LockManagerOptions {
  /**
   * ms of the lease a lock is held under when the request gives no `hold`: this thread renews it
   * every lease / 4 (at most every 250 ms) while it lives; a thread that dies without `watch()`
   * loses its locks lease + failTimeout after its last renewal. Default 5000.
   */
  lease?: number;
}

/** One lock or request in query()'s answer. */
export interface LockInfo {
  name: string;
  mode: LockMode;
  clientId: string;
}

export interface LockManagerSnapshot {
  held: LockInfo[];
  pending: LockInfo[];
}

export type LockGrantedCallback<T> = (lock: Lock | null) => T | PromiseLike<T>;

export const DEFAULT_LEASE_MS = 5000;

interface Parsed {
  name: string;
  mode: LockMode;
  ifAvailable: boolean;
  steal: boolean;
  signal: AbortSignal | undefined;
  waitTimeout: number;
  hold: number | undefined;
}

export class LockManager {
  readonly #table: LockTable;
  readonly #core: FacadeCore;
  readonly #client: Client;
  readonly #maxKeyLength: number;
  /** This manager's `lease` option (ms). */
  readonly #lease: number;

  /** A LockManager over `table` (a LockTable of this process, from either build). */
  constructor(table: LockTable, options?: LockManagerOptions) {
    const facade = (table as unknown as { [FACADE]?: () => FacadeCore } | null)?.[FACADE];
    if (table === null || typeof table !== 'object' || typeof facade !== 'function')
      throw typeError(`The "table" argument must be a LockTable. Received ${describe(table)}`);
    if (options !== undefined && (options === null || typeof options !== 'object'))
      throw typeError(
        `The "options" argument must be of type object. Received ${describe(options)}`,
      );
    const lease =
      options?.lease === undefined
        ? DEFAULT_LEASE_MS
        : checkMs('options.lease', options.lease, false);
    this.#table = table;
    const core = facade.call(table);
    // A table of an older build: its facade has no tryAcquire; the table's own does the same.
    this.#core = typeof core.tryAcquire === 'function' ? core : withTryAcquire(core, table);
    this.#maxKeyLength = table.maxKeyLength;
    this.#lease = Math.min(lease, MAX_FINITE_MS);
    this.#client = clientFor(table.buffer, this.#core, this.#lease);
  }

  /** A LockManager over the table in `buffer` (a LockTable's `buffer`), from any thread. */
  static attach(
    buffer: SharedArrayBuffer,
    options?: LockManagerOptions & { defaults?: TableDefaults },
  ): LockManager {
    return new LockManager(LockTable.attach(buffer, options?.defaults), options);
  }

  /** This thread's clientId in query() answers (the same for the thread's life). */
  get clientId(): string {
    return this.#client.clientId;
  }

  request<T>(name: string, callback: LockGrantedCallback<T>): Promise<Awaited<T>>;
  request<T>(
    name: string,
    options: LockOptions,
    callback: LockGrantedCallback<T>,
  ): Promise<Awaited<T>>;
  // WebIDL: a promise-returning operation reports bad arguments as a rejected promise, never by a
  // throw: every throw below becomes the returned promise's rejection. Not an async function, so
  // that a grant at the first attempt makes one promise, the one that adopts its HeldRequest.
  request(name: unknown, optionsOrCallback?: unknown, callback?: unknown): Promise<unknown> {
    try {
      const count = arguments.length;
      const parsed = this.#parse(count, name, optionsOrCallback, callback);
      const cb = (count >= 3 ? callback : optionsOrCallback) as LockGrantedCallback<unknown>;
      // "If options["signal"] exists and is aborted, reject with its abort reason."
      if (parsed.signal?.aborted) return Promise.reject(parsed.signal.reason as Error);
      if (parsed.steal) return this.#steal(parsed, cb);
      if (parsed.ifAvailable) return this.#ifAvailable(parsed, cb);
      // Requests for a name are granted in request order, across threads: only a request with
      // nobody of any thread waiting before it may try the table at once (Client.mayTry).
      if (this.#client.mayTry(parsed.name, parsed.mode === 'shared')) {
        const lease = this.#core.tryAcquire(parsed.name, parsed.mode, parsed.hold ?? this.#lease);
        if (lease !== null) return HeldRequest.adopt(this.#grant(parsed, lease, cb));
      }
      return this.#wait(parsed).then((lease) => this.#grant(parsed, lease, cb));
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  /** Every thread's held locks and pending requests (see LockManagerSnapshot). */
  async query(): Promise<LockManagerSnapshot> {
    const own = this.#core.threadId;
    const mine: { info: LockInfo; seq: number }[] = [];
    const others: LockInfo[] = [];
    for (const info of this.#table.held()) {
      if (info.key.startsWith('\u0000')) continue; // internal keys (the PostgreSQL front's)
      for (const holder of info.holders) {
        const entry = { name: info.key, mode: info.mode, clientId: clientIdOf(holder.threadId) };
        if (holder.threadId !== own) {
          others.push(entry);
          continue;
        }
        let seq = Infinity;
        for (const h of this.#client.held) {
          if (h.name === info.key && h.lease.token === holder.token) seq = h.seq;
        }
        mine.push({ info: entry, seq });
      }
    }
    mine.sort((a, b) => a.seq - b.seq);
    const pending = this.#core.entries
      .pending()
      .map((e) => ({ name: e.key, mode: e.mode, clientId: clientIdOf(e.owner) }));
    return { held: [...mine.map((m) => m.info), ...others], pending };
  }

  // ---- the steps of request() ------------------------------------------------------------------

  /** WebIDL conversion and the specification's argument checks, in the specification's order. */
  #parse(count: number, rawName: unknown, second: unknown, third: unknown): Parsed {
    if (count < 2) {
      throw typeError(
        `LockManager.request: 2 arguments required (name and callback), but only ${count} present`,
      );
    }
    const hasOptions = count >= 3;
    const callback = hasOptions ? third : second;
    const options = hasOptions ? second : undefined;
    if (typeof rawName === 'symbol')
      throw typeError('The "name" argument must be convertible to a string. Received a symbol');
    const name = String(rawName);
    if (options !== undefined && options !== null && typeof options !== 'object')
      throw typeError(
        `The "options" argument must be of type object. Received ${describe(options)}`,
      );
    const o = (options ?? {}) as Record<string, unknown>;
    // Dictionary members in lexicographic order, as WebIDL converts them.
    const ifAvailable = Boolean(o.ifAvailable);
    const rawMode = o.mode === undefined ? 'exclusive' : String(o.mode as string);
    if (rawMode !== 'exclusive' && rawMode !== 'shared') {
      throw typeError(
        `The "options.mode" property must be 'exclusive' or 'shared'. Received ${describe(o.mode)}`,
      );
    }
    const signal = o.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal))
      throw typeError(
        `The "options.signal" property must be an AbortSignal. Received ${describe(signal)}`,
      );
    const steal = Boolean(o.steal);
    if (typeof callback !== 'function')
      throw typeError(
        `The "callback" argument must be of type function. Received ${describe(callback)}`,
      );
    // The extensions, validated as the table validates them.
    const waitTimeout =
      o.waitTimeout === undefined ? Infinity : checkMs('options.waitTimeout', o.waitTimeout, true);
    const hold = o.hold === undefined ? undefined : checkMs('options.hold', o.hold, false);
    // Every LockManager lock has a deadline (a steal takes only those): no hold without one.
    if (hold === Infinity)
      throw outOfRange('options.hold', '> 0 and <= 2^40 (a LockManager lock has a deadline)', hold);
    // The specification's steps.
    if (name.startsWith('-'))
      throw notSupported(`Lock names starting with "-" are reserved: ${JSON.stringify(name)}`);
    if (steal && ifAvailable)
      throw notSupported('The "steal" and "ifAvailable" options cannot be used together');
    if (steal && rawMode !== 'exclusive')
      throw notSupported('The "steal" option may only be used with mode "exclusive"');
    if (signal !== undefined && (steal || ifAvailable)) {
      throw notSupported('The "signal" option cannot be used with "steal" or "ifAvailable"');
    }
    if (name.length > this.#maxKeyLength) {
      throw new RangeError(
        `The "name" argument must be at most ${this.#maxKeyLength} UTF-16 code units (the table's ` +
          `maxKeyLength), got ${name.length}`,
      );
    }
    return {
      name,
      mode: rawMode,
      ifAvailable,
      steal,
      signal: signal as AbortSignal | undefined,
      waitTimeout,
      hold,
    };
  }

  /**
   * ifAvailable: a grant only if it is grantable now: no request of any thread waits before it
   * (Client.mayTry: of this thread, any for the name; of others, the registry's rule) and the
   * table grants it at its one attempt.
   */
  async #ifAvailable(p: Parsed, callback: LockGrantedCallback<unknown>): Promise<unknown> {
    const client = this.#client;
    const queued = !client.mayTry(p.name, p.mode === 'shared');
    const lease = queued ? null : this.#core.tryAcquire(p.name, p.mode, p.hold ?? this.#lease);
    if (lease === null) {
      await null; // the callback never runs inside request()
      return callback(null);
    }
    return this.#grant(p, lease, callback);
  }

  /**
   * steal: the table takes the lock from every holder with a deadline (all of this facade's),
   * which turns their leases stale; then this thread's holders of the name reject, the other
   * threads' doorbells ring, and each robbed thread rejects its requests there (Client.checkLost).
   */
  async #steal(p: Parsed, callback: LockGrantedCallback<unknown>): Promise<unknown> {
    const client = this.#client;
    const lease = await this.#core.steal(p.name, {
      mode: 'exclusive',
      hold: p.hold ?? this.#lease,
      waitTimeout: p.waitTimeout,
    });
    // Only now that the steal succeeded: this thread's holders of the name reject (their leases
    // are stale), and every other thread's doorbell rings (the table does not say whom the steal
    // robbed: a holder granted after any look we took before it would be missed; a thread that
    // lost nothing finds its locks held and waits again). A steal that failed (ERR_LOCK_TIMEOUT)
    // robbed nobody, and its holders' heartbeat keeps renewing them.
    client.robLocal(p.name);
    client.ringOthers();
    return this.#grant(p, lease, callback);
  }

  /**
   * A request that must wait: its entry, its turn (Client.grantable: the head of its thread's
   * queue for the name, with no earlier request of any thread before it), then the table.
   */
  async #wait(p: Parsed): Promise<Lease> {
    const client = this.#client;
    const req = client.register(p.name, p.mode);
    const start = LockTable.now();
    const signal = p.signal;
    // How long this request may sleep synchronously on its doorbell (Client.waitForRing) rather
    // than through the event loop: the table's spinDelay, once for its turn and once for the lock,
    // and never when the ring could only come from this thread (see #mayWaitSync).
    const syncMs = this.#table.defaults.spinDelay;
    let syncUntil = start + syncMs;
    let granted = false;
    try {
      for (;;) {
        // ORDER: the doorbell's value before the look; a ring after the look wakes the sleep.
        const rung = client.doorbellNow();
        if (client.grantable(req)) break;
        if (signal?.aborted) throw signal.reason;
        const left = p.waitTimeout - (LockTable.now() - start);
        if (left <= 0) throw timeout(p.name, p.waitTimeout);
        // Right behind the one whose turn it is (granted within microseconds on a short section,
        // and it rings us then): a synchronous sleep wakes in microseconds, the event loop's in
        // tens. Further back, the wait is several hand-offs: the event loop's.
        const spare = Math.min(left, syncUntil - LockTable.now());
        if (spare > 0 && client.blockers === 1 && this.#mayWaitSync(req)) {
          if (client.waitForRing(rung, spare)) continue;
        }
        // Looks again whenever admitted (client.ts, PendingRequest.admit); admit is set in the
        // same task as the look that failed, so a ring after that look reaches it. The head looks
        // again at least every ENTRY_REFRESH_MS (an entry before it may lapse, and nobody rings
        // for that), on a ref'd timer: it keeps the thread alive while the request waits its
        // turn, as the table's own waits do (the doorbell's waitAsync does not).
        const look = client.isHead(req) ? Math.min(left, ENTRY_REFRESH_MS) : left;
        await new Promise<void>((resolve, reject) => {
          let timer: NodeJS.Timeout | undefined;
          const onAbort = (): void => {
            cleanup();
            reject(signal!.reason);
          };
          const cleanup = (): void => {
            req.admit = undefined;
            if (timer !== undefined) clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
          };
          req.admit = () => {
            cleanup();
            resolve();
          };
          signal?.addEventListener('abort', onAbort, { once: true });
          // At `left`, the loop's check rejects with the timeout.
          if (look !== Infinity) timer = setTimeout(req.admit, look);
        });
      }
      // Our turn. The lock is mostly free (the holder before us rang us at its grant, a wake-up
      // ago, and sections are short): one table attempt (the request fast path's one CAS). Held:
      // sleep on the doorbell for the holder's release (its ring: Client.released) for up to
      // spinDelay, marked so that the release rings us; then the table's own wait.
      if (signal?.aborted) throw signal.reason;
      const hold = p.hold ?? this.#lease;
      const lease = this.#core.tryAcquire(p.name, p.mode, hold);
      granted = lease !== null;
      if (granted) return lease!;
      if (this.#mayWaitSync(req)) {
        syncUntil = LockTable.now() + Math.min(syncMs, p.waitTimeout - (LockTable.now() - start));
        client.ringWait(true);
        try {
          for (;;) {
            // ORDER: marked, then the doorbell's value, then the look: a release after the look
            // sees the mark and rings (Entries.ringWaiters).
            const rung = client.doorbellNow();
            const got = this.#core.tryAcquire(p.name, p.mode, hold);
            granted = got !== null;
            if (granted) return got!;
            const spare = syncUntil - LockTable.now();
            if (spare <= 0 || !client.waitForRing(rung, spare)) break;
          }
        } finally {
          client.ringWait(false);
        }
      }
      const left = Math.max(0, p.waitTimeout - (LockTable.now() - start));
      try {
        const got = await this.#table.acquire(p.name, {
          mode: p.mode,
          hold,
          waitTimeout: left,
          signal,
        });
        granted = true;
        return got;
      } catch (error) {
        // The table's AbortError carries the reason; the specification rejects with the reason.
        if (signal?.aborted && (error as { name?: string })?.name === 'AbortError')
          throw signal.reason;
        if (error instanceof LockError && error.code === 'ERR_LOCK_TIMEOUT')
          throw timeout(p.name, p.waitTimeout);
        throw error;
      }
    } finally {
      client.unregister(req, granted);
    }
  }

  /**
   * May `req` sleep synchronously (blocking this thread's event loop for at most spinDelay)? Only
   * when what it waits for is another thread's: it is the head of this thread's queue for the name
   * (an earlier request of ours moves only when our event loop runs), and this thread holds no
   * lock of the name (which it could release only from its event loop).
   */
  #mayWaitSync(req: PendingRequest): boolean {
    return this.#client.isHead(req) && !this.#client.holds(req.name);
  }

  /**
   * A granted request (held-request.ts): the callback runs with the lock in a later microtask,
   * never inside request(); the lock is released when the callback's promise settles, then the
   * request's promise settles the same way. A steal or a lost lease rejects the request's promise
   * at once with an AbortError; the callback runs on, and its late release is a no-op. Returned as
   * a thenable: the promise that adopts it (Promise.resolve, an async function's return, a `then`
   * handler's) is the request's promise.
   */
  #grant(p: Parsed, lease: Lease, callback: LockGrantedCallback<unknown>): HeldRequest {
    const renew = p.hold === undefined ? this.#lease : undefined;
    // Its `then` acts once, with the resolving functions of the promise that adopts it.
    return new HeldRequest(this.#client, p.name, p.mode, lease, renew, callback);
  }
}

/** `core` with a tryAcquire by the table's public one (a facade of a build without its own). */
function withTryAcquire(core: FacadeCore, table: LockTable): FacadeCore {
  const tryAcquire: FacadeCore['tryAcquire'] = (key, mode, hold) =>
    table.tryAcquire(key, { mode, hold });
  return Object.assign(Object.create(core) as FacadeCore, { tryAcquire });
}

function timeout(name: string, waitTimeout: number): LockError {
  return new LockError(
    'ERR_LOCK_TIMEOUT',
    name,
    `The lock ${JSON.stringify(name)} was not granted within options.waitTimeout (${waitTimeout} ms)`,
  );
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'function')
    return `function ${(value as { name?: string }).name || '(anonymous)'}`;
  if (typeof value === 'object') return `an instance of ${value.constructor?.name ?? 'Object'}`;
  if (typeof value === 'symbol') return 'a symbol';
  return `type ${typeof value} (${JSON.stringify(value) ?? String(value)})`;
}
