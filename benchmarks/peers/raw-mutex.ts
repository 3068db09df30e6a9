/**
 * The raw Atomics baseline that every locktable figure is compared against: the fastest per-key
 * lock a careful user would write for string keys. The classic futex mutex ("mutex2" in Ulrich
 * Drepper, "Futexes Are Tricky") on one Int32 word per key, the word found by hashing the key on
 * every call: FNV-1a over its UTF-16 code units into an array of words, each padded to its own
 * 64-byte cache line. No Map, no key table, no per-key set-up.
 *
 *   0 = free, 1 = locked, 2 = locked and someone may be asleep on the word.
 *
 * lock: CAS 0 -> 1 (fast path); else spin a little; else set 2 and Atomics.wait while it is 2.
 * unlock: exchange to 0; if the old value was 2, Atomics.notify one sleeper.
 *
 * Two keys whose hashes meet share a word (lock striping): still exclusive for each key, only
 * less concurrent. The array has at least 4 words per key the scenario names, so the scenarios'
 * keys rarely share one. It has no fairness, no deadlines, no fencing tokens and no dead-holder
 * recovery: it is the floor of what a lock on a string key can cost, not a competitor.
 */

/** Int32 words per cache line (64 bytes): each word gets a line of its own. */
export const WORDS_PER_LINE = 16;

/**
 * Spins before sleeping. About 100 re-reads of the word cover a short critical section held by
 * another core (a few hundred ns) without paying for Atomics.wait; longer holds go to sleep.
 */
export const SPIN_LIMIT = 100;

const FREE = 0;
const LOCKED = 1;
const CONTENDED = 2;

/** Blocks the thread until the word at `index` is ours. */
export function lock(words: Int32Array, index: number): void {
  const c = Atomics.compareExchange(words, index, FREE, LOCKED);
  if (c === FREE) return;
  lockSlow(words, index, c);
}

function lockSlow(words: Int32Array, index: number, c: number): void {
  for (let spin = 0; spin < SPIN_LIMIT; spin++) {
    c = Atomics.load(words, index);
    if (c === FREE) {
      c = Atomics.compareExchange(words, index, FREE, LOCKED);
      if (c === FREE) return;
    }
  }
  // From here on we may sleep, so the word must say 2: whoever unlocks then notifies.
  if (c !== CONTENDED) c = Atomics.exchange(words, index, CONTENDED);
  while (c !== FREE) {
    Atomics.wait(words, index, CONTENDED);
    c = Atomics.exchange(words, index, CONTENDED);
  }
}

/** The promise every uncontended lockAsync returns: settled already, allocated once. */
const LOCKED_NOW: Promise<void> = Promise.resolve();

/**
 * The same lock without blocking the event loop. A free word costs one CAS and returns a promise
 * that is already settled (allocated once); only a busy word goes to the async slow path, which
 * spins, then awaits Atomics.waitAsync.
 */
export function lockAsync(words: Int32Array, index: number): Promise<void> {
  const c = Atomics.compareExchange(words, index, FREE, LOCKED);
  if (c === FREE) return LOCKED_NOW;
  return lockAsyncSlow(words, index, c);
}

async function lockAsyncSlow(words: Int32Array, index: number, c: number): Promise<void> {
  for (let spin = 0; spin < SPIN_LIMIT; spin++) {
    c = Atomics.load(words, index);
    if (c === FREE) {
      c = Atomics.compareExchange(words, index, FREE, LOCKED);
      if (c === FREE) return;
    }
  }
  if (c !== CONTENDED) c = Atomics.exchange(words, index, CONTENDED);
  while (c !== FREE) {
    const waited = Atomics.waitAsync(words, index, CONTENDED);
    if (waited.async) await waited.value;
    c = Atomics.exchange(words, index, CONTENDED);
  }
}

export function unlock(words: Int32Array, index: number): void {
  if (Atomics.exchange(words, index, FREE) === CONTENDED) Atomics.notify(words, index, 1);
}

/** FNV-1a over the key's UTF-16 code units (what the baseline pays on every call). */
export function fnv1a(key: string): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h;
}

/**
 * String keys for the baseline: every call hashes its key (fnv1a) to a word of the array. Nothing
 * is set up per key; the array is sized once from how many keys the scenario names.
 */
export class BaselineKeys {
  readonly words: Int32Array;
  /** Words in the array, minus one (a power of two minus one: the hash's mask). */
  readonly #mask: number;

  /** `keyCount`: keys the run will lock. `buffer`: an existing word array (another thread's). */
  constructor(keyCount: number, buffer?: SharedArrayBuffer) {
    const lines = buffer
      ? buffer.byteLength / (WORDS_PER_LINE * 4)
      : Math.max(1024, 2 ** Math.ceil(Math.log2(4 * Math.max(1, keyCount))));
    this.#mask = lines - 1;
    this.words = new Int32Array(buffer ?? new SharedArrayBuffer(lines * WORDS_PER_LINE * 4));
  }

  get buffer(): SharedArrayBuffer {
    return this.words.buffer as SharedArrayBuffer;
  }

  indexOf(key: string): number {
    return (fnv1a(key) & this.#mask) * WORDS_PER_LINE;
  }

  lock(key: string): void {
    lock(this.words, this.indexOf(key));
  }

  lockAsync(key: string): Promise<void> {
    return lockAsync(this.words, this.indexOf(key));
  }

  unlock(key: string): void {
    unlock(this.words, this.indexOf(key));
  }
}
