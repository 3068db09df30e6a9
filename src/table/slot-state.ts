/**
 * The slot state machine: the one Int32 word (S_STATE) that decides who holds a key.
 *
 *  bit  name            meaning
 *  30   UNBOUND         the slot holds no usable key (empty, vacant, or being bound); no grant
 *  29   EXCLUSIVE       held exclusively; FIELD = holder's threadId
 *  28   HANDOFF         released to the waiters: free, but only a waiting request may take it;
 *                       FIELD = threadId of the releaser (it may not take it back at once)
 *  27   WAITING         a request that announced itself is running (spinning, or between two
 *                       looks) and will look at this word again within microseconds: a release
 *                       that woke nobody keeps its HANDOFF for it. Set with every announcement
 *                       below (a plain writer-vs-writer wait sets none); cleared by the request
 *                       when it goes to sleep (asleep, it is counted by the release's notify);
 *                       stale once not asserted for HANDOFF_PATIENCE_MS ("Stale announcements")
 *  26   WRITER_WAITING  an exclusive request is waiting: new shared requests queue behind it
 *  25   READER_WAITING  a shared request is waiting: the next exclusive release gives readers a turn
 *  24   READER_PHASE    readers' turn: shared requests that were already waiting may join even
 *                       though a writer waits (so neither readers nor writers starve)
 *  23   PARKED          someone may be asleep on this word: the releaser checks S_SLEEPERS and
 *                       notifies
 *  31   RECLAIMING      EXCLUSIVE+FINITE: a waiter found this grant past its deadline + failTimeout
 *                       and marked it while it checks that the grant is still the one it judged
 *                       (see Grants.reclaim). The word still names its holder in FIELD, who may
 *                       release or extend it as usual (either clears the mark, and the reclaim
 *                       then fails); anyone may complete the reclaim of a marked, expired grant
 *  22   FINITE          EXCLUSIVE with a finite hold: its deadline is in the slot's deadline cell
 *  21   PARITY          EXCLUSIVE+FINITE: the cell is this grant's when it names the holder and
 *                       carries this parity. The holder writes the cell right after its grant or
 *                       extend CAS; until then a waiter sees the old cell and looks again
 *  20   STARVING        a writer has waited STARVATION_MS: a release hands off, and only to a
 *                       writer that has waited that long (Go's starvation mode)
 *  0-19 FIELD           EXCLUSIVE: owner threadId; HANDOFF: releaser threadId; else: number of
 *                       shared holders
 *
 * States (flags aside):     UNBOUND | FREE (0) | EXCLUSIVE(tid) | SHARED(n >= 1) | HANDOFF(tid)
 *
 * Transitions, and who makes them (every one is a single compareExchange on S_STATE):
 *   FREE          -> EXCLUSIVE(me)  any exclusive request (the fast path: CAS 0 -> EXCLUSIVE|me)
 *   FREE/SHARED(n)-> SHARED(n+1)    a shared request, unless WRITER_WAITING (then only a request that
 *                                   was already waiting during READER_PHASE)
 *   HANDOFF(r)    -> EXCLUSIVE(me)  a waiting request that may claim it (see mayClaimHandoff)
 *   HANDOFF(r)    -> SHARED(1)      ditto, for a shared request
 *   HANDOFF(r)    -> FREE           the releaser r, when its notify woke nobody and no one spins;
 *                                   or a request that leaves without a grant (withdraw, below)
 *   HANDOFF(r)    -> EXCLUSIVE(me)/SHARED(1)  any request, a one-shot included, once the hand-off
 *                                   has been unclaimed past its reservation (HANDOFF_PATIENCE_MS
 *                                   after it was made: its intended waiter is gone)
 *   any           -> the same without ANNOUNCE   a request that leaves without a grant (withdraw)
 *   EXCLUSIVE(me) -> FREE|HANDOFF   the holder's release; HANDOFF when a request starves or
 *                                   readers wait their turn, else FREE (see releaseState)
 *   SHARED(n)     -> SHARED(n-1)    a shared holder's release; at n = 1, FREE or HANDOFF
 *   EXCLUSIVE(x)  -> EXCLUSIVE(x)|RECLAIMING -> EXCLUSIVE(me) or SHARED(1)
 *                                   reclaim by a waiting request, once x's deadline + failTimeout
 *                                   has passed: every CAS names the exact word it expects, and the
 *                                   mark is dropped again if the grant changed meanwhile
 *   EXCLUSIVE(x)  -> FREE|HANDOFF   forced release of a dead thread's lock (releaseAllOwnedBy)
 *   FREE          -> UNBOUND        eviction, under the binding mutex (directory.ts)
 *   UNBOUND       -> FREE           binding a key, under the binding mutex
 *
 * Invariants:
 *  - No double grant: a grant is a CAS from a state in which the requested mode is compatible;
 *    EXCLUSIVE and SHARED never coexist in one word.
 *  - No lost wake-up: a sleeper increments S_SLEEPERS, sets PARKED with a CAS, and only then
 *    sleeps with Atomics.wait(S_STATE, a value that has PARKED). A release that finds PARKED (or
 *    any flag) takes the slow path, and reads S_SLEEPERS after its CAS: in the single total order
 *    of atomics, either that read sees the sleeper (and notifies), or the sleeper's wait starts
 *    after the CAS and sees a changed word (and does not sleep). A release clears PARKED and
 *    wakes one sleeper (all, on a STARVING or READER_PHASE hand-off). A sleeper woken by a notify
 *    owes the others: if S_SLEEPERS is still above 0, it sets PARKED again in the word it was
 *    granted, or, if it leaves without a grant, wakes one more (Request.leave); one that
 *    sleeps again sets PARKED anyway. So while anyone sleeps, either the word has PARKED or a
 *    woken sleeper is on its way to set it (the futex mutex's "2" state, with the same duty).
 *    A semaphore's permit release (its group stays) wakes one sleeper whenever S_SLEEPERS is
 *    above 0, PARKED or not: several permits can come free while the sleeper woken for the first
 *    is on its way, and each needs its own sleeper (Grants.#afterPermit).
 *    The fast-path release CAS (EXCLUSIVE|me -> 0) can only succeed when PARKED is clear. A
 *    woken sleeper that is terminated before it relays leaves the others to their sleep slice
 *    (at most 1 ms for a writer that is not yet starving; a starving writer or a reader wakes at
 *    least every SLEEP_SLICE_MS, and its announcement, if still in the word, sends every release
 *    down the slow path).
 *  - S_SLEEPERS may be too high for good (a sleeper terminated asleep runs no finally). So it only
 *    decides whether to notify and whether a woken sleeper relays; it never keeps PARKED in a
 *    word. A PARKED that nobody answers heals by itself: the release clears it, its notify wakes
 *    nobody, so nobody sets it again, and the key is back on the fast path after one slow release.
 *  - Every way out of a request leaves nothing behind (DESIGN.md, "Every way out of a request").
 *    A request that leaves without a grant (timed out, aborted, refused) after it announced itself
 *    or was woken passes one wake-up on to the word's sleepers; when none is there to take it
 *    (the notify wakes nobody), it was the last waiter, and it withdraws: it clears every
 *    announcement from the word (a HANDOFF becomes FREE). Running waiters (WAITING) announce again
 *    at their next look. Announcements are not counted, they are re-asserted, so no count can be
 *    left too high by a thread that dies; a bit left by a waiter that gave up while others sleep
 *    costs those at most HANDOFF_PATIENCE_MS at a hand-off. A HANDOFF exists only for a waiter
 *    that will come for it: one that the release's notify woke, or one that was running (WAITING);
 *    otherwise the release frees the key.
 *  - Flags of a thread that dies heal: one that dies asleep is not counted by the next release's
 *    notify, so that release frees the key; one that dies running leaves WAITING, which goes
 *    stale (below), and the HANDOFF it causes is anyone's (one-shot requests included) once its
 *    reservation lapses (HANDOFF_PATIENCE_MS); any grant clears the rest. A stale flag can cost
 *    time, never safety.
 *
 * Stale announcements. A group that never drains (a semaphore whose permits overlap forever, a
 * shared group with overlapping readers) has no last release and needs no grant that clears bits:
 * the announcements of a waiter that died (running, or asleep) would stay for good, and every
 * one-shot request (tryAcquire, waitTimeout 0) facing STARVING (permits) or WRITER_WAITING (shared)
 * would be refused although the group has room. Waiters that wait get past them by their patience
 * (HANDOFF_PATIENCE_MS of watching); one-shots have none. So announcements carry a stamp
 * (SF_ANNOUNCED_AT, layout.ts): when they were last asserted, written by a running waiter at each
 * look where it has bits to announce (before its announce CAS), and by a permit's release whose
 * notify woke a sleeper that will look again. Announcements not asserted for HANDOFF_PATIENCE_MS
 * are stale:
 *  - a one-shot shared or permit request that they alone refuse (the group has room) treats them
 *    as a release treats a word it freed: it wakes one sleeper to look again (and stays refused:
 *    that sleeper asserts its own bits afresh), and if its notify wakes nobody, it withdraws them
 *    (withdrawn) and attempts once more (Grants.#withdrawStale). A HANDOFF is left to its own
 *    reservation (lapsedGrantState);
 *  - when sleepers are counted (S_SLEEPERS) but the notify woke nobody (a sleeper woken and not
 *    yet run, one about to sleep, or one that died asleep), the one-shot withdraws only a stamp
 *    older than SLEEP_SLICE_MS: a live sleeper looks, and asserts its bits, at least that often.
 *  Releases do not judge the stamp: a release that woke nobody still takes WAITING for a runner
 *  (which may be live and descheduled) and hands off; the HANDOFF's reservation heals a dead one.
 *  A live running waiter that is merely descheduled for HANDOFF_PATIENCE_MS (or whose
 *  re-assertion, a plain store, another core has not seen yet) may so lose its announcement to a
 *  one-shot request: it announces again at its next look, and it costs one barge, never
 *  exclusion, a count limit or a token. A counted sleeper keeps it for SLEEP_SLICE_MS.
 *
 * Fairness (DESIGN.md, "Fairness and its bound"): normal mode lets the releaser and newcomers
 * barge; a writer that has waited STARVATION_MS announces STARVING, and from then on every
 * release hands off to a writer that has waited that long (readers have turns instead).
 *
 * Threads that die, and threads that stall. worker.terminate() (and process.exit() in a worker) stops
 * a thread at the entry of its next call, builtins and Atomics included, before the call takes
 * effect; it never stops one between two plain statements (typed-array reads and writes,
 * arithmetic, field stores). test/terminations.test.ts terminates workers at random moments and
 * checks the consequence. So the core is written in two kinds of steps: a call (usually one CAS)
 * that changes shared state, then plain stores that nothing can cut short. Every state a thread
 * can leave behind at a call is one that the others can recover from; and a thread that is merely
 * slow (descheduled) between a CAS and its plain stores is never reclaimed there: for a finite
 * exclusive grant, the cell does not yet name it with its parity, and waiters look again.
 */

