/**
 * Grants: the operations of the slot state machine (slot-state.ts) on shared memory - grant,
 * stamp, release, extend, reclaim and forced release - for one thread. Plain results, no throws:
 * the public table turns results into leases and errors.
 */
import { monotonicNow } from './clock.js';
import {
  CELL_OWNER_BITS,
  RECORD_ACTIVE,
  RECORD_CLAIMED,
  S_SLEEPERS,
  S_STATE,
  S_TOKEN_HI,
  S_TOKEN_LO,
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
  /** Set by reclaimableIn: the holder was unbacked by records (shared). */
  unknownHolder = false;

  constructor(views: Views, records: Records, threadId: number) {
    this.#v = views;
    this.#slots = views.slots;
    this.#cells = views.slotCells;
    this.#records = records;
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

  /** Shared grants run concurrently, so the 64-bit token is incremented with one 64-bit add. */
  #stampShared(slot: number, record: number, deadline: number): void {
    const token = Atomics.add(this.#v.slots64, (slot * SLOT_WORDS + S_TOKEN_LO) / 2, 1n) + 1n;
    this.tokenLo = Number(BigInt.asIntN(32, token));
    this.tokenHi = Number(BigInt.asIntN(32, token >> 32n));
    this.#records.activate(record, this.tokenLo, this.tokenHi);
    this.record = record;
    this.deadline = deadline;
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
   * `unstampedSince` is when this waiter first saw the same shared count with no live record behind
   * it: that count counts as expiring then.
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
    if ((s & EXCLUSIVE) !== 0) return this.#reclaimExclusive(slot, s, mode, hold, failTimeout);
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
        const next = EXCLUSIVE | this.threadId | keep;
        if (hold !== Infinity) {
          if (this.#grantFinite(slot, cur, next, this.#cellFor(hold))) return GRANTED;
        } else if (Atomics.compareExchange(slots, at, cur, next) === cur) {
          this.#stampInfinite(slot, next);
          return GRANTED;
        }
      } else {
        const result = this.#reclaimInto(slot, cur, keep | 1, hold);
        if (result !== BUSY) return result;
      }
    }
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
    const taken =
      EXCLUSIVE | this.threadId | PENDING | (s & ~(EXCLUSIVE | FIELD | FINITE | WAITING));
    if (Atomics.compareExchange(slots, at, s, taken) !== s) {
      if (record >= 0) this.#records.unclaim(record);
      return BUSY;
    }
    // WINDOW: straight-line from the CAS; no call but Atomics (and, for a shared reclaim, the
    // record's own steps).
    testHooks.stall?.('reclaim:taken');
    if (
      Atomics.load(this.#cells, slot) !== judged ||
      slots[base + S_TOKEN_LO] !== tokenLo ||
      slots[base + S_TOKEN_HI] !== tokenHi
    ) {
      // Not the grant we judged: give it back as it was (holder, FINITE), flags as they are now.
      Atomics.xor(slots, at, PENDING | FINITE | ((this.threadId ^ holder) & FIELD));
      if (record >= 0) this.#records.unclaim(record);
      return BUSY;
    }
    if (mode === 'shared') {
      this.#stampShared(slot, record, deadline);
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

  /** After an exclusive grant by a thread that looked up the wrong key: give it straight back. */
  undoGrant(slot: number, mode: Mode): void {
    if (mode === 'shared') {
      if (this.#records.free(this.record)) this.dropShared(slot, 1);
      return;
    }
    this.releaseExclusive(slot, this.tokenLo, this.tokenHi, this.stateWord);
  }
}
