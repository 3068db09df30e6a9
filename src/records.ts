/**
 * Shared-holder records: one per shared lease, so that the table knows who holds a key in shared
 * mode (for inspect, releaseAllOwnedBy and reclaim), not only how many do.
 *
 * R_STATE = (generation << 3) | kind. Every change of a record moves its generation on, and every
 * action on a record is a CAS from the exact word the actor checked (or a store by the owner inside
 * one of its windows), so a lease whose record was taken and handed to another reader can never act
 * on the new reader's record: its CAS names an old generation.
 *
 *   FREE -----claim (CAS, before the grant CAS)-----> CLAIMED
 *   CLAIMED --grant CAS done: token, then store-----> ACTIVE
 *   CLAIMED --grant CAS failed: store---------------> FREE
 *   ACTIVE ---extend (CAS)--------------------------> EXTENDING --deadline written: store--> ACTIVE
 *   ACTIVE ---release (CAS)-------------------------> RELEASING --count off S_STATE: store--> FREE
 *   ACTIVE past deadline + failTimeout (a waiter), or ACTIVE/EXTENDING of a thread that exited
 *   (releaseAllOwnedBy) ---CAS------------------------> RELEASING --count off: store----------> FREE
 *
 * CLAIMED, EXTENDING and RELEASING are windows (see "Grant windows" in slot-state.ts): straight-line
 * code between two steps, run by a thread that cannot die there. So they count as live, never
 * expire, and nobody takes them over; a waiter that sees one looks again soon.
 *
 * Invariant: the shared count in S_STATE is the number of records of the slot that are ACTIVE or
 * EXTENDING, plus those CLAIMED after their grant CAS and RELEASING before their count is off. A
 * count is taken off by whoever moved the record to RELEASING, and only by them, once. So a count
 * is never taken twice, a count never outlives its record, and there is no "count that no record
 * backs" to guess about: a waiter reclaims a shared group only through the deadlines of its records.
 * (The first version freed a record before taking its count off, and let a waiter reclaim a count
 * it saw unbacked for failTimeout; a reader stalled between the two could then take its count off a
 * newer group.)
 */
import {
  R_OWNER,
  R_SLOT,
  R_STATE,
  R_TOKEN_HI,
  R_TOKEN_LO,
  RECORD_ACTIVE,
  RECORD_CLAIMED,
  RECORD_F64,
  RECORD_FREE,
  RECORD_KIND,
  RECORD_WORDS,
  RF_DEADLINE,
  type Views,
} from './layout.js';

/** The record word after `word`, with kind `kind`: the generation moves on by one. */
export function nextRecordWord(word: number, kind: number): number {
  return ((word | RECORD_KIND) + 1) | kind;
}

export class Records {
  readonly #v: Views;
  readonly #count: number;
  /** Where this thread looks first for a free record (its last free one). */
  #cursor = 0;
  /** The CLAIMED word of the record the last claim() took (its owner's next steps start from it). */
  claimed = 0;
  /** Set by latestDeadline: a record of the slot is inside a window (CLAIMED, EXTENDING, RELEASING). */
  settling = false;

  constructor(views: Views) {
    this.#v = views;
    this.#count = views.geometry.records;
  }

  get count(): number {
    return this.#count;
  }

  /**
   * Claims a free record for `owner` on `slot` with `deadline`; -1 if all are in use. The caller's
   * window starts at the claim: it must end it (ACTIVE or FREE) with no call in between.
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
        if (Atomics.compareExchange(r, base + R_STATE, w, claimed) === w) {
          // WINDOW (CLAIMED): straight-line from here to the caller's grant CAS.
          r[base + R_SLOT] = slot;
          r[base + R_OWNER] = owner;
          r[base + R_TOKEN_LO] = 0;
          r[base + R_TOKEN_HI] = 0;
          this.#v.recordsF64[i * RECORD_F64 + RF_DEADLINE] = deadline;
          this.claimed = claimed;
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
   * Latest deadline of the ACTIVE records on `slot`; -Infinity if none. Sets `settling` when a
   * record of the slot is inside a window or changed while read (look again soon).
   */
  latestDeadline(slot: number): number {
    let latest = -Infinity;
    this.settling = false;
    for (let i = 0; i < this.#count; i++) {
      const w = this.word(i);
      const kind = w & RECORD_KIND;
      if (kind === RECORD_FREE || this.slot(i) !== slot) continue;
      const d = kind === RECORD_ACTIVE ? this.deadlineOf(i, w) : NaN;
      if (Number.isNaN(d)) this.settling = true;
      else if (d > latest) latest = d;
    }
    return latest;
  }
}