import type { Mode } from '../api/options.js';

export type { Mode };

export const UNBOUND = 1 << 30;
export const EXCLUSIVE = 1 << 29;
export const HANDOFF = 1 << 28;
export const WAITING = 1 << 27;
export const WRITER_WAITING = 1 << 26;
export const READER_WAITING = 1 << 25;
export const READER_PHASE = 1 << 24;
export const PARKED = 1 << 23;
export const RECLAIMING = 1 << 31;
export const FINITE = 1 << 22;
export const PARITY = 1 << 21;
export const STARVING = 1 << 20;
export const FIELD = (1 << 20) - 1;

/** Largest thread id that fits in FIELD; a thread above it cannot use the table (checked at attach). */
export const MAX_THREAD_ID = FIELD;
/** Most shared holders of one key at once; more shared requests wait. */
export const MAX_SHARED = FIELD;

/** Flags that waiters set to announce themselves; a grant clears them (the others re-announce). */
export const ANNOUNCE = WAITING | WRITER_WAITING | READER_WAITING | STARVING;

/**
 * How long (ms) a request waits before it counts as starving. Below it, a request competes with
 * newcomers and with the releaser's next request (normal mode: a hot key stays on one core for a
 * streak of sections); from it on, every release hands off, and only to a starving request. Go
 * uses the same 1 ms; parking_lot forces a fair unlock about every 0.5 ms.
 */
