/**
 * Waiting: what a request does when its first attempt fails. Both the blocking path
 * (Atomics.wait) and the async path (Atomics.waitAsync) run the same `step`, which decides what
 * to do next; they differ only in how they sleep.
 *
 * Phases of a waiting request, each step:
 *   1. find the key's slot (binding it if needed; a busy binding mutex means sleep on it);
 *   2. attempt a grant, as a waiter (a request with waitTimeout > 0 may take a HANDOFF whose
 *      turn is its own, from its first attempt on; a one-shot request never takes one: see
 *      WaiterView.waits);
 *   3. if the holder is past its deadline + failTimeout, reclaim (Grants.reclaim: CASes that
 *      name the exact words judged);
 *   4. announce itself when it needs a turn (see `announced`: a reader, a writer facing readers,
 *      or a writer that has waited STARVATION_MS), so that the next release hands off;
 *   5. spin for `spinDelay` ms (a handoff to a spinner costs about 1 us), then sleep on S_STATE
 *      (counted in S_SLEEPERS) until woken, or until the earliest of: its wait deadline, the
 *      holder's reclaim time, the handoff patience, or SLEEP_SLICE_MS.
 */
import { monotonicNow } from './clock.js';
import { BIND_BUSY, BIND_FULL, type Directory, BIND_LOCK_LEASE_MS } from './directory.js';
import { GRANTED, type Grants, NO_RECORD, SPIN_LOADS, UNBOUND_SLOT } from './grants.js';
import { H_BIND_LOCK, S_SLEEPERS, S_STATE, SLOT_WORDS } from './layout.js';
import {
  announced,
  EXCLUSIVE,
  FIELD,
  HANDOFF,
  HANDOFF_PATIENCE_MS,
  type Mode,
  PARKED,
  STARVATION_MS,
  STARVING,
  type WaiterView,
} from './slot-state.js';

/**
 * Longest single sleep (ms). Sleeps end early on a notify; this only bounds how stale a sleeper's
 * view of deadlines can get, and keeps every waitAsync finite (a never-notified waitAsync holds
 * memory until it settles).
 */
export const SLEEP_SLICE_MS = 250;

export const STEP_GRANTED = 0;
export const STEP_SPIN = 1;
export const STEP_SLEEP = 2;
export const STEP_TIMEOUT = 3;
export const STEP_FULL = 4;
export const STEP_NO_RECORD = 5;
export const STEP_RECURSION = 6;

