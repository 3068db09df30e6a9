/**
 * Grants: the operations of the slot state machine (slot-state.ts) on shared memory - grant,
 * stamp, release, extend, reclaim and forced release - for one thread. Plain results, no throws:
 * the public table turns results into leases and errors.
 */
import { monotonicNow } from './clock.js';
import {
  RECORD_ACTIVE,
  RECORD_CLAIMED,
  S_SLEEPERS,
  S_STAMP,
  S_STATE,
  S_TOKEN_HI,
  S_TOKEN_LO,
  SF_DEADLINE,
  SLOT_F64,
  SLOT_WORDS,
  type Views,
} from './layout.js';
import type { Records } from './records.js';
import { testHooks } from './test-hooks.js';
import {
  ANNOUNCE,
  EXCLUSIVE,
  FIELD,
  FINITE,
  grantState,
  HANDOFF,
  type Mode,
  PARITY,
  PARKED,
  releaseState,
  UNBOUND,
  WAITING,
  type WaiterView,
  wakesAll,
} from './slot-state.js';

export const GRANTED = 1;
export const BUSY = 0;
export const UNBOUND_SLOT = -1;
export const NO_RECORD = -2;

export class Grants {
  readonly #v: Views;
  readonly #slots: Int32Array;
  readonly #f64: Float64Array;
  readonly #records: Records;
  readonly threadId: number;
  /** Incremented each time this thread releases into HANDOFF (see WaiterView). */
  releaseSeq = 0;

  // Outputs of the last successful grant (read right after the call; no allocation).
  tokenLo = 0;
  tokenHi = 0;
  stateWord = 0;
  record = -1;
  deadline = Infinity;
  /** The state seen by the last failed attempt: what a sleeper waits on. */
  seen = 0;
  /** Set by reclaimableIn: the holder was unstamped (exclusive) or unbacked by records (shared). */
  unknownHolder = false;

  constructor(views: Views, records: Records, threadId: number) {
    this.#v = views;
    this.#slots = views.slots;
    this.#f64 = views.slotsF64;
    this.#records = records;
    this.threadId = threadId;
  }

