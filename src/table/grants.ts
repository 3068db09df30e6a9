/**
 * Grants: the operations of the slot state machine (slot-state.ts) on shared memory - grant,
 * stamp, release, extend, reclaim and forced release - for one thread. Plain results, no throws:
 * the public table turns results into leases and errors.
 *
 * Each operation is a call that changes shared state (a CAS, an add), followed by plain stores
 * that nothing can cut short (see "Threads that die, and threads that stall" in slot-state.ts).
 * Comments marked PLAIN point at such stretches: they must stay free of calls, helpers included.
 */
import { monotonicNow } from '../api/clock.js';
import {
  CELL_DEADLINE_SHIFT,
  CELL_PARITY_SHIFT,
  CELL_PENDING_SHIFT,
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
  RECORD_TAKEN,
  RECORD_WORDS,
  RF_DEADLINE,
  S_LIMIT,
  S_SLEEPERS,
  S_STATE,
  S_TOKEN_HI,
  S_TOKEN_LO,
  SF_ANNOUNCED_AT,
  SF_HANDOFF_UNTIL,
  SLOT_F64,
  SLOT_WORDS,
  type Views,
} from './layout.js';
import { nextRecordWord, type Records, stuckMs } from './records.js';
import { permitGrantState } from './semaphore.js';
import { testHooks } from './test-hooks.js';
import {
  ANNOUNCE,
  EXCLUSIVE,
  FIELD,
  FINITE,
  grantState,
  HANDOFF,
  HANDOFF_PATIENCE_MS,
  lapsedGrantState,
  type Mode,
  PARITY,
  PARKED,
  RECLAIMING,
  releaseState,
  SLEEP_SLICE_MS,
  STARVING,
  UNBOUND,
  WAITING,
  type WaiterView,
  wakesAll,
  withdrawn,
} from './slot-state.js';

/**
 * Loads per spin round on a busy word: about 1-2 us here, the raw futex mutex's spin (100
 * loads). Enough to catch a release by a holder on another core in a short section; a longer
 * hold is left to the waiting loop and its sleep.
 */
export const SPIN_LOADS = 128;

export const GRANTED = 1;
export const BUSY = 0;
export const UNBOUND_SLOT = -1;
export const NO_RECORD = -2;

const PARITY_SHIFT = BigInt(CELL_PARITY_SHIFT);
const DEADLINE_SHIFT = BigInt(CELL_DEADLINE_SHIFT);
const OWNER_MASK = (1n << PARITY_SHIFT) - 1n;
const PARITY_BIT = 1n << PARITY_SHIFT;
/** The largest deadline a cell holds (its sign bit must stay clear). */
const MAX_CELL_DEADLINE = 2 ** (63 - CELL_DEADLINE_SHIFT) - 1;
/** A cell written by its holder's plain store and not yet published: see #publishCell. */
const PENDING_BIT = 1n << BigInt(CELL_PENDING_SHIFT);

/**
 * A waiter's marks leave the word at `at` (Request.leave, and releaseAllOwnedBy for a dead
 * thread): one sleeper is woken, if any, to check the word afresh; if nobody was woken, no waiter
 * is left asleep, and every announcement is withdrawn (a HANDOFF becomes FREE; running waiters
 * announce again). If somebody was woken, the bits stay for the waiters still there, and the last
 * to leave withdraws.
 */
export function leaveWord(slots: Int32Array, at: number): void {
  // RACE: read after the leaver's last CAS on the word, as a release does ("No lost wake-up").
  if (Atomics.load(slots, at - S_STATE + S_SLEEPERS) > 0 && Atomics.notify(slots, at, 1) > 0)
    return;
  for (;;) {
    const s = Atomics.load(slots, at);
    const next = withdrawn(s);
    if (next === s || Atomics.compareExchange(slots, at, s, next) === s) return;
  }
}

/** The holder named in a deadline cell (-1 for an empty cell). */
function cellOwner(cell: bigint): number {
  return Number(cell & OWNER_MASK) - 1;
}

/** The parity in a deadline cell, as the state word's PARITY bit. */
function cellParity(cell: bigint): number {
  return ((cell >> PARITY_SHIFT) & 1n) === 1n ? PARITY : 0;
}

/** The deadline (whole monotonic ms) in a deadline cell. */
function cellDeadline(cell: bigint): number {
  return Number(cell >> DEADLINE_SHIFT);
}

/**
 * How long after a cell's deadline its holder may be reclaimed: `failTimeout`, but never less
 * than 0 for a cell not yet published (a steal's failTimeout is -2^52). A steal reclaims at once
 * on a published cell, whose Atomics.store made the grant's token visible with it; a pending one
 * (its holder between its two stores, or dead there) it takes only once the deadline is past.
 */
function reclaimPatience(cell: bigint, failTimeout: number): number {
  return (cell & PENDING_BIT) !== 0n && failTimeout < 0 ? 0 : failTimeout;
}

/** The identity of an exclusive finite grant in a state word: holder, FINITE, PARITY. */
const GRANT_ID = EXCLUSIVE | FIELD | FINITE | PARITY;

export class Grants {
  readonly #v: Views;
  readonly #slots: Int32Array;
  readonly #cells: BigInt64Array;
  readonly #records: Records;
  /** The records' words: the shared steps write them with plain stores. */
  readonly #recs: Int32Array;
  readonly #tokens64: BigInt64Array;
  /** A 64-bit token split into its halves with plain reads: store it, read two words. */
  readonly #split64 = new BigInt64Array(1);
  readonly #split32 = new Int32Array(this.#split64.buffer);
  readonly threadId: number;
  /** This thread's id as it appears at the bottom of a deadline cell, without and with parity. */
  readonly #cellOwner: bigint;
  readonly #cellOwnerParity: bigint;
  /** Incremented each time this thread releases into HANDOFF (see WaiterView). */
  releaseSeq = 0;
  /**
   * The slot this thread last handed off to a starving writer (-1: none, or already used): its
   * next blocking request for that key waits its turn instead of barging (LockTable.acquireSync).
   */
  yieldSlot = -1;

