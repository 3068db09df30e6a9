/**
 * table.stats(): counters of every thread of a table, in shared memory (the stats area of the
 * buffer: layout.ts), so one thread can poll or chart what all of them do.
 *
 * Counting costs an Atomics.add per event (about 10-45 ns), too much for the uncontended fast
 * path (about 30 ns for an acquire + release). So a table counts only when it was made with
 * `stats: true` (H_STATS in the header: every thread that attaches counts too). A request of such
 * a table, like one that a diagnostics_channel subscriber observes, takes the observed path
 * (LockTable's #observed*): the same core, with the events counted and published around it.
 * A table without stats, and without subscribers, pays one check per request (diagnostics.ts).
 *
 * Wait times go into a log2 histogram (WAIT_BUCKETS buckets of microseconds), from which the
 * snapshot reads percentiles: each is the upper bound of its bucket, so within a factor of 2.
 */
import {
  ST_ABORTS,
  ST_CONTENDED,
  ST_GRANTS,
  ST_MISSES,
  ST_RECLAIMS,
  ST_RELEASES,
  ST_REQUESTS,
  ST_TIMEOUTS,
  ST_WAIT_BUCKETS,
  WAIT_BUCKETS,
} from './layout.js';

/** What table.stats() returns: totals since the table was made, across every thread. */
export interface LockStats {
  /** False for a table made without `stats: true`: every count is then 0. */
  enabled: boolean;
  /** Requests made (every acquire, tryAcquire, acquireAll key, permit request). */
  requests: number;
  /** Requests granted. */
  grants: number;
  /** Grants whose request had to wait (spin or sleep) before it got the key. */
  contendedGrants: number;
  /** One-shot requests (tryAcquire, waitTimeout 0) that found the key busy. */
  misses: number;
  /** Requests that gave up at their waitTimeout. */
  timeouts: number;
  /** Requests whose signal aborted them. */
  aborts: number;
  /** Holders reclaimed: grants past a holder's deadline + failTimeout, and leases freed by watch(). */
  reclaims: number;
  /** Leases released. */
  releases: number;
  /**
   * Wait time of grants, in ms: each percentile is the upper bound of its log2 bucket (so at most
   * twice the true value); 0 when there was no grant.
   */
  wait: { p50: number; p90: number; p99: number; max: number };
}

/** The histogram bucket of a wait of `ms`: 0 below 1 us, b for [2^(b-1), 2^b) us. */
export function waitBucket(ms: number): number {
  const us = ms * 1000;
  if (!(us >= 1)) return 0;
  return Math.min(WAIT_BUCKETS - 1, 32 - Math.clz32(Math.min(us, 2 ** 31 - 1)));
}

/** The upper bound (ms) of bucket b. */
function bucketUpperMs(b: number): number {
  return 2 ** b / 1000;
}

export class Stats {
  readonly #c: BigInt64Array;

  constructor(counters: BigInt64Array) {
    this.#c = counters;
  }

  request(): void {
    Atomics.add(this.#c, ST_REQUESTS, 1n);
  }

  grant(waitMs: number, contended: boolean, recovered: boolean): void {
    const c = this.#c;
    Atomics.add(c, ST_GRANTS, 1n);
    if (contended) Atomics.add(c, ST_CONTENDED, 1n);
    if (recovered) Atomics.add(c, ST_RECLAIMS, 1n);
    Atomics.add(c, ST_WAIT_BUCKETS + waitBucket(waitMs), 1n);
  }

  miss(): void {
    Atomics.add(this.#c, ST_MISSES, 1n);
  }

  timeout(): void {
    Atomics.add(this.#c, ST_TIMEOUTS, 1n);
  }

  abort(): void {
    Atomics.add(this.#c, ST_ABORTS, 1n);
  }

  reclaims(n: number): void {
    if (n > 0) Atomics.add(this.#c, ST_RECLAIMS, BigInt(n));
  }

  release(): void {
    Atomics.add(this.#c, ST_RELEASES, 1n);
  }

  snapshot(enabled: boolean): LockStats {
    const c = this.#c;
    const n = (i: number) => Number(Atomics.load(c, i));
    const buckets = Array.from({ length: WAIT_BUCKETS }, (_, b) => n(ST_WAIT_BUCKETS + b));
    const total = buckets.reduce((a, b) => a + b, 0);
    const at = (p: number): number => {
      if (total === 0) return 0;
      const want = Math.ceil(p * total);
      let seen = 0;
      for (let b = 0; b < WAIT_BUCKETS; b++) {
        seen += buckets[b]!;
        if (seen >= want) return bucketUpperMs(b);
      }
      return bucketUpperMs(WAIT_BUCKETS - 1);
    };
    return {
      enabled,
      requests: n(ST_REQUESTS),
      grants: n(ST_GRANTS),
      contendedGrants: n(ST_CONTENDED),
      misses: n(ST_MISSES),
      timeouts: n(ST_TIMEOUTS),
      aborts: n(ST_ABORTS),
      reclaims: n(ST_RECLAIMS),
      releases: n(ST_RELEASES),
      wait: { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1) },
    };
  }
}
