/**
 * Shared-holder records: one per shared lease, so that the table knows who holds a key in shared
 * mode (for inspect, releaseAllOwnedBy and reclaim), not only how many do.
 *
 *   FREE --claim (CAS, by the acquirer, before its grant CAS)--> CLAIMED
 *   CLAIMED --(grant CAS succeeded)--> ACTIVE          CLAIMED --(grant failed)--> FREE
 *   ACTIVE --(release, or forced release, or group reclaim: a CAS)--> FREE
 *
 * The record, with its deadline, exists before the holder's count is added to S_STATE and is freed
 * before the count is taken off. So at every moment, each shared holder that is alive has a live
 * record: a count that no live record backs belongs to holders that died, and a waiter may reclaim
 * it (see Grants.sharedGroupReclaimable). Whoever frees an ACTIVE record by CAS is the one that
 * takes its count off S_STATE, so a release and a forced release never both decrement.
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
  RECORD_WORDS,
  RF_DEADLINE,
  type Views,
} from './layout.js';

export class Records {
  readonly #v: Views;
  readonly #count: number;
  /** Where this thread looks first for a free record (its last free one). */
  #cursor = 0;

  constructor(views: Views) {
    this.#v = views;
    this.#count = views.geometry.records;
  }

  get count(): number {
    return this.#count;
  }

  /** Claims a free record for `owner` on `slot` with `deadline`; -1 if all are in use. */
  claim(slot: number, owner: number, deadline: number): number {
    const r = this.#v.records;
    const n = this.#count;
    let i = this.#cursor;
    for (let k = 0; k < n; k++) {
      const base = i * RECORD_WORDS;
      if (
        r[base + R_STATE] === RECORD_FREE &&
        Atomics.compareExchange(r, base + R_STATE, RECORD_FREE, RECORD_CLAIMED) === RECORD_FREE
      ) {
        r[base + R_SLOT] = slot;
        r[base + R_OWNER] = owner;
        this.#v.recordsF64[i * RECORD_F64 + RF_DEADLINE] = deadline;
        // ORDER: the plain stores above are published by this store, before the grant CAS.
        Atomics.store(r, base + R_TOKEN_LO, 0);
        this.#cursor = i;
        return i;
      }
      if (++i === n) i = 0;
    }
    return -1;
  }

  activate(record: number, tokenLo: number, tokenHi: number): void {
    const r = this.#v.records;
    const base = record * RECORD_WORDS;
    r[base + R_TOKEN_LO] = tokenLo;
    r[base + R_TOKEN_HI] = tokenHi;
    Atomics.store(r, base + R_STATE, RECORD_ACTIVE);
  }

  /** CLAIMED -> FREE after a failed grant. */
  unclaim(record: number): void {
    Atomics.store(this.#v.records, record * RECORD_WORDS + R_STATE, RECORD_FREE);
  }

  /** True when `record` is the ACTIVE record of the lease (owner, slot, token). */
  isActive(record: number, slot: number, owner: number, tokenLo: number, tokenHi: number): boolean {
    const r = this.#v.records;
    const base = record * RECORD_WORDS;
    return (
      Atomics.load(r, base + R_STATE) === RECORD_ACTIVE &&
      r[base + R_SLOT] === slot &&
      r[base + R_OWNER] === owner &&
      r[base + R_TOKEN_LO] === tokenLo &&
      r[base + R_TOKEN_HI] === tokenHi
    );
  }

  /** ACTIVE -> FREE by CAS; true if this call freed it (and so must take its count off). */
  free(record: number): boolean {
    return (
      Atomics.compareExchange(
        this.#v.records,
        record * RECORD_WORDS + R_STATE,
        RECORD_ACTIVE,
        RECORD_FREE,
      ) === RECORD_ACTIVE
    );
  }

  /** Frees a CLAIMED record whose owner died before activating it (its grant may not have happened). */
  freeClaimed(record: number): boolean {
    return (
      Atomics.compareExchange(
        this.#v.records,
        record * RECORD_WORDS + R_STATE,
        RECORD_CLAIMED,
        RECORD_FREE,
      ) === RECORD_CLAIMED
    );
  }

  state(record: number): number {
    return Atomics.load(this.#v.records, record * RECORD_WORDS + R_STATE);
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

  setDeadline(record: number, deadline: number): void {
    this.#v.recordsF64[record * RECORD_F64 + RF_DEADLINE] = deadline;
  }
}
