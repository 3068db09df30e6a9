/**
 * A thread's side of the Web Locks facade over one table: its locks and requests, its entries in
 * the table's request registry (src/table/entries.ts), its doorbell, and the heartbeat that keeps
 * them alive. One per (thread, table buffer), shared by every LockManager of that thread on that
 * table, so that they form one "client" as the specification means it (one clientId, one queue
 * order).
 */
import { monotonicNow } from '../api/clock.js';
import type { Entries } from '../table/entries.js';
import { ENTRY_REFRESH_MS } from '../table/entries.js';
import { ENTRY_CLIENT, ENTRY_PENDING } from '../table/layout.js';
import { testHooks } from '../table/test-hooks.js';
import type { FacadeCore } from '../table/lock-table.js';
import { abortError } from './errors.js';
import { HeldList, type HeldRequest } from './held-request.js';
import type { LockMode } from './lock.js';

/**
 * A request of this thread that waits: its registry entry, and its turn. It tries the table only
 * when it is the head of its name's local queue and no earlier request of any thread stands before
 * it in the registry (Client.grantable): the specification's request order, across threads.
 */
export interface PendingRequest {
  readonly name: string;
  readonly mode: LockMode;
  readonly seq: number;
  /** Its registry entry, or -1 while it waits unlisted (no entry was free: see register()). */
  entry: number;
  word: number;
  /**
   * Called when its turn may have come: it became the head of its name's local queue, or the
   * doorbell rang (a request of another thread left the queue for the name), or a heartbeat passed
   * (an entry before it may have lapsed). It then looks again.
   */
  admit: (() => void) | undefined;
}

/** One per (thread, buffer): see the file comment. */
const clients = new WeakMap<SharedArrayBuffer, Client>();

export function clientFor(buffer: SharedArrayBuffer, core: FacadeCore, lease: number): Client {
  let client = clients.get(buffer);
  if (client === undefined) {
    client = new Client(core, lease);
    clients.set(buffer, client);
  }
  client.lease = Math.min(client.lease, lease);
  return client;
}

/** The word of a PendingRequest without an entry (entry -1): see register(). */
const UNLISTED = -1;

export function clientIdOf(threadId: number): string {
  return `thread-${threadId}`;
}

export class Client {
  readonly core: FacadeCore;
  readonly entries: Entries;
  readonly clientId: string;
  /** The shortest `lease` of this thread's LockManagers on the table: the heartbeat's pace. */
  lease: number;
  /** This thread's granted requests whose promise has not settled, in grant order. */
  readonly held = new HeldList();
  /** Per name, this thread's waiting requests in request order (the local FIFO queue). */
  readonly queues = new Map<string, PendingRequest[]>();
  #grants = 0;
  #entry = -1;
  #entryWord = 0;
  #beating = false;

  /**
   * Does the table's registry keep the cross-thread request order (Entries.blocked)? Not that of a
   * table from an older build of locktable (its entries have no such method): this thread's
   * requests on it are then in order among themselves only, as that build's were.
   */
  readonly #ordered: boolean;

  constructor(core: FacadeCore, lease: number) {
    this.core = core;
    this.entries = core.entries;
    this.#ordered = typeof (core.entries as Partial<Entries>).blocked === 'function';
    this.clientId = clientIdOf(core.threadId);
    this.lease = lease;
    this.#claimClient();
  }

  nextGrant(): number {
    return this.#grants++;
  }

  /** Registers a waiting request (an entry that every thread's query() lists). */
  register(name: string, mode: LockMode): PendingRequest {
    const seq = this.entries.nextSeq();
    const entry = this.entries.claim(
      ENTRY_PENDING,
      this.core.threadId,
      seq,
      mode === 'shared' ? 1 : 0,
      name,
    );
    // No free entry (the registry has `capacity` entries, for every thread's waiting requests and
    // doorbells): the request waits unlisted (query() does not show it) and gets the lock in its
    // turn all the same; the heartbeat claims an entry for it as soon as one is free.
    const req: PendingRequest = {
      name,
      mode,
      seq,
      entry,
      word: entry < 0 ? UNLISTED : this.entries.wordOf(entry),
      admit: undefined,
    };
    let queue = this.queues.get(name);
    if (queue === undefined) this.queues.set(name, (queue = []));
    queue.push(req);
    this.#beat();
    return req;
  }

