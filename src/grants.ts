/**
 * Grants: the operations of the slot state machine (slot-state.ts) on shared memory - grant,
 * stamp, release, extend, reclaim and forced release - for one thread. Plain results, no throws:
 * the public table turns results into leases and errors.
 */
import { monotonicNow } from './clock.js';
import {
  CELL_OWNER_BITS,
  R_STATE,
  R_TOKEN_HI,
  R_TOKEN_LO,
  RECORD_ACTIVE,
  RECORD_CLAIMED,
  RECORD_EXTENDING,
  RECORD_F64,
  RECORD_FREE,
  RECORD_KIND,
  RECORD_RELEASING,
  RECORD_WORDS,
  RF_DEADLINE,
  S_SLEEPERS,
  S_STATE,
  S_TOKEN_HI,
  S_TOKEN_LO,
  SLOT_WORDS,
  type Views,
} from './layout.js';
import { nextRecordWord, type Records } from './records.js';
import { testHooks } from './test-hooks.js';
import {
  ANNOUNCE,
  EXCLUSIVE,
  FIELD,
  FINITE,
  grantState,
  HANDOFF,
  type Mode,
  PARKED,
  PENDING,
  releaseState,
  SETTLE_PATIENCE_MS,
  UNBOUND,
  WAITING,
  type WaiterView,
  wakesAll,
} from './slot-state.js';

export const GRANTED = 1;
export const BUSY = 0;
export const UNBOUND_SLOT = -1;
export const NO_RECORD = -2;

const OWNER_BITS = BigInt(CELL_OWNER_BITS);
const OWNER_MASK = (1n << OWNER_BITS) - 1n;

/** The holder named in a deadline cell (-1 for an empty cell). */
function cellOwner(cell: bigint): number {
  return Number(cell & OWNER_MASK) - 1;
}

/** The deadline (whole monotonic ms) in a deadline cell. */
function cellDeadline(cell: bigint): number {
  return Number(cell >> OWNER_BITS);
}

export class Grants {
  readonly #v: Views;
  readonly #slots: Int32Array;
  readonly #cells: BigInt64Array;
  readonly #records: Records;
  /** The records' words: the shared windows write them inline (no call inside a window). */
  readonly #recs: Int32Array;
  readonly #tokens64: BigInt64Array;
  readonly threadId: number;
  /** This thread's id as it appears at the bottom of a deadline cell. */
  readonly #cellOwner: bigint;
  /** The deadline of the cell the last #cellFor made. */
  #cellDeadline = Infinity;
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

