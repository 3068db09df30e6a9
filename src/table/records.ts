/**
 * Shared-holder records: one per shared lease, so that the table knows who holds a key in shared
 * mode (for inspect, releaseAllOwnedBy and reclaim), not only how many do.
 *
 * R_STATE = (generation << 3) | kind. Every change of a record moves its generation on, and every
 * action on a record by a thread other than its owner is a CAS from the exact word it checked, so
 * a lease whose record was taken over and handed to another reader can never act on the new
 * reader's record: its CAS names an old generation.
 *
 *   FREE ----claim (CAS)-----------------------------------> CLAIMED     (no count on S_STATE yet)
 *   CLAIMED --grant CAS done (store)-------------------------> JOINED      (count added)
 *   JOINED ---token taken (store)----------------------------> ACTIVE
 *   CLAIMED --grant CAS failed (store)-----------------------> FREE
 *   ACTIVE ---extend (CAS)-----> EXTENDING --deadline written (store)--> ACTIVE
 *   ACTIVE ---release (CAS)----> RELEASING --count taken off (store)---> FREE
 *   ACTIVE past its deadline + failTimeout (a waiter), of a thread that exited (releaseAllOwnedBy),
 *   or JOINED / RELEASING / TAKEN stuck (below) --CAS--> TAKEN --count off (store)--> FREE
 *   (TAKEN: RELEASING by a taker, not the holder. R_OWNER still names the holder, so a forced
 *   release of the holder's records (releaseAllOwnedBy) leaves it to its taker: taken over twice,
 *   the record's count came off the group twice)
 *   CLAIMED stuck --CAS--> FREE
 *   (Not at a forced release of its owner: R_OWNER is written after the claim's CAS, so a CLAIMED
 *   word may be a live thread's fresh claim while R_OWNER still names the record's last holder.
 *   A CLAIMED record holds no count, so a dead thread's costs nothing but the record until then.)
 *
 * The stores are the owner's own steps, made with plain stores right after the call before them,
 * so a thread that dies (at a call: see slot-state.ts) leaves a record whose kind says exactly
 * whether its count is on S_STATE: CLAIMED no, JOINED, RELEASING and TAKEN yes. Nobody else
 * touches those four, nor EXTENDING (which has no call in it at all), while the thread that moved
 * them there may still be running. A waiter takes over a CLAIMED, JOINED, RELEASING or TAKEN
 * record only once it has seen the very same record word (same generation) for
 * stuckMs(failTimeout): its owner died there, or has been stopped at one instruction for that
 * long, which counts as dead.
 *
 * Invariant: the shared count in S_STATE is the number of the slot's JOINED, ACTIVE, EXTENDING,
 * RELEASING and TAKEN records. A count is taken off once, by whoever moved the record to RELEASING
 * or TAKEN; nobody absorbs a group's count wholesale. (The first version did: a waiter that found
 * no live record took the word from the value it had loaded. A reader leaving and another joining
 * during its scan gave the same word back with a live reader in it; and a reader stalled between
 * freeing its record and dropping its count could then take its count off a newer group.)
 */
import {
  R_OWNER,
  R_SLOT,
  R_STATE,
  R_TOKEN_HI,
  R_TOKEN_LO,
  RECORD_ACTIVE,
  RECORD_CLAIMED,
  RECORD_EXTENDING,
  RECORD_F64,
  RECORD_FREE,
  RECORD_JOINED,
  RECORD_KIND,
  RECORD_WORDS,
  RF_DEADLINE,
  type Views,
} from './layout.js';
import { testHooks } from './test-hooks.js';

/** The record word after `word`, with kind `kind`: the generation moves on by one. */
export function nextRecordWord(word: number, kind: number): number {
  return ((word | RECORD_KIND) + 1) | kind;
}

/**
 * How long (ms) a waiter must see a record stuck in the same CLAIMED, JOINED, RELEASING or TAKEN word
 * before it takes it over. Those states last a few instructions, so a thread seen in one for this
 * long has died there (or is stopped, which counts as dead). A second at least, so that being
 * descheduled cannot look like dying; failTimeout when that is longer.
 */
export function stuckMs(failTimeout: number): number {
  return Math.max(failTimeout, 1000);
}

export class Records {
  readonly #v: Views;
  readonly #count: number;
  /** Where this thread looks first for a free record (its last free one). */
  #cursor = 0;
  /** Record words in a window state this thread has seen, and since when (see stuckMs). */
  readonly #seen = new Map<number, { word: number; since: number }>();
  /**
   * The words the last claim() left for its caller's next steps, made before them (those steps
   * follow calls with plain stores only): the record if its grant fails, and once it is granted.
   */
  claimed = 0;
  claimedThenFree = 0;
  claimedThenJoined = 0;
  joinedThenActive = 0;
  /** Set by latestDeadline: a record of the slot is in a window state and not seen stuck yet. */
  settling = false;
  /** Set by latestDeadline: a record of the slot has been seen stuck (see stuckMs). */
  stuck = false;

  constructor(views: Views) {
    this.#v = views;
    this.#count = views.geometry.records;
  }

  get count(): number {
    return this.#count;
  }