  /**
   * May a new request for `name` try the table at once? Not when this thread has one queued for
   * the name, nor when an earlier request of any thread stands before it in the registry (see
   * Entries.blocked); the waiting hint skips the registry scan when nothing waits for a name of
   * the same bucket (a hash of the name), anywhere.
   */
  mayTry(name: string, shared: boolean): boolean {
    if (this.queues.has(name)) return false;
    if (!this.#ordered || !this.entries.waitingHint(name)) return true;
    return testHooks.unordered || !this.entries.blocked(name, shared, undefined, -1);
  }

  /**
   * Has `req`'s turn come? It is the head of its local queue, and no earlier request of any
   * thread stands before it in the registry: the specification's "grantable", but for whether the
   * lock is held, which the table decides. An unlisted request (entry -1) looks at the registry
   * by its place all the same, but nobody sees it: other threads do not wait for it.
   */
  grantable(req: PendingRequest): boolean {
    this.blockers = this.isHead(req) ? 0 : 2;
    if (this.blockers > 0 || !this.#ordered || testHooks.unordered) return this.blockers === 0;
    const shared = req.mode === 'shared';
    this.blockers = this.entries.blockers(req.name, shared, req.seq, req.entry, 2);
    return this.blockers === 0;
  }

  /**
   * After grantable() said no: 1 when exactly one request of another thread stands before it (the
   * one whose turn it is, granted within microseconds on a short section, and which rings it
   * then), else 2 (more, or an earlier request of this thread).
   */
  blockers = 0;

  /**
   * A waiting request leaves (granted, aborted, timed out, failed): its entry and its turn go, and
   * the threads that wait for the name behind it are told (their doorbells ring).
   */
  unregister(req: PendingRequest, granted = false): void {
    if (
      req.entry >= 0 &&
      this.entries.free(req.entry, req.word) &&
      this.#ordered &&
      this.entries.waitingHint(req.name)
    ) {
      if (granted && req.mode === 'exclusive') this.#deferRing(req.name);
      else this.entries.ringWaiters(req.name, this.core.threadId);
    }
    const queue = this.queues.get(req.name);
    if (queue === undefined) return;
    const at = queue.indexOf(req);
    if (at < 0) return;
    queue.splice(at, 1);
    if (queue.length === 0) {
      this.queues.delete(req.name);
      return;
    }
    if (at === 0) {
      const head = queue[0]!;
      const admit = head.admit;
      head.admit = undefined;
      admit?.();
    }
  }

  /**
   * A lock of this thread for `name` was released: when any request waits for the name (the
   * waiting hint), the thread of its earliest request is rung, so that a head waiting on its
   * doorbell (waitForRing) takes the lock at once rather than at its next look.
   */
  released(name: string): void {
    const deferred = this.#deferred.delete(name);
    if (!this.#ordered || !this.entries.waitingHint(name)) return;
    this.entries.ringWaiters(name, this.core.threadId, !deferred);
  }

  /**
   * The ring of an exclusive grant, put off until the lock's release or this thread's next
   * macrotask, whichever comes first. The request behind it can take the lock only at the
   * release: rung at the grant, it wakes (a notify and a wake-up, 10 to 100 us on a loaded VM) to
   * find the lock held by a section of a few microseconds, and sleeps again until the release
   * rings it a second time. A section that runs past a macrotask (it awaits I/O, a timer) rings at
   * that macrotask, so the head is awake and watching when it ends.
   */
  #deferRing(name: string): void {
    this.#deferred.add(name);
    if (this.#flushing) return;
    this.#flushing = true;
    setImmediate(() => {
      this.#flushing = false;
      for (const n of this.#deferred) {
        this.#deferred.delete(n);
        if (this.entries.waitingHint(n)) this.entries.ringWaiters(n, this.core.threadId);
      }
    });
  }

  /** Names whose grant ring is put off (#deferRing), and whether a flush is scheduled. */
  readonly #deferred = new Set<string>();
  #flushing = false;

  /** The doorbell's value now, before a look (see waitForRing). */
  doorbellNow(): number {
    return this.#rung();
  }

  /**
   * Sleeps synchronously, for at most `ms`, until this thread's doorbell moves from `rung` (its
   * value before the look that failed): a head whose lock is held waits here for the holder's
   * release (released()), as a spin would, but off the CPU, and woken in microseconds where a
   * wake-up through the event loop (the heartbeat's waitAsync) costs tens. False without a doorbell.
   */
  waitForRing(rung: number, ms: number): boolean {
    if (this.#entry < 0 || !(ms > 0)) return false;
    const { array, index } = this.entries.doorbell(this.#entry);
    Atomics.wait(array, index, rung, ms);
    return true;
  }

  /**
   * Marks this thread as about to wait for a release's ring (on: before its look, so that a
   * release after the look sees the mark and rings), or no longer.
   */
  ringWait(on: boolean): void {
    // Only into our own entry: it lapses while our event loop is blocked past its lease, and
    // another thread may claim it before our heartbeat's next beat claims one anew. The mark
    // shares a word with the entry's mode: written into a request's entry, it would turn an
    // exclusive request shared. So check first, and claim a client entry anew if it is gone.
    if (this.#entry >= 0 && this.entries.wordOf(this.#entry) !== this.#entryWord) {
      if (!on) return;
      this.#claimClient();
    }
    if (this.#entry >= 0) this.entries.setRingWait(this.#entry, on ? 1 : 0);
  }

  /** Does this thread hold `name` (a lock it must release itself before a head of it can go)? */
  holds(name: string): boolean {
    for (const h of this.held) if (h.name === name && !h.done) return true;
    return false;
  }

  /** Is `req` the head of its name's local queue? */
  isHead(req: PendingRequest): boolean {
    return this.queues.get(req.name)?.[0] === req;
  }

  hold(h: HeldRequest): void {
    this.held.add(h);
    this.#beat();
  }

  /**
   * The requests of this thread whose lease is gone (stolen, or reclaimed past its deadline)
   * reject with an AbortError now. Called by the heartbeat and the doorbell, and by a steal of
   * this thread's own locks.
   */
  checkLost(): void {
    for (const h of this.held) {
      if (h.done || h.lease.held) continue;
      h.reject(abortError(`The lock ${JSON.stringify(h.name)} was stolen or lost`));
    }
  }

  /** Rejects this thread's requests that hold `name` (a steal by this thread). */
  robLocal(name: string): void {
    for (const h of this.held) {
      if (h.done || h.name !== name) continue;
      h.reject(abortError(`The lock ${JSON.stringify(name)} was stolen`));
    }
  }

  /** Rings every other thread's doorbell (a lock was just stolen, maybe from them). */
  ringOthers(): void {
    this.entries.ringClients(this.core.threadId);
  }

  #claimClient(): void {
    this.#entry = this.entries.claim(ENTRY_CLIENT, this.core.threadId, 0, 0, '');
    this.#entryWord = this.#entry < 0 ? 0 : this.entries.wordOf(this.#entry);
  }

  /**
   * The heartbeat, while this thread holds or waits for anything: every beat (or doorbell ring) it
   * refreshes this thread's entries (claiming them anew if they lapsed while the event loop was
   * blocked), renews leases, and rejects requests whose lock was stolen or lost. It waits on the
   * doorbell with Atomics.waitAsync, which does not keep the thread alive by itself.
   */
  #beat(): void {
    if (this.#beating) return;
    this.#beating = true;
    void this.#heartbeat();
  }

  async #heartbeat(): Promise<void> {
    // The doorbell's value, loaded before each checkLost(): a steal rings after it robs, so a
    // ring that lands after this load is either seen by that checkLost() or wakes the next wait.
    let rung = this.#rung();
    // When the next beat is due (entries and leases refreshed): every `interval`, not at every
    // ring. Rings come every few microseconds under contention, and a thread rung is on the
    // hand-off's critical path: it looks at its turn first.
    let due = 0;
    try {
      while (this.held.size > 0 || this.queues.size > 0) {
        const interval = Math.min(ENTRY_REFRESH_MS, this.lease / 4);
        if (monotonicNow() >= due) {
          if (this.#entry < 0 || !this.entries.refresh(this.#entry, this.#entryWord)) {
            this.#claimClient();
            rung = this.#rung();
            this.checkLost();
          }
          this.#refresh();
          due = monotonicNow() + interval;
        }
        const left = Math.max(1, due - monotonicNow());
        if (this.#entry >= 0) {
          const { array, index } = this.entries.doorbell(this.#entry);
          // `rung` was loaded before the last checkLost(): a ring after it wakes this wait.
          const w = Atomics.waitAsync(array, index, rung, left);
          if (w.async) await w.value;
        } else {
          await new Promise((resolve) => setTimeout(resolve, left).unref());
        }
        rung = this.#rung();
        this.checkLost();
        // After the load of `rung`: a request that leaves the queue frees its entry, then rings;
        // a ring after the load wakes the next wait, and one before it freed what we look at now.
        this.#admitHeads();
      }
    } finally {
      this.#beating = false;
    }
  }

  /** Each local queue's head that waits for its turn looks again (see PendingRequest.admit). */
  #admitHeads(): void {
    for (const queue of this.queues.values()) {
      const head = queue[0]!;
      const admit = head.admit;
      head.admit = undefined;
      admit?.();
    }
  }

  /** The doorbell's value now (0 without a CLIENT entry). */
  #rung(): number {
    if (this.#entry < 0) return 0;
    const { array, index } = this.entries.doorbell(this.#entry);
    return Atomics.load(array, index);
  }

  #refresh(): void {
    for (const queue of this.queues.values()) {
      for (const req of queue) {
        if (req.entry >= 0 && this.entries.refresh(req.entry, req.word)) continue;
        // Unlisted (no entry was free), or lapsed while our event loop was blocked and taken:
        // claim one now, with the request's place in the order.
        const entry = this.entries.claim(
          ENTRY_PENDING,
          this.core.threadId,
          req.seq,
          req.mode === 'shared' ? 1 : 0,
          req.name,
        );
        req.entry = entry;
        req.word = entry < 0 ? UNLISTED : this.entries.wordOf(entry);
      }
    }
    for (const h of this.held) {
      if (h.renew === undefined || h.done) continue;
      try {
        h.lease.extend(h.renew);
      } catch {
        // Stale: checkLost() rejects it.
      }
    }
  }
}
