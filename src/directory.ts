/**
 * The directory: which slot holds which key. Open addressing with linear probing over the slots.
 *
 * S_BIND of a slot is EMPTY (never used), VACANT (unbound; a probe goes on past it), BINDING
 * (a binder is writing a key into it) or BOUND. Lookups are lock-free: they read S_BIND, the hash
 * and the key units with plain reads and may see a slot mid-change, so a lookup only proposes a
 * slot. The authority is the caller's compare-exchange on S_STATE followed by a second key
 * compare: while the caller holds the slot, it cannot be evicted (only a FREE slot can), so a key
 * that still matches after the CAS is the key that the caller holds. That check has no ABA: it
 * compares the key itself, not a generation number.
 *
 * Binding a key (and evicting an idle key to make room) happens under the binding mutex, a word
 * in the header, so that two threads can never bind the same key to two slots. The mutex stamps a
 * deadline; a thread that finds it held past that deadline (its holder died, or stalled) steals
 * it. Stealing is safe because a binder publishes with a CAS BINDING(me) -> BOUND, and a thief
 * first turns every BINDING slot back into VACANT, so a stalled binder's publish fails (see
 * bindLockedKey). Dead holders therefore never wedge the table.
 *
 * Where a key may go: a lookup stops at the first EMPTY slot of its probe sequence, so a key must
 * be bound at or before the first EMPTY slot of its own sequence. The binder takes the first
 * VACANT or EMPTY slot on the way; failing that, it evicts the first idle bound slot (FREE: no
 * holder, no handoff). A table is full only when every slot of the sequence is held.
 */
import { monotonicNow } from './clock.js';
import { hashKey, homeSlot, keyEquals, writeKey } from './key.js';
import {
  H_BIND_LOCK,
  H_TOKEN_FLOOR_HI,
  H_TOKEN_FLOOR_LO,
  HF_BIND_LOCK_DEADLINE,
  S_BIND,
  S_BIND_GEN,
  S_HASH,
  S_KEY_LENGTH,
  S_SLEEPERS,
  S_STATE,
  S_TOKEN_HI,
  S_TOKEN_LO,
  SLOT_WORDS,
  type Views,
} from './layout.js';
import { isEvictable, UNBOUND } from './slot-state.js';
import { testHooks } from './test-hooks.js';

export const BIND_EMPTY = 0;
export const BIND_VACANT = 1;
export const BIND_BOUND = 2;
/** BINDING is stored as BINDING_BASE + binder threadId, so a thief can tell whose bind it undoes. */
export const BINDING_BASE = 16;

/**
 * How long (ms) the binding mutex may be held before others may steal it. A binder does a bounded
 * scan of the table and a few stores; 100 ms is thousands of times that, so only a dead or badly
 * stalled binder is ever robbed, and a robbed binder is harmless (its publish CAS fails).
 */
export const BIND_LOCK_LEASE_MS = 100;

/** Result of findOrBind besides a slot index (>= 0). */
export const BIND_BUSY = -1; // the binding mutex is held by another thread: wait and retry
export const BIND_FULL = -2; // every slot the key could use is held

export class Directory {
  readonly #v: Views;
  readonly #capacity: number;
  readonly #maxKeyLength: number;
  readonly #threadId: number;

  constructor(views: Views, threadId: number) {
    this.#v = views;
    this.#capacity = views.geometry.capacity;
    this.#maxKeyLength = views.geometry.maxKeyLength;
    this.#threadId = threadId;
  }

