/**
 * The directory: which slot holds which key. Open addressing with linear probing over the slots.
 *
 * S_BIND of a slot is EMPTY (never used), VACANT (unbound; a probe goes on past it), BOUND, or one
 * of three marks that name a thread: BINDING(t) (t is writing a key into it), REVOKED(t) (t was
 * binding it when another thread stole the binding mutex: t may still write into it, so nobody uses
 * it until t hands it back) and EVICTING(t) (t is unbinding it). Lookups are lock-free: they read
 * S_BIND, the hash and the key units with plain reads and may see a slot mid-change, so a lookup
 * only proposes a slot. The authority is the caller's compare-exchange on S_STATE followed by a
 * second key compare: while the caller holds the slot, it cannot be evicted (only a FREE slot can),
 * so a key that still matches after the CAS is the key that the caller holds. That check has no
 * ABA: it compares the key itself, not a generation number.
 *
 * Binding a key (and evicting an idle key to make room) happens under the binding mutex, a word in
 * the header, so that two threads can never bind the same key to two slots. The mutex has a lease:
 * its holder stamps a deadline, and names itself in H_BIND_DEADLINE_OWNER; a thread that finds the
 * mutex held past a deadline stamped by its current holder steals it (never on an earlier holder's
 * deadline). A robbed binder can still be running, so everything it does to a slot is made harmless:
 *  - the thief's first act is to mark every BINDING(t) slot REVOKED(t). The robbed binder's publish
 *    (a CAS BINDING(t) -> BOUND) then fails, it stops writing, and it hands the slot back (VACANT).
 *    Until then its late key writes land in a slot that nobody reads or uses.
 *  - an eviction marks the slot EVICTING(t) before it unbinds it, and finishes with CASes from that
 *    mark, so a robbed evictor cannot unbind a slot that its thief has since bound to another key.
 *    Anyone may finish an eviction whose state CAS is done (raise the token floor, then VACANT).
 * So dead binders never wedge the table, and stalled ones never corrupt it.
 *
 * A binder can die inside its own window (from BINDING to its publish): the window copies the key
 * with one call (`keys.set`), and worker.terminate() stops a thread at a call (slot-state.ts). That
 * leaves BINDING(t) and, usually, the mutex with t. releaseAllOwnedBy frees both at once for a
 * thread that exited (watch). Otherwise the next binder steals the mutex after its lease, and its
 * sweep revokes the mark; so does a binder that finds another thread's BINDING mark while it holds
 * the mutex (that binder was robbed earlier and came back). A sweep that sees a BINDING mark reads
 * the time after that look and stamps it in H_REVOKED_AT (a CAS max) before its revoking CAS, and
 * any thread takes a REVOKED slot back once REVOKED_STUCK_MS have passed since the latest stamp:
 * the mark is older than the stamp (a time read once per sweep, before its CASes, could be older
 * than a mark that a robbed binder made while the sweeper stalled), so its binder has been stopped
 * in its window for at least that long, which counts as dead (a live one hands its slot back
 * within a few instructions of resuming). (ABA: a mark of the same thread made again in the same
 * slot while a sweeper or a taker stalls between its look and its CAS is judged by the old look.)
 *
 * Where a key may go: a lookup stops at the first EMPTY slot of its probe sequence, so a key must
 * be bound at or before the first EMPTY slot of its own sequence. The binder takes the first
 * VACANT or EMPTY slot on the way; failing that, it evicts the first idle bound slot (FREE: no
 * holder, no handoff). A table is full only when every slot of the sequence is held; a slot that a
 * robbed binder or an evictor still has makes the binder wait (BIND_BUSY), not fail.
 */
