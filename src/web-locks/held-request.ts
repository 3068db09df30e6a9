/**
 * A granted request, from its grant until its promise settles: one object per request, which runs
 * the callback, releases the lease when the callback's promise settles, and settles the request's
 * promise. The client (client.ts) keeps it in its `held` list for the heartbeat, which renews its
 * lease and rejects it when the lock was stolen or lost.
 *
 * The request's promise is `Promise.resolve(held)`: a HeldRequest is a thenable, so the engine
 * calls its `then` in a microtask of its own (a PromiseResolveThenableJob) with the promise's
 * resolving functions. That microtask is where the callback runs: after request() has returned,
 * as the specification asks, with no promise, closure or queueMicrotask of the facade's own.
 */
import type { Lease } from '../table/lease.js';
import type { Client } from './client.js';
import { abortError } from './errors.js';
import { Lock, type LockMode } from './lock.js';

type Callback = (lock: Lock | null) => unknown;

export class HeldRequest {
  readonly name: string;
  readonly mode: LockMode;
  readonly lease: Lease;
  /** ms the heartbeat renews the lease to at each beat (no `hold` given), else undefined. */
  readonly renew: number | undefined;
  /** Local grant order, for query(). */
  readonly seq: number;
  /** The request's promise has settled (stolen or lost: rejected; or its callback settled). */
  done = false;
  /** Its neighbours in its client's HeldList (below), in grant order. */
  prev: HeldRequest | undefined = undefined;
  next: HeldRequest | undefined = undefined;
  readonly #client: Client;
  readonly #callback: Callback;
  #resolve: ((value: unknown) => void) | undefined = undefined;
  #reject: ((reason: unknown) => void) | undefined = undefined;
  /** Why it was rejected before `then` ran (a steal in between), else undefined. */
  #early: unknown = undefined;

  /** A grant: held from now on (the client's `held`, the heartbeat). */
  constructor(
    client: Client,
    name: string,
    mode: LockMode,
    lease: Lease,
    renew: number | undefined,
    callback: Callback,
  ) {
    this.#client = client;
    this.name = name;
    this.mode = mode;
    this.lease = lease;
    this.renew = renew;
    this.#callback = callback;
    this.seq = client.nextGrant();
    client.hold(this);
  }

  /**
   * Called once, by the engine, in the microtask after `Promise.resolve(this)` (see the file
   * comment): runs the callback and settles the request's promise through `resolve`/`reject`.
   */
  then(resolve: (value: unknown) => void, reject: (reason: unknown) => void): void {
    this.#resolve = resolve;
    this.#reject = reject;
    if (this.done) reject(this.#early); // stolen before the callback ran: it runs all the same
    let result: unknown;
    try {
      result = this.#callback(new Lock(this.name, this.mode, this.lease));
    } catch (error) {
      this.#settle(false, error);
      return;
    }
    // The specification resolves a promise with the result and releases when that settles: a
    // plain value too settles in a later microtask. Promise.resolve of a native promise is that
    // promise itself, so the one `then` below is the only reaction.
    Promise.resolve(result).then(
      (value) => this.#settle(true, value),
      (error: unknown) => this.#settle(false, error),
    );
  }

  /** Rejects the request's promise now (a steal, or a lost lease); its callback runs on. */
  reject(error: unknown): void {
    if (this.done) return;
    this.done = true;
    if (this.#reject === undefined) this.#early = error;
    else this.#reject(error);
  }

  /** The callback's promise settled: release the lease, then settle the request's promise. */
  #settle(ok: boolean, value: unknown): void {
    this.#client.held.delete(this);
    // The release is the check: it fails (ERR_LOCK_STALE) exactly when the lock was taken from
    // this lease (stolen, or reclaimed past its hold), whether or not the heartbeat or the
    // doorbell has told this thread yet (they run as separate tasks, and a callback that blocked
    // the event loop settles first).
    let lost = false;
    try {
      this.lease.release();
    } catch {
      lost = true;
    }
    if (this.done) return;
    this.done = true;
    if (lost) this.#reject!(abortError(`The lock ${JSON.stringify(this.name)} was stolen or lost`));
    else if (ok) this.#resolve!(value);
    else this.#reject!(value);
  }
}

/**
 * A client's granted requests in grant order, as a list linked through the requests themselves: a
 * grant adds one and its settling deletes it, on every request, where a Set's add and delete of a
 * new object (its identity hash, its table's growth and shrinking) cost about 0.12 µs a request
 * (DESIGN.md, "Web Locks", Cost). Iterated only by the heartbeat, steals and query().
 */
export class HeldList implements Iterable<HeldRequest> {
  #first: HeldRequest | undefined = undefined;
  #last: HeldRequest | undefined = undefined;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(h: HeldRequest): void {
    h.prev = this.#last;
    h.next = undefined;
    if (this.#last === undefined) this.#first = h;
    else this.#last.next = h;
    this.#last = h;
    this.#size++;
  }

  /** Unlinks `h` (a no-op if it is not in the list). Its `next` stays, for an iteration on it. */
  delete(h: HeldRequest): void {
    const { prev, next } = h;
    if (prev === undefined && this.#first !== h) return;
    if (prev === undefined) this.#first = next;
    else prev.next = next;
    if (next === undefined) this.#last = prev;
    else next.prev = prev;
    h.prev = undefined;
    this.#size--;
  }

  *[Symbol.iterator](): Iterator<HeldRequest> {
    for (let h = this.#first; h !== undefined; h = h.next) yield h;
  }
}