  /** The slot bound to `key`, or -1. Lock-free; a hint until the caller's CAS and re-check. */
  find(key: string, hash: number): number {
    const slots = this.#v.slots;
    const keys = this.#v.keys;
    const cap = this.#capacity;
    let i = homeSlot(hash, cap);
    for (let probe = 0; probe < cap; probe++) {
      const base = i * SLOT_WORDS;
      const bind = slots[base + S_BIND];
      if (bind === BIND_EMPTY) return -1;
      if (
        bind === BIND_BOUND &&
        slots[base + S_HASH] === hash &&
        slots[base + S_KEY_LENGTH] === key.length &&
        keyEquals(keys, i * this.#maxKeyLength, key)
      ) {
        return i;
      }
      if (++i === cap) i = 0;
    }
    return -1;
  }

  /** True when `slot` is bound to `key` (exact when the caller holds the slot). */
  matches(slot: number, key: string): boolean {
    const base = slot * SLOT_WORDS;
    const slots = this.#v.slots;
    return (
      slots[base + S_BIND] === BIND_BOUND &&
      slots[base + S_KEY_LENGTH] === key.length &&
      keyEquals(this.#v.keys, slot * this.#maxKeyLength, key)
    );
  }

  /**
   * The slot of `key`, binding it if needed: a slot index, BIND_BUSY (the mutex is held by
   * another live thread: wait on H_BIND_LOCK and retry) or BIND_FULL. Never blocks.
   */
  findOrBind(key: string): number {
    const hash = hashKey(key);
    const found = this.find(key, hash);
    if (found >= 0) return found;
    if (!this.#tryLockBind()) return BIND_BUSY;
    try {
      return this.#bindLocked(key, hash);
    } finally {
      this.#unlockBind();
    }
  }

  /** Value of H_BIND_LOCK to wait on while it is held (0 when free). */
  bindLockWord(): number {
    return Atomics.load(this.#v.header, H_BIND_LOCK);
  }

  /** Releases the binding mutex if `threadId` holds it (that thread is dead): see releaseAllOwnedBy. */
  releaseBindLockOf(threadId: number): void {
    const header = this.#v.header;
    if (
      Atomics.compareExchange(header, H_BIND_LOCK, threadId + 1, this.#threadId + 1) ===
      threadId + 1
    ) {
      this.#sweepBindings();
      this.#unlockBind();
    }
  }

  #tryLockBind(): boolean {
    const header = this.#v.header;
    const me = this.#threadId + 1;
    for (;;) {
      const owner = Atomics.compareExchange(header, H_BIND_LOCK, 0, me);
      if (owner === 0) {
        testHooks.stall?.('bind:locked');
        this.#v.headerF64[HF_BIND_LOCK_DEADLINE] = monotonicNow() + BIND_LOCK_LEASE_MS;
        return true;
      }
      // RACE: the deadline read may belong to an earlier holder; the CAS below names the owner we
      // saw, and a robbed binder cannot publish (see #sweepBindings), so an early steal is safe.
      if (monotonicNow() <= this.#v.headerF64[HF_BIND_LOCK_DEADLINE]!) return false;
      if (Atomics.compareExchange(header, H_BIND_LOCK, owner, me) === owner) {
        this.#v.headerF64[HF_BIND_LOCK_DEADLINE] = monotonicNow() + BIND_LOCK_LEASE_MS;
        this.#sweepBindings();
        return true;
      }
    }
  }

  #unlockBind(): void {
    // A CAS, not a store: if a thief took the mutex from us, it is the thief's to release.
    if (
      Atomics.compareExchange(this.#v.header, H_BIND_LOCK, this.#threadId + 1, 0) ===
      this.#threadId + 1
    ) {
      Atomics.notify(this.#v.header, H_BIND_LOCK);
    }
  }

  /** After a steal: undo binds that the previous holder left half done. */
  #sweepBindings(): void {
    const slots = this.#v.slots;
    for (let i = 0; i < this.#capacity; i++) {
      const at = i * SLOT_WORDS + S_BIND;
      const bind = Atomics.load(slots, at);
      if (bind >= BINDING_BASE) Atomics.compareExchange(slots, at, bind, BIND_VACANT);
    }
  }

  #bindLocked(key: string, hash: number): number {
    const slots = this.#v.slots;
    const cap = this.#capacity;
    let target = -1;
    let evictable = -1;
    let i = homeSlot(hash, cap);
    for (let probe = 0; probe < cap; probe++) {
      const base = i * SLOT_WORDS;
      const bind = Atomics.load(slots, base + S_BIND);
      if (bind === BIND_BOUND) {
        if (this.matches(i, key)) return i; // bound by another thread since our lock-free miss
        if (evictable < 0 && isEvictable(Atomics.load(slots, base + S_STATE))) evictable = i;
      } else if (bind === BIND_EMPTY || bind === BIND_VACANT) {
        if (target < 0) target = i;
        if (bind === BIND_EMPTY) break; // the key cannot live past the first EMPTY slot
      }
      if (++i === cap) i = 0;
    }
    if (target < 0 && evictable >= 0 && this.#evict(evictable)) target = evictable;
    if (target < 0) {
      // The idle slot we saw was taken meanwhile: look again for any idle one before giving up.
      for (let j = 0; j < cap && target < 0; j++) {
        if (Atomics.load(slots, j * SLOT_WORDS + S_BIND) === BIND_BOUND && this.#evict(j))
          target = j;
      }
      if (target < 0) return BIND_FULL;
    }
    return this.#publish(target, key, hash) ? target : BIND_BUSY;
  }

  /** FREE -> UNBOUND, then VACANT. Sleepers on the slot are woken to look the key up again. */
  #evict(slot: number): boolean {
    const slots = this.#v.slots;
    const base = slot * SLOT_WORDS;
    const s = Atomics.load(slots, base + S_STATE);
    if (!isEvictable(s) || Atomics.compareExchange(slots, base + S_STATE, s, UNBOUND) !== s)
      return false;
    this.#raiseTokenFloor(slots[base + S_TOKEN_LO]!, slots[base + S_TOKEN_HI]!);
    Atomics.store(slots, base + S_BIND, BIND_VACANT);
    if (Atomics.load(slots, base + S_SLEEPERS) > 0) Atomics.notify(slots, base + S_STATE);
    return true;
  }

  /** Tokens of any key bound later start above every token this slot issued. */
  #raiseTokenFloor(lo: number, hi: number): void {
    // A 64-bit CAS-max: even two binders at once (one robbed, one thief) never lower the floor.
    const floor64 = this.#v.tokenFloor64;
    const token = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
    let cur = Atomics.load(floor64, 0);
    while (token > cur) {
      const seen = Atomics.compareExchange(floor64, 0, cur, token);
      if (seen === cur) break;
      cur = seen;
    }
  }

  /** Writes the key into an UNBOUND slot and makes it FREE. False if a thief undid our bind. */
  #publish(slot: number, key: string, hash: number): boolean {
    const slots = this.#v.slots;
    const base = slot * SLOT_WORDS;
    const binding = BINDING_BASE + this.#threadId;
    const prior = Atomics.load(slots, base + S_BIND);
    if (
      prior >= BINDING_BASE ||
      Atomics.compareExchange(slots, base + S_BIND, prior, binding) !== prior
    ) {
      return false;
    }
    testHooks.stall?.('bind:binding');
    slots[base + S_HASH] = hash;
    slots[base + S_KEY_LENGTH] = key.length;
    writeKey(this.#v.keys, slot * this.#maxKeyLength, key);
    const header = this.#v.header;
    slots[base + S_TOKEN_LO] = header[H_TOKEN_FLOOR_LO]!;
    slots[base + S_TOKEN_HI] = header[H_TOKEN_FLOOR_HI]!;
    slots[base + S_BIND_GEN] = (slots[base + S_BIND_GEN]! + 1) | 0;
    // RACE: a thief that stole the mutex sweeps BINDING slots only after its steal. If it stole
    // before this check, we stop here; if after, its sweep either undoes our BINDING (and the CAS
    // below fails) or comes after our publish, and its own search then finds this binding.
    if (Atomics.load(header, H_BIND_LOCK) !== this.#threadId + 1) {
      Atomics.compareExchange(slots, base + S_BIND, binding, BIND_VACANT);
      return false;
    }
    // ORDER: the key and token words above are plain stores; this CAS and the store of S_STATE
    // after it publish them to any thread that later wins a CAS on S_STATE.
    if (Atomics.compareExchange(slots, base + S_BIND, binding, BIND_BOUND) !== binding)
      return false;
    Atomics.store(slots, base + S_STATE, 0);
    return true;
  }
}
