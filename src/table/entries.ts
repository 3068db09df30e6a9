/**
 * Request entries: a small registry in the table's buffer (as many entries as slots) where a thread
 * publishes what others must be able to see of it beyond its grants. Two kinds:
 *
 * - PENDING: a request that waits for a key (its key, mode and place in request order), so that
 *   `locktable/web-locks`'s query() in any thread lists every thread's waiters, and every thread's
 *   later requests for the key wait behind it (`blocked`: the Web Locks request order).
 * - CLIENT: one per thread that uses `locktable/web-locks`: its doorbell, which a thread that
 *   steals one of its locks rings (E_DOORBELL is incremented and notified), so that the robbed
 *   thread learns of it at once; and which a request that leaves the queue for a key, or a
 *   LockManager release of it, rings for the threads whose turn came (`ringWaiters`), so that
 *   they look at their turn again.
 *
 * The word of an entry (E_STATE) is (generation << 23) | (owner << 3) | kind; the owner's thread id
 * is in the word itself, so "which thread's entry is this" is never read apart from the state.
 *
 *   FREE -claim CAS-> WRITING -fields (plain)-> -publish CAS-> PENDING / CLIENT -free CAS-> FREE
 *
 * Every step is a CAS from the exact word seen, and each moves the generation on, so a stale hand
 * (a sweeper, a late owner) never frees or publishes an entry that was reused since.
 *
 * Nothing leaks (DESIGN.md, "Web Locks: the pending registry"): an entry leaves by
 * - its owner, on every way out of its request (granted, aborted, timed out, failed: a `finally`);
 * - `releaseAllOwnedBy(thread)` (and so `watch(worker)`), at once, for a thread that exited;
 * - or its liveness stamp: an owner refreshes EF_LIVE_UNTIL (now + ENTRY_LEASE_MS) every
 *   ENTRY_REFRESH_MS while it lives; an entry whose stamp has lapsed is not listed by query() and
 *   may be taken over (freed, or claimed anew) by any thread, by a CAS naming the lapsed word.
 *   A thread that died without `watch` leaves its entries for at most ENTRY_LEASE_MS.
 * A live owner whose stamp lapsed (its event loop blocked for ENTRY_LEASE_MS) finds its word
 * changed at its next refresh and claims a new entry with its old place in the order.
 */
import { monotonicNow } from '../api/clock.js';
import { keyEquals, readKey } from './key.js';
import { testHooks } from './test-hooks.js';
import {
  E_COUNTED,
  E_DOORBELL,
  E_KEY_LENGTH,
  E_MODE,
  E_RING_WAIT,
  E_SEQ,
  E_STATE,
  EF_LIVE_UNTIL,
  ENTRY_BUCKETS,
  ENTRY_CLIENT,
  ENTRY_F64,
  ENTRY_FREE,
  ENTRY_GEN_SHIFT,
  ENTRY_KIND,
  ENTRY_OWNER_MASK,
  ENTRY_OWNER_SHIFT,
  ENTRY_PENDING,
  ENTRY_UNCOUNTED,
  ENTRY_WORDS,
  ENTRY_WRITING,
  H_ENTRY_HIGH,
  H_ENTRY_SEQ,
  type Views,
} from './layout.js';

/**
 * The waiting hint (H_ENTRY_WAITING, see waitingHint): a count in bits 0-31, its epoch in bits
 * 32-47, a version in bits 48-63 that every change moves on (it wraps off the top).
 */
const COUNT_MASK = 0xffffffffn;
const EPOCH_MASK = 0xffffn;
const ONE_VERSION = 1n << 48n;
const COUNT_ONE = 1n + ONE_VERSION;

/** What a scan of `blocked` found. */
const NOTHING_SEEN = 0;
const SEEN = 1;
const BLOCKED = 2;

function epochOf(h: bigint): number {
  return Number((h >> 32n) & EPOCH_MASK);
}

/** A bucket word: `count` in bits 0-31, `epoch` in bits 32-47. */
function bucketWord(epoch: number, count: bigint): bigint {
  return (BigInt(epoch) << 32n) | count;
}

/** FNV-1a over UTF-16 code units, folded: the waiting hint's bucket of a key (ENTRY_BUCKETS). */
function bucketOfKey(key: string): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h ^ (h >>> 16)) & (ENTRY_BUCKETS - 1);
}