  // Outputs of the last successful grant (read right after the call; no allocation). `record` and
  // `deadline` are written by shared and finite grants only: an exclusive grant with an infinite
  // hold, the fast path's, leaves them (two stores fewer), and its caller knows its deadline.
  tokenLo = 0;
  tokenHi = 0;
  stateWord = 0;
  record = -1;
  deadline = Infinity;
  /** The state seen by the last failed attempt: what a sleeper waits on. */
  seen = 0;

  /** The table's failTimeout as this handle sees it: for collecting what dead threads left. */
  readonly #failTimeout: number;

  constructor(views: Views, records: Records, threadId: number, failTimeout: number) {
    this.#failTimeout = failTimeout;
    this.#v = views;
    this.#slots = views.slots;
    this.#cells = views.slotCells;
    this.#records = records;
    this.#recs = views.records;
    this.#tokens64 = views.slots64;
    this.threadId = threadId;
    this.#cellOwner = BigInt(threadId + 1);
    this.#cellOwnerParity = this.#cellOwner | PARITY_BIT;
  }

  /** @internal For tests: the record count, a record's word and its slot. */
  get recordCount(): number {
    return this.#records.count;
  }
  /** @internal */
  recordWord(r: number): number {
    return this.#records.word(r);
  }
  /** @internal */
  recordSlot(r: number): number {
    return this.#records.slot(r);
  }

  state(slot: number): number {
    return Atomics.load(this.#slots, slot * SLOT_WORDS + S_STATE);
  }

  // ---- exclusive grants -----------------------------------------------------------------------

  /**
   * One attempt to grant `slot` in `mode` (a CAS loop only while flags change under us).
   * GRANTED: the caller holds it (and must check the key); BUSY: `seen` says why;
   * UNBOUND_SLOT: the slot is being rebound, look the key up again; NO_RECORD: shared records full.
   * `limit` > 0: a permit of a semaphore of that many (mode 'shared'; semaphore.ts). It is the
   * request's own limit: the caller checks after a grant that it is the slot's.
   */
  attempt(
    slot: number,
    mode: Mode,
    hold: number,
    waiter: WaiterView | undefined,
    limit = 0,
  ): number {
    if (mode === 'shared') return this.#attemptShared(slot, hold, waiter, limit);
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    const tid = this.threadId;
    const deadline = hold === Infinity ? Infinity : Math.ceil(monotonicNow() + hold);
    for (;;) {
      const s = Atomics.load(slots, at);
      let next = grantState(s, 'exclusive', tid, waiter);
      if (next < 0 && (next = this.#lapsed(slot, s, 'exclusive')) < 0) {
        this.seen = s;
        return (s & UNBOUND) !== 0 ? UNBOUND_SLOT : BUSY;
      }
      if (hold === Infinity) {
        if (Atomics.compareExchange(slots, at, s, next) === s) {
          this.#stampInfinite(slot, next);
          return GRANTED;
        }
      } else if (this.#grantFinite(slot, s, next, deadline)) {
        return GRANTED;
      }
    }
  }

  /**
   * The grant of a HANDOFF whose reservation has lapsed (its intended waiter is gone: see
   * HANDOFF_PATIENCE_MS), to any request, a one-shot included; -1 if `s` is no such HANDOFF.
   */
  #lapsed(slot: number, s: number, mode: Mode): number {
    if ((s & HANDOFF) === 0) return -1;
    // ORDER: the reservation is written before the CAS that made the HANDOFF we loaded.
    if (monotonicNow() < this.#v.slotF64[slot * SLOT_F64 + SF_HANDOFF_UNTIL]!) return -1;
    return lapsedGrantState(s, mode, this.threadId);
  }

  /**
   * A waiter asserts the slot's announcements at `now` (Request: a plain store before its announce
   * CAS, so that a request that sees the bits that CAS set sees this stamp or a later one).
   */
  stampAnnouncement(slot: number, now: number): void {
    this.#v.slotF64[slot * SLOT_F64 + SF_ANNOUNCED_AT] = now;
  }

  /**
   * A one-shot shared or permit request refused by the announcements in `s` alone (the group has
   * room) when they are stale: their waiter may be gone (slot-state.ts, "Stale announcements"). As
   * a release that frees room does, it wakes one sleeper to look again (which then asserts its
   * own announcement afresh: the request stays refused); if the notify wakes nobody, no waiter
   * is asleep and none runs, and it withdraws them (one CAS). True: look at the word again. A clock
   * read: slow paths only.
   */
  #withdrawStale(slot: number, s: number, limit: number): boolean {
    if ((s & ANNOUNCE) === 0 || (s & (HANDOFF | UNBOUND | EXCLUSIVE)) !== 0) return false;
    const bare = withdrawn(s);
    const room =
      limit > 0
        ? permitGrantState(bare, limit + testHooks.permitSlack, undefined)
        : grantState(bare, 'shared', this.threadId, undefined);
    if (room < 0) return false;
    const now = monotonicNow();
    const age = now - this.#v.slotF64[slot * SLOT_F64 + SF_ANNOUNCED_AT]!;
    if (age < HANDOFF_PATIENCE_MS) return false;
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const sleepers = Atomics.load(slots, base + S_SLEEPERS);
    if (sleepers > 0 && Atomics.notify(slots, base + S_STATE, 1) > 0) {
      this.stampAnnouncement(slot, now);
      return false;
    }
    // A sleeper counted but not waiting: one woken and not yet run (an async waiter whose event
    // loop is busy, a thread descheduled), one about to sleep, or one that died asleep. A live one
    // looks at least every SLEEP_SLICE_MS and asserts its bits afresh: only a stamp older than
    // that says it is gone.
    if (sleepers > 0 && age < SLEEP_SLICE_MS) return false;
    Atomics.compareExchange(slots, base + S_STATE, s, bare);
    return true;
  }

  /** Before a release's CAS to a HANDOFF: reserve it for the waiters whose turn it is. */
  #reserve(slot: number): void {
    this.#v.slotF64[slot * SLOT_F64 + SF_HANDOFF_UNTIL] = monotonicNow() + HANDOFF_PATIENCE_MS;
  }