  state(slot: number): number {
    return Atomics.load(this.#slots, slot * SLOT_WORDS + S_STATE);
  }

  /**
   * One attempt to grant `slot` in `mode` (a CAS loop only while flags change under us).
   * GRANTED: the caller holds it (and must check the key); BUSY: `seen` says why;
   * UNBOUND_SLOT: the slot is being rebound, look the key up again; NO_RECORD: shared records full.
   */
  attempt(slot: number, mode: Mode, hold: number, waiter: WaiterView | undefined): number {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    const tid = this.threadId;
    if (mode === 'exclusive') {
      for (;;) {
        const s = Atomics.load(slots, at);
        let next = grantState(s, 'exclusive', tid, waiter);
        if (next < 0) {
          this.seen = s;
          return (s & UNBOUND) !== 0 ? UNBOUND_SLOT : BUSY;
        }
        if (hold !== Infinity) next |= FINITE | this.#nextParity(slot);
        if (Atomics.compareExchange(slots, at, s, next) === s) {
          this.#stampExclusive(slot, next, hold);
          return GRANTED;
        }
      }
    }
    return this.#attemptShared(slot, hold, waiter);
  }

  /** The uncontended exclusive grant: one CAS from FREE. The caller stamps. */
  fastExclusive(slot: number, hold: number): boolean {
    let next = EXCLUSIVE | this.threadId;
    if (hold !== Infinity) next |= FINITE | this.#nextParity(slot);
    if (Atomics.compareExchange(this.#slots, slot * SLOT_WORDS + S_STATE, 0, next) !== 0)
      return false;
    this.#stampExclusive(slot, next, hold);
    return true;
  }

  #nextParity(slot: number): number {
    return Atomics.load(this.#slots, slot * SLOT_WORDS + S_STAMP) === PARITY ? 0 : PARITY;
  }

  /**
   * Right after the grant CAS, in straight-line code (a terminate() lands only at function entries
   * and loop back-edges): a new token, and for a finite hold the deadline, then the stamp parity.
   */
  #stampExclusive(slot: number, state: number, hold: number): void {
    if (hold !== Infinity) testHooks.stall?.('grant:window');
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const lo = (slots[base + S_TOKEN_LO]! + 1) | 0;
    let hi = slots[base + S_TOKEN_HI]!;
    if (lo === 0) hi = (hi + 1) | 0;
    slots[base + S_TOKEN_LO] = lo;
    slots[base + S_TOKEN_HI] = hi;
    this.tokenLo = lo;
    this.tokenHi = hi;
    this.stateWord = state;
    this.record = -1;
    if (hold === Infinity) {
      this.deadline = Infinity;
    } else {
      const deadline = monotonicNow() + hold;
      this.#f64[slot * SLOT_F64 + SF_DEADLINE] = deadline;
      // ORDER: the deadline store is published by this store; waiters read S_STAMP first.
      Atomics.store(slots, base + S_STAMP, state & PARITY);
      this.deadline = deadline;
    }
  }

  #attemptShared(slot: number, hold: number, waiter: WaiterView | undefined): number {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    let s = Atomics.load(slots, at);
    let next = grantState(s, 'shared', this.threadId, waiter);
    if (next < 0) {
      this.seen = s;
      return (s & UNBOUND) !== 0 ? UNBOUND_SLOT : BUSY;
    }
    const deadline = hold === Infinity ? Infinity : monotonicNow() + hold;
    // The record (with its deadline) exists before the count that it backs: see records.ts.
    const record = this.#records.claim(slot, this.threadId, deadline);
    if (record < 0) return NO_RECORD;
    for (;;) {
      if (Atomics.compareExchange(slots, at, s, next) === s) break;
      s = Atomics.load(slots, at);
      next = grantState(s, 'shared', this.threadId, waiter);
      if (next < 0) {
        this.#records.unclaim(record);
        this.seen = s;
        return (s & UNBOUND) !== 0 ? UNBOUND_SLOT : BUSY;
      }
    }
    this.#stampShared(slot, record, deadline);
    this.stateWord = next;
    return GRANTED;
  }

  /** Shared grants run concurrently, so the 64-bit token is incremented with a 64-bit CAS. */
  #stampShared(slot: number, record: number, deadline: number): void {
    const t64 = this.#v.slots64;
    const at = (slot * SLOT_WORDS + S_TOKEN_LO) / 2;
    let cur = Atomics.load(t64, at);
    for (;;) {
      const seen = Atomics.compareExchange(t64, at, cur, cur + 1n);
      if (seen === cur) break;
      cur = seen;
    }
    const token = cur + 1n;
    this.tokenLo = Number(BigInt.asIntN(32, token));
    this.tokenHi = Number(BigInt.asIntN(32, token >> 32n));
    this.#records.activate(record, this.tokenLo, this.tokenHi);
    this.record = record;
    this.deadline = deadline;
  }