/** bucketOfKey of the key stored at `units[offset .. offset + length)`. */
function bucketOfUnits(units: Uint16Array, offset: number, length: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < length; i++) h = Math.imul(h ^ units[offset + i]!, 0x01000193);
  return (h ^ (h >>> 16)) & (ENTRY_BUCKETS - 1);
}

/** How long an entry stays live without a refresh from its owner (ms). */
export const ENTRY_LEASE_MS = 1000;
/**
 * How often an owner refreshes its entries (ms): four refreshes per lease, so one late timer (the
 * event loop busy for up to 3/4 of a lease) does not lapse a live entry.
 */
export const ENTRY_REFRESH_MS = ENTRY_LEASE_MS / 4;

export type EntryKind = typeof ENTRY_PENDING | typeof ENTRY_CLIENT;

/** One entry as query() sees it. */
export interface EntryView {
  index: number;
  kind: number;
  owner: number;
  seq: number;
  mode: 'exclusive' | 'shared';
  key: string;
}

function word(gen: number, owner: number, kind: number): number {
  return (
    ((gen & 0xff) << ENTRY_GEN_SHIFT) | ((owner & ENTRY_OWNER_MASK) << ENTRY_OWNER_SHIFT) | kind | 0
  );
}

function genOf(w: number): number {
  return (w >>> ENTRY_GEN_SHIFT) & 0xff;
}

export function entryOwner(w: number): number {
  return (w >>> ENTRY_OWNER_SHIFT) & ENTRY_OWNER_MASK;
}

/** The word after `w` with `kind` and `owner`: the generation moves on at every step. */
function next(w: number, owner: number, kind: number): number {
  return word(genOf(w) + 1, owner, kind);
}

export class Entries {
  readonly #words: Int32Array;
  readonly #f64: Float64Array;
  readonly #keys: Uint16Array;
  readonly #header: Int32Array;
  readonly #waiting: BigInt64Array;
  readonly #buckets: BigInt64Array;
  readonly #maxKeyLength: number;
  readonly count: number;

  constructor(views: Views) {
    this.#words = views.entries;
    this.#f64 = views.entriesF64;
    this.#keys = views.entryKeys;
    this.#header = views.header;
    this.#waiting = views.entryWaiting64;
    this.#buckets = views.entryBuckets64;
    this.#maxKeyLength = views.geometry.maxKeyLength;
    this.count = views.geometry.capacity;
  }

