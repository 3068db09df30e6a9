/**
 * Waiting: what a request does when its first attempt fails. Both the blocking path
 * (Atomics.wait) and the async path (Atomics.waitAsync) run the same `step`, which decides what
 * to do next; they differ only in how they sleep.
 *
 * Phases of a waiting request, each step:
 *   1. find the key's slot (binding it if needed; a busy binding mutex means sleep on it);
 *   2. attempt a grant, as a waiter (a request with waitTimeout > 0 may take a HANDOFF whose
 *      turn is its own, from its first attempt on; a one-shot request only one whose reservation
 *      has lapsed: see WaiterView.waits);
 *   3. if the holder is past its deadline + failTimeout, reclaim (Grants.reclaim: CASes that
 *      name the exact words judged);
 *   4. announce itself when it needs a turn (see `announced`: a reader, a writer facing readers,
 *      or a writer that has waited STARVATION_MS), so that the next release hands off;
 *   5. spin for `spinDelay` ms (a handoff to a spinner costs about 1 us), then sleep on S_STATE
 *      (counted in S_SLEEPERS) until woken, or until the earliest of: its wait deadline, the
 *      holder's reclaim time, the handoff patience, or SLEEP_SLICE_MS. A writer that
 *      has lost a race (it saw the key move, or was woken, and found it taken again) stops
 *      spinning and, until it starves, backs off instead of sleeping on S_STATE: a timed sleep of
 *      BACK_OFF_SLICE_MS on a word of its own, that no release pays a notify for (#backsOff).
 */
import { monotonicNow } from '../api/clock.js';
import {
  BIND_BUSY,
  BIND_FULL,
  type Directory,
  BIND_LOCK_LEASE_MS,
  REBIND_HELD,
} from './directory.js';
import { GRANTED, type Grants, leaveWord, NO_RECORD, SPIN_LOADS, UNBOUND_SLOT } from './grants.js';
import { DIRECTORY, GRANTS, HEADER, SLOTS } from './internals.js';
import {
  H_BIND_LOCK,
  S_BIND_GEN,
  S_BIND_GEN_HI,
  S_LIMIT,
  S_SLEEPERS,
  S_STATE,
  S_TOKEN_LO,
  SLOT_WORDS,
} from './layout.js';
import {
  announcement,
  EXCLUSIVE,
  FIELD,
  HANDOFF,
  HANDOFF_PATIENCE_MS,
  type Mode,
  PARKED,
  SLEEP_SLICE_MS,
  STARVATION_MS,
  STARVING,
  UNBOUND,
  WAITING,
  type WaiterView,
} from './slot-state.js';
import { permitAnnouncement } from './semaphore.js';
import { testHooks } from './test-hooks.js';

/**
 * Longest back-off sleep (ms) of a writer that lost the key to a barging holder after a wake-up
 * (see step). Short enough that a key left free is seen soon; such a sleeper costs the holder
 * nothing but one cache-line transfer per slice.
 */
export const BACK_OFF_SLICE_MS = 0.1;

/** No back-off slice under way (a token is an Int32, so it is never this value). */
const NOT_BACKING_OFF = 2 ** 32;

/** The word a back-off sleep waits on: this thread's own, never notified (a timed sleep). */
const backOffWord = new Int32Array(new SharedArrayBuffer(4));

export const STEP_GRANTED = 0;
export const STEP_SPIN = 1;
export const STEP_SLEEP = 2;
export const STEP_TIMEOUT = 3;
export const STEP_FULL = 4;
export const STEP_NO_RECORD = 5;
export const STEP_RECURSION = 6;
/** The key is held under another limit (Request.foundLimit): semaphore.ts. */
export const STEP_LIMIT_MISMATCH = 7;

export interface WaitCore {
  readonly [DIRECTORY]: Directory;
  readonly [GRANTS]: Grants;
  readonly [SLOTS]: Int32Array;
  readonly [HEADER]: Int32Array;
}

