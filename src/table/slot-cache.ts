/**
 * The slot cache: this thread's memory of which slot each key it used was bound to, so that the
 * fast path of a repeated key skips the hash, the probe and both key compares. One per LockTable
 * handle (so one per thread and table); nothing in it is shared.
 *
 * An entry is key -> (slot, bind generation). Why trusting it is exact:
 *  - An entry is written only while this thread holds the slot (in any mode), right after the
 *    grant was checked with a full key compare. While a slot is held its binding cannot change
 *    (only a FREE slot can be evicted), so the generation read then is that of the binding whose
 *    key was compared.
 *  - The generation (S_BIND_GEN, 64 bits) is incremented by the binder for every new binding of
 *    the slot, so one (slot, generation) pair never names two bindings: no ABA, ever.
 *  - A hit is used as: grant CAS, then generation compare. After the CAS this thread holds the
 *    slot, so its binding is frozen, and an equal generation proves it is the binding of this
 *    key. A mismatch gives the grant straight back (the slot was FREE, so that only cost its
 *    current key a token) and forgets the entry. A busy slot is left to the waiting loop, which
 *    uses the entry only as a hint, after a generation compare, and checks the key once it
 *    holds the slot.
 * The plain reads of the generation after the CAS are ordered by it: the binder wrote the
 * generation before the Atomics store of S_STATE that made the slot FREE, which our CAS read from
 * (directly or through later releases).
 *
 * Size: at most LIMIT entries; when full it is emptied and refills with the keys in use (a key
 * not in the cache costs its hash and probe once more). So its memory is bounded whatever the key
 * stream, and a key that is gone from the table costs one failed compare before it is dropped.
 *
 * The entries live in an object with a null prototype (a V8 dictionary-mode object), not a
 * `Map`: a lookup is then a property load, which internalizes the key once (a key string used
 * again is a reference to the internalized one) and compares dictionary keys by pointer. A
 * `Map` compares same-length keys character by character along its bucket chains.
 * `npm run bench:primitives` (one thread, best of 5 runs of 2·10^7, load 7-11 on the 2 vCPUs):
 * 64 keys in a random order, 31.0 ns per lookup with a `Map`, 12.0 ns with the object; 1,000
 * keys round robin, 24.0 and 18.7 ns. One key, over and over, costs about the same either way.
 * With no prototype, no key can meet an inherited property (`'__proto__'`, `'constructor'` are
 * keys like any other); a key that is an array index (`'42'`) is stored among the object's
 * elements, which is only another place for it.
 */
import { S_BIND_GEN, S_BIND_GEN_HI, SLOT_WORDS } from './layout.js';

/** Most keys remembered per handle: about 100 KB of entries at most. */
export const SLOT_CACHE_LIMIT = 1024;

export interface CachedSlot {
  slot: number;
  genLo: number;
  genHi: number;
}

export class SlotCache {
  readonly #slots: Int32Array;
  /** key -> entry; no prototype (see the top of this file). Replaced, not cleared, when full. */
  #entries: Record<string, CachedSlot | undefined> = Object.create(null) as Record<
    string,
    CachedSlot | undefined
  >;
  #size = 0;

  constructor(slots: Int32Array) {
    this.#slots = slots;
  }

  /**
   * The remembered slot of `key`, current or not: the fast path checks it once it holds the slot
   * (isCurrent is exact then; a check before the CAS would cost a contended key one more
   * cache-line transfer). Only keys that passed validation are ever remembered, so a hit also
   * means `key` is a valid key.
   */
  get(key: string): CachedSlot | undefined {
    return this.#entries[key];
  }

  /**
   * The remembered slot of `key` if its binding is still the one remembered (a hint: the binding
   * may change at once). A stale entry is forgotten.
   */
  lookup(key: string): CachedSlot | undefined {
    const entry = this.#entries[key];
    if (entry === undefined) return undefined;
    if (this.isCurrent(entry)) return entry;
    this.forget(key);
    return undefined;
  }

  /** Is `entry` the slot's current binding? Exact only while this thread holds the slot. */
  isCurrent(entry: CachedSlot): boolean {
    const base = entry.slot * SLOT_WORDS;
    return (
      this.#slots[base + S_BIND_GEN] === entry.genLo &&
      this.#slots[base + S_BIND_GEN_HI] === entry.genHi
    );
  }

  /**
   * Remembers that `key` is bound to `slot`. Call only while holding `slot`, after a full key
   * compare proved the binding is `key`'s.
   */
  remember(key: string, slot: number): void {
    const base = slot * SLOT_WORDS;
    const genLo = this.#slots[base + S_BIND_GEN]!;
    const genHi = this.#slots[base + S_BIND_GEN_HI]!;
    const entry = this.#entries[key];
    if (entry !== undefined) {
      entry.slot = slot;
      entry.genLo = genLo;
      entry.genHi = genHi;
      return;
    }
    if (this.#size >= SLOT_CACHE_LIMIT) {
      this.#entries = Object.create(null) as Record<string, CachedSlot | undefined>;
      this.#size = 0;
    }
    this.#entries[key] = { slot, genLo, genHi };
    this.#size++;
  }

  forget(key: string): void {
    const entries = this.#entries;
    if (entries[key] === undefined) return;
    delete entries[key];
    this.#size--;
  }

  /** Number of keys remembered (for tests). */
  get size(): number {
    return this.#size;
  }
}