  /** Is the lease (exclusive: by state and token; shared: by its record) still the holder? */
  holdsExclusive(slot: number, tokenLo: number, tokenHi: number): boolean {
    const base = slot * SLOT_WORDS;
    const s = Atomics.load(this.#slots, base + S_STATE);
    return (
      (s & (EXCLUSIVE | FIELD)) === (EXCLUSIVE | this.threadId) &&
      this.#slots[base + S_TOKEN_LO] === tokenLo &&
      this.#slots[base + S_TOKEN_HI] === tokenHi
    );
  }

  holdsShared(slot: number, record: number, tokenLo: number, tokenHi: number): boolean {
    return this.#records.isActive(record, slot, this.threadId, tokenLo, tokenHi);
  }

  /**
   * Releases an exclusive grant. `expected` is the state the lease last wrote; the fast path is
   * one CAS back to FREE. Returns false when the lease is stale (the lock is someone else's).
   */
  releaseExclusive(slot: number, tokenLo: number, tokenHi: number, expected: number): boolean {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    // The token check makes the CAS name this grant: the same thread may hold a later grant of
    // the slot (after a reclaim) with the same state word, but never with the same token.
    if (slots[base + S_TOKEN_LO] !== tokenLo || slots[base + S_TOKEN_HI] !== tokenHi) return false;
    // The fast path may only CAS from a word without flags: one with PARKED means sleepers, and
    // freeing it without a notify would strand them.
    const bare = expected & (EXCLUSIVE | FIELD | FINITE | PARITY);
    if (Atomics.compareExchange(slots, base + S_STATE, bare, 0) === bare) return true;
    const mine = EXCLUSIVE | this.threadId;
    for (;;) {
      const s = Atomics.load(slots, base + S_STATE);
      if ((s & (EXCLUSIVE | FIELD)) !== mine) return false;
      if (this.#releaseFrom(slot, s, 'exclusive')) return true;
    }
  }

  /** Releases a shared grant; false when its record was taken by a reclaim or forced release. */
  releaseShared(slot: number, record: number, tokenLo: number, tokenHi: number): boolean {
    if (!this.#records.isActive(record, slot, this.threadId, tokenLo, tokenHi)) return false;
    testHooks.stall?.('releaseShared:checked');
    if (!this.#records.free(record)) return false;
    testHooks.stall?.('releaseShared:releasing');
    this.dropShared(slot, 1);
    return true;
  }

  /** Takes `n` shared holds off the slot's count (their records were freed by the caller). */
  dropShared(slot: number, n: number): void {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    for (;;) {
      const s = Atomics.load(slots, at);
      // A reclaim may have absorbed the count already (state no longer a shared group).
      if ((s & (EXCLUSIVE | HANDOFF | UNBOUND)) !== 0 || (s & FIELD) === 0) return;
      if ((s & FIELD) > n) {
        if (Atomics.compareExchange(slots, at, s, s - n) === s) return;
        continue;
      }
      if (this.#releaseFrom(slot, (s & ~FIELD) | 1, 'shared', s)) return;
    }
  }

  /**
   * The last step of every release: CAS from `s` to FREE or HANDOFF, then wake a sleeper.
   * `actual` is the word to CAS from when it differs from the one the transition is computed on.
   */
  #releaseFrom(slot: number, s: number, mode: Mode, actual = s): boolean {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const before = Atomics.load(slots, base + S_SLEEPERS);
    const next = releaseState(s, mode, this.threadId, before);
    if (Atomics.compareExchange(slots, base + S_STATE, actual, next) !== actual) return false;
    // RACE: a sleeper may have arrived between our read and our CAS, and may already sleep on the
    // old word; so look again after the CAS. If we cleared PARKED while someone sleeps, wake them
    // all (each sets PARKED again before it sleeps again); else one is enough.
    const after = Atomics.load(slots, base + S_SLEEPERS);
    const one = (next & PARKED) !== 0 && !wakesAll(next);
    const woken = after > 0 ? Atomics.notify(slots, base + S_STATE, one ? 1 : Infinity) : 0;
    if ((next & HANDOFF) !== 0) {
      this.releaseSeq++;
      // Nobody asleep woke and nobody spins: the announcement was stale. Free the slot rather
      // than leave it to HANDOFF_PATIENCE_MS.
      if (woken === 0 && (s & WAITING) === 0) {
        Atomics.compareExchange(slots, base + S_STATE, next, next & ~(HANDOFF | FIELD | ANNOUNCE));
      }
    }
    return true;
  }

  /**
   * Pushes an exclusive grant's deadline to now + ms. The CAS flips PARITY, so while the new
   * deadline is being written no waiter trusts the old one, and a stale lease's CAS fails.
   * Returns the new state word, or -1 when stale.
   */
  extendExclusive(slot: number, tokenLo: number, tokenHi: number, ms: number): number {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    for (;;) {
      const s = Atomics.load(slots, base + S_STATE);
      if ((s & (EXCLUSIVE | FIELD)) !== (EXCLUSIVE | this.threadId)) return -1;
      if (slots[base + S_TOKEN_LO] !== tokenLo || slots[base + S_TOKEN_HI] !== tokenHi) return -1;
      // The new parity is the opposite of the last stamp (not of this word's bit, which is 0 for an
      // infinite hold while S_STAMP may hold PARITY from an older grant).
      const next =
        ms === Infinity ? s & ~(FINITE | PARITY) : (s & ~PARITY) | FINITE | this.#nextParity(slot);
      if (Atomics.compareExchange(slots, base + S_STATE, s, next) !== s) continue;
      testHooks.stall?.('extend:published');
      if (ms !== Infinity) {
        this.deadline = monotonicNow() + ms;
        this.#f64[slot * SLOT_F64 + SF_DEADLINE] = this.deadline;
        Atomics.store(slots, base + S_STAMP, next & PARITY);
      } else {
        this.deadline = Infinity;
      }
      return next;
    }
  }

  extendShared(
    slot: number,
    record: number,
    tokenLo: number,
    tokenHi: number,
    ms: number,
  ): boolean {
    if (!this.#records.isActive(record, slot, this.threadId, tokenLo, tokenHi)) return false;
    this.deadline = ms === Infinity ? Infinity : monotonicNow() + ms;
    this.#records.setDeadline(record, this.deadline);
    // RACE: a reclaim that read the old deadline between our check and our store could free the
    // record; re-check so that the caller learns the lease was lost.
    return this.#records.isActive(record, slot, this.threadId, tokenLo, tokenHi);
  }

  /**
   * How long (ms) until the holder of `s` may be reclaimed: <= 0 now, Infinity never.
   * `unstampedSince` is when this waiter first saw the same finite grant without its stamp (a
   * holder that died between its grant CAS and its stamp): that grant counts as expiring then.
   */
  reclaimableIn(
    slot: number,
    s: number,
    now: number,
    failTimeout: number,
    unstampedSince: number,
  ): number {
    this.unknownHolder = false;
    if (failTimeout === Infinity) return Infinity;
    if ((s & EXCLUSIVE) !== 0) {
      if ((s & FINITE) === 0) return Infinity;
      const base = slot * SLOT_WORDS;
      if (Atomics.load(this.#slots, base + S_STAMP) !== (s & PARITY)) {
        this.unknownHolder = true;
        return unstampedSince + failTimeout - now;
      }
      const deadline = this.#f64[slot * SLOT_F64 + SF_DEADLINE]!;
      // The stamp is for this grant only if the state did not move while we read it; if it moved,
      // we know nothing yet: look again soon (never "reclaimable now": the word may come back to
      // the same value for a live grant, and the reclaim CAS would then succeed against it).
      if (Atomics.load(this.#slots, base + S_STATE) !== s) return 1;
      return deadline + failTimeout - now;
    }
    if ((s & (HANDOFF | UNBOUND)) !== 0 || (s & FIELD) === 0) return Infinity;
    const live = this.#liveSharedUntil(slot);
    // A count with no live record behind it: holders that died, or one that is between freeing
    // its record and taking its count off (nanoseconds). Like an unstamped grant, it counts as
    // dead once this waiter has seen the same word for failTimeout.
    if (live === -Infinity) {
      this.unknownHolder = true;
      return unstampedSince + failTimeout - now;
    }
    return live + failTimeout - now;
  }

  /** Latest deadline of a live-looking (CLAIMED or ACTIVE) record on `slot`; -Infinity if none. */
  #liveSharedUntil(slot: number): number {
    const records = this.#records;
    let latest = -Infinity;
    for (let r = 0; r < records.count; r++) {
      const st = records.state(r);
      if ((st === RECORD_ACTIVE || st === RECORD_CLAIMED) && records.slot(r) === slot) {
        const d = records.deadline(r);
        if (d > latest) latest = d;
      }
    }
    return latest;
  }

  /**
   * Reclaims an expired holder in favour of this waiting request: a CAS that names the exact
   * stale state `s`. For a shared group, the expired records are freed first (this call then owns
   * their count); if a live holder turned up meanwhile, their count is taken off and it gives up.
   */
  reclaim(slot: number, s: number, mode: Mode, hold: number, failTimeout: number): number {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    if ((s & EXCLUSIVE) !== 0) {
      let next = mode === 'exclusive' ? EXCLUSIVE | this.threadId : 1;
      next |= s & ~(EXCLUSIVE | FIELD | FINITE | PARITY | WAITING);
      if (mode === 'shared') return this.#reclaimInto(slot, s, next & ~FINITE, hold);
      if (hold !== Infinity) next |= FINITE | this.#nextParity(slot);
      if (Atomics.compareExchange(slots, at, s, next) !== s) return BUSY;
      this.#stampExclusive(slot, next, hold);
      return GRANTED;
    }
    // A shared group: free the expired records, then take the word if nobody live is left.
    const records = this.#records;
    const now = monotonicNow();
    let owned = 0;
    for (let r = 0; r < records.count; r++) {
      if (
        records.state(r) === RECORD_ACTIVE &&
        records.slot(r) === slot &&
        records.deadline(r) + failTimeout < now
      ) {
        if (records.free(r)) owned++;
      }
    }
    for (;;) {
      // ORDER: load the word, then look for live records, then CAS from that word. A holder
      // that joins after our look must CAS the word after our load, so our CAS then fails.
      const cur = Atomics.load(slots, at);
      if (this.#liveSharedUntil(slot) > -Infinity) {
        if (owned > 0) this.dropShared(slot, owned);
        return BUSY;
      }
      if ((cur & (EXCLUSIVE | HANDOFF | UNBOUND)) !== 0 || (cur & FIELD) === 0) return BUSY;
      const keep = cur & ~(FIELD | WAITING);
      if (mode === 'exclusive') {
        let next = EXCLUSIVE | this.threadId | keep;
        if (hold !== Infinity) next |= FINITE | this.#nextParity(slot);
        if (Atomics.compareExchange(slots, at, cur, next) === cur) {
          this.#stampExclusive(slot, next, hold);
          return GRANTED;
        }
      } else {
        const result = this.#reclaimInto(slot, cur, keep | 1, hold);
        if (result !== BUSY) return result;
      }
    }
  }

  /** Reclaim by a shared request: claim a record first, like any shared grant. */
  #reclaimInto(slot: number, s: number, next: number, hold: number): number {
    const deadline = hold === Infinity ? Infinity : monotonicNow() + hold;
    const record = this.#records.claim(slot, this.threadId, deadline);
    if (record < 0) return NO_RECORD;
    if (Atomics.compareExchange(this.#slots, slot * SLOT_WORDS + S_STATE, s, next) !== s) {
      this.#records.unclaim(record);
      return BUSY;
    }
    this.#stampShared(slot, record, deadline);
    this.stateWord = next;
    return GRANTED;
  }

  /** Forced release of `owner`'s exclusive hold on `slot` (releaseAllOwnedBy). */
  forceReleaseExclusive(slot: number, owner: number): boolean {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    for (;;) {
      const s = Atomics.load(slots, at);
      if ((s & (EXCLUSIVE | FIELD)) !== (EXCLUSIVE | owner)) return false;
      // Computed as a release by this thread, so the HANDOFF names us, not the dead owner.
      const asMine = (s & ~FIELD) | this.threadId;
      if (this.#releaseFrom(slot, asMine, 'exclusive', s)) return true;
    }
  }

  /** After an exclusive grant by a thread that looked up the wrong key: give it straight back. */
  undoGrant(slot: number, mode: Mode): void {
    if (mode === 'shared') {
      if (this.#records.free(this.record)) this.dropShared(slot, 1);
      return;
    }
    this.releaseExclusive(slot, this.tokenLo, this.tokenHi, this.stateWord);
  }
}