export class Request implements WaiterView {
  readonly key: string;
  readonly mode: Mode;
  readonly hold: number;
  readonly failTimeout: number;
  readonly spinDelay: number;
  readonly waitTimeout: number;
  readonly threadId: number;
  readonly startReleaseSeq: number;
  readonly startedAt: number;
  readonly deadline: number;
  /** Blocking requests fail at once when this thread holds the key (they would never return). */
  readonly blocking: boolean;
  /** The permit limit this request needs in its key's binding: 0 for a lock (semaphore.ts). */
  readonly limit: number;
  /** After STEP_LIMIT_MISMATCH: the limit the key is held under. */
  foundLimit = 0;
  readonly #core: WaitCore;
  /** The table's slot words (what a spin round watches). */
  readonly slots: Int32Array;
  slot = -1;
  /**
   * The bind generation of `slot` when this request found its key there (slot-cache.ts): a slot
   * whose generation moved was unbound, and maybe bound to another key, since. The request then
   * looks its key up again; it never waits for another key's holder.
   */
  #genLo = 0;
  #genHi = 0;
  /**
   * This request has announced itself in its slot's word (or relies on bits already there): if it
   * leaves without a grant, it withdraws them (see leave).
   */
  #marked = false;
  /** The slot whose shared holders were checked for this thread (recursion), and the answer. */
  #sharedCheckedSlot = -1;
  #sharedHeld = false;
  recovered = false;
  /** See WaiterView.waits: false for one attempt (tryAcquire, waitTimeout 0). */
  readonly waits: boolean;
  /** What to sleep on after STEP_SLEEP: an Int32Array, an index, a value and a time (ms). */
  sleepArray: Int32Array;
  sleepIndex = 0;
  sleepValue = 0;
  sleepMs = 0;
  sleepIsSlot = false;
  /**
   * The state index of the slot word on which a notify woke this request, while it owes the
   * other sleepers their wake-up (see leave and slot-state.ts, "No lost wake-up"); or -1.
   */
  owedIndex = -1;
  #unboundSeen = 0;
  #bindBusySeen = 0;
  /** The last busy word this request failed to take, and since when it has seen it unchanged. */
  #watchedWord = 0;
  #watchedSince = 0;
  #now = 0;
  /** Set by noteWordMoved; read (and cleared) by the next step that finds the key busy. */
  #lookedAfterMove = false;
  /**
   * This writer has lost a race: it saw the key move and found it taken again (or its
   * thread just handed the key off: hasLostRace). It no longer spins, and backs off (#backsOff).
   */
  #barged = false;
  /** When this writer first announced STARVING (-1: not yet). */
  #starvingSince = -1;
  /** During a back-off slice: the key's token when it began; else NOT_BACKING_OFF. */
  #backOffToken = NOT_BACKING_OFF;
  /** A spin round took the key (grabIfFree): the next step checks the key and reports the grant. */
  #grabbed = false;

  constructor(
    core: WaitCore,
    key: string,
    mode: Mode,
    hold: number,
    waitTimeout: number,
    failTimeout: number,
    spinDelay: number,
    blocking: boolean,
    slot: number,
    genLo: number,
    genHi: number,
    limit = 0,
  ) {
    this.#core = core;
    this.limit = limit;
    this.key = key;
    this.mode = mode;
    this.hold = hold;
    this.waitTimeout = waitTimeout;
    this.waits = waitTimeout > 0;
    this.failTimeout = failTimeout;
    this.spinDelay = spinDelay;
    this.blocking = blocking;
    this.slot = slot;
    this.#genLo = genLo;
    this.#genHi = genHi;
    this.threadId = core[GRANTS].threadId;
    this.startReleaseSeq = core[GRANTS].releaseSeq;
    this.startedAt = monotonicNow();
    this.deadline = this.startedAt + waitTimeout;
    this.slots = core[SLOTS];
    this.sleepArray = core[SLOTS];
    this.#now = this.startedAt;
  }

  get releaseSeq(): number {
    return this.#core[GRANTS].releaseSeq;
  }

  get waitedMs(): number {
    return this.#now - this.startedAt;
  }

  watchedMs(s: number): number {
    return s === this.#watchedWord ? this.#now - this.#watchedSince : 0;
  }

