/**
 * A granted request, from its grant until its promise settles: one object per request, which runs
 * the callback, releases the lease when the callback's promise settles, and settles the request's
 * promise. The client (client.ts) keeps it in its `held` list for the heartbeat, which renews its
 * lease and rejects it when the lock was stolen or lost.
 *
 * The request's promise is `Promise.resolve(held)`: a HeldRequest is a thenable, so the engine
 * calls its `then` in a microtask of its own (a PromiseResolveThenableJob) with the promise's
 * resolving functions. That microtask is where the callback runs: after request() has returned,
 * as the specification asks, with no promise, closure or queueMicrotask of the facade's own (but
 * under a replaced global Promise that calls `then` at once: see HeldRequest.adopt). Only the
 * facade holds a HeldRequest: the callback gets a Lock, and `this` undefined.
 */
import type { Lease } from '../table/lease.js';
import type { Client } from './client.js';
import { abortError } from './errors.js';
import { Lock, type LockMode } from './lock.js';

type Callback = (lock: Lock | null) => unknown;

/** HeldRequest.adopt is inside its Promise.resolve: a `then` called now is not in a microtask. */
let adopting = false;

/** Its `then` has not been called yet; has been, once; its callback's promise has settled. */
const NEW = 0;
const ADOPTED = 1;
const SETTLED = 2;

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
  #state = NEW;
  #resolve: ((value: unknown) => void) | undefined = undefined;
  #reject: ((reason: unknown) => void) | undefined = undefined;
  /** Why it was rejected before `then` ran (a steal in between), else undefined. */
  #early: unknown = undefined;

  /**
   * The request's promise: `Promise.resolve(held)`. The engine's Promise calls `then` in a later
   * microtask; a replaced global Promise (bluebird, zone.js) may call it at once, inside
   * request(), where the callback must not run: the flag tells `then` to wait a microtask. No
   * try/finally: should that Promise.resolve throw, the flag stays set until the next adopt, and a
   * `then` meanwhile only waits a microtask more.
   */
  static adopt(held: HeldRequest): Promise<unknown> {
    adopting = true;
    const promise = Promise.resolve(held);
    adopting = false;
    return promise;
  }

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
   * Called once, by the promise that adopts it, in the microtask after `Promise.resolve(this)`
   * (see the file comment): runs the callback and settles that promise through `resolve`/`reject`.
   * Any later call is ignored: only the facade holds a HeldRequest (the callback gets `this`
   * undefined), and a second adoption must neither run the callback again nor take the
   * settlement.
   */
  then(resolve: (value: unknown) => void, reject: (reason: unknown) => void): void {
    if (this.#state !== NEW) return;
    this.#state = ADOPTED;
    this.#resolve = resolve;
    this.#reject = reject;
    if (this.done) reject(this.#early); // stolen before the callback ran: it runs all the same
    if (adopting) queueMicrotask(() => this.#run());
    else this.#run();
  }

  /** Runs the callback; its promise's settling releases the lease and settles the request. */
  #run(): void {
    // Called with `this` undefined, as WebIDL invokes a callback: never the HeldRequest (its raw
    // lease, its `then`).
    const callback = this.#callback;
    try {
      const result = callback(new Lock(this.name, this.mode, this.lease));
      // The specification resolves a promise with the result and releases when that settles: a
      // plain value too settles in a later microtask. Promise.resolve of a native promise is that
      // promise itself, so the one `then` below is the only reaction. Both can throw (a promise
      // with a `then` or `constructor` getter that throws, its own `then`): inside the try, so
      // that the error too releases the lease and settles the request.
      Promise.resolve(result).then(
        (value) => this.#settle(true, value),
        (error: unknown) => this.#settle(false, error),
      );
    } catch (error) {
      this.#settle(false, error);
    }
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
    // Once: a callback's promise with its own `then` may call both handlers, or one and throw.
    if (this.#state === SETTLED) return;
    this.#state = SETTLED;
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
    if (!lost) this.#client.released(this.name);
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