  /**
   * Claims a free record for `owner` on `slot` with `deadline`; -1 if all are in use. The caller
   * then moves it on with plain stores of claimedThenFree, or claimedThenJoined and
   * joinedThenActive, each checked against the word it replaces (a record stuck for stuckMs may
   * have been taken over).
   */
  claim(slot: number, owner: number, deadline: number): number {
    const r = this.#v.records;
    const n = this.#count;
    let i = this.#cursor;
    for (let k = 0; k < n; k++) {
      const base = i * RECORD_WORDS;
      const w = Atomics.load(r, base + R_STATE);
      if ((w & RECORD_KIND) === RECORD_FREE) {
        const claimed = nextRecordWord(w, RECORD_CLAIMED);
        this.claimed = claimed;
        this.claimedThenFree = nextRecordWord(claimed, RECORD_FREE);
        this.claimedThenJoined = nextRecordWord(claimed, RECORD_JOINED);
        this.joinedThenActive = nextRecordWord(this.claimedThenJoined, RECORD_ACTIVE);
        if (Atomics.compareExchange(r, base + R_STATE, w, claimed) === w) {
          testHooks.stall?.('record:claimed');
          // Plain stores straight after the claim: nothing can cut them short (the test hook
          // above is no call in production). Until they land, the fields are the last holder's.
          r[base + R_SLOT] = slot;
          r[base + R_OWNER] = owner;
          r[base + R_TOKEN_LO] = 0;
          r[base + R_TOKEN_HI] = 0;
          this.#v.recordsF64[i * RECORD_F64 + RF_DEADLINE] = deadline;
          this.#cursor = i;
          return i;
        }
      }
      if (++i === n) i = 0;
    }
    return -1;
  }

  /** The record's word (generation and kind). */
  word(record: number): number {
    return Atomics.load(this.#v.records, record * RECORD_WORDS + R_STATE);
  }

  /** The record's kind (RECORD_FREE, RECORD_CLAIMED, RECORD_ACTIVE, ...). */
  state(record: number): number {
    return this.word(record) & RECORD_KIND;
  }

  /**
   * True when `word` is the ACTIVE word of the lease (slot, owner, token) in `record`: the word to
   * CAS from to act on that lease.
   */
  isLease(
    record: number,
    word: number,
    slot: number,
    owner: number,
    tokenLo: number,
    tokenHi: number,
  ): boolean {
    const r = this.#v.records;
    const base = record * RECORD_WORDS;
    return (
      (word & RECORD_KIND) === RECORD_ACTIVE &&
      r[base + R_SLOT] === slot &&
      r[base + R_OWNER] === owner &&
      r[base + R_TOKEN_LO] === tokenLo &&
      r[base + R_TOKEN_HI] === tokenHi
    );
  }

  slot(record: number): number {
    return this.#v.records[record * RECORD_WORDS + R_SLOT]!;
  }

  owner(record: number): number {
    return this.#v.records[record * RECORD_WORDS + R_OWNER]!;
  }

  deadline(record: number): number {
    return this.#v.recordsF64[record * RECORD_F64 + RF_DEADLINE]!;
  }

  tokenLo(record: number): number {
    return this.#v.records[record * RECORD_WORDS + R_TOKEN_LO]!;
  }

  tokenHi(record: number): number {
    return this.#v.records[record * RECORD_WORDS + R_TOKEN_HI]!;
  }

  /**
   * The deadline of the ACTIVE record `record` if its word is still `word` after the read (an
   * extend writes the deadline only while EXTENDING, under another generation); NaN otherwise.
   */
  deadlineOf(record: number, word: number): number {
    const d = this.deadline(record);
    return this.word(record) === word ? d : NaN;
  }

  /**
   * True once this thread has seen `record` in the same window word (`word`) for `ms`: its owner
   * is dead. The first sighting starts the clock; any other word restarts it.
   */
  seenStuck(record: number, word: number, now: number, ms: number): boolean {
    const seen = this.#seen.get(record);
    if (seen === undefined || seen.word !== word) {
      this.#seen.set(record, { word, since: now });
      return false;
    }
    return now - seen.since >= ms;
  }

  /**
   * Latest deadline of the ACTIVE records on `slot`; -Infinity if none. Sets `settling` when a
   * record of the slot is in a window state (or changed while read), and `stuck` when one has been
   * seen stuck for `stuck` ms (it counts as expired). `earliest`: the earliest deadline instead
   * (a semaphore's waiter needs one permit back, not the whole group: semaphore.ts).
   */
  latestDeadline(slot: number, now: number, stuck: number, earliest = false): number {
    let latest = -Infinity;
    let first = Infinity;
    this.settling = false;
    this.stuck = false;
    for (let i = 0; i < this.#count; i++) {
      const w = this.word(i);
      const kind = w & RECORD_KIND;
      if (kind === RECORD_FREE || this.slot(i) !== slot) continue;
      if (kind === RECORD_ACTIVE) {
        const d = this.deadlineOf(i, w);
        if (Number.isNaN(d)) this.settling = true;
        else {
          if (d > latest) latest = d;
          if (d < first) first = d;
        }
      } else if (kind !== RECORD_EXTENDING && this.seenStuck(i, w, now, stuck)) {
        this.stuck = true;
      } else {
        this.settling = true;
      }
    }
    return earliest && latest !== -Infinity ? first : latest;
  }
}