  constructor(views: Views, records: Records, threadId: number) {
    this.#v = views;
    this.#slots = views.slots;
    this.#cells = views.slotCells;
    this.#records = records;
    this.#recs = views.records;
    this.#tokens64 = views.slots64;
    this.threadId = threadId;
    this.#cellOwner = BigInt(threadId + 1);
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
    if (mode === 'shared') return this.#attemptShared(slot, hold, waiter);
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    const tid = this.threadId;
    const cell = hold === Infinity ? 0n : this.#cellFor(hold);
    for (;;) {
      const s = Atomics.load(slots, at);
      const next = grantState(s, 'exclusive', tid, waiter);
      if (next < 0) {
        this.seen = s;
        return (s & UNBOUND) !== 0 ? UNBOUND_SLOT : BUSY;
      }
      if (hold !== Infinity) {
        if (this.#grantFinite(slot, s, next, cell)) return GRANTED;
      } else if (Atomics.compareExchange(slots, at, s, next) === s) {
        this.#stampInfinite(slot, next);
        return GRANTED;
      }
    }
  }

  /** The uncontended exclusive grant: one CAS from FREE. */
  fastExclusive(slot: number, hold: number): boolean {
    if (hold !== Infinity)
      return this.#grantFinite(slot, 0, EXCLUSIVE | this.threadId, this.#cellFor(hold));
    const next = EXCLUSIVE | this.threadId;
    if (Atomics.compareExchange(this.#slots, slot * SLOT_WORDS + S_STATE, 0, next) !== 0)
      return false;
    this.#stampInfinite(slot, next);
    return true;
  }

  /** The deadline cell of a hold of `hold` ms from now, by this thread (its deadline: #cellDeadline). */
  #cellFor(hold: number): bigint {
    // Whole milliseconds, rounded up: a holder is never reclaimed before the deadline it asked for.
    const deadline = Math.ceil(monotonicNow() + hold);
    this.#cellDeadline = deadline;
    return (BigInt(deadline) << OWNER_BITS) | this.#cellOwner;
  }

  /**
   * A finite exclusive grant: CAS from `s` to `next` (with PENDING), then, in the grant window,
   * the token and the deadline cell, then FINITE (and PENDING off). Until FINITE is set nobody
   * reads the cell, and a PENDING word is never reclaimed: see "Grant windows" in slot-state.ts.
   */
  #grantFinite(slot: number, s: number, next: number, cell: bigint): boolean {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    if (Atomics.compareExchange(slots, base + S_STATE, s, next | PENDING) !== s) return false;
    // WINDOW: straight-line from the CAS; no call but Atomics (the hook is undefined outside tests).
    testHooks.stall?.('grant:window');
    const lo = (slots[base + S_TOKEN_LO]! + 1) | 0;
    let hi = slots[base + S_TOKEN_HI]!;
    if (lo === 0) hi = (hi + 1) | 0;
    slots[base + S_TOKEN_LO] = lo;
    slots[base + S_TOKEN_HI] = hi;
    Atomics.store(this.#cells, slot, cell);
    // ORDER: the token and the cell are published by this RMW, which also ends the window.
    Atomics.xor(slots, base + S_STATE, PENDING | FINITE);
    this.tokenLo = lo;
    this.tokenHi = hi;
    this.stateWord = next | FINITE;
    this.record = -1;
    this.deadline = this.#cellDeadline;
    return true;
  }

  /** Right after an infinite exclusive grant's CAS: a new token (we hold the slot alone). */
  #stampInfinite(slot: number, state: number): void {
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
    this.deadline = Infinity;
  }

  /**
   * The state word at `at` once it is not another thread's PENDING word (which may yet be handed
   * back to us: see reclaim). -1 when it has not settled within SETTLE_PATIENCE_MS.
   */
  #settled(at: number): number {
    const slots = this.#slots;
    let until = 0;
    for (let spins = 0; ; spins++) {
      const s = Atomics.load(slots, at);
      if ((s & PENDING) === 0 || (s & FIELD) === this.threadId) return s;
      // A window is a few instructions: spin a little, then sleep in 1 ms steps.
      if (spins < 200) continue;
      const now = monotonicNow();
      if (until === 0) until = now + SETTLE_PATIENCE_MS;
      else if (now > until) return -1;
      Atomics.wait(slots, at, s, 1);
    }
  }

  /**
   * A shared grant: claim a record (with its deadline), one grant CAS, then in the window the token
   * and the record's activation; a failed CAS frees the record and looks again.
   */
  #attemptShared(slot: number, hold: number, waiter: WaiterView | undefined): number {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    const recs = this.#recs;
    const deadline = hold === Infinity ? Infinity : monotonicNow() + hold;
    for (;;) {
      const s = Atomics.load(slots, at);
      const next = grantState(s, 'shared', this.threadId, waiter);
      if (next < 0) {
        this.seen = s;
        return (s & UNBOUND) !== 0 ? UNBOUND_SLOT : BUSY;
      }
      // The record (with its deadline) exists before the count that it backs: see records.ts.
      const record = this.#records.claim(slot, this.threadId, deadline);
      if (record < 0) return NO_RECORD;
      // WINDOW (CLAIMED), from the claim: straight-line, no call but Atomics.
      const rs = record * RECORD_WORDS + R_STATE;
      const claimed = this.#records.claimed;
      if (Atomics.compareExchange(slots, at, s, next) !== s) {
        Atomics.store(recs, rs, nextRecordWord(claimed, RECORD_FREE));
        continue;
      }
      const token = Atomics.add(this.#tokens64, (slot * SLOT_WORDS + S_TOKEN_LO) / 2, 1n) + 1n;
      const lo = Number(BigInt.asIntN(32, token));
      const hi = Number(BigInt.asIntN(32, token >> 32n));
      recs[rs - R_STATE + R_TOKEN_LO] = lo;
      recs[rs - R_STATE + R_TOKEN_HI] = hi;
      Atomics.store(recs, rs, nextRecordWord(claimed, RECORD_ACTIVE));
      this.tokenLo = lo;
      this.tokenHi = hi;
      this.stateWord = next;
      this.record = record;
      this.deadline = deadline;
      return GRANTED;
    }
  }

