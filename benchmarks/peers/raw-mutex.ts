/**
 * The raw Atomics baseline that every locktable figure is compared against: the classic futex
 * mutex ("mutex2" in Ulrich Drepper, "Futexes Are Tricky") on one Int32 word per key.
 *
 *   0 = free, 1 = locked, 2 = locked and someone may be asleep on the word.
 *
 * lock: CAS 0 -> 1 (fast path); else spin a little; else set 2 and Atomics.wait while it is 2.
 * unlock: exchange to 0; if the old value was 2, Atomics.notify one sleeper.
 *
 * It has no fairness, no deadlines, no fencing tokens and no dead-holder recovery: it is the
 * floor of what a lock can cost, not a competitor.
 */

/** Int32 words per cache line (64 bytes): each key's word gets a line of its own. */
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
  let c = Atomics.compareExchange(words, index, FREE, LOCKED);
  if (c === FREE) return;
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

/**
 * The same lock without blocking the event loop: the slow path awaits Atomics.waitAsync.
 * It is an async function on purpose, so that `await lockAsync(...)` costs what
 * `await table.acquire(...)` costs a caller: a promise and a microtask turn, even uncontended.
 */
export async function lockAsync(words: Int32Array, index: number): Promise<void> {
  let c = Atomics.compareExchange(words, index, FREE, LOCKED);
  if (c === FREE) return;
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

/**
 * String keys for the baseline. Choice: every key is assigned its word ahead of time, and each
 * lock call looks the key up in a Map (key -> word index). The per-call Map.get is kept on
 * purpose: locktable hashes and finds the key on every call, so the baseline pays a (cheaper)
 * lookup too instead of being handed a bare index. Keys cannot be added later: that is what a
 * lock table is for, and what this baseline does not do.
 */
export class BaselineKeys {
  readonly words: Int32Array;
  readonly #index: Map<string, number>;

  /** `keys`: every key the run will lock. `buffer`: an existing word array (another thread's). */
  constructor(keys: readonly string[], buffer?: SharedArrayBuffer) {
    this.#index = new Map(keys.map((key, i) => [key, i * WORDS_PER_LINE]));
    const bytes = Math.max(1, keys.length) * WORDS_PER_LINE * 4;
    this.words = new Int32Array(buffer ?? new SharedArrayBuffer(bytes));
  }

  get buffer(): SharedArrayBuffer {
    return this.words.buffer as SharedArrayBuffer;
  }

  indexOf(key: string): number {
    const index = this.#index.get(key);
    if (index === undefined) throw new Error(`baseline: key ${JSON.stringify(key)} has no word`);
    return index;
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