import { monotonicNow } from '../api/clock.js';
import { hashKey, homeSlot, keyEquals } from './key.js';
import {
  H_BIND_DEADLINE_OWNER,
  H_BIND_LOCK,
  HF_BIND_LOCK_DEADLINE,
  S_BIND,
  S_BIND_GEN,
  S_BIND_GEN_HI,
  S_HASH,
  S_KEY_LENGTH,
  S_LIMIT,
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
/** The marks: kind << MARK_SHIFT | threadId (thread ids fit in 20 bits). */
const MARK_SHIFT = 21;
const MARK_BINDING = 1;
const MARK_REVOKED = 2;
const MARK_EVICTING = 3;

/** S_BIND of a slot that thread `threadId` is binding. */
export function bindingOf(threadId: number): number {
  return (MARK_BINDING << MARK_SHIFT) | threadId;
}

/** S_BIND of a slot revoked from thread `threadId` (it was binding it when robbed of the mutex). */
export function revokedOf(threadId: number): number {
  return (MARK_REVOKED << MARK_SHIFT) | threadId;
}

/** S_BIND of a slot that thread `threadId` is evicting. */
export function evictingOf(threadId: number): number {
  return (MARK_EVICTING << MARK_SHIFT) | threadId;
}

/**
 * How long (ms) the binding mutex may be held before others may steal it. A binder does a bounded
 * scan of the table and a few stores; 100 ms is thousands of times that, so only a dead or badly
 * stalled binder is ever robbed, and a robbed binder is harmless (see above).
 */
export const BIND_LOCK_LEASE_MS = 100;

/**
 * How long (ms) after the latest sweep (H_REVOKED_AT) a REVOKED slot is taken back: a robbed binder
 * hands its slot back within a few instructions of resuming, so one stuck this long has died before
 * it could. Ten leases of the mutex.
 */
export const REVOKED_STUCK_MS = 10 * BIND_LOCK_LEASE_MS;

/** Result of findOrBind besides a slot index (>= 0). */
export const BIND_BUSY = -1; // the mutex, or a slot the key needs, is another thread's: wait, retry
export const BIND_FULL = -2; // every slot the key could use is held
/** Result of rebind: the key is held under its current limit, so it keeps it. */
export const REBIND_HELD = -3;

/** word[0] := max(word[0], value), by CAS: concurrent raisers never move it back. */
function raiseTo(word: BigInt64Array, value: bigint): void {
  let cur = Atomics.load(word, 0);
  while (value > cur) {
    const seen = Atomics.compareExchange(word, 0, cur, value);
    if (seen === cur) break;
    cur = seen;
  }
}

export class Directory {
  readonly #v: Views;
  readonly #capacity: number;
  readonly #maxKeyLength: number;
  readonly #threadId: number;
  /** The key being bound, copied here before the bind window (which then copies it with one set). */
  readonly #scratch: Uint16Array;

  constructor(views: Views, threadId: number) {
    this.#v = views;
    this.#capacity = views.geometry.capacity;
    this.#maxKeyLength = views.geometry.maxKeyLength;
    this.#threadId = threadId;
    this.#scratch = new Uint16Array(views.geometry.maxKeyLength);
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
   * The slot of `key`, binding it if needed: a slot index, BIND_BUSY (the mutex, or a slot the key
   * needs, is another thread's for now: wait and retry) or BIND_FULL. Never blocks. A new binding
   * carries `limit` (S_LIMIT: 0 for a lock, n for a semaphore of n permits); a key found bound
   * keeps the limit it has (the caller compares it with its own: semaphore.ts).
   */
  findOrBind(key: string, limit: number): number {
    const hash = hashKey(key);
    const found = this.find(key, hash);
    if (found >= 0) return found;
    if (!this.#tryLockBind()) return BIND_BUSY;
    try {
      return this.#bindLocked(key, hash, limit);
    } finally {
      this.#unlockBind();
    }
  }

  /**
   * Gives `key`, found bound in `slot` with another limit, a new binding with `limit`, if nobody
   * holds it (an eviction, then a bind, under the mutex: the limit changes only with the binding,
   * and the bind generation moves). A slot index (maybe another slot), REBIND_HELD when the key is
   * held (it keeps its limit), BIND_BUSY or BIND_FULL as findOrBind.
   */
  rebind(slot: number, key: string, limit: number): number {
    if (!this.#tryLockBind()) return BIND_BUSY;
    try {
      const slots = this.#v.slots;
      const base = slot * SLOT_WORDS;
      const hash = hashKey(key);
      if (Atomics.load(slots, base + S_BIND) === BIND_BOUND && this.matches(slot, key)) {
        // Under the mutex nobody else binds or evicts: the limit read here is the binding's.
        if (slots[base + S_LIMIT] === limit) return slot;
        if (!this.#evict(slot)) return REBIND_HELD;
      }
      return this.#bindLocked(key, hash, limit);
    } finally {
      this.#unlockBind();
    }
  }

  /** Value of H_BIND_LOCK to wait on while it is held (0 when free). */
  bindLockWord(): number {
    return Atomics.load(this.#v.header, H_BIND_LOCK);
  }

  /**
   * Frees what the binding mutex and the slots' marks hold for `threadId`, a thread that has exited
   * (releaseAllOwnedBy): the mutex itself, and its BINDING, REVOKED and EVICTING slots.
   */
  releaseBindingsOf(threadId: number): void {
    if (this.#takeBindLock(threadId + 1, monotonicNow() + BIND_LOCK_LEASE_MS)) {
      this.#sweepBindings();
      this.#unlockBind();
    }
    const slots = this.#v.slots;
    for (let i = 0; i < this.#capacity; i++) {
      const at = i * SLOT_WORDS + S_BIND;
      const bind = Atomics.load(slots, at);
      if (bind === bindingOf(threadId) || bind === revokedOf(threadId)) {
        Atomics.compareExchange(slots, at, bind, BIND_VACANT);
      } else if (bind === evictingOf(threadId)) {
        this.#finishEviction(i, bind);
      }
    }
  }

  #tryLockBind(): boolean {
    const header = this.#v.header;
    const me = this.#threadId + 1;
    const deadline = monotonicNow() + BIND_LOCK_LEASE_MS;
    const owner = Atomics.compareExchange(header, H_BIND_LOCK, 0, me);
    if (owner === 0) {
      testHooks.stall?.('bind:locked');
      // PLAIN: the stamp follows the CAS with no call between, so no holder is left unstamped
      // (and so unstealable). Deadline first, then the name (a thief reads them the other way).
      this.#v.headerF64[HF_BIND_LOCK_DEADLINE] = deadline;
      header[H_BIND_DEADLINE_OWNER] = me;
      return true;
    }
    // Steal only on a deadline that the current owner stamped: before its stamp, the deadline is
    // an earlier holder's. The owner names itself after writing the deadline, so a deadline read
    // between two reads of the same name is that owner's. (The owner may have let go and taken the
    // mutex again in between: then the steal is early, which costs that binder a retry, no more;
    // a robbed binder is harmless.)
    if (Atomics.load(header, H_BIND_DEADLINE_OWNER) !== owner) return false;
    const until = this.#v.headerF64[HF_BIND_LOCK_DEADLINE]!;
    if (Atomics.load(header, H_BIND_DEADLINE_OWNER) !== owner) return false;
    if (monotonicNow() <= until) return false;
    if (!this.#takeBindLock(owner, deadline)) return false;
    this.#sweepBindings();
    return true;
  }

  /** CAS the mutex from `owner` to us, then stamp it (as #tryLockBind does). */
  #takeBindLock(owner: number, deadline: number): boolean {
    const header = this.#v.header;
    const me = this.#threadId + 1;
    if (Atomics.compareExchange(header, H_BIND_LOCK, owner, me) !== owner) return false;
    // PLAIN, as in #tryLockBind.
    this.#v.headerF64[HF_BIND_LOCK_DEADLINE] = deadline;
    header[H_BIND_DEADLINE_OWNER] = me;
    return true;
  }

  #unlockBind(): void {
    const header = this.#v.header;
    const me = this.#threadId + 1;
    // CASes, not stores: if a thief took the mutex from us, it is the thief's to release. The
    // mutex first: a holder stopped in between leaves a stale name, which the next holder's stamp
    // replaces (a stale name can only make a thief steal early, which is harmless).
    if (Atomics.compareExchange(header, H_BIND_LOCK, me, 0) === me) {
      Atomics.notify(header, H_BIND_LOCK);
    }
    Atomics.compareExchange(header, H_BIND_DEADLINE_OWNER, me, 0);
  }

  /** True once REVOKED_STUCK_MS have passed since the latest sweep: every REVOKED slot is older. */
  #revokedLongEnough(): boolean {
    const at = Number(Atomics.load(this.#v.revokedAt64, 0)) / 1000;
    return monotonicNow() - at >= REVOKED_STUCK_MS;
  }

  /**
   * After a steal (or, under the mutex, on finding another thread's BINDING mark): revoke the binds
   * that earlier holders may still be writing. Each revoked mark's time goes into H_REVOKED_AT
   * first, read after the look that saw the mark, so a thread that sees a mark REVOKED also sees a
   * time no earlier than the mark.
   */
  #sweepBindings(): void {
    testHooks.stall?.('sweep:begun');
    const slots = this.#v.slots;
    for (let i = 0; i < this.#capacity; i++) {
      const at = i * SLOT_WORDS + S_BIND;
      const bind = Atomics.load(slots, at);
      if (bind >>> MARK_SHIFT === MARK_BINDING) {
        // ORDER: the time is read after the load that saw the mark, so it is no earlier than the
        // mark; and stamped before the CAS, so whoever sees REVOKED sees this stamp or a later one.
        this.#stampSweep();
        Atomics.compareExchange(slots, at, bind, revokedOf(bind & ((1 << MARK_SHIFT) - 1)));
      }
    }
  }

  /** H_REVOKED_AT := max(H_REVOKED_AT, now): a sweeper that stalled never moves it back. */
  #stampSweep(): void {
    raiseTo(this.#v.revokedAt64, BigInt(Math.ceil(monotonicNow() * 1000)));
  }

  #bindLocked(key: string, hash: number, limit: number): number {
    const slots = this.#v.slots;
    const cap = this.#capacity;
    let target = -1;
    let evictable = -1;
    let busy = false;
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
      } else if (bind >>> MARK_SHIFT === MARK_EVICTING) {
        // Another thread's eviction (its state CAS is done): finish it, and take the slot.
        if (this.#finishEviction(i, bind) && target < 0) target = i;
        else busy = true;
      } else if (bind >>> MARK_SHIFT === MARK_REVOKED && this.#revokedLongEnough()) {
        // A robbed binder that has not handed its slot back for REVOKED_STUCK_MS: it is dead.
        if (Atomics.compareExchange(slots, base + S_BIND, bind, BIND_VACANT) === bind) {
          if (target < 0) target = i;
        } else busy = true;
      } else {
        // BINDING: we hold the mutex, so its binder was robbed of it earlier (it came back, or died
        // in its window with nobody stealing since): revoke it, which starts its quarantine.
        if (bind >>> MARK_SHIFT === MARK_BINDING) this.#sweepBindings();
        busy = true; // REVOKED: a robbed binder's, back soon (or taken back once long enough)
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
      if (target < 0) return busy ? BIND_BUSY : BIND_FULL;
    }
    return this.#publish(target, key, hash, limit) ? target : BIND_BUSY;
  }

  /**
   * FREE -> UNBOUND by CAS, then the slot marked EVICTING(me) with a plain store (nobody else
   * writes S_BIND of a BOUND slot whose state is UNBOUND), then the token floor and VACANT. The
   * rest is CASes from the mark, so a robbed evictor cannot unbind a slot that someone else has
   * since bound again; and anyone may finish an EVICTING slot (its state is UNBOUND already).
   */
  #evict(slot: number): boolean {
    const slots = this.#v.slots;
    const base = slot * SLOT_WORDS;
    const s = Atomics.load(slots, base + S_STATE);
    if (!isEvictable(s)) return false;
    const mark = evictingOf(this.#threadId);
    if (Atomics.compareExchange(slots, base + S_STATE, s, UNBOUND) !== s) return false;
    slots[base + S_BIND] = mark; // PLAIN: straight after the CAS
    testHooks.stall?.('evict:unbound');
    return this.#finishEviction(slot, mark);
  }

  /**
   * The rest of an eviction whose state CAS is done (anyone may run it, more than once): the token
   * floor goes up to the slot's last token, then the mark becomes VACANT and sleepers wake to look
   * their key up again. True when this call made it VACANT.
   */
  #finishEviction(slot: number, mark: number): boolean {
    const slots = this.#v.slots;
    const base = slot * SLOT_WORDS;
    // The slot is UNBOUND, so its token no longer moves.
    this.#raiseTokenFloor(slots[base + S_TOKEN_LO]!, slots[base + S_TOKEN_HI]!);
    if (Atomics.compareExchange(slots, base + S_BIND, mark, BIND_VACANT) !== mark) return false;
    if (Atomics.load(slots, base + S_SLEEPERS) > 0) Atomics.notify(slots, base + S_STATE);
    return true;
  }

  /** Tokens of any key bound later start above every token this slot issued. */
  #raiseTokenFloor(lo: number, hi: number): void {
    // A CAS max: even two binders at once (one robbed, one thief) never lower the floor.
    raiseTo(this.#v.tokenFloor64, (BigInt(hi) << 32n) | BigInt(lo >>> 0));
  }

  /**
   * Writes the key into an EMPTY or VACANT slot and makes it BOUND and FREE. False if the slot was
   * taken meanwhile or our bind was revoked (the mutex was stolen from us): then we hand it back.
   */
  #publish(slot: number, key: string, hash: number, limit: number): boolean {
    const slots = this.#v.slots;
    const base = slot * SLOT_WORDS;
    const me = this.#threadId + 1;
    const binding = bindingOf(this.#threadId);
    const revoked = revokedOf(this.#threadId);
    // Everything the window writes is made before it: the key's units, and the floor (one 64-bit
    // read, so never half of a floor that a concurrent raise is moving).
    const scratch = this.#scratch;
    for (let k = 0; k < key.length; k++) scratch[k] = key.charCodeAt(k);
    const floor = Atomics.load(this.#v.tokenFloor64, 0);
    const floorLo = Number(BigInt.asIntN(32, floor));
    const floorHi = Number(BigInt.asIntN(32, floor >> 32n));
    const units = scratch.subarray(0, key.length);
    testHooks.stall?.('bind:chosen');
    const prior = Atomics.load(slots, base + S_BIND);
    if (prior !== BIND_EMPTY && prior !== BIND_VACANT) return false;
    if (Atomics.compareExchange(slots, base + S_BIND, prior, binding) !== prior) return false;
    // From here to the publish CAS the slot is ours (BINDING). If we stop, a thief revokes it, and
    // it comes back once seen stuck (#revokedStuck); if we are only slow, our writes land in a slot
    // nobody uses until we hand it back.
    testHooks.stall?.('bind:binding');
    slots[base + S_HASH] = hash;
    slots[base + S_KEY_LENGTH] = key.length;
    this.#v.keys.set(units, slot * this.#maxKeyLength);
    slots[base + S_TOKEN_LO] = floorLo;
    slots[base + S_TOKEN_HI] = floorHi;
    slots[base + S_LIMIT] = limit; // part of the binding (semaphore.ts)
    // The 64-bit bind generation (slot-cache.ts): the low half, and its carry into the high half.
    const genLo = (slots[base + S_BIND_GEN]! + 1) | 0;
    slots[base + S_BIND_GEN] = genLo;
    if (genLo === 0) slots[base + S_BIND_GEN_HI] = (slots[base + S_BIND_GEN_HI]! + 1) | 0;
    // RACE: a thief that stole the mutex revokes BINDING slots only after its steal. If it stole
    // before this check, we stop here; if after, its sweep either revokes our BINDING (and the CAS
    // below fails) or comes after our publish, and its own search then finds this binding.
    // ORDER: the key and token words above are plain stores; this CAS and the store of S_STATE
    // after it publish them to any thread that later wins a CAS on S_STATE.
    if (
      Atomics.load(this.#v.header, H_BIND_LOCK) === me &&
      Atomics.compareExchange(slots, base + S_BIND, binding, BIND_BOUND) === binding
    ) {
      // PLAIN, straight after the CAS: nobody else writes an UNBOUND state word.
      slots[base + S_STATE] = 0;
      return true;
    }
    // Robbed: done writing, so hand the slot back, revoked or not.
    if (Atomics.compareExchange(slots, base + S_BIND, binding, BIND_VACANT) !== binding)
      Atomics.compareExchange(slots, base + S_BIND, revoked, BIND_VACANT);
    return false;
  }
}