export const STARVATION_MS = 1;

/**
 * How long (ms) a HANDOFF is reserved for the waiters whose turn it is: from the release that
 * made it (its reservation, stamped in the slot), and for a waiting request, from when it first
 * saw the word. Past it, anyone may take it regardless of whose turn it is (a one-shot request
 * only past the reservation). It bounds the cost of a stale flag left by a waiter that died. Two
 * milliseconds is far above a normal handoff (about 1 us to a spinner, 10-60 us to a sleeper),
 * so it fires only when the intended waiter is gone or not scheduled.
 */
export const HANDOFF_PATIENCE_MS = 2;

/**
 * Longest single sleep (ms). Sleeps end early on a notify; this only bounds how stale a sleeper's
 * view of deadlines can get, and keeps every waitAsync finite (a never-notified waitAsync holds
 * memory until it settles).
 */
export const SLEEP_SLICE_MS = 250;

/** No holder (free, or handed off to waiters): the slot could be unbound. */
export function isEvictable(s: number): boolean {
  // A HANDOFF holds nothing: if its waiter left, evicting it (which wakes sleepers, who then look
  // their key up again) is what stops it from pinning the slot.
  return (s & (UNBOUND | EXCLUSIVE)) === 0 && ((s & HANDOFF) !== 0 || (s & FIELD) === 0);
}