  /**
   * The uncontended exclusive grant: one CAS from FREE, then the new token. For an infinite hold
   * (the default) that is all: no clock read, no deadline cell. The caller checks the key.
   */
  fastExclusive(slot: number, hold: number): boolean {
    if (hold !== Infinity) return this.#fastExclusiveFinite(slot, hold);
    const next = EXCLUSIVE | this.threadId;
    const seen = Atomics.compareExchange(this.#slots, slot * SLOT_WORDS + S_STATE, 0, next);
    if (seen !== 0) return seen === PARKED && this.#fastExclusiveParked(slot, next);
    this.#stampInfinite(slot, next);
    return true;
  }

  /**
   * FREE with sleepers (PARKED): a newcomer may still take it (normal mode), keeping PARKED so that
   * its release wakes them. (Any other busy word: the waiting loop decides.)
   */
  #fastExclusiveParked(slot: number, next: number): boolean {
    const at = slot * SLOT_WORDS + S_STATE;
    if (Atomics.compareExchange(this.#slots, at, PARKED, next | PARKED) !== PARKED) return false;
    this.#stampInfinite(slot, next | PARKED);
    return true;
  }

  /**
   * Watches the slot's word with loads (at most SPIN_LOADS) until it looks free to a newcomer
   * (FREE, perhaps with sleepers). False when it stayed busy (or is in a hand-off, or is held by
   * this thread).
   */
  watchForFree(slot: number): boolean {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    const mine = EXCLUSIVE | this.threadId;
    for (let i = 0; i < SPIN_LOADS; i++) {
      const s = Atomics.load(slots, at);
      if (s === 0 || s === PARKED) return true;
      // Held by this very thread (recursion, reported by the waiting loop): nothing to wait for.
      if ((s & (EXCLUSIVE | FIELD)) === mine) return false;
    }
    return false;
  }

  /** A finite hold's uncontended grant, out of line: the clock read, then #grantFinite from FREE. */
  #fastExclusiveFinite(slot: number, hold: number): boolean {
    return this.#grantFinite(slot, 0, EXCLUSIVE | this.threadId, Math.ceil(monotonicNow() + hold));
  }

  /**
   * The parity for a new stamp by this thread on `slot`: the other one if the cell is already ours
   * (from an earlier grant or extend of this thread), so the cell we leave behind cannot pass for
   * the new grant's. Only this thread writes cells that name it.
   */
  #parityFor(slot: number): number {
    return (this.#cells[slot]! & (OWNER_MASK | PARITY_BIT)) === this.#cellOwner ? PARITY : 0;
  }

  /**
   * The deadline cell of this thread for `deadline` (whole ms) and `parity`. The cell has 40 bits
   * for it: a deadline past 2^40 - 1 ms of the monotonic clock (34.8 years after boot; a hold
   * may be up to 2^40 ms) is stored as that, so that the word never wraps negative.
   */
  #cell(deadline: number, parity: number): bigint {
    return (
      (BigInt(Math.min(deadline, MAX_CELL_DEADLINE)) << DEADLINE_SHIFT) |
      (parity !== 0 ? this.#cellOwnerParity : this.#cellOwner)
    );
  }

  /**
   * A finite exclusive grant: one CAS from `s` to `next` with FINITE and a fresh parity, then the
   * token with plain stores and the deadline cell with a seq-cst one. Until the cell names us with that parity,
   * waiters see the old cell and look again: we are not reclaimable before our deadline is in it.
   */
  #grantFinite(slot: number, s: number, next: number, deadline: number): boolean {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const parity = this.#parityFor(slot);
    const cell = this.#cell(deadline, parity);
    const pending = cell | PENDING_BIT;
    const state = next | FINITE | parity;
    if (Atomics.compareExchange(slots, base + S_STATE, s, state) !== s) return false;
    testHooks.stall?.('grant:window');
    // PLAIN from the CAS to the pending cell (no call before it: see #publishCell), then the end.
    const lo = (slots[base + S_TOKEN_LO]! + 1) | 0;
    let hi = slots[base + S_TOKEN_HI]!;
    if (lo === 0) hi = (hi + 1) | 0;
    slots[base + S_TOKEN_LO] = lo;
    slots[base + S_TOKEN_HI] = hi;
    this.#cells[slot] = pending;
    this.#publishCell(slot, cell);
    this.tokenLo = lo;
    this.tokenHi = hi;
    this.stateWord = state;
    this.record = -1;
    this.deadline = deadline;
    return true;
  }