  /** A new place in request order (wraps at 2^32: compare with seqBefore). */
  nextSeq(): number {
    return Atomics.add(this.#header, H_ENTRY_SEQ, 1);
  }

  /**
   * Claims and publishes an entry; returns its index (its word is `wordOf(index)`), or -1 when
   * every entry is in use by a live owner.
   */
  claim(kind: EntryKind, owner: number, seq: number, mode: number, key: string): number {
    const words = this.#words;
    const now = monotonicNow();
    // The lowest entry that is free (or may be taken over), so that the entries in use stay
    // below H_ENTRY_HIGH, where every scan stops.
    for (let i = 0; i < this.count; i++) {
      const at = i * ENTRY_WORDS;
      const w = Atomics.load(words, at + E_STATE);
      if ((w & ENTRY_KIND) !== ENTRY_FREE && !this.#gone(i, w, now)) continue;
      // ORDER: the high-water mark covers the entry before the claim CAS (and so before its
      // publish): a scan that reads the mark after the publish scans the entry.
      this.#raiseHigh(i + 1);
      const counted = this.#countedOf(i, w);
      const writing = next(w, owner, ENTRY_WRITING);
      if (Atomics.compareExchange(words, at + E_STATE, w, writing) !== w) continue;
      // PLAIN: the fields, then the publish CAS (a thread that dies before it leaves a WRITING
      // entry with all its fields, its stamp included, so it lapses like any other).
      words[at + E_COUNTED] = ENTRY_UNCOUNTED;
      this.#f64[i * ENTRY_F64 + EF_LIVE_UNTIL] = now + ENTRY_LEASE_MS;
      words[at + E_SEQ] = seq;
      words[at + E_MODE] = mode;
      words[at + E_KEY_LENGTH] = key.length;
      const base = i * this.#maxKeyLength;
      for (let k = 0; k < key.length; k++) this.#keys[base + k] = key.charCodeAt(k);
      // The taken-over entry's count goes (ours took it out of PENDING or WRITING); a PENDING
      // entry is counted before it is published, so that a request that sees it listed in
      // query() also sees the count. A stop at either Atomics call leaves the count too high,
      // never too low (see "the waiting hint" on waitingHint).
      this.#uncount(counted);
      if (kind === ENTRY_PENDING) {
        const epoch = epochOf(Atomics.add(this.#waiting, 0, COUNT_ONE));
        testHooks.stall?.('claim:counted');
        this.#countBucket(bucketOfKey(key), epoch);
        words[at + E_COUNTED] = epoch;
      }
      if (
        Atomics.compareExchange(words, at + E_STATE, writing, next(writing, owner, kind)) !==
        writing
      )
        continue; // taken over while we wrote (we were stalled past a lease): look further
      return i;
    }
    return -1;
  }

  /** H_ENTRY_HIGH: every entry at or above it is FREE and was never claimed. */
  high(): number {
    return Math.min(this.count, Atomics.load(this.#header, H_ENTRY_HIGH));
  }

  #raiseHigh(to: number): void {
    for (;;) {
      const h = Atomics.load(this.#header, H_ENTRY_HIGH);
      if (h >= to || Atomics.compareExchange(this.#header, H_ENTRY_HIGH, h, to) === h) return;
    }
  }

  wordOf(index: number): number {
    return Atomics.load(this.#words, index * ENTRY_WORDS + E_STATE);
  }

  /** Pushes the entry's stamp out; false when it is no longer `w` (it lapsed and was taken). */
  refresh(index: number, w: number): boolean {
    if (this.wordOf(index) !== w) return false;
    // RACE: a taker that saw it lapsed between our check and this store gets a later stamp from
    // us; it writes its own right after its claim CAS, and at worst keeps a reused entry one
    // lease longer.
    this.#f64[index * ENTRY_F64 + EF_LIVE_UNTIL] = monotonicNow() + ENTRY_LEASE_MS;
    return true;
  }

  /** Frees the entry if it is still `w` (and takes its count off the waiting hint). */
  free(index: number, w: number): boolean {
    const at = index * ENTRY_WORDS + E_STATE;
    const counted = this.#countedOf(index, w);
    if (Atomics.compareExchange(this.#words, at, w, next(w, 0, ENTRY_FREE)) !== w) return false;
    this.#uncount(counted);
    return true;
  }

  /**
   * The waiting hint: false only when no PENDING entry exists (nor one on its way to being
   * published), so a LockManager request may skip the registry scan. It is H_ENTRY_WAITING's
   * count, kept by the CAS that publishes a PENDING entry (counted just before it, while the entry
   * is WRITING) and by the CAS that takes one out of PENDING or WRITING (counted off just after
   * it: free, or a claim that takes over a lapsed entry), whoever does it. The entry records the
   * epoch it was counted in (E_COUNTED, a plain store right after the count), so exactly one
   * thread takes each count off, and a WRITING entry left by a thread that died is counted off by
   * whoever takes it back.
   *
   * A thread stopped between a CAS that took an entry out and its count-off (terminated at the
   * entry of the second Atomics call: "Threads that die, and threads that stall" in DESIGN.md)
   * leaves the count too high: requests then scan the registry for nothing. The scan that sees no
   * PENDING or WRITING entry at all resets the count to 0 in a new epoch (`blocked`), by a CAS
   * from the value it read before the scan. That cannot lose a live count: an entry counted
   * before that read was WRITING at its count and stays PENDING or WRITING until a CAS takes it
   * out, so the scan either sees it or it was taken out before; its count-off is then in the value
   * read, or moves the version (the reset's CAS fails), or comes after the reset in a past epoch
   * (ignored). An entry counted after the read moves the version too. So the count is never too
   * low, and a waiter is never missed. (The version is 16 bits: a reset whose scan saw 65,536
   * changes come back to the same word could be wrong; the epoch is 16 bits: a count-off stopped
   * across 65,536 resets could take one off a later epoch.)
   *
   * With `key`, the count of the key's bucket as well (ENTRY_BUCKETS words, by a hash of the key),
   * so that a request for a name whose bucket is empty skips the scan while other names have
   * waiters. Each PENDING entry is counted in its bucket too, after H_ENTRY_WAITING and before its
   * publish, tagged with the epoch that count returned, and counted off with it (the bucket comes
   * from the entry's key, written before the count). A bucket word whose epoch is not
   * H_ENTRY_WAITING's counts nothing: never too low, for an entry P published before the request
   * looks (and still PENDING) was counted in H_ENTRY_WAITING's epoch E and in its bucket with E;
   * no reset can move the epoch past E while P is PENDING or WRITING (the reset's scan would see
   * it, or its version moved); so the request reads epoch E, and a bucket tagged E that counts P
   * (no count-off of P has happened; the others each take off a count of their own entry, once).
   * A thread stopped between taking an entry out and its bucket's count-off leaves the bucket too
   * high until the next reset: requests for its names scan for nothing meanwhile.
   */
  waitingHint(key?: string): boolean {
    const h = Atomics.load(this.#waiting, 0);
    if ((h & COUNT_MASK) === 0n) return false;
    if (key === undefined) return true;
    const b = Atomics.load(this.#buckets, bucketOfKey(key));
    return epochOf(b) === epochOf(h) && (b & COUNT_MASK) !== 0n;
  }

  /**
   * Does an earlier live PENDING entry for `key` stand before a request for it in the
   * specification's request queue? `seq` is the request's place (undefined: a new request, after
   * every entry), `own` its entry (skipped). A shared request waits only for earlier exclusive
   * entries; an exclusive one for every earlier entry (the Web Locks "grantable" rule, less what
   * the table decides: whether the lock is held). Lapsed entries are freed on the way, and a scan
   * that saw no entry at all resets a stale waiting hint (see waitingHint).
   */
  blocked(key: string, shared: boolean, seq: number | undefined, own: number): boolean {
    return this.blockers(key, shared, seq, own, 1) > 0;
  }

  /**
   * How many live PENDING entries stand before the request (as `blocked` judges), counted up to
   * `limit`: 1 is `blocked`; 2 tells the request right behind the one whose turn it is (exactly
   * one before it) from those further back.
   */
  blockers(key: string, shared: boolean, seq: number | undefined, own: number, limit: number) {
    const hint = Atomics.load(this.#waiting, 0);
    this.#limit = limit;
    const found = this.#scan(key, shared, seq, own, false);
    if (found !== NOTHING_SEEN || (hint & COUNT_MASK) === 0n)
      return found === BLOCKED ? this.#counted : 0;
    // Nothing seen through plain reads, and the count says otherwise: look again with atomic
    // loads (the reset's argument at waitingHint rests on them), then reset a stale count.
    const again = this.#scan(key, shared, seq, own, true);
    if (again === NOTHING_SEEN) {
      // A stale count (see waitingHint): 0, in the next epoch, with the next version.
      const version = (hint >> 48n) + 1n;
      const epoch = (BigInt(epochOf(hint)) + 1n) & EPOCH_MASK;
      const reset = BigInt.asIntN(64, (version << 48n) | (epoch << 32n));
      Atomics.compareExchange(this.#waiting, 0, hint, reset);
    }
    return again === BLOCKED ? this.#counted : 0;
  }

  /** How many blockers #scan counts before it stops (blockers' `limit`), and how many it found. */
  #limit = 1;
  #counted = 0;

  /**
   * The scan of `blocked`: BLOCKED, SEEN (a PENDING or WRITING entry, none before the request) or
   * NOTHING_SEEN. With `atomic` false, each entry's word is first read plainly and the entry
   * skipped if FREE or CLIENT, as most are (an atomic load each costs several times a plain
   * read, on every request while anything waits). That read cannot miss a PENDING entry whose
   * publish happens before this scan (a plain read is coherent with happens-before: the test's
   * "request once the one before it is listed" is such an order); it may miss one published
   * concurrently with the scan, which is then ordered after this request, as with an atomic
   * load of a word not yet published. Every entry it does not skip is read again atomically.
   */
  #scan(key: string, shared: boolean, seq: number | undefined, own: number, atomic: boolean) {
    const words = this.#words;
    const now = monotonicNow();
    let found = NOTHING_SEEN;
    this.#counted = 0;
    for (let i = 0, high = this.high(); i < high; i++) {
      const at = i * ENTRY_WORDS;
      if (!atomic) {
        const plain = words[at + E_STATE]! & ENTRY_KIND;
        if (plain === ENTRY_FREE || plain === ENTRY_CLIENT) continue;
      }
      const w = Atomics.load(words, at + E_STATE);
      const kind = w & ENTRY_KIND;
      if (kind === ENTRY_FREE || kind === ENTRY_CLIENT) continue;
      if (this.#gone(i, w, now)) {
        this.free(i, w);
        continue;
      }
      if (found === NOTHING_SEEN) found = SEEN; // PENDING, or WRITING (on its way to PENDING)
      if (kind !== ENTRY_PENDING || i === own) continue;
      const length = words[at + E_KEY_LENGTH]!;
      if (length !== key.length || !keyEquals(this.#keys, i * this.#maxKeyLength, key)) continue;
      if (seq !== undefined && seqCompare(words[at + E_SEQ]!, seq) >= 0) continue;
      if (shared && words[at + E_MODE] === 1) continue;
      // A consistent read: the entry did not move while we read its fields.
      if (this.wordOf(i) !== w) continue;
      found = BLOCKED;
      if (++this.#counted >= this.#limit) return BLOCKED;
    }
    return found;
  }

  /**
   * Rings the doorbells of the threads but `except` whose turn may have come now that a request
   * for `key` left the queue: those with one of the live PENDING entries for `key` that no other
   * stands before (Entries.blocked's rule): the earliest, and when it is shared, every shared one
   * before the earliest exclusive one. Any other waiter for the key still has an earlier entry
   * before it, whose own leaving rings it in turn; so each hand-off wakes one thread (or the
   * shared run), not every thread that waits for the key. `key` undefined (a dead thread's
   * entries went, for any keys): every thread with a live PENDING entry.
   *
   * Every request frees its entry before it calls this, and the scan loads each word atomically:
   * of two requests that leave at once, the one whose scan comes last sees both gone, so the
   * earliest of those that remain is rung. A request that publishes its entry concurrently looks
   * at its place itself, after its publish (LockManager's #wait).
   */
  ringWaiters(key: string | undefined, except: number, onlySyncWaiters = false): void {
    const words = this.#words;
    const now = monotonicNow();
    // One pass: the live PENDING entries for the key (their seq, mode and owner), and the CLIENT
    // entries (index, word: whose doorbells we may ring).
    let firstSeq = 0;
    let firstOwner = -1;
    let firstShared = false;
    let owners: number[] | undefined;
    let shared: { seq: number; owner: number }[] | undefined;
    let exclusiveSeq: number | undefined;
    const clients: number[] = [];
    for (let i = 0, high = this.high(); i < high; i++) {
      const at = i * ENTRY_WORDS;
      const w = Atomics.load(words, at + E_STATE);
      const kind = w & ENTRY_KIND;
      if (kind === ENTRY_CLIENT) {
        if (!this.#lapsed(i, now)) clients.push(i, w);
        continue;
      }
      if (kind !== ENTRY_PENDING) continue;
      if (this.#lapsed(i, now)) {
        this.free(i, w);
        continue;
      }
      const owner = entryOwner(w);
      if (key === undefined) {
        if (owner !== except) (owners ??= []).push(owner);
        continue;
      }
      const length = words[at + E_KEY_LENGTH]!;
      if (length !== key.length || !keyEquals(this.#keys, i * this.#maxKeyLength, key)) continue;
      const seq = words[at + E_SEQ]!;
      const isShared = words[at + E_MODE] === 1;
      // A consistent read: the entry did not move while we read its fields.
      if (Atomics.load(words, at + E_STATE) !== w) continue;
      if (firstOwner < 0 || seqCompare(seq, firstSeq) < 0) {
        firstSeq = seq;
        firstOwner = owner;
        firstShared = isShared;
      }
      if (isShared) (shared ??= []).push({ seq, owner });
      else if (exclusiveSeq === undefined || seqCompare(seq, exclusiveSeq) < 0) exclusiveSeq = seq;
    }
    if (key !== undefined) {
      if (firstOwner < 0) return;
      owners = [firstOwner];
      // The shared run at the front: every shared entry before the earliest exclusive one.
      if (firstShared && shared !== undefined) {
        for (const e of shared) {
          if (exclusiveSeq === undefined || seqCompare(e.seq, exclusiveSeq) < 0)
            owners.push(e.owner);
        }
      }
    }
    if (owners === undefined) return;
    for (let c = 0; c < clients.length; c += 2) {
      const i = clients[c]!;
      const owner = entryOwner(clients[c + 1]!);
      if (owner === except || !owners.includes(owner)) continue;
      if (onlySyncWaiters && Atomics.load(words, i * ENTRY_WORDS + E_RING_WAIT) === 0) continue;
      this.ring(i);
    }
  }

  /**
   * The count entry `i` (word `w`) holds, if it may be counted: the epoch it was counted in (bits
   * 0-15) and its key's bucket (from bit 16); else ENTRY_UNCOUNTED. Read before the CAS that takes
   * the entry out (its fields are then the word's: the key was written before the count).
   */
  #countedOf(i: number, w: number): number {
    const kind = w & ENTRY_KIND;
    if (kind !== ENTRY_PENDING && kind !== ENTRY_WRITING) return ENTRY_UNCOUNTED;
    const words = this.#words;
    const epoch = words[i * ENTRY_WORDS + E_COUNTED]!;
    if (epoch === ENTRY_UNCOUNTED) return ENTRY_UNCOUNTED;
    const length = Math.min(words[i * ENTRY_WORDS + E_KEY_LENGTH]!, this.#maxKeyLength);
    return epoch | (bucketOfUnits(this.#keys, i * this.#maxKeyLength, length) << 16);
  }

  /** Counts one entry in `bucket`, in `epoch` (H_ENTRY_WAITING's, in which it was just counted). */
  #countBucket(bucket: number, epoch: number): void {
    for (;;) {
      const b = Atomics.load(this.#buckets, bucket);
      // ORDER: the bucket, then the hint. A hint of another epoch was reset since we counted in
      // it: only a scan that took our entry back (we stalled past its lease) resets it, so our
      // publish fails anyway, and a bucket moved to our older epoch would erase the counts of
      // the newer one (a live waiter read as none). The CAS from `b` closes the gap between the
      // two loads: a newer epoch's count in the bucket after our load makes it fail.
      if (epochOf(Atomics.load(this.#waiting, 0)) !== epoch) return;
      // A word of an earlier epoch counts nothing live (see waitingHint): start it again.
      const counted = epochOf(b) === epoch ? b + 1n : bucketWord(epoch, 1n);
      if (Atomics.compareExchange(this.#buckets, bucket, b, counted) === b) return;
    }
  }

  /** Takes one count (#countedOf's) off the waiting hint and its bucket, if still of its epoch. */
  #uncount(counted: number): void {
    if (counted === ENTRY_UNCOUNTED) return;
    const epoch = counted & 0xffff;
    const bucket = counted >>> 16;
    for (;;) {
      const b = Atomics.load(this.#buckets, bucket);
      if (epochOf(b) !== epoch || (b & COUNT_MASK) === 0n) break;
      if (Atomics.compareExchange(this.#buckets, bucket, b, b - 1n) === b) break;
    }
    for (;;) {
      const h = Atomics.load(this.#waiting, 0);
      if (epochOf(h) !== epoch || (h & COUNT_MASK) === 0n) return;
      const uncounted = BigInt.asIntN(64, h - 1n + ONE_VERSION);
      if (Atomics.compareExchange(this.#waiting, 0, h, uncounted) === h) return;
    }
  }

  /** Frees every entry of `owner`, a thread that has exited (releaseAllOwnedBy). Returns how many. */
  freeOwnedBy(owner: number): number {
    let freed = 0;
    for (let i = 0, high = this.high(); i < high; i++) {
      const w = this.wordOf(i);
      if ((w & ENTRY_KIND) === ENTRY_FREE || entryOwner(w) !== owner) continue;
      if (this.free(i, w)) freed++;
    }
    // Its requests left the queue: the threads that wait behind them look at their place again.
    if (freed > 0) this.ringWaiters(undefined, owner);
    return freed;
  }

  /** Rings the doorbell of a CLIENT entry (wakes its owner's watch on it). */
  ring(index: number): void {
    const at = index * ENTRY_WORDS + E_DOORBELL;
    Atomics.add(this.#words, at, 1);
    Atomics.notify(this.#words, at);
  }

  /**
   * Rings the doorbell of every live CLIENT entry but `except`'s (a steal: every thread that may
   * have held the key checks its locks; the others find theirs held and wait again).
   */
  ringClients(except: number): void {
    const now = monotonicNow();
    for (let i = 0, high = this.high(); i < high; i++) {
      const w = this.wordOf(i);
      if ((w & ENTRY_KIND) !== ENTRY_CLIENT || entryOwner(w) === except || this.#lapsed(i, now))
        continue;
      this.ring(i);
    }
  }

  /**
   * Marks (1) or unmarks (0) the owner of CLIENT entry `index` as sleeping synchronously on its
   * doorbell for a lock's release (E_RING_WAIT): a release rings only such a thread (see
   * ringWaiters). ORDER: set before the look that precedes the sleep (Client.waitForRing).
   */
  setRingWait(index: number, on: number): void {
    Atomics.store(this.#words, index * ENTRY_WORDS + E_RING_WAIT, on);
  }

  /** The doorbell word's array and index, for the owner's Atomics.waitAsync. */
  doorbell(index: number): { array: Int32Array; index: number } {
    return { array: this.#words, index: index * ENTRY_WORDS + E_DOORBELL };
  }

  /**
   * Every live PENDING entry (optionally only those for `key`), in request order. Entries whose
   * stamp lapsed are freed on the way (a CAS naming the lapsed word).
   */
  pending(key?: string): EntryView[] {
    const out: EntryView[] = [];
    const now = monotonicNow();
    const words = this.#words;
    for (let i = 0, high = this.high(); i < high; i++) {
      const w = this.wordOf(i);
      const kind = w & ENTRY_KIND;
      if (kind === ENTRY_FREE) continue;
      if (this.#gone(i, w, now)) {
        this.free(i, w);
        continue;
      }
      if (kind !== ENTRY_PENDING) continue;
      const at = i * ENTRY_WORDS;
      const length = words[at + E_KEY_LENGTH]!;
      const base = i * this.#maxKeyLength;
      if (key !== undefined && (length !== key.length || !keyEquals(this.#keys, base, key)))
        continue;
      const view: EntryView = {
        index: i,
        kind,
        owner: entryOwner(w),
        seq: words[at + E_SEQ]!,
        mode: words[at + E_MODE] === 1 ? 'shared' : 'exclusive',
        key: key ?? readKey(this.#keys, base, length),
      };
      // A consistent read: the entry did not move while we read its fields.
      if (this.wordOf(i) === w) out.push(view);
    }
    return out.sort((a, b) => seqCompare(a.seq, b.seq));
  }

  #lapsed(i: number, now: number): boolean {
    return this.#f64[i * ENTRY_F64 + EF_LIVE_UNTIL]! < now;
  }

  /**
   * May the entry (word `w`) be taken over? A published one once its stamp lapsed. A WRITING one
   * has the previous occupant's stamp until its writer's plain stores land, so it counts as its
   * writer's own only once this thread has seen the same word for ENTRY_LEASE_MS (its writer died
   * at its publish CAS, or has been stopped there that long): as records.ts's "seen stuck".
   */
  #gone(i: number, w: number, now: number): boolean {
    if ((w & ENTRY_KIND) !== ENTRY_WRITING) return this.#lapsed(i, now);
    const seen = this.#writingSeen.get(i);
    if (seen === undefined || seen.word !== w) {
      if (this.#writingSeen.size > 64) this.#writingSeen.clear();
      this.#writingSeen.set(i, { word: w, since: now });
      return false;
    }
    return now - seen.since >= ENTRY_LEASE_MS;
  }

  /** WRITING words this thread has seen, and since when (for #gone). */
  readonly #writingSeen = new Map<number, { word: number; since: number }>();
}

/** Request order of two sequence numbers, across the 32-bit wrap. */
export function seqCompare(a: number, b: number): number {
  return (a - b) | 0;
}