/** What a waiting request knows about itself when it looks at a HANDOFF. */
export interface WaiterView {
  readonly threadId: number;
  /**
   * False for a request that makes one attempt and never waits (tryAcquire, waitTimeout 0): it
   * may not take a HANDOFF by the turn rules, which are for the requests that wait; only one
   * whose reservation has lapsed (Grants, lapsedGrantState).
   */
  readonly waits: boolean;
  /** This thread's handoff-release count when the request began waiting (see Waiting). */
  readonly startReleaseSeq: number;
  /** This thread's handoff-release count now. */
  readonly releaseSeq: number;
  /** Milliseconds this request has waited so far. */
  readonly waitedMs: number;
  /** Milliseconds this request has seen the busy word `s` unchanged; 0 if new to it. */
  watchedMs(s: number): number;
}

/**
 * May this waiting request take a HANDOFF (or join a shared group during READER_PHASE) by the
 * turn rules? Only a request that waits may (see WaiterView.waits: a tryAcquire or a waitTimeout
 * 0 request takes a HANDOFF only once its reservation has lapsed, lapsedGrantState); then: STARVING admits only writers that have waited
 * STARVATION_MS; READER_PHASE gives the turn to readers, WRITER_WAITING to writers; the releaser's
 * own thread may take it back only with a request that was already waiting when it released. A
 * waiting request that has watched the same HANDOFF sit unclaimed for HANDOFF_PATIENCE_MS may take
 * it regardless (stale flags cannot wedge a slot).
 */
export function mayClaimHandoff(s: number, mode: Mode, w: WaiterView): boolean {
  if (!w.waits) return false;
  if (w.watchedMs(s) >= HANDOFF_PATIENCE_MS) return true;
  // Only writers starve (readers have their turns: READER_PHASE).
  if (mode === 'exclusive' && (s & STARVING) !== 0 && w.waitedMs < STARVATION_MS) return false;
  if ((s & FIELD) === w.threadId && w.startReleaseSeq >= w.releaseSeq) return false;
  if ((s & READER_PHASE) !== 0) return mode === 'shared';
  if ((s & WRITER_WAITING) !== 0) return mode === 'exclusive';
  return true;
}

/**
 * The state to CAS to for a grant from `s`, or -1 when the mode is not grantable now by the turn
 * rules (a HANDOFF past its reservation is another matter: lapsedGrantState). `waiter` undefined
 * is treated as a request that does not wait (WaiterView.waits).
 * A grant clears the announcement flags; waiters that still wait set them again.
 */
export function grantState(
  s: number,
  mode: Mode,
  threadId: number,
  waiter: WaiterView | undefined,
): number {
  if ((s & (UNBOUND | EXCLUSIVE)) !== 0) return -1;
  const keep = s & PARKED;
  if ((s & HANDOFF) !== 0) {
    if (waiter === undefined || !mayClaimHandoff(s, mode, waiter)) return -1;
    if (mode === 'exclusive') return EXCLUSIVE | threadId | keep; // FINITE: see Grants
    // A reader that takes a handoff starts a readers' phase if it was the readers' turn.
    return 1 | keep | (s & READER_PHASE);
  }
  const count = s & FIELD;
  if (mode === 'exclusive')
    return count === 0 ? EXCLUSIVE | threadId | keep | (s & READER_WAITING) : -1;
  if (count >= MAX_SHARED) return -1;
  if ((s & WRITER_WAITING) !== 0) {
    // A starving writer is next: no reader joins the group (it drains, then hands off). Unless the
    // word has not moved for HANDOFF_PATIENCE_MS: a group that does not drain gains the writer
    // nothing from the block, and the writer may be gone (a stale flag must not wedge readers).
    if (
      (s & STARVING) !== 0 &&
      !(waiter !== undefined && waiter.watchedMs(s) >= HANDOFF_PATIENCE_MS)
    )
      return -1;
    const joinPhase = (s & READER_PHASE) !== 0 && waiter !== undefined && waiter.waits;
    if (!joinPhase && !(waiter !== undefined && waiter.waitedMs >= HANDOFF_PATIENCE_MS)) return -1;
  }
  // Joining readers keep the writer's announcement: the writer is next once the group drains.
  return (s & ~FIELD & ~WAITING & ~READER_WAITING) | (count + 1);
}

