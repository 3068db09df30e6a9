/**
 * Request entries: a small registry in the table's buffer (as many entries as slots) where a thread
 * publishes what others must be able to see of it beyond its grants. Two kinds:
 *
 * - PENDING: a request that waits for a key (its key, mode and place in request order), so that
 *   `locktable/web-locks`'s query() in any thread lists every thread's waiters.
 * - CLIENT: one per thread that uses `locktable/web-locks`: its doorbell, which a thread that
 *   steals one of its locks rings (E_DOORBELL is incremented and notified), so that the robbed
 *   thread learns of it at once.
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
import {
  E_DOORBELL,
  E_KEY_LENGTH,
  E_MODE,
  E_SEQ,
  E_STATE,
  EF_LIVE_UNTIL,
  ENTRY_CLIENT,
  ENTRY_F64,
  ENTRY_FREE,
  ENTRY_GEN_SHIFT,
  ENTRY_KIND,
  ENTRY_OWNER_MASK,
  ENTRY_OWNER_SHIFT,
  ENTRY_PENDING,
  ENTRY_WORDS,
  ENTRY_WRITING,
  H_ENTRY_SEQ,
  type Views,
} from './layout.js';

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
  readonly #maxKeyLength: number;
  readonly count: number;
  /** Where this thread's next claim starts looking (spreads threads over the entries). */
  #hint: number;

  constructor(views: Views, threadId: number) {
    this.#words = views.entries;
    this.#f64 = views.entriesF64;
    this.#keys = views.entryKeys;
    this.#header = views.header;
    this.#maxKeyLength = views.geometry.maxKeyLength;
    this.count = views.geometry.capacity;
    this.#hint = (threadId * 7) % this.count;
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
    for (let n = 0; n < this.count; n++) {
      const i = (this.#hint + n) % this.count;
      const at = i * ENTRY_WORDS;
      const w = Atomics.load(words, at + E_STATE);
      if ((w & ENTRY_KIND) !== ENTRY_FREE && !this.#gone(i, w, now)) continue;
      const writing = next(w, owner, ENTRY_WRITING);
      if (Atomics.compareExchange(words, at + E_STATE, w, writing) !== w) continue;
      // PLAIN: the fields, then the publish CAS (a thread that dies before it leaves a WRITING
      // entry with all its fields, its stamp included, so it lapses like any other).
      this.#f64[i * ENTRY_F64 + EF_LIVE_UNTIL] = now + ENTRY_LEASE_MS;
      words[at + E_SEQ] = seq;
      words[at + E_MODE] = mode;
      words[at + E_KEY_LENGTH] = key.length;
      const base = i * this.#maxKeyLength;
      for (let k = 0; k < key.length; k++) this.#keys[base + k] = key.charCodeAt(k);
      if (
        Atomics.compareExchange(words, at + E_STATE, writing, next(writing, owner, kind)) !==
        writing
      )
        continue; // taken over while we wrote (we were stalled past a lease): look further
      this.#hint = (i + 1) % this.count;
      return i;
    }
    return -1;
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

  /** Frees the entry if it is still `w`. */
  free(index: number, w: number): boolean {
    const at = index * ENTRY_WORDS + E_STATE;
    return Atomics.compareExchange(this.#words, at, w, next(w, 0, ENTRY_FREE)) === w;
  }

  /** Frees every entry of `owner`, a thread that has exited (releaseAllOwnedBy). Returns how many. */
  freeOwnedBy(owner: number): number {
    let freed = 0;
    for (let i = 0; i < this.count; i++) {
      const w = this.wordOf(i);
      if ((w & ENTRY_KIND) === ENTRY_FREE || entryOwner(w) !== owner) continue;
      if (this.free(i, w)) freed++;
    }
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
    for (let i = 0; i < this.count; i++) {
      const w = this.wordOf(i);
      if ((w & ENTRY_KIND) !== ENTRY_CLIENT || entryOwner(w) === except || this.#lapsed(i, now))
        continue;
      this.ring(i);
    }
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
    for (let i = 0; i < this.count; i++) {
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