  /** Is the lease (exclusive: by state and token; shared: by its record) still the holder? */
  holdsExclusive(slot: number, tokenLo: number, tokenHi: number): boolean {
    const base = slot * SLOT_WORDS;
    const s = this.#settled(base + S_STATE);
    return (
      (s & (EXCLUSIVE | FIELD)) === (EXCLUSIVE | this.threadId) &&
      this.#slots[base + S_TOKEN_LO] === tokenLo &&
      this.#slots[base + S_TOKEN_HI] === tokenHi
    );
  }

  holdsShared(slot: number, record: number, tokenLo: number, tokenHi: number): boolean {
    const w = this.#records.word(record);
    return this.#records.isLease(record, w, slot, this.threadId, tokenLo, tokenHi);
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
    const bare = expected & (EXCLUSIVE | FIELD | FINITE);
    if (Atomics.compareExchange(slots, base + S_STATE, bare, 0) === bare) return true;
    const mine = EXCLUSIVE | this.threadId;
    for (;;) {
      // A reclaim that is checking what it took (PENDING) may yet hand our grant back: wait for it.
      const s = this.#settled(base + S_STATE);
      if ((s & (EXCLUSIVE | FIELD)) !== mine) return false;
      if (this.#releaseFrom(slot, s, 'exclusive')) return true;
    }
  }

  /**
   * Releases a shared grant: a CAS from the record word the lease checked to RELEASING, then in
   * the window the count off S_STATE and the record FREE. False when the record is no longer this
   * lease's (taken by a reclaim or a forced release, and maybe handed to another reader since).
   */
  releaseShared(slot: number, record: number, tokenLo: number, tokenHi: number): boolean {
    const w = this.#records.word(record);
    if (!this.#records.isLease(record, w, slot, this.threadId, tokenLo, tokenHi)) return false;
    testHooks.stall?.('releaseShared:checked');
    return this.#releaseRecord(slot, record, w);
  }

  /**
   * Moves `record` from `word` (ACTIVE or EXTENDING) to RELEASING, takes its count off `slot`, and
   * frees it. False when the record's word is no longer `word`. Whoever wins the CAS takes the count
   * off, once; nobody else may.
   */
  #releaseRecord(slot: number, record: number, word: number): boolean {
    const recs = this.#recs;
    const rs = record * RECORD_WORDS + R_STATE;
    const releasing = nextRecordWord(word, RECORD_RELEASING);
    if (Atomics.compareExchange(recs, rs, word, releasing) !== word) return false;
    // WINDOW (RELEASING): straight-line, no call but Atomics. While the record is RELEASING the
    // count is ours to take off, so no reclaim can have absorbed it: one atomic subtraction.
    testHooks.stall?.('releaseShared:releasing');
    const before = Atomics.sub(this.#slots, slot * SLOT_WORDS + S_STATE, 1);
    Atomics.store(recs, rs, nextRecordWord(releasing, RECORD_FREE));
    if ((before & FIELD) === 1) this.#settleFree(slot, before - 1);
    return true;
  }

  /**
   * After the last shared holder took its count off: `s` (count 0, flags kept) is free, but its
   * waiters were not told. Finish the release as the last holder's: HANDOFF if anyone waits, and a
   * notify. If someone took the word meanwhile, wake the sleepers anyway (their word changed).
   */
  #settleFree(slot: number, s: number): void {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    for (;;) {
      if ((s & (EXCLUSIVE | HANDOFF | UNBOUND)) !== 0 || (s & FIELD) !== 0) {
        if (Atomics.load(slots, base + S_SLEEPERS) > 0) Atomics.notify(slots, base + S_STATE);
        return;
      }
      if (s === 0) return; // no flag: nobody waits or sleeps
      if (this.#releaseFrom(slot, s | 1, 'shared', s)) return;
      s = Atomics.load(slots, base + S_STATE);
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
   * Pushes an exclusive grant's deadline to now + ms: a CAS on the deadline cell from the cell this
   * lease stamped, so a lease that lost the slot cannot write over its successor's deadline, and a
   * reclaim judged on the old deadline finds the cell changed and hands the grant back (reclaim).
   * Returns the lease's new state word, or -1 when it is stale.
   */
  extendExclusive(slot: number, tokenLo: number, tokenHi: number, ms: number): number {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const at = base + S_STATE;
    const mine = EXCLUSIVE | this.threadId;
    const cell = ms === Infinity ? 0n : this.#cellFor(ms);
    const deadline = this.#cellDeadline;
    for (;;) {
      const s = this.#settled(at);
      if ((s & (EXCLUSIVE | FIELD)) !== mine) return -1;
      if (slots[base + S_TOKEN_LO] !== tokenLo || slots[base + S_TOKEN_HI] !== tokenHi) return -1;
      if (ms === Infinity) {
        if ((s & FINITE) === 0) break;
        if (Atomics.compareExchange(slots, at, s, s & ~FINITE) === s) break;
        continue;
      }
      if ((s & FINITE) !== 0) {
        // Finite already: only the cell changes. It must still be ours: if another thread's cell
        // is there, a reclaim took the slot and stamped it.
        const old = Atomics.load(this.#cells, slot);
        if (cellOwner(old) !== this.threadId) return -1;
        if (Atomics.compareExchange(this.#cells, slot, old, cell) !== old) continue;
      } else {
        // An infinite hold is never reclaimed, so the slot stays ours until FINITE is set; the
        // cell holds an older grant's deadline, which nobody reads until then.
        Atomics.store(this.#cells, slot, cell);
        if (Atomics.compareExchange(slots, at, s, s | FINITE) !== s) continue;
      }
      break;
    }
    testHooks.stall?.('extend:published');
    // RACE: a reclaim judged on the old deadline may have taken the slot between our check and our
    // write. If it is still checking (PENDING) it sees our new cell and hands the grant back.
    const s = this.#settled(at);
    if ((s & (EXCLUSIVE | FIELD)) !== mine) return -1;
    if (slots[base + S_TOKEN_LO] !== tokenLo || slots[base + S_TOKEN_HI] !== tokenHi) return -1;
    this.deadline = deadline;
    return ms === Infinity ? s & ~FINITE : s | FINITE;
  }

  /**
   * Pushes a shared lease's deadline to now + ms: a CAS from the record word the lease checked to
   * EXTENDING, the deadline written in that window, then ACTIVE again. False when stale.
   */
  extendShared(
    slot: number,
    record: number,
    tokenLo: number,
    tokenHi: number,
    ms: number,
  ): boolean {
    const deadline = ms === Infinity ? Infinity : monotonicNow() + ms;
    const recs = this.#recs;
    const rs = record * RECORD_WORDS + R_STATE;
    const w = this.#records.word(record);
    if (!this.#records.isLease(record, w, slot, this.threadId, tokenLo, tokenHi)) return false;
    testHooks.stall?.('extendShared:checked');
    const extending = nextRecordWord(w, RECORD_EXTENDING);
    if (Atomics.compareExchange(recs, rs, w, extending) !== w) return false;
    // WINDOW (EXTENDING): straight-line, no call but Atomics.
    this.#v.recordsF64[record * RECORD_F64 + RF_DEADLINE] = deadline;
    Atomics.store(recs, rs, nextRecordWord(extending, RECORD_ACTIVE));
    this.deadline = deadline;
    return true;
  }

  /** How long (ms) until the holder of `s` may be reclaimed: <= 0 now, Infinity never. */
  reclaimableIn(slot: number, s: number, now: number, failTimeout: number): number {
    if (failTimeout === Infinity) return Infinity;
    if ((s & EXCLUSIVE) !== 0) {
      // A holder inside its grant window is alive (see slot-state.ts): look again soon.
      if ((s & PENDING) !== 0) return 1;
      if ((s & FINITE) === 0) return Infinity;
      const cell = Atomics.load(this.#cells, slot);
      // The cell is this grant's only if the state did not move while we read it; if it moved, we
      // know nothing yet: look again soon.
      if (Atomics.load(this.#slots, slot * SLOT_WORDS + S_STATE) !== s) return 1;
      if (cellOwner(cell) !== (s & FIELD)) return 1;
      return cellDeadline(cell) + failTimeout - now;
    }
    if ((s & (HANDOFF | UNBOUND)) !== 0 || (s & FIELD) === 0) return Infinity;
    const latest = this.#records.latestDeadline(slot);
    // A record inside a window, or a count whose record we did not see (its holder left after we
    // read the word): look again soon. A group is reclaimed only through its records' deadlines.
    if (this.#records.settling || latest === -Infinity) return 1;
    return latest + failTimeout - now;
  }

  /**
   * Reclaims an expired holder in favour of this waiting request: a CAS that names the exact
   * stale state `s`. For a shared group, the expired records are freed first (this call then owns
   * their count); if a live holder turned up meanwhile, their count is taken off and it gives up.
   */
  reclaim(slot: number, s: number, mode: Mode, hold: number, failTimeout: number): number {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    if ((s & EXCLUSIVE) !== 0) return this.#reclaimExclusive(slot, s, mode, hold, failTimeout);
    // A shared group: release each record past its deadline + failTimeout, as a forced release
    // would (each CAS names the record word whose deadline we read). When that empties the group,
    // take it if we can; otherwise finish the release for the waiters.
    const records = this.#records;
    const now = monotonicNow();
    let emptied = -1;
    for (let r = 0; r < records.count; r++) {
      const w = records.word(r);
      if ((w & RECORD_KIND) !== RECORD_ACTIVE || records.slot(r) !== slot) continue;
      const d = records.deadlineOf(r, w);
      if (!(d + failTimeout < now)) continue;
      const before = this.#takeRecord(slot, r, w);
      if (before >= 0 && (before & FIELD) === 1) emptied = before - 1;
    }
    if (emptied < 0) return BUSY;
    const result = this.attempt(slot, mode, hold, undefined);
    if (result !== GRANTED) this.#settleFree(slot, Atomics.load(slots, at));
    return result === GRANTED || result === NO_RECORD ? result : BUSY;
  }

  /**
   * Releases the record `r` (word `w`) of another thread, as #releaseRecord does, except that the
   * last holder's release is left to the caller. Returns the state word before the count came
   * off, or -1 when the record changed.
   */
  #takeRecord(slot: number, r: number, w: number): number {
    const recs = this.#recs;
    const rs = r * RECORD_WORDS + R_STATE;
    const releasing = nextRecordWord(w, RECORD_RELEASING);
    if (Atomics.compareExchange(recs, rs, w, releasing) !== w) return -1;
    // WINDOW (RELEASING): as in #releaseRecord.
    const before = Atomics.sub(this.#slots, slot * SLOT_WORDS + S_STATE, 1);
    Atomics.store(recs, rs, nextRecordWord(releasing, RECORD_FREE));
    return before;
  }

  /**
   * Reclaims an expired exclusive holder. The CAS takes the slot as PENDING(me); then, inside the
   * window, it checks that what it took is the grant it judged: same token, same deadline cell. The
   * word may have come back to the same value for a later grant or extend of the same holder (an
   * ABA no 32-bit word can rule out); then the slot is handed back, untouched, with one XOR.
   */
  #reclaimExclusive(
    slot: number,
    s: number,
    mode: Mode,
    hold: number,
    failTimeout: number,
  ): number {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const at = base + S_STATE;
    if ((s & (FINITE | PENDING)) !== FINITE) return BUSY;
    const holder = s & FIELD;
    // Judge the grant: its deadline and its token (to know it again after the CAS).
    const judged = Atomics.load(this.#cells, slot);
    if (cellOwner(judged) !== holder || cellDeadline(judged) + failTimeout >= monotonicNow())
      return BUSY;
    const tokenLo = slots[base + S_TOKEN_LO]!;
    const tokenHi = slots[base + S_TOKEN_HI]!;
    if (Atomics.load(slots, at) !== s) return BUSY;
    testHooks.stall?.('reclaim:judged');
    // Everything the window needs is made before it.
    let cell = 0n;
    let deadline = Infinity;
    let record = -1;
    if (mode === 'shared') {
      deadline = hold === Infinity ? Infinity : monotonicNow() + hold;
      record = this.#records.claim(slot, this.threadId, deadline);
      if (record < 0) return NO_RECORD;
    } else if (hold !== Infinity) {
      cell = this.#cellFor(hold);
      deadline = this.#cellDeadline;
    }
    // WINDOW (CLAIMED) of a shared reclaim from the claim on; for all, from the CAS on.
    const rs = record * RECORD_WORDS + R_STATE;
    const claimed = this.#records.claimed;
    const taken =
      EXCLUSIVE | this.threadId | PENDING | (s & ~(EXCLUSIVE | FIELD | FINITE | WAITING));
    if (Atomics.compareExchange(slots, at, s, taken) !== s) {
      if (record >= 0) Atomics.store(this.#recs, rs, nextRecordWord(claimed, RECORD_FREE));
      return BUSY;
    }
    // Straight-line from here, no call but Atomics.
    testHooks.stall?.('reclaim:taken');
    if (
      Atomics.load(this.#cells, slot) !== judged ||
      slots[base + S_TOKEN_LO] !== tokenLo ||
      slots[base + S_TOKEN_HI] !== tokenHi
    ) {
      // Not the grant we judged: give it back as it was (holder, FINITE), flags as they are now.
      Atomics.xor(slots, at, PENDING | FINITE | ((this.threadId ^ holder) & FIELD));
      if (record >= 0) Atomics.store(this.#recs, rs, nextRecordWord(claimed, RECORD_FREE));
      return BUSY;
    }
    if (mode === 'shared') {
      const token = Atomics.add(this.#tokens64, (base + S_TOKEN_LO) / 2, 1n) + 1n;
      const lo = Number(BigInt.asIntN(32, token));
      const hi = Number(BigInt.asIntN(32, token >> 32n));
      this.#recs[rs - R_STATE + R_TOKEN_LO] = lo;
      this.#recs[rs - R_STATE + R_TOKEN_HI] = hi;
      Atomics.store(this.#recs, rs, nextRecordWord(claimed, RECORD_ACTIVE));
      this.tokenLo = lo;
      this.tokenHi = hi;
      this.record = record;
      this.deadline = deadline;
      // EXCLUSIVE|me|PENDING -> SHARED(1): flags as they are now.
      this.stateWord =
        Atomics.xor(slots, at, PENDING | EXCLUSIVE | (this.threadId ^ 1)) ^
        (PENDING | EXCLUSIVE | (this.threadId ^ 1));
      return GRANTED;
    }
    const lo = (tokenLo + 1) | 0;
    const hi = lo === 0 ? (tokenHi + 1) | 0 : tokenHi;
    slots[base + S_TOKEN_LO] = lo;
    slots[base + S_TOKEN_HI] = hi;
    if (hold !== Infinity) Atomics.store(this.#cells, slot, cell);
    Atomics.xor(slots, at, hold !== Infinity ? PENDING | FINITE : PENDING);
    this.tokenLo = lo;
    this.tokenHi = hi;
    this.stateWord = (taken & ~PENDING) | (hold !== Infinity ? FINITE : 0);
    this.record = -1;
    this.deadline = deadline;
    return GRANTED;
  }

  /** The deadline of the exclusive holder of `s` on `slot` (for inspect): Infinity if none. */
  exclusiveDeadline(slot: number, s: number): number {
    if ((s & (FINITE | PENDING)) !== FINITE) return Infinity;
    const cell = Atomics.load(this.#cells, slot);
    return cellOwner(cell) === (s & FIELD) ? cellDeadline(cell) : Infinity;
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

  /**
   * Forced release of every shared hold of `owner`, a thread that has exited (releaseAllOwnedBy).
   * Returns how many it released. A record left inside a window (CLAIMED, RELEASING) would mean
   * that thread died there, which V8 does not do (see slot-state.ts); it is freed without touching
   * the count, which may then stay one too high.
   */
  forceReleaseSharedOf(owner: number): number {
    const records = this.#records;
    let released = 0;
    for (let r = 0; r < records.count; r++) {
      const w = records.word(r);
      const kind = w & RECORD_KIND;
      if (kind === RECORD_FREE || records.owner(r) !== owner) continue;
      if (kind === RECORD_ACTIVE || kind === RECORD_EXTENDING) {
        if (this.#releaseRecord(records.slot(r), r, w)) released++;
      } else if (kind === RECORD_CLAIMED || kind === RECORD_RELEASING) {
        Atomics.compareExchange(
          this.#recs,
          r * RECORD_WORDS + R_STATE,
          w,
          nextRecordWord(w, RECORD_FREE),
        );
      }
    }
    return released;
  }

  /** After a grant by a thread that looked up the wrong key: give it straight back. */
  undoGrant(slot: number, mode: Mode): void {
    if (mode === 'shared') {
      this.releaseShared(slot, this.record, this.tokenLo, this.tokenHi);
      return;
    }
    this.releaseExclusive(slot, this.tokenLo, this.tokenHi, this.stateWord);
  }
}