  /**
   * Publishes our deadline cell, right after the CAS of a finite grant (and its token) or an
   * extend. The caller has first written it marked pending, with a plain store of its own.
   *  - The plain store comes first, inline in the caller, because worker.terminate() stops a
   *    thread at the entry of a call (this method's own, and the Atomics call in it), never
   *    between plain statements: a holder that dies at any call after its CAS has still left a
   *    cell that names it, with its deadline, and waiters reclaim it by that deadline plus
   *    failTimeout. (With the Atomics.store alone, a holder terminated there left a cell that
   *    never named it: inside its grant window, which nobody reclaims, its key was held forever;
   *    terminations.test.ts found it. With the plain store inside this method, so did a holder
   *    terminated at this method's entry.)
   *  - The publishing write is a release: a thread that reads the published cell with Atomics.load
   *    and finds it naming us also sees our token, on weakly ordered hardware (ARM64) too. A
   *    steal reclaims on that reading microseconds after the grant; on a pending cell it waits
   *    for the deadline (reclaimPatience), by when the token is long visible.
   *  - It is a compareExchange from our pending cell, not a store: a pending cell is reclaimable,
   *    so a holder stalled between the two (descheduled past its deadline + failTimeout) may have
   *    been reclaimed, and its reclaimer may have written its own cell since. A store would put
   *    ours over it: a cell that does not name the word's holder reads as "being written" to
   *    every reader, and the reclaimer's grant was never reclaimable (nor showed a deadline).
   *    Only we write cells that name us, so our pending cell cannot come back once replaced.
   */
  #publishCell(slot: number, cell: bigint): void {
    testHooks.stall?.('cell:pending');
    Atomics.compareExchange(this.#cells, slot, cell | PENDING_BIT, cell);
  }