/**
 * The state a release moves to from `s` (`s` is held by the releaser in `mode`).
 *
 * Normal mode (eventual fairness, as in parking_lot and Go): the word goes back to FREE even when
 * requests wait, and whoever is first takes it, the releaser's own next request included. That
 * keeps a hot key's cache line on one core for a streak of sections instead of moving it on every
 * release. A sleeper, if any, is woken to compete.
 * A HANDOFF (only a waiting request whose turn it is may take it) when a writer starves
 * (STARVING), or when the other mode waits its turn: readers after a writer (READER_WAITING), a
 * writer after a shared group (WRITER_WAITING).
 */
export function releaseState(s: number, mode: Mode, threadId: number): number {
  if (mode === 'shared') {
    const count = s & FIELD;
    if (count > 1) return s - 1;
  }
  // PARKED is cleared: the releaser wakes a sleeper, which sets it again if others still sleep.
  const otherMode = mode === 'exclusive' ? READER_WAITING : WRITER_WAITING | READER_WAITING;
  if ((s & (STARVING | otherMode)) === 0) return 0;
  // After a writer, readers that wait get a turn; after readers, the writer's announcement stands.
  const readersTurn = mode === 'exclusive' && (s & READER_WAITING) !== 0 ? READER_PHASE : 0;
  return HANDOFF | threadId | readersTurn | (s & ANNOUNCE);
}

/**
 * The word a waiting request in `mode` wants instead of the busy word `s`, once it has waited
 * `waitedMs` (`s` itself when it has nothing to announce). Below STARVATION_MS a writer facing
 * another writer announces nothing: in normal mode it just competes (announcing would cost the
 * holder a cache-line transfer per section and buy nothing). A writer facing readers announces
 * WRITER_WAITING (new readers queue behind it, so the group drains); a reader announces
 * READER_WAITING (it gets a turn after the writer: readers are served by turns, not STARVING).
 * A starving writer announces STARVING: the next release hands off.
 */
export function announced(s: number, mode: Mode, waitedMs: number): number {
  return s | announcement(s, mode, waitedMs);
}

/** The announcement bits a waiting request in `mode` needs in the busy word `s` (0: none). */
export function announcement(s: number, mode: Mode, waitedMs: number): number {
  if (mode === 'shared') return WAITING | READER_WAITING;
  const starving = waitedMs >= STARVATION_MS ? STARVING : 0;
  const facingReaders = (s & (EXCLUSIVE | HANDOFF | UNBOUND)) === 0 && (s & FIELD) !== 0;
  if (starving === 0 && !facingReaders) return 0;
  return WAITING | WRITER_WAITING | starving;
}

/**
 * The word left behind instead of `s` by a withdraw (the last waiter leaving, or a release that
 * no waiter will come for): no announcement, and a HANDOFF turned FREE. PARKED stays: a sleeper
 * not yet woken must still be woken by the next release (the withdrawer wakes one, but may be
 * terminated before it does). `s` itself when there is nothing to withdraw.
 */
export function withdrawn(s: number): number {
  if ((s & UNBOUND) !== 0) return s;
  if ((s & HANDOFF) !== 0) return s & PARKED;
  return s & ~ANNOUNCE;
}

/**
 * The grant of a HANDOFF whose reservation has lapsed (its waiter is gone), to any request: as
 * from FREE, every announcement dropped (the waiters still there announce again).
 */
export function lapsedGrantState(s: number, mode: Mode, threadId: number): number {
  if ((s & (UNBOUND | EXCLUSIVE | HANDOFF)) !== HANDOFF) return -1;
  return (mode === 'exclusive' ? EXCLUSIVE | threadId : 1) | (s & PARKED);
}

/** Wake every sleeper (not one) after this release: the sleeper whose turn it is may not be first. */
export function wakesAll(next: number): boolean {
  return (next & (STARVING | READER_PHASE)) !== 0;
}
