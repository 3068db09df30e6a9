/**
 * A Lease is one grant of one key to this thread: the handle to release or extend it, and what
 * the holder needs to know about it (its mode, fencing token, deadline, whether it was recovered
 * from a dead holder). `using lease = table.acquireSync(key)` releases it at the end of the block.
 */
import { inspect, type InspectOptions } from 'node:util';
import { brand } from '../api/cross-build.js';
import { releasedError, staleError } from '../api/errors.js';
import type { Grants } from './grants.js';
import { GRANTS, STAMP } from './internals.js';
import type { Mode } from './slot-state.js';
import { releaseObserved } from './diagnostics.js';
import { checkMs } from '../api/options.js';

/** What a lease needs from its table (kept out of the public API). */
export interface LeaseHost {
  readonly [GRANTS]: Grants;
  noteRelease(lease: Lease): void;
}

/** Bits of a lease's flags. */
export const LEASE_SHARED = 1;
export const LEASE_RECOVERED = 2;
const RELEASED = 4;
const SHARED = LEASE_SHARED;
const RECOVERED = LEASE_RECOVERED;

export class Lease implements Disposable {
  /** The key this lease holds. */
  declare readonly key: string;
  // Few fields, all numbers but the host and key: a lease is made on every acquire, so its
  // construction is part of the fast path. They are declared, not defined (no `#`): a class with
  // defined fields runs an initializer before its constructor, which costs the fast path its
  // inlining into the caller (DESIGN.md, "The cost of the fast path"). TypeScript keeps them
  // private; [inspect.custom] keeps them out of console.log.
  declare private readonly host: LeaseHost;
  declare private slot: number;
  declare private tokenLo: number;
  declare private tokenHi: number;
  /** Exclusive: the state word this lease last wrote. Shared: its holder record. */
  declare private word: number;
  declare private deadlineMs: number;
  /** SHARED | RECOVERED | RELEASED. */
  declare private flags: number;

  /** @internal Leases are made by LockTable; this constructor is not part of the API. */
  constructor(
    host: LeaseHost,
    key: string,
    slot: number,
    flags: number,
    tokenLo: number,
    tokenHi: number,
    word: number,
    deadline: number,
  ) {
    this.host = host;
    this.key = key;
    this.slot = slot;
    this.flags = flags;
    this.tokenLo = tokenLo;
    this.tokenHi = tokenHi;
    this.word = word;
    this.deadlineMs = deadline;
  }

  /**
   * @internal The grant, written into a lease that a fast path made before its grant CAS
   * (LockTable.#fastCached, KeyHandle.fast; acquire() also settles its promise with it first): an
   * allocation made after the CAS could start a garbage collection while this thread holds the
   * key (DESIGN.md, "Nothing allocated while holding"). Such a lease is returned only once
   * stamped; one whose CAS failed is dropped unseen.
   */
  [STAMP](slot: number, tokenLo: number, tokenHi: number, word: number, deadline: number): Lease {
    this.slot = slot;
    this.tokenLo = tokenLo;
    this.tokenHi = tokenHi;
    this.word = word;
    this.deadlineMs = deadline;
    return this;
  }

  /** What console.log and util.inspect show: the lease as its holder sees it. */
  /**
   * @internal `Promise.resolve(lease)` for a lease that a fast path just made (acquire() and
   * KeyHandle.acquire() on a free key). The read of `flags` checks the lease's hidden class ahead
   * of Promise.resolve, so the JIT knows that `lease` is a Lease, finds no `then` on its prototype
   * chain and settles the promise at once. Without it, every such promise looked `then` up along
   * the chain in a builtin (GetProperty: 7.5% of a profile of 1,000 keys round robin, async),
   * because the lease reached Promise.resolve through the fast path's merged returns (a lease,
   * null or undefined), which carry no class. A fast path's lease is a fresh exclusive lease
   * (flags 0), so the first return is the one taken.
   */
  static settled(lease: Lease): Promise<Lease> {
    if (lease.flags === 0) return Promise.resolve(lease);
    return Promise.resolve(lease);
  }

  [inspect.custom](_depth: number, options: InspectOptions): string {
    const { key, mode, token, deadline, recovered, held } = this;
    return `Lease ${inspect({ key, mode, token, deadline, recovered, held }, options)}`;
  }

  /** 'exclusive' or 'shared'. */
  get mode(): Mode {
    return (this.flags & SHARED) !== 0 ? 'shared' : 'exclusive';
  }

  /** True when this grant reclaimed the lock from a holder whose deadline had passed. */
  get recovered(): boolean {
    return (this.flags & RECOVERED) !== 0;
  }