  /**
   * Right after an infinite exclusive grant's CAS: a new token. We hold the slot alone, so the
   * token is ours to bump with plain reads and writes; the next holder's grant CAS orders them
   * before its own.
   */
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
    // freeing it without a notify would strand them. (A RECLAIMING mark is a flag too.)
    const bare = expected & GRANT_ID;
    if (Atomics.compareExchange(slots, base + S_STATE, bare, 0) === bare) return true;
    return this.#releaseExclusiveSlow(slot);
  }

  /** A release that found flags (waiters, sleepers) in the word, or a word that is not ours. */
  #releaseExclusiveSlow(slot: number): boolean {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    const mine = EXCLUSIVE | this.threadId;
    for (;;) {
      const s = Atomics.load(slots, at);
      if ((s & (EXCLUSIVE | FIELD)) !== mine) return false;
      if (this.#releaseFrom(slot, s, 'exclusive')) return true;
    }
  }

  /**
   * Pushes an exclusive grant's deadline to now + ms. One CAS on the state word (which flips the
   * parity, sets or clears FINITE, and drops any RECLAIMING mark: a reclaim under way then fails),
   * then the new cell with a plain store. Returns the lease's new state word, or -1 when stale.
   */
  extendExclusive(slot: number, tokenLo: number, tokenHi: number, ms: number): number {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const at = base + S_STATE;
    const mine = EXCLUSIVE | this.threadId;
    const deadline = ms === Infinity ? Infinity : Math.ceil(monotonicNow() + ms);
    for (;;) {
      const s = Atomics.load(slots, at);
      if ((s & (EXCLUSIVE | FIELD)) !== mine) return -1;
      if (slots[base + S_TOKEN_LO] !== tokenLo || slots[base + S_TOKEN_HI] !== tokenHi) return -1;
      if (ms === Infinity) {
        const next = s & ~(FINITE | PARITY | RECLAIMING);
        if (Atomics.compareExchange(slots, at, s, next) !== s) continue;
        this.deadline = Infinity;
        return next;
      }
      // A new parity: the other one if finite already, else one our old cell cannot pass for.
      const parity = (s & FINITE) !== 0 ? (s & PARITY) ^ PARITY : this.#parityFor(slot);
      const cell = this.#cell(deadline, parity);
      const pending = cell | PENDING_BIT;
      const next = (s & ~(PARITY | RECLAIMING)) | FINITE | parity;
      if (Atomics.compareExchange(slots, at, s, next) !== s) continue;
      // PLAIN: the pending cell before any call (see #publishCell). Until it is written, waiters
      // see the old cell under the new parity, and look again.
      this.#cells[slot] = pending;
      testHooks.stall?.('extend:published');
      this.#publishCell(slot, cell);
      this.deadline = deadline;
      return next;
    }
  }

  // ---- shared grants --------------------------------------------------------------------------

  /**
   * A shared grant: claim a record (with its deadline), one grant CAS, then the record's steps
   * (see records.ts) with plain stores, the token in between.
   */
  #attemptShared(
    slot: number,
    hold: number,
    waiter: WaiterView | undefined,
    limit: number,
  ): number {
    const slots = this.#slots;
    const at = slot * SLOT_WORDS + S_STATE;
    const records = this.#records;
    const recs = this.#recs;
    const deadline = hold === Infinity ? Infinity : monotonicNow() + hold;
    const oneShot = waiter === undefined || !waiter.waits;
    let withdrew = false;
    for (;;) {
      const s = Atomics.load(slots, at);
      let next =
        limit > 0
          ? permitGrantState(s, limit + testHooks.permitSlack, waiter)
          : grantState(s, 'shared', this.threadId, waiter);
      if (next < 0 && (next = this.#lapsed(slot, s, 'shared')) < 0) {
        // A one-shot request never waits for announcements to turn stale: it checks them once.
        if (oneShot && !withdrew && this.#withdrawStale(slot, s, limit)) {
          withdrew = true;
          continue;
        }
        this.seen = s;
        return (s & UNBOUND) !== 0 ? UNBOUND_SLOT : BUSY;
      }
      // The record (with its deadline) exists before the count that it backs: see records.ts.
      const record = this.#claim(slot, deadline);
      if (record < 0) {
        this.seen = s;
        return record === -1 ? NO_RECORD : BUSY;
      }
      const rs = record * RECORD_WORDS + R_STATE;
      const claimed = records.claimed;
      if (Atomics.compareExchange(slots, at, s, next) !== s) {
        if (recs[rs] === claimed) recs[rs] = records.claimedThenFree; // PLAIN
        continue;
      }
      // PLAIN: JOINED straight after the grant CAS, so the record says that the count is there.
      if (recs[rs] === claimed) {
        recs[rs] = records.claimedThenJoined;
        if (this.#activate(slot, record, deadline)) return GRANTED;
      } else {
        // Taken over while we were stopped before our CAS: the count we added is unbacked.
        this.#dropUnbacked(slot);
      }
    }
  }

  /**
   * Claims a record for a shared grant on `slot`. When none is free, first takes back what dead
   * threads left: records stuck in a window (records.ts) and leases past their deadline +
   * failTimeout. -1: every record is held; -2: none free yet, but some may come back soon (records
   * in a window not yet seen stuck for long enough): wait and try again.
   */
  #claim(slot: number, deadline: number): number {
    const records = this.#records;
    const record = records.claim(slot, this.threadId, deadline);
    if (record >= 0) return record;
    const failTimeout = this.#failTimeout;
    if (failTimeout === Infinity) return -1;
    const now = monotonicNow();
    const stuck = stuckMs(failTimeout);
    let collected = 0;
    let pending = false;
    for (let r = 0; r < records.count; r++) {
      const w = records.word(r);
      const kind = w & RECORD_KIND;
      if (kind === RECORD_FREE) continue;
      if (kind === RECORD_ACTIVE) {
        if (!(records.deadlineOf(r, w) + failTimeout < now)) continue;
      } else if (kind === RECORD_EXTENDING || !records.seenStuck(r, w, now, stuck)) {
        pending = true;
        continue;
      }
      const other = records.slot(r);
      const before = this.#takeOver(other, r, w);
      if (before < 0) continue;
      collected++;
    }
    if (collected > 0) {
      const again = records.claim(slot, this.threadId, deadline);
      if (again >= 0) return again;
    }
    return pending || collected > 0 ? -2 : -1;
  }

  /**
   * After a shared grant, `record` JOINED (the last claim's): the token, then ACTIVE. False if the
   * record was taken over while we were stopped (the taker took our count off).
   */
  #activate(slot: number, record: number, deadline: number): boolean {
    const records = this.#records;
    const recs = this.#recs;
    const rs = record * RECORD_WORDS + R_STATE;
    const joined = records.claimedThenJoined;
    const active = records.joinedThenActive;
    this.#split64[0] = Atomics.add(this.#tokens64, (slot * SLOT_WORDS + S_TOKEN_LO) / 2, 1n) + 1n;
    // PLAIN from here.
    if (recs[rs] !== joined) return false;
    const lo = this.#split32[0]!; // little-endian, as the slot words' 64-bit token view
    const hi = this.#split32[1]!;
    recs[rs - R_STATE + R_TOKEN_LO] = lo;
    recs[rs - R_STATE + R_TOKEN_HI] = hi;
    recs[rs] = active;
    this.tokenLo = lo;
    this.tokenHi = hi;
    this.record = record;
    this.deadline = deadline;
    this.stateWord = 0;
    return true;
  }

  /** Takes off a count of ours that no record backs (its record was taken over). */
  #dropUnbacked(slot: number): void {
    this.#dropCount(slot, -1, 0, 0);
  }

  /** Does thread `owner` hold `slot` in shared mode (through any handle)? A scan of the records. */
  holdsSharedAny(slot: number, owner: number): boolean {
    const records = this.#records;
    for (let r = 0; r < records.count; r++) {
      if (
        records.state(r) === RECORD_ACTIVE &&
        records.slot(r) === slot &&
        records.owner(r) === owner
      )
        return true;
    }
    return false;
  }

  holdsShared(slot: number, record: number, tokenLo: number, tokenHi: number): boolean {
    const w = this.#records.word(record);
    return this.#records.isLease(record, w, slot, this.threadId, tokenLo, tokenHi);
  }

  /**
   * Releases a shared grant: a CAS from the record word the lease checked to RELEASING, then its
   * count off S_STATE, then FREE. False when the record is no longer this lease's (taken over by a
   * reclaim or a forced release, and maybe handed to another reader since).
   */
  releaseShared(slot: number, record: number, tokenLo: number, tokenHi: number): boolean {
    const w = this.#records.word(record);
    if (!this.#records.isLease(record, w, slot, this.threadId, tokenLo, tokenHi)) return false;
    testHooks.stall?.('releaseShared:checked');
    return this.#releaseRecord(slot, record, w);
  }

  /**
   * Moves `record` from `word` to RELEASING (a CAS: whoever wins it takes the count off, once),
   * takes its count off `slot`, and frees it. False when the record's word is no longer `word`.
   */
  #releaseRecord(slot: number, record: number, word: number): boolean {
    const rs = record * RECORD_WORDS + R_STATE;
    const releasing = nextRecordWord(word, RECORD_RELEASING);
    const freed = nextRecordWord(releasing, RECORD_FREE);
    if (Atomics.compareExchange(this.#recs, rs, word, releasing) !== word) return false;
    testHooks.stall?.('releaseShared:releasing');
    return this.#dropCount(slot, rs, releasing, freed) >= 0;
  }

  /**
   * Takes one count off `slot`'s shared group, by CAS, as long as the record word at `rs` is still
   * `releasing` (rs < 0: an unbacked count of our own, no record to check), and marks the record
   * `freed` with a plain store straight after that CAS: a RELEASING record always still has its
   * count on the word. The last count comes off with the release itself (HANDOFF to the waiters,
   * or FREE) in the same CAS, and its notify follows. Returns the word before, or -1 if the record
   * was taken over meanwhile (the taker took the count off) or the count is not there.
   */
  #dropCount(slot: number, rs: number, releasing: number, freed: number): number {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const recs = this.#recs;
    // A semaphore's (semaphore.ts): frozen while the count we take off is on the word.
    const permits = slots[base + S_LIMIT]! > 0;
    for (;;) {
      const s = Atomics.load(slots, base + S_STATE);
      const last = (s & FIELD) === 1;
      // A permit that comes free while the group stays clears PARKED: a sleeper is woken below.
      const next = last
        ? releaseState(s, 'shared', this.threadId)
        : permits
          ? (s - 1) & ~PARKED
          : s - 1;
      if ((next & HANDOFF) !== 0) this.#reserve(slot);
      // PLAIN: the record check and the CAS's arguments (a stall here is the one case left: see
      // DESIGN.md, "What a stalled thread can still do").
      if (rs >= 0 && recs[rs] !== releasing) return -1;
      // Never below zero: a count is taken off once (records.ts); this only guards the word.
      if ((s & (EXCLUSIVE | HANDOFF | UNBOUND)) !== 0 || (s & FIELD) === 0) return -1;
      if (Atomics.compareExchange(slots, base + S_STATE, s, next) !== s) continue;
      testHooks.stall?.('dropCount:dropped');
      // PLAIN, straight after the CAS: the count is off, so the record must say so.
      if (rs >= 0 && recs[rs] === releasing) recs[rs] = freed;
      if (last) this.#afterRelease(slot, s, next);
      else if (permits) this.#afterPermit(slot, s, next);
      return s;
    }
  }

  /**
   * Pushes a shared lease's deadline to now + ms: a CAS from the record word the lease checked to
   * EXTENDING, then the deadline and ACTIVE again with plain stores (no call at all in between, so
   * nobody needs to take an EXTENDING record over). False when stale.
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
    const active = nextRecordWord(extending, RECORD_ACTIVE);
    if (Atomics.compareExchange(recs, rs, w, extending) !== w) return false;
    // PLAIN from the CAS to the end.
    this.#v.recordsF64[record * RECORD_F64 + RF_DEADLINE] = deadline;
    recs[rs] = active;
    this.deadline = deadline;
    return true;
  }

  // ---- releases -------------------------------------------------------------------------------

  /**
   * The last step of every release: CAS from `s` to FREE or HANDOFF, then wake a sleeper.
   * `actual` is the word to CAS from when it differs from the one the transition is computed on.
   */
  #releaseFrom(slot: number, s: number, mode: Mode, actual = s): boolean {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    const next = releaseState(s, mode, this.threadId);
    if ((next & HANDOFF) !== 0) this.#reserve(slot);
    if (Atomics.compareExchange(slots, base + S_STATE, actual, next) !== actual) return false;
    this.#afterRelease(slot, s, next);
    return true;
  }

  /** After a release's CAS from `s` to `next`: the notify (the PARKED relay), and stale HANDOFFs. */
  #afterRelease(slot: number, s: number, next: number): void {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    // RACE: a sleeper may have arrived just before our CAS and may already sleep on the old word;
    // so read S_SLEEPERS after the CAS. The release clears PARKED; the sleeper it wakes sets it
    // again if others still sleep (Request.leave), like the futex mutex's "2" state.
    const after = Atomics.load(slots, base + S_SLEEPERS);
    const woken =
      after > 0 ? Atomics.notify(slots, base + S_STATE, wakesAll(next) ? Infinity : 1) : 0;
    // HEALS: `next` never has PARKED, so a PARKED that nobody answers (S_SLEEPERS counts a sleeper
    // that died asleep) is gone after this one slow release: the key is back on the fast path.
    if ((next & HANDOFF) !== 0) {
      this.releaseSeq++;
      // Our own exclusive grant, handed to a starving writer: our next request waits its turn.
      // (Not a forced release of a dead thread's grant, nor a reader's last release.)
      if ((s & STARVING) !== 0 && (s & (EXCLUSIVE | FIELD)) === (EXCLUSIVE | this.threadId))
        this.yieldSlot = slot;
      // Nobody asleep woke and nobody is running (WAITING): no waiter will come for it (those that
      // announced it left or died). Free the key rather than reserve it for nobody. A WAITING that
      // is stale still counts as a runner here: its runner may be live and descheduled, and the
      // HANDOFF's own reservation (HANDOFF_PATIENCE_MS from this release) heals a dead one.
      if (woken === 0 && (s & WAITING) === 0) {
        Atomics.compareExchange(slots, base + S_STATE, next, withdrawn(next));
      }
    }
  }

  /**
   * After a permit came free in a semaphore group that stays (CAS from `s` to `next`): wake a
   * sleeper to take it, every sleeper when a waiter starves (the one whose turn it is may not be
   * first). The woken sleeper sets PARKED again while others sleep (Request.leave). Every permit
   * wakes one, PARKED or not (S_SLEEPERS alone decides, as in a last release): a release that
   * found PARKED cleared by the one before, whose woken sleeper has not run yet (busy event loop,
   * descheduled, terminated), would otherwise leave its permit to a sleeper's SLEEP_SLICE_MS. A
   * STARVING that no sleeper answers and no running waiter (WAITING) holds up is withdrawn, as a
   * release does with its HANDOFF: a group that never empties would keep it, and every newcomer
   * would wait STARVATION_MS and every tryAcquire fail, for a waiter that is gone. A WAITING, even
   * a stale one, holds it up (its runner may be live and descheduled): a dead runner's bits go to
   * the next one-shot request (#withdrawStale) or a waiter's patience. A STARVING that a woken
   * sleeper will look at again is asserted afresh: it is that sleeper's turn.
   */
  #afterPermit(slot: number, s: number, next: number): void {
    const slots = this.#slots;
    const base = slot * SLOT_WORDS;
    // RACE: read after the CAS, as #afterRelease does.
    const woken =
      Atomics.load(slots, base + S_SLEEPERS) > 0
        ? Atomics.notify(slots, base + S_STATE, (s & STARVING) !== 0 ? Infinity : 1)
        : 0;
    if ((s & STARVING) === 0) return;
    if (woken > 0) this.stampAnnouncement(slot, monotonicNow());
    else if ((s & WAITING) === 0)
      Atomics.compareExchange(slots, base + S_STATE, next, withdrawn(next));
  }

  // ---- reclaim --------------------------------------------------------------------------------

  /** How long (ms) until the holder of `s` may be reclaimed: <= 0 now, Infinity never. */
  reclaimableIn(slot: number, s: number, now: number, failTimeout: number): number {
    if (failTimeout === Infinity) return Infinity;
    if ((s & EXCLUSIVE) !== 0) {
      if ((s & FINITE) === 0) return Infinity;
      const cell = Atomics.load(this.#cells, slot);
      // The cell is this grant's only if the state did not move while we read it, and the cell
      // names the holder with the word's parity; else it is being written: look again soon.
      if (Atomics.load(this.#slots, slot * SLOT_WORDS + S_STATE) !== s) return 1;
      if (cellOwner(cell) !== (s & FIELD) || cellParity(cell) !== (s & PARITY)) return 1;
      return cellDeadline(cell) + reclaimPatience(cell, failTimeout) - now;
    }
    if ((s & (HANDOFF | UNBOUND)) !== 0 || (s & FIELD) === 0) return Infinity;
    const records = this.#records;
    // A semaphore's waiter needs one permit back: the earliest deadline; a writer needs them all.
    const earliest = this.#slots[slot * SLOT_WORDS + S_LIMIT]! > 0;
    const latest = records.latestDeadline(slot, now, stuckMs(failTimeout), earliest);
    // A record stuck in a window is as good as expired; one in a window, not yet seen stuck for
    // long enough, or a count whose record we missed (its holder just left): look again soon.
    if (records.stuck) return 0;
    if (records.settling || latest === -Infinity) return 1;
    return latest + failTimeout - now;
  }

  reclaim(
    slot: number,
    s: number,
    mode: Mode,
    hold: number,
    failTimeout: number,
    waiter: WaiterView | undefined,
    limit = 0,
  ): number {
    if ((s & EXCLUSIVE) !== 0) return this.#reclaimExclusive(slot, s, mode, hold, failTimeout);
    const records = this.#records;
    const now = monotonicNow();
    const stuck = stuckMs(failTimeout);
    let emptied = false;
    let freed = false;
    for (let r = 0; r < records.count; r++) {
      const w = records.word(r);
      const kind = w & RECORD_KIND;
      if (kind === RECORD_FREE || kind === RECORD_EXTENDING || records.slot(r) !== slot) continue;
      let before = -1;
      if (kind === RECORD_ACTIVE) {
        if (!(records.deadlineOf(r, w) + failTimeout < now)) continue;
        before = this.#takeOver(slot, r, w);
      } else if (records.seenStuck(r, w, now, stuck)) {
        before = this.#takeOver(slot, r, w);
      }
      if (before > 0 && (before & FIELD) === 1) emptied = true;
      if (before > 0) freed = true;
    }
    // A semaphore's waiter needs one permit, a writer the whole group.
    if (!emptied && !(limit > 0 && freed)) return BUSY;
    // The last count came off as a release by us (HANDOFF to the waiters, ourselves included, or
    // FREE), or a permit came free: take it as the waiter we are.
    const result = this.attempt(slot, mode, hold, waiter, limit);
    return result === GRANTED || result === NO_RECORD ? result : BUSY;
  }

  /**
   * Takes over the record `r` of another thread, from the word `w` it was judged in: ACTIVE,
   * JOINED, RELEASING or TAKEN (its count is on S_STATE) become TAKEN (RELEASING by us, not by
   * its holder: forceReleaseSharedOf leaves it to us) and their count comes off; CLAIMED (no count
   * yet) just becomes FREE. Returns the state word before our count came
   * off (0 when there was none to take off), or -1 if the record moved on meanwhile. The last
   * holder's release (count 0) is left to the caller.
   */
  #takeOver(slot: number, r: number, w: number): number {
    const rs = r * RECORD_WORDS + R_STATE;
    if ((w & RECORD_KIND) === RECORD_CLAIMED) {
      return Atomics.compareExchange(this.#recs, rs, w, nextRecordWord(w, RECORD_FREE)) === w
        ? 0
        : -1;
    }
    const taken = nextRecordWord(w, RECORD_TAKEN);
    const freed = nextRecordWord(taken, RECORD_FREE);
    if (Atomics.compareExchange(this.#recs, rs, w, taken) !== w) return -1;
    return this.#dropCount(slot, rs, taken, freed);
  }

  /**
   * Reclaims an expired exclusive holder. Judge the grant (its cell: holder, parity, deadline past
   * + failTimeout), mark the word RECLAIMING by CAS, check (Atomics.load) that the cell is still
   * the one judged, then take the word by CAS from the marked word. The word may have come back to
   * the same value for a later grant or extend of the same holder (an ABA no 32-bit word can rule
   * out), but never with the same cell: its deadline would be later. Every step leaves a word that
   * is the holder's, or ours, whole: a thread that stops between two of them leaves nothing half
   * done (a marked, expired grant that anyone may reclaim, or a mark on a live one that its holder
   * drops on its next release or extend).
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
    if ((s & (EXCLUSIVE | FINITE)) !== (EXCLUSIVE | FINITE)) return BUSY;
    const holder = s & FIELD;
    const judged = Atomics.load(this.#cells, slot);
    if (cellOwner(judged) !== holder || cellParity(judged) !== (s & PARITY)) return BUSY;
    if (cellDeadline(judged) + reclaimPatience(judged, failTimeout) >= monotonicNow()) return BUSY;
    if (Atomics.load(slots, at) !== s) return BUSY;
    testHooks.stall?.('reclaim:judged');
    // What the new grant needs, made before it.
    const deadline =
      hold === Infinity
        ? Infinity
        : mode === 'shared'
          ? monotonicNow() + hold
          : Math.ceil(monotonicNow() + hold);
    let record = -1;
    if (mode === 'shared') {
      record = this.#claim(slot, deadline);
      if (record < 0) return record === -1 ? NO_RECORD : BUSY;
    }
    const marked = s | RECLAIMING;
    if (marked !== s && Atomics.compareExchange(slots, at, s, marked) !== s) {
      this.#unclaim(record);
      return BUSY;
    }
    testHooks.stall?.('reclaim:marked');
    if (Atomics.load(this.#cells, slot) !== judged) {
      // The holder extended, or released and took the slot again: drop our mark.
      Atomics.compareExchange(slots, at, marked, s & ~RECLAIMING);
      this.#unclaim(record);
      return BUSY;
    }
    // Take the word from the marked grant, flags as they are now (waiters may add some).
    for (;;) {
      const cur = Atomics.load(slots, at);
      if ((cur & (GRANT_ID | RECLAIMING)) !== (marked & (GRANT_ID | RECLAIMING))) {
        this.#unclaim(record);
        return BUSY;
      }
      const keep = cur & ~(GRANT_ID | RECLAIMING | WAITING);
      if (mode === 'shared') {
        const rs = record * RECORD_WORDS + R_STATE;
        const claimed = this.#records.claimed;
        if (Atomics.compareExchange(slots, at, cur, keep | 1) !== cur) continue;
        // PLAIN: as in #attemptShared.
        if (this.#recs[rs] !== claimed) {
          this.#dropUnbacked(slot);
          return BUSY;
        }
        this.#recs[rs] = this.#records.claimedThenJoined;
        return this.#activate(slot, record, deadline) ? GRANTED : BUSY;
      }
      const next = EXCLUSIVE | this.threadId | keep;
      if (hold === Infinity) {
        if (Atomics.compareExchange(slots, at, cur, next) !== cur) continue;
        this.#stampInfinite(slot, next);
        return GRANTED;
      }
      if (this.#grantFinite(slot, cur, next, deadline)) return GRANTED;
    }
  }

  /** Frees the record this thread claimed last (if any: -1 is none) and did not use. */
  #unclaim(record: number): void {
    if (record < 0) return;
    const rs = record * RECORD_WORDS + R_STATE;
    // PLAIN: check and store (a CLAIMED record is taken over only once seen stuck).
    if (this.#recs[rs] === this.#records.claimed) this.#recs[rs] = this.#records.claimedThenFree;
  }

  /** The deadline of the exclusive holder of `s` on `slot` (for inspect): Infinity if none. */
  exclusiveDeadline(slot: number, s: number): number {
    if ((s & FINITE) === 0) return Infinity;
    const cell = Atomics.load(this.#cells, slot);
    return cellOwner(cell) === (s & FIELD) && cellParity(cell) === (s & PARITY)
      ? cellDeadline(cell)
      : Infinity;
  }

  // ---- forced release -------------------------------------------------------------------------

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
   * Forced release of every shared hold of `owner`, a thread that has exited (releaseAllOwnedBy):
   * its records say exactly whether their count is on S_STATE (records.ts); those with a count
   * (JOINED, ACTIVE, RELEASING) are taken over. Returns how many leases it released.
   */
  forceReleaseSharedOf(owner: number): number {
    const records = this.#records;
    let released = 0;
    for (let r = 0; r < records.count; r++) {
      const w = records.word(r);
      const kind = w & RECORD_KIND;
      // EXTENDING has no call in it, so an exited thread cannot have left one. TAKEN still names
      // `owner`, but another thread is taking its count off (and a second takeover would take a
      // second count off the group). CLAIMED (no count yet) may name `owner` only because its
      // claimer's plain stores have not landed yet: the owner field is written after the claim's
      // CAS, so a live thread's fresh claim of `owner`'s last record reads as `owner`'s. Freed
      // here, the record went to the next claimer, and the live claimer's stores then wrote its
      // slot and owner over that claimer's lease. A dead thread's CLAIMED record holds nothing: it
      // is taken back once seen stuck, as any other (Records.claim, stuckMs).
      if (
        kind === RECORD_FREE ||
        kind === RECORD_CLAIMED ||
        kind === RECORD_EXTENDING ||
        kind === RECORD_TAKEN ||
        records.owner(r) !== owner
      )
        continue;
      const slot = records.slot(r);
      const before = this.#takeOver(slot, r, w);
      if (before > 0 && kind === RECORD_ACTIVE) released++;
    }
    return released;
  }

  /**
   * After a thread exited (releaseAllOwnedBy): what it announced while it waited goes. On every
   * slot with announcements, as a waiter that leaves does (Request.leave): one sleeper is woken
   * to check the word afresh; if nobody is asleep there, the announcements are withdrawn (a
   * HANDOFF becomes FREE) and running waiters announce again.
   */
  withdrawAll(): void {
    const slots = this.#slots;
    for (let at = S_STATE; at < slots.length; at += SLOT_WORDS) {
      const s = Atomics.load(slots, at);
      if (withdrawn(s) !== s) leaveWord(slots, at);
    }
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