  /** One round of the loop described at the top of this file. */
  step(): number {
    const core = this.#core;
    const grants = core[GRANTS];
    // A spin round already holds the slot (grabIfFree): as a grant of this step's attempt.
    if (this.#grabbed) {
      this.#grabbed = false;
      if (this.#keyStillOurs()) return STEP_GRANTED;
    }
    for (;;) {
      this.#now = monotonicNow();
      // The slot was unbound since we found our key there (and maybe bound to another key).
      if (this.slot >= 0 && !this.#stillBound(this.slot)) this.slot = -1;
      if (this.slot < 0) {
        const found = core[DIRECTORY].findOrBind(this.key, this.limit);
        if (found === BIND_FULL) return STEP_FULL;
        if (found === BIND_BUSY) {
          const word = core[DIRECTORY].bindLockWord();
          // Free mutex but busy: a slot the key needs is a robbed binder's or an evictor's for a
          // moment. Look again at once twice, then in 1 ms steps (woken early by the next unlock).
          if (word === 0 && ++this.#bindBusySeen <= 2) continue;
          if (this.#now >= this.deadline) return STEP_TIMEOUT;
          return this.#sleepOn(
            core[HEADER],
            H_BIND_LOCK,
            word,
            Math.min(this.deadline - this.#now, word === 0 ? 1 : BIND_LOCK_LEASE_MS),
            false,
          );
        }
        if (!this.#pin(found)) {
          // Rebound under us as we looked: look again (a few times at once, then in 1 ms steps).
          if (++this.#unboundSeen > 2) {
            if (this.#now >= this.deadline) return STEP_TIMEOUT;
            // A timed sleep on our own word: one on the slot's word, uncounted in S_SLEEPERS,
            // could swallow a release's wake-up meant for a counted sleeper.
            return this.#sleepOn(backOffWord, 0, 0, Math.min(1, this.deadline - this.#now), false);
          }
          continue;
        }
        this.slot = found;
      }
      const slot = this.slot;
      // The key's binding has another limit (a lock meets a semaphore, or two limits differ).
      const limitHere = core[SLOTS][slot * SLOT_WORDS + S_LIMIT]!;
      if (limitHere !== this.limit) {
        const rebound = core[DIRECTORY].rebind(slot, this.key, this.limit);
        if (rebound === REBIND_HELD) {
          // Held by holders past their deadline + failTimeout (or stuck records): reclaim them
          // first, as a waiter would; a grant made so goes back at once (its limit is not ours:
          // #keyStillOurs), and the free key is rebound at the next look.
          const s = Atomics.load(core[SLOTS], slot * SLOT_WORDS + S_STATE);
          if (this.#reclaimableIn(slot, s) <= 0) {
            const r = grants.reclaim(
              slot,
              s,
              this.mode,
              this.hold,
              this.failTimeout,
              this,
              this.limit,
            );
            if (r === GRANTED) {
              if (this.#keyStillOurs()) {
                this.recovered = true;
                return STEP_GRANTED;
              }
              continue;
            }
          }
          this.foundLimit = limitHere;
          return STEP_LIMIT_MISMATCH;
        }
        if (rebound === BIND_FULL) return STEP_FULL;
        this.slot = -1;
        if (rebound === BIND_BUSY) {
          if (this.#now >= this.deadline) return STEP_TIMEOUT;
          const word = core[DIRECTORY].bindLockWord();
          return this.#sleepOn(
            core[HEADER],
            H_BIND_LOCK,
            word,
            Math.min(this.deadline - this.#now, 1),
            false,
          );
        }
        continue;
      }
      // Back from a back-off slice: a key that is still in use (its token moved) is not ours to
      // snatch between two of its holder's sections; our turn comes when we starve (#backsOff).
      if (this.#backOffToken !== NOT_BACKING_OFF) {
        const token = Atomics.load(core[SLOTS], slot * SLOT_WORDS + S_TOKEN_LO);
        const moved = token !== this.#backOffToken;
        this.#backOffToken = NOT_BACKING_OFF;
        if (moved && this.waitedMs < STARVATION_MS && this.#now < this.deadline)
          return this.#backOff(slot, token);
      }
      const result = grants.attempt(slot, this.mode, this.hold, this, this.limit);
      if (result === GRANTED) {
        if (this.#keyStillOurs()) return STEP_GRANTED;
        continue;
      }
      if (result === UNBOUND_SLOT) {
        this.slot = -1;
        // A slot seen UNBOUND again and again (an evictor died mid-eviction): do not spin hot.
        if (++this.#unboundSeen > 2) {
          if (this.#now >= this.deadline) return STEP_TIMEOUT;
          // On our own word, as above.
          return this.#sleepOn(backOffWord, 0, 0, Math.min(1, this.deadline - this.#now), false);
        }
        continue;
      }
      if (result === NO_RECORD) return STEP_NO_RECORD;
      // BUSY
      const s = grants.seen;
      if (s !== this.#watchedWord) {
        this.#watchedWord = s;
        this.#watchedSince = this.#now;
      }
      // The word we judged busy may be another key's: our slot was rebound since our last look.
      if (!this.#stillBound(slot)) {
        this.slot = -1;
        continue;
      }
      // A thread may hold several permits of a semaphore: no recursion check there.
      if (this.blocking && this.limit === 0 && this.#heldHere(slot, s)) return STEP_RECURSION;
      const reclaimIn = this.#reclaimableIn(slot, s);
      if (reclaimIn <= 0) {
        const r = grants.reclaim(slot, s, this.mode, this.hold, this.failTimeout, this, this.limit);
        if (r === GRANTED) {
          if (this.#keyStillOurs()) {
            this.recovered = true;
            return STEP_GRANTED;
          }
          continue;
        }
        if (r === NO_RECORD) return STEP_NO_RECORD;
      }
      if (this.#now >= this.deadline) return STEP_TIMEOUT;
      const announced = this.#announce(slot, s);
      // RACE: rebound between the check above and our CAS (with a word equal to the one we judged,
      // say the same thread holding the new key): what we announced there is not ours to leave.
      if (announced !== s && !this.#stillBound(slot)) {
        leaveWord(this.slots, slot * SLOT_WORDS + S_STATE);
        this.slot = -1;
        continue;
      }
      // It looked because the word moved (a spin saw it, or a release woke it) and found the key
      // taken again: another request got there first (see #barged).
      if (this.#lookedAfterMove) {
        this.#lookedAfterMove = false;
        if (this.mode === 'exclusive') this.#barged = true;
      }
      if (this.#now - this.startedAt < this.spinDelay && !this.#barged) return STEP_SPIN;
      // A writer that has just announced that it starves spins once more: the hand-off it asked
      // for comes with the holder's next release, on a busy key within microseconds, and taking
      // it spinning saves the wake-up (10-60 us during which the key is nobody's).
      if (
        this.mode === 'exclusive' &&
        (announced & STARVING) !== 0 &&
        this.waitedMs >= STARVATION_MS
      ) {
        if (this.#starvingSince < 0) this.#starvingSince = this.#now;
        if (this.#now - this.#starvingSince < this.spinDelay) return STEP_SPIN;
      }
      // A reclaim that was due but failed (a holder still looks live) must not spin: sleep >= 1 ms.
      let ms = Math.min(this.deadline - this.#now, Math.max(reclaimIn, 1), SLEEP_SLICE_MS);
      // A HANDOFF, or (for a reader) a starving writer's announcement, that stays unchanged for
      // HANDOFF_PATIENCE_MS may be stale: wake up in time to look (see mayClaimHandoff, grantState).
      // Not a permit's waiter for a STARVING: it is its own announcement (or it starves itself at
      // STARVATION_MS, below, and then passes), and a full group frees a permit only by a release,
      // which wakes it; looking every HANDOFF_PATIENCE_MS would poll a full semaphore all along.
      if (
        (announced & HANDOFF) !== 0 ||
        (this.mode === 'shared' && this.limit === 0 && (announced & STARVING) !== 0)
      )
        ms = Math.min(ms, Math.max(0.05, HANDOFF_PATIENCE_MS - this.watchedMs(s)));
      // A writer wakes up in time to announce STARVING, even if no release wakes it before
      // (readers need not: their turn comes with every writer's release).
      // (A permit's waiter starves as a writer does: semaphore.ts.)
      if ((this.mode === 'exclusive' || this.limit > 0) && this.waitedMs < STARVATION_MS)
        ms = Math.min(ms, Math.max(0.05, STARVATION_MS - this.waitedMs));
      if (this.#backsOff(s, announced)) {
        if (!this.#payWakeUpDebt(slot, s)) continue;
        return this.#backOff(slot, Atomics.load(core[SLOTS], slot * SLOT_WORDS + S_TOKEN_LO));
      }
      return this.#sleepOn(core[SLOTS], slot * SLOT_WORDS + S_STATE, announced, ms, true);
    }
  }

  /**
   * Does this request back off (sleep unparked, phase 5 above) rather than park on the word `s`?
   * Only a writer that has lost a race (#barged), before its STARVATION_MS, facing a
   * writer or a hand-off with nothing to announce. Parking would ask the barging holder to notify
   * it at every release that follows a wake-up: a system call made while the key lies free, which
   * is just when the two threads swap the key, so that they end up swapping it (and its cache
   * line) every few sections. Backing off leaves the holder a streak of sections at full speed;
   * the back-off ends at STARVATION_MS, when this writer's announcement gets it the next release.
   * The cost: a key freed for good is seen up to two slices late (the slice in which its token
   * last moved, then one in which it did not), or at starvation when that comes first (an async
   * waiter's slices last a whole millisecond: see sleepAsync).
   */
  #backsOff(s: number, announced: number): boolean {
    return (
      this.#barged &&
      this.waitedMs < STARVATION_MS &&
      announced === s &&
      (s & (EXCLUSIVE | HANDOFF)) !== 0
    );
  }

  /**
   * A back-off slice: a timed sleep on a word of this thread's own, until the next slice, its
   * starvation or its deadline, whichever is first. `token` is the key's token now: the next step
   * compares it with the token then (see step).
   */
  #backOff(slot: number, token: number): number {
    this.#backOffToken = token;
    const ms = Math.min(
      BACK_OFF_SLICE_MS,
      STARVATION_MS - this.waitedMs,
      this.deadline - this.#now,
    );
    return this.#sleepOn(backOffWord, 0, 0, ms, false);
  }

  /**
   * A spin round saw the word move to `s`. If `s` is FREE (perhaps with sleepers), an exclusive
   * request attempts at once, as a futex's spin does and as the fast path's watch does: the
   * releaser's next request comes back for the key within a hundred-odd nanoseconds, and a
   * spinner that first went round a step (a clock read, the binding check) lost that race nearly
   * every time, then backed off as a writer that lost a race, and got the key only at its
   * starvation turn, a millisecond later. The grant is the step's own attempt (the same turn
   * rules: from FREE, any request may take it), and the next step checks the key as after any
   * grant (#keyStillOurs). True: granted.
   */
  grabIfFree(s: number): boolean {
    if (this.mode !== 'exclusive' || (s !== 0 && s !== PARKED)) return false;
    if (this.#core[GRANTS].attempt(this.slot, 'exclusive', this.hold, this) !== GRANTED)
      return false;
    this.#grabbed = true;
    return true;
  }

  /**
   * Starts this request as one that has lost a race (#barged): the fast path saw the key free and
   * lost it, or this thread just handed the key off to a starving writer (see LockTable's
   * #yieldsTurn). It matters only to writers (the ones that back off).
   */
  hasLostRace(): void {
    if (this.mode === 'exclusive') this.#barged = true;
  }

  /**
   * A spin round ended because the word moved, or a release's notify woke this request: the next
   * step that finds the key busy has lost a race for it.
   */
  noteWordMoved(): void {
    this.#lookedAfterMove = true;
  }

  /**
   * Before a sleep that does not park: a request that a notify woke owes the other sleepers
   * their wake-up (see leave). It pays by setting PARKED in the busy word `s` (its
   * holder's release then notifies). False when the word moved: look again instead of sleeping.
   */
  #payWakeUpDebt(slot: number, s: number): boolean {
    const at = this.owedIndex;
    if (at < 0) return true;
    const slots = this.slots;
    if (at !== slot * SLOT_WORDS + S_STATE) {
      // Woken on a slot that is no longer ours (it was rebound): pass the wake-up on there.
      this.owedIndex = -1;
      if (Atomics.load(slots, at - S_STATE + S_SLEEPERS) > 0) Atomics.notify(slots, at, 1);
      return true;
    }
    if ((s & PARKED) !== 0 || Atomics.load(slots, at - S_STATE + S_SLEEPERS) === 0) {
      this.owedIndex = -1;
      return true;
    }
    if (Atomics.compareExchange(slots, at, s, s | PARKED) !== s) return false;
    this.owedIndex = -1;
    return true;
  }

  /**
   * Called when the request ends, whatever the way out: granted, timed out, aborted, refused
   * (recursion, table full) or failed. It leaves nothing behind in shared memory:
   *  - a grant taken by a spin round (grabIfFree) that no step reported is released;
   *  - granted: a request that a release's notify woke (which cleared PARKED) sets PARKED again
   *    while others still sleep on that word, so that the next release wakes one of them;
   *  - not granted, after it announced itself or was woken for a hand-off: leaveWord (grants.ts).
   *  - a wake-up owed on a slot that is no longer ours (rebound) is passed on there.
   * Its sleeps are over (S_SLEEPERS was given back when each ended), and its back-off sleeps were
   * on a word of this thread's own.
   */
  leave(granted: boolean): void {
    // A grant taken in a spin round that no step reported: give it back, as a release. (Every
    // loop steps right after a spin; the async loop checks its signal first, which cannot turn
    // aborted during the synchronous spin. This keeps any later way out from holding the key.)
    if (this.#grabbed) {
      this.#grabbed = false;
      if (!granted) this.#core[GRANTS].undoGrant(this.slot, 'exclusive');
    }
    const at = this.owedIndex;
    this.owedIndex = -1;
    const slots = this.slots;
    const mine =
      this.slot >= 0 && this.#stillBound(this.slot) ? this.slot * SLOT_WORDS + S_STATE : -1;
    if (!granted && mine >= 0 && (this.#marked || at === mine)) {
      leaveWord(this.slots, mine);
      if (at === mine) return;
    }
    if (at < 0 || Atomics.load(slots, at - S_STATE + S_SLEEPERS) === 0) return;
    if (!granted || at !== mine) {
      Atomics.notify(slots, at, 1);
      return;
    }
    // The word is ours (or our shared group's): only announcements can change it meanwhile.
    for (;;) {
      const s = Atomics.load(slots, at);
      if ((s & PARKED) !== 0 || Atomics.compareExchange(slots, at, s, s | PARKED) === s) break;
    }
    // A semaphore frees a permit per release, and each release wakes one sleeper only if it finds
    // PARKED. A second permit freed after the release that woke us (which cleared PARKED) and
    // before the PARKED set above woke nobody: if a permit is still free, wake one more sleeper
    // for it (it passes the wake-up on the same way). Without this a sleeper slept a whole
    // SLEEP_SLICE_MS beside a free permit.
    if (this.limit > 0) {
      const s = Atomics.load(slots, at);
      if ((s & (EXCLUSIVE | HANDOFF | UNBOUND)) === 0 && (s & FIELD) < this.limit)
        Atomics.notify(slots, at, 1);
    }
  }

  /**
   * Takes `slot` as the one bound to our key if it is, with its bind generation: read before and
   * after the key compare, so the generation is that of a binding whose key was ours.
   */
  #pin(slot: number): boolean {
    const slots = this.slots;
    const base = slot * SLOT_WORDS;
    const lo = Atomics.load(slots, base + S_BIND_GEN);
    const hi = Atomics.load(slots, base + S_BIND_GEN_HI);
    if (!this.#core[DIRECTORY].matches(slot, this.key)) return false;
    if (Atomics.load(slots, base + S_BIND_GEN) !== lo) return false;
    if (Atomics.load(slots, base + S_BIND_GEN_HI) !== hi) return false;
    this.#genLo = lo;
    this.#genHi = hi;
    this.#marked = false; // marks on a slot we used before went with its binding
    return true;
  }

  /** Is this request's slot still bound to its key (a sleep checks it once PARKED is set)? */
  bound(): boolean {
    return this.slot >= 0 && this.#stillBound(this.slot);
  }

  /** Is `slot` still in the binding this request found its key in? */
  #stillBound(slot: number): boolean {
    const slots = this.slots;
    const base = slot * SLOT_WORDS;
    return (
      Atomics.load(slots, base + S_BIND_GEN) === this.#genLo &&
      Atomics.load(slots, base + S_BIND_GEN_HI) === this.#genHi
    );
  }

  /** After a grant: is the slot still bound to our key? If not, give it back and look again. */
  #keyStillOurs(): boolean {
    const core = this.#core;
    // Held now, so key and limit are frozen: our grant counted against the key's limit only if
    // the slot's limit is our own (semaphore.ts).
    if (
      core[DIRECTORY].matches(this.slot, this.key) &&
      core[SLOTS][this.slot * SLOT_WORDS + S_LIMIT] === this.limit
    )
      return true;
    core[GRANTS].undoGrant(this.slot, this.mode);
    this.slot = -1;
    return false;
  }

  /**
   * Does this thread (through any handle) hold the key of `slot`, busy in the word `s`? A shared
   * hold is looked up in the records once per slot: a blocked thread cannot take a new one.
   */
  #heldHere(slot: number, s: number): boolean {
    if ((s & EXCLUSIVE) !== 0) return (s & FIELD) === this.threadId;
    if ((s & (HANDOFF | UNBOUND)) !== 0 || (s & FIELD) === 0) return false;
    if (this.#sharedCheckedSlot !== slot) {
      this.#sharedCheckedSlot = slot;
      this.#sharedHeld = this.#core[GRANTS].holdsSharedAny(slot, this.threadId);
    }
    return this.#sharedHeld;
  }

  #reclaimableIn(slot: number, s: number): number {
    return this.#core[GRANTS].reclaimableIn(slot, s, this.#now, this.failTimeout);
  }

  /** Sets this request's announcement bits (a hint; a failed CAS is fine). Returns the word. */
  #announce(slot: number, s: number): number {
    const bits =
      this.limit > 0
        ? permitAnnouncement(this.waitedMs)
        : announcement(s, this.mode, this.waitedMs);
    if (bits !== 0) {
      this.#marked = true;
      // Asserted again at every look (stale after HANDOFF_PATIENCE_MS without: slot-state.ts), at
      // the time of the store (not the step's start: a step descheduled midway would stamp the past).
      // ORDER: before the CAS that may set the bits, so a request that sees them sees this stamp.
      this.#core[GRANTS].stampAnnouncement(slot, monotonicNow());
    }
    const want = s | bits;
    // Our bits are there already, or there is nothing to announce (a writer facing a writer in
    // normal mode).
    if (want === s) return s;
    const at = slot * SLOT_WORDS + S_STATE;
    // On a failed CAS return the word we checked: the sleep's own CAS then fails and the loop
    // looks again, rather than sleeping on a word nobody has judged busy.
    return Atomics.compareExchange(this.#core[SLOTS], at, s, want) === s ? want : s;
  }

  #sleepOn(array: Int32Array, index: number, value: number, ms: number, isSlot: boolean): number {
    testHooks.stall?.('wait:sleep');
    this.sleepArray = array;
    this.sleepIndex = index;
    this.sleepValue = value;
    this.sleepMs = Math.max(0, ms);
    this.sleepIsSlot = isSlot;
    return STEP_SLEEP;
  }
}

/**
 * Prepares a slot sleep: counts this thread in S_SLEEPERS and makes sure PARKED is set in the
 * word it will sleep on, and WAITING clear (asleep, a waiter is counted by a release's notify, not
 * by WAITING; another waiter still running sets it again at its next look). Returns the value to
 * wait on, or -1 when the word moved (do not sleep; the caller must still call endSlotSleep).
 */
export function beginSlotSleep(slots: Int32Array, stateIndex: number, seen: number): number {
  Atomics.add(slots, stateIndex - S_STATE + S_SLEEPERS, 1);
  const want = (seen | PARKED) & ~WAITING;
  if (want === seen) return Atomics.load(slots, stateIndex) === seen ? seen : -1;
  return Atomics.compareExchange(slots, stateIndex, seen, want) === seen ? want : -1;
}

export function endSlotSleep(slots: Int32Array, stateIndex: number): void {
  Atomics.sub(slots, stateIndex - S_STATE + S_SLEEPERS, 1);
}

export function sleepSync(req: Request): void {
  const { sleepArray, sleepIndex, sleepValue, sleepMs } = req;
  if (!req.sleepIsSlot) {
    Atomics.wait(sleepArray, sleepIndex, sleepValue, sleepMs);
    return;
  }
  const value = beginSlotSleep(sleepArray, sleepIndex, sleepValue);
  try {
    // RACE: the slot rebound since the step judged the word (with an equal word): look again.
    if (value !== -1 && req.bound()) {
      // PARKED is in the word now: whatever this request owed is paid.
      req.owedIndex = -1;
      if (Atomics.wait(sleepArray, sleepIndex, value, sleepMs) === 'ok') {
        req.owedIndex = sleepIndex;
        req.noteWordMoved();
      }
    }
  } finally {
    endSlotSleep(sleepArray, sleepIndex);
  }
}

/** A brief pause between spin attempts (Atomics.pause on Node >= 24, else a few loads). */
const pause: (n: number) => void =
  typeof (Atomics as unknown as { pause?: unknown }).pause === 'function'
    ? (Atomics as unknown as { pause: (n: number) => void }).pause
    : () => {};

/**
 * One spin round of a request that got STEP_SPIN: watch its slot's word (at most SPIN_LOADS
 * loads) until it changes - a release or a hand-off is worth a full step. Plain loads keep the
 * spinner off the clock and off the holder's cache line until something happens.
 */
export function spin(req: Request): void {
  const slots = req.slots;
  const at = req.slot * SLOT_WORDS + S_STATE;
  const seen = Atomics.load(slots, at);
  for (let i = 0; i < SPIN_LOADS; i++) {
    const s = Atomics.load(slots, at);
    if (s !== seen) {
      if (!req.grabIfFree(s)) req.noteWordMoved();
      return;
    }
    pause(i);
  }
}

/**
 * Sleeps asynchronously. A ref'd timer keeps the thread alive while the request is pending (a
 * waitAsync alone does not), and bounds the sleep; `interrupt` settles the sleep early (abort).
 */
export async function sleepAsync(
  req: Request,
  interrupt: Promise<void> | undefined,
): Promise<void> {
  const { sleepArray, sleepIndex, sleepValue, sleepMs } = req;
  let value = sleepValue;
  if (req.sleepIsSlot) {
    value = beginSlotSleep(sleepArray, sleepIndex, sleepValue);
    // RACE: as in sleepSync.
    if (value === -1 || !req.bound()) {
      endSlotSleep(sleepArray, sleepIndex);
      return;
    }
  }
  // waitAsync's timeout runs on the event loop's millisecond timers, rounded to the nearest
  // millisecond: a 0.1 ms sleep would end at once, and a waiter would go round the event loop
  // without pause. Whole milliseconds, rounded up (a sleep never ends before its time).
  const ms = Math.ceil(sleepMs);
  let timer: NodeJS.Timeout | undefined;
  try {
    const waited = Atomics.waitAsync(sleepArray, sleepIndex, value, ms);
    if (!waited.async) return;
    if (req.sleepIsSlot) req.owedIndex = -1; // PARKED is in the word now
    let settled = false;
    const woke = waited.value.then((result) => {
      settled = true;
      if (result === 'ok' && req.sleepIsSlot) {
        req.owedIndex = sleepIndex;
        req.noteWordMoved();
      }
    });
    const timed = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms + 1);
    });
    await Promise.race(interrupt === undefined ? [woke, timed] : [woke, timed, interrupt]);
    // On an abort, settle our waitAsync now rather than at its timeout: a spurious wake-up for
    // the other sleepers on this word, who just look again. Nothing of ours is left pending.
    if (!settled) {
      Atomics.notify(sleepArray, sleepIndex);
      await woke;
    }
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    if (req.sleepIsSlot) endSlotSleep(sleepArray, sleepIndex);
  }
}
