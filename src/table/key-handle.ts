/**
 * A prepared key: `const k = table.key('account:42')`, then `k.acquireSync()`, `k.acquire()`,
 * `k.tryAcquire()`. The same locks, leases, tokens and guarantees as the table's own methods with
 * that key; what it saves is the key's lookup. The table's methods find a key through this thread's
 * slot cache (a Map from key to slot) or, for a key new to the thread, by hashing and probing; a
 * handle keeps its key's slot binding itself, so its uncontended exclusive grant is one CAS, one
 * generation compare and the lease.
 *
 * Why trusting the remembered binding is exact (the slot cache's argument, slot-cache.ts): the
 * binding (slot, 64-bit bind generation) is remembered only while this thread holds the slot,
 * right after a grant whose key was compared in full; a held slot cannot be rebound. A fast grant
 * is CAS first, then the generation compare: after the CAS we hold the slot, so its binding is
 * frozen, and an equal generation proves it is the binding of our key (the generation is
 * incremented for every new binding, so one pair never names two). A mismatch (the key was
 * evicted and the slot rebound, maybe to another key) gives the grant straight back and takes the
 * table's path, which finds or binds the key again.
 *
 * Anything but an uncontended exclusive grant without options (a busy key, options, a courtesy
 * turn owed to a starving writer, a binding not known yet) goes through the table's own method, so
 * waiting, fairness, deadlines, recovery, aborts and errors are the table's, unchanged.
 *
 * A handle belongs to the thread (and LockTable handle) that made it, like a Lease; it holds no
 * lock and no shared state, and costs nothing when dropped.
 */
import { brand } from '../api/cross-build.js';
import type { AcquireOptions, AcquireSyncOptions, TryAcquireOptions } from '../api/options.js';
import type { Grants } from './grants.js';
import { S_BIND_GEN, S_BIND_GEN_HI, SLOT_WORDS } from './layout.js';
import { STAMP } from './internals.js';
import { Lease } from './lease.js';
import type { LockTable } from './lock-table.js';

/** What a key handle needs from its table (kept out of the public API). */
export interface KeyHandleHost {
  readonly grants: Grants;
  readonly slots: Int32Array;
  /** The hold of a call without options (the handle's and the table's defaults). */
  readonly plainHold: number;
}

export class KeyHandle {
  /** The key this handle locks. */
  declare readonly key: string;
  // Declared, not defined, like Lease's fields: a class with defined fields runs an initializer
  // before its constructor, which would cost the fast path its inlining (DESIGN.md).
  declare private readonly table: LockTable;
  declare private readonly host: KeyHandleHost;
  /** The remembered binding: slot (-1: none yet) and its bind generation. */
  declare private slot: number;
  declare private genLo: number;
  declare private genHi: number;

  /** @internal Made by LockTable.key(); this constructor is not part of the API. */
  constructor(table: LockTable, host: KeyHandleHost, key: string) {
    this.table = table;
    this.host = host;
    this.key = key;
    this.slot = -1;
    this.genLo = 0;
    this.genHi = 0;
  }

  /** As `table.tryAcquire(key, options)`. */
  tryAcquire(options?: TryAcquireOptions): Lease | null {
    if (options === undefined) {
      const lease = this.fast();
      if (lease !== null) return lease;
    }
    return this.learn(this.table.tryAcquire(this.key, options));
  }

  /** As `table.acquireSync(key, options)`. */
  acquireSync(options?: AcquireSyncOptions): Lease {
    if (options === undefined) {
      const lease = this.fast();
      if (lease !== null) return lease;
    }
    return this.learn(this.table.acquireSync(this.key, options));
  }

  /**
   * As `table.acquire(key, options)`. A free key settles the promise at once: it is made resolved
   * (one allocation, no async function), so `await` costs one microtask turn.
   */
  acquire(options?: AcquireOptions): Promise<Lease> {
    if (options === undefined) {
      // The lease and its settled promise are made before the grant CAS (Lease[STAMP]).
      const made = new Lease(this.table, this.key, -1, 0, 0, 0, 0, Infinity);
      const settled = Lease.settled(made);
      if (this.fast(made) !== null) return settled;
    }
    return this.table.acquire(this.key, options).then((lease) => this.learn(lease));
  }

  /**
   * The fast path: one CAS on the remembered slot, then the generation compare. null: not granted
   * this way (no binding yet, busy, a turn owed, or the binding moved); the table's path decides.
   */
  private fast(made?: Lease): Lease | null {
    const slot = this.slot;
    const host = this.host;
    const g = host.grants;
    // A courtesy turn owed to a starving writer is the table's to honour (LockTable.#yieldsTurn).
    if (slot < 0 || g.yieldSlot >= 0) return null;
    const hold = host.plainHold;
    // Made before the CAS (here, or by acquire), stamped after it: nothing is allocated while we
    // hold the key (Lease[STAMP]).
    const lease = made ?? new Lease(this.table, this.key, slot, 0, 0, 0, 0, Infinity);
    if (!g.fastExclusive(slot, hold)) return null;
    // Held now, so the binding is frozen: the same generation means the same key.
    const slots = host.slots;
    const base = slot * SLOT_WORDS;
    if (slots[base + S_BIND_GEN] === this.genLo && slots[base + S_BIND_GEN_HI] === this.genHi) {
      const deadline = hold === Infinity ? Infinity : g.deadline;
      return lease[STAMP](slot, g.tokenLo, g.tokenHi, g.stateWord, deadline);
    }
    g.undoGrant(slot, 'exclusive');
    this.slot = -1;
    return null;
  }

  /**
   * After a grant by the table's path: remember the lease's binding. The generation is read first,
   * then the lease is checked to be still held: held from its grant until after the read, the slot
   * could not be rebound meanwhile, so the generation is that of our key's binding (tokens only
   * grow, so a lease that was lost is never held again).
   */
  private learn<T extends Lease | null>(lease: T): T {
    if (lease === null) return lease;
    const slot = lease['slot'];
    if (slot === this.slot) return lease;
    const slots = this.host.slots;
    const base = slot * SLOT_WORDS;
    const genLo = slots[base + S_BIND_GEN]!;
    const genHi = slots[base + S_BIND_GEN_HI]!;
    if (!lease.held) return lease;
    this.slot = slot;
    this.genLo = genLo;
    this.genHi = genHi;
    return lease;
  }
}
brand(KeyHandle, 'KeyHandle');