export interface WaitCore {
  readonly directory: Directory;
  readonly grants: Grants;
  readonly slots: Int32Array;
  readonly header: Int32Array;
  /** Shared leases this thread holds, by slot (for the recursion check of blocking calls). */
  readonly sharedHere: Map<number, number>;
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
  readonly #core: WaitCore;
  /** The table's slot words (what a spin round watches). */
  readonly slots: Int32Array;
  slot = -1;
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
   * other sleepers their wake-up (see relayWakeUp and slot-state.ts, "No lost wake-up"); or -1.
   */
  owedIndex = -1;
  #unboundSeen = 0;
  #bindBusySeen = 0;
  /** The last busy word this request failed to take, and since when it has seen it unchanged. */
  #watchedWord = 0;
  #watchedSince = 0;
  #now = 0;

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
  ) {
    this.#core = core;
    this.key = key;
    this.mode = mode;
    this.hold = hold;
    this.waitTimeout = waitTimeout;
    this.waits = waitTimeout > 0;
    this.failTimeout = failTimeout;
    this.spinDelay = spinDelay;
    this.blocking = blocking;
    this.slot = slot;
    this.threadId = core.grants.threadId;
    this.startReleaseSeq = core.grants.releaseSeq;
    this.startedAt = monotonicNow();
    this.deadline = this.startedAt + waitTimeout;
    this.slots = core.slots;
    this.sleepArray = core.slots;
    this.#now = this.startedAt;
  }

  get releaseSeq(): number {
    return this.#core.grants.releaseSeq;
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
    const grants = core.grants;
    for (;;) {
      this.#now = monotonicNow();
      if (this.slot < 0) {
        const found = core.directory.findOrBind(this.key);
        if (found === BIND_FULL) return STEP_FULL;
        if (found === BIND_BUSY) {
          const word = core.directory.bindLockWord();
          // Free mutex but busy: a slot the key needs is a robbed binder's or an evictor's for a
          // moment. Look again at once twice, then in 1 ms steps (woken early by the next unlock).
          if (word === 0 && ++this.#bindBusySeen <= 2) continue;
          if (this.#now >= this.deadline) return STEP_TIMEOUT;
          return this.#sleepOn(
            core.header,
            H_BIND_LOCK,
            word,
            Math.min(this.deadline - this.#now, word === 0 ? 1 : BIND_LOCK_LEASE_MS),
            false,
          );
        }
        this.slot = found;
      }
      const slot = this.slot;
      const result = grants.attempt(slot, this.mode, this.hold, this);
      if (result === GRANTED) {
        if (this.#keyStillOurs()) return STEP_GRANTED;
        continue;
      }
      if (result === UNBOUND_SLOT) {
        this.slot = -1;
        // A slot seen UNBOUND again and again (an evictor died mid-eviction): do not spin hot.
        if (++this.#unboundSeen > 2) {
          if (this.#now >= this.deadline) return STEP_TIMEOUT;
          const ms = Math.min(1, this.deadline - this.#now);
          return this.#sleepOn(core.slots, slot * SLOT_WORDS + S_STATE, grants.seen, ms, false);
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
      if (this.blocking && this.#heldHere(slot, s)) return STEP_RECURSION;
      const reclaimIn = this.#reclaimableIn(slot, s);
      if (reclaimIn <= 0) {
        const r = grants.reclaim(slot, s, this.mode, this.hold, this.failTimeout, this);
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
      if (this.#now - this.startedAt < this.spinDelay) return STEP_SPIN;
      // A reclaim that was due but failed (a holder still looks live) must not spin: sleep >= 1 ms.
      let ms = Math.min(this.deadline - this.#now, Math.max(reclaimIn, 1), SLEEP_SLICE_MS);
      // A HANDOFF, or (for a reader) a starving writer's announcement, that stays unchanged for
      // HANDOFF_PATIENCE_MS may be stale: wake up in time to look (see mayClaimHandoff, grantState).
      if ((announced & HANDOFF) !== 0 || (this.mode === 'shared' && (announced & STARVING) !== 0))
        ms = Math.min(ms, Math.max(0.05, HANDOFF_PATIENCE_MS - this.watchedMs(announced)));
      // A writer wakes up in time to announce STARVING, even if no release wakes it before
      // (readers need not: their turn comes with every writer's release).
      if (this.mode === 'exclusive' && this.waitedMs < STARVATION_MS)
        ms = Math.min(ms, Math.max(0.05, STARVATION_MS - this.waitedMs));
      return this.#sleepOn(core.slots, slot * SLOT_WORDS + S_STATE, announced, ms, true);
    }
  }

  /**
   * Called when the request ends (granted or not). A request that a release's notify woke (which
   * cleared PARKED) sets PARKED again while others still sleep on that word, so that the next
   * release wakes one of them; if it leaves without that slot, it wakes one of them instead.
   */
  relayWakeUp(granted: boolean): void {
    const at = this.owedIndex;
    if (at < 0) return;
    this.owedIndex = -1;
    const slots = this.slots;
    if (Atomics.load(slots, at - S_STATE + S_SLEEPERS) === 0) return;
    if (!granted || at !== this.slot * SLOT_WORDS + S_STATE) {
      Atomics.notify(slots, at, 1);
      return;
    }
    // The word is ours (or our shared group's): only announcements can change it meanwhile.
    for (;;) {
      const s = Atomics.load(slots, at);
      if ((s & PARKED) !== 0 || Atomics.compareExchange(slots, at, s, s | PARKED) === s) return;
    }
  }

  /** After a grant: is the slot still bound to our key? If not, give it back and look again. */
  #keyStillOurs(): boolean {
    const core = this.#core;
    if (core.directory.matches(this.slot, this.key)) return true;
    core.grants.undoGrant(this.slot, this.mode);
    this.slot = -1;
    return false;
  }

  #heldHere(slot: number, s: number): boolean {
    if ((s & EXCLUSIVE) !== 0) return (s & FIELD) === this.threadId;
    return (this.#core.sharedHere.get(slot) ?? 0) > 0;
  }

  #reclaimableIn(slot: number, s: number): number {
    return this.#core.grants.reclaimableIn(slot, s, this.#now, this.failTimeout);
  }

  /** Sets this request's announcement bits (a hint; a failed CAS is fine). Returns the word. */
  #announce(slot: number, s: number): number {
    const want = announced(s, this.mode, this.waitedMs);
    // Our bits are there already, or there is nothing to announce (a writer facing a writer in
    // normal mode).
    if (want === s) return s;
    const at = slot * SLOT_WORDS + S_STATE;
    // On a failed CAS return the word we checked: the sleep's own CAS then fails and the loop
    // looks again, rather than sleeping on a word nobody has judged busy.
    return Atomics.compareExchange(this.#core.slots, at, s, want) === s ? want : s;
  }

  #sleepOn(array: Int32Array, index: number, value: number, ms: number, isSlot: boolean): number {
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
 * word it will sleep on. Returns the value to wait on, or -1 when the word moved (do not sleep;
 * the caller must still call endSlotSleep).
 */
export function beginSlotSleep(slots: Int32Array, stateIndex: number, seen: number): number {
  Atomics.add(slots, stateIndex - S_STATE + S_SLEEPERS, 1);
  const want = seen | PARKED;
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
    if (value !== -1) {
      // PARKED is in the word now: whatever this request owed is paid.
      req.owedIndex = -1;
      if (Atomics.wait(sleepArray, sleepIndex, value, sleepMs) === 'ok') req.owedIndex = sleepIndex;
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
  for (let i = 0; i < SPIN_LOADS && Atomics.load(slots, at) === seen; i++) pause(i);
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
    if (value === -1) {
      endSlotSleep(sleepArray, sleepIndex);
      return;
    }
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    const waited = Atomics.waitAsync(sleepArray, sleepIndex, value, sleepMs);
    if (!waited.async) return;
    if (req.sleepIsSlot) req.owedIndex = -1; // PARKED is in the word now
    let settled = false;
    const woke = waited.value.then((result) => {
      settled = true;
      if (result === 'ok' && req.sleepIsSlot) req.owedIndex = sleepIndex;
    });
    const timed = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.ceil(sleepMs) + 1);
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