  /**
   * The fencing token: strictly increasing for this key across every grant, reclaim and slot
   * reuse. Pass it with every write the lock protects; a store that has seen a larger token
   * refuses a smaller one, so a holder that lost its lease cannot clobber the next one.
   */
  get token(): bigint {
    return (BigInt(this.tokenHi) << 32n) | BigInt(this.tokenLo >>> 0);
  }

  /** Monotonic deadline (ms, the table's clock: see `LockTable.now()`), or Infinity. */
  get deadline(): number {
    return this.deadlineMs;
  }

  /** True while this lease still holds its lock (false once released, reclaimed or forced off). */
  get held(): boolean {
    const flags = this.flags;
    if ((flags & RELEASED) !== 0) return false;
    const g = this.host[GRANTS];
    return (flags & SHARED) === 0
      ? g.holdsExclusive(this.slot, this.tokenLo, this.tokenHi)
      : g.holdsShared(this.slot, this.word, this.tokenLo, this.tokenHi);
  }

  /** Releases the lock. Throws ERR_LOCK_RELEASED if already released, ERR_LOCK_STALE if lost. */
  release(): void {
    const flags = this.flags;
    if (flags !== 0) {
      this.releaseOther(flags);
      return;
    }
    // An exclusive lease, not released yet: the common case.
    this.flags = RELEASED;
    if (!this.host[GRANTS].releaseExclusive(this.slot, this.tokenLo, this.tokenHi, this.word))
      throw staleError(this.key, 'release the lease');
    // Diagnostics (diagnostics.ts): one module read, after the release.
    if (releaseObserved()) this.host.noteRelease(this);
  }

  /** release() of a lease that is shared, recovered or already released. */
  private releaseOther(flags: number): void {
    if ((flags & RELEASED) !== 0) throw releasedError(this.key, 'release the lease');
    this.flags = flags | RELEASED;
    const g = this.host[GRANTS];
    if ((flags & SHARED) === 0) {
      if (!g.releaseExclusive(this.slot, this.tokenLo, this.tokenHi, this.word))
        throw staleError(this.key, 'release the lease');
      if (releaseObserved()) this.host.noteRelease(this);
      return;
    }
    if (!g.releaseShared(this.slot, this.word, this.tokenLo, this.tokenHi)) {
      throw staleError(this.key, 'release the lease');
    }
    if (releaseObserved()) this.host.noteRelease(this);
  }

  /**
   * Pushes the deadline out to `ms` from now (Infinity: no deadline). Throws ERR_LOCK_STALE when
   * the lease already lost its lock: the caller must stop touching what the lock protected.
   */
  extend(ms: number): void {
    const hold = checkMs('ms', ms, false);
    if ((this.flags & RELEASED) !== 0) throw releasedError(this.key, 'extend the lease');
    const g = this.host[GRANTS];
    if ((this.flags & SHARED) === 0) {
      const state = g.extendExclusive(this.slot, this.tokenLo, this.tokenHi, hold);
      if (state < 0) throw staleError(this.key, 'extend the lease');
      this.word = state;
    } else if (!g.extendShared(this.slot, this.word, this.tokenLo, this.tokenHi, hold)) {
      throw staleError(this.key, 'extend the lease');
    }
    this.deadlineMs = g.deadline;
  }

  /**
   * Releases unless already released (then a no-op). A lease that lost its lock still throws
   * ERR_LOCK_STALE: the block it guarded ran without the lock for part of its time.
   */
  [Symbol.dispose](): void {
    if ((this.flags & RELEASED) === 0) this.release();
  }
}
brand(Lease, 'Lease');

/** Lease as the package exports it: `instanceof` works, `new` does not. */
export interface LeaseConstructor {
  readonly prototype: Lease;
  [Symbol.hasInstance](value: unknown): value is Lease;
}

/**
 * The exported Lease: a function that only throws, sharing the class's prototype (so `instanceof`
 * holds, and `lease.constructor` is this one, not the class). The class itself stays inside the
 * package: its constructor takes the table's internals, and it is kept plain for the fast path.
 */
export const PublicLease = function Lease(): never {
  throw new TypeError(
    'Illegal constructor: leases are made by a LockTable (tryAcquire, acquire, acquireSync, ' +
      'acquireAll, run...)',
  );
} as unknown as LeaseConstructor;
Object.defineProperty(PublicLease, 'prototype', { value: Lease.prototype });
// Its own name, whatever the bundler renamed the function to (it shares a scope with the class).
Object.defineProperty(PublicLease, 'name', { value: 'Lease' });
Object.defineProperty(Lease.prototype, 'constructor', {
  value: PublicLease,
  writable: true,
  configurable: true,
});
// Either build's leases (cross-build.ts): the class's own check.
Object.defineProperty(PublicLease, Symbol.hasInstance, {
  value: (value: unknown): boolean => value instanceof Lease,
});
