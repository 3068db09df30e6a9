/**
 * diagnostics_channel events of the table, named as Node's own Web Locks name theirs
 * (`locks.request.start`, `.grant`, `.miss`, `.end`), under the package's name:
 *
 *   locktable.request.start   a request begins           { key, mode, limit, threadId }
 *   locktable.request.grant   it was granted             { key, mode, limit, threadId, waitMs,
 *                                                          token, contended, recovered }
 *   locktable.request.miss    a one-shot found the key   { key, mode, limit, threadId, waitMs,
 *                             busy, or a wait timed out    reason: 'busy' | 'timeout' }
 *   locktable.request.abort   its signal aborted it      { key, mode, limit, threadId, waitMs, reason }
 *   locktable.lock.reclaim    a holder was reclaimed:    { key, mode, limit, threadId, token, by: 'deadline' }
 *                             a grant past its deadline  (the grant that reclaimed it), or
 *                             + failTimeout, or watch()  { key: undefined, threadId, owner,
 *                             freed a dead thread's        leases, by: 'exit' }
 *   locktable.lock.release    a lease was released       { key, mode, threadId, token }
 *
 * `key` is the lock's key (Web Locks' `name`); `mode` 'exclusive' or 'shared' (a semaphore's
 * permit is 'shared', with `limit` its number of permits; 0 for a lock); `threadId` the thread
 * that made the request; `waitMs` the time from the request's start (LockTable.now()'s clock);
 * `token` the fencing token (bigint). Events are published synchronously in the thread that made
 * the request, so a subscriber sees its own thread's events (as with Node's channels).
 *
 * Cost: a request checks once, at its start, whether anyone observes (a subscriber on any of
 * these channels, or a table that collects stats: stats.ts): two plain reads (see refresh). If not, it runs the plain path,
 * with no other change; if so, the observed path (LockTable's #observe*), which builds the
 * payloads and publishes only on the channels that have subscribers.
 */
import dc from 'node:diagnostics_channel';
import type { Mode } from './slot-state.js';

export const CHANNELS = {
  start: 'locktable.request.start',
  grant: 'locktable.request.grant',
  miss: 'locktable.request.miss',
  abort: 'locktable.request.abort',
  reclaim: 'locktable.lock.reclaim',
  release: 'locktable.lock.release',
} as const;

export const startChannel = dc.channel(CHANNELS.start);
export const grantChannel = dc.channel(CHANNELS.grant);
export const missChannel = dc.channel(CHANNELS.miss);
export const abortChannel = dc.channel(CHANNELS.abort);
export const reclaimChannel = dc.channel(CHANNELS.reclaim);
export const releaseChannel = dc.channel(CHANNELS.release);

/*
 * Whether anyone observes, as two module variables that the fast path reads (one load each), kept
 * current by watching the channels' subscriptions, rather than five `hasSubscribers` getters per
 * request (measured: about 10% of an uncontended sync acquire + release, `npm run bench -- --only
 * uncontended`). Every subscription goes through the channel object's own methods
 * (`dc.subscribe(name, fn)` is `channel(name).subscribe(fn)`, on Node 20 and 24), so an own
 * property on each channel sees it. Channels are global by name: a second copy of this module
 * (the ESM and the CommonJS builds in one process) wraps the first's wrapper, and both stay told.
 */
let requestObservedNow = false;
let releaseObservedNow = false;
/** A table of this thread collects stats (stats.ts): its requests must count, so all observe. */
let statsTableSeen = false;

function refresh(): void {
  requestObservedNow =
    statsTableSeen ||
    startChannel.hasSubscribers ||
    grantChannel.hasSubscribers ||
    missChannel.hasSubscribers ||
    abortChannel.hasSubscribers ||
    reclaimChannel.hasSubscribers;
  releaseObservedNow = statsTableSeen || releaseChannel.hasSubscribers;
}

/**
 * A table that collects stats was made (or attached) in this thread: from now on every request
 * and release of the thread takes the observed path (which counts for tables with stats only).
 */
export function noteStatsTable(): void {
  statsTableSeen = true;
  refresh();
}

const SUBSCRIPTION_METHODS = ['subscribe', 'unsubscribe', 'bindStore', 'unbindStore'] as const;

function watchSubscriptions(channel: dc.Channel): void {
  const target = channel as unknown as Record<string, unknown>;
  for (const method of SUBSCRIPTION_METHODS) {
    const own = Object.hasOwn(target, method) ? target[method] : undefined;
    if (own === undefined && typeof target[method] !== 'function') continue;
    Object.defineProperty(target, method, {
      configurable: true,
      writable: true,
      value(this: object, ...args: unknown[]): unknown {
        // RACE (re-entry): an inactive channel's subscribe() makes it active and calls
        // this.subscribe() again, which lands here again; the prototype is read at each call.
        const fn = (own ?? (Object.getPrototypeOf(this) as Record<string, unknown>)[method]) as (
          ...a: unknown[]
        ) => unknown;
        try {
          return fn.apply(this, args);
        } finally {
          refresh();
        }
      },
    });
  }
}

for (const channel of [
  startChannel,
  grantChannel,
  missChannel,
  abortChannel,
  reclaimChannel,
  releaseChannel,
]) {
  watchSubscriptions(channel);
}
// Subscribers from before this module was loaded.
refresh();

/**
 * Does anyone subscribe to a request's events (start, grant, miss, abort, reclaim), or does a
 * table of this thread collect stats?
 */
export function requestObserved(): boolean {
  return requestObservedNow;
}

/** Does anyone subscribe to releases, or does a table of this thread collect stats? */
export function releaseObserved(): boolean {
  return releaseObservedNow;
}

export interface RequestEvent {
  key: string;
  mode: Mode;
  limit: number;
  threadId: number;
}

export interface GrantEvent extends RequestEvent {
  waitMs: number;
  token: bigint;
  contended: boolean;
  recovered: boolean;
}

export interface MissEvent extends RequestEvent {
  waitMs: number;
  reason: 'busy' | 'timeout';
}

export interface AbortEvent extends RequestEvent {
  waitMs: number;
  /** The signal's reason. */
  reason: unknown;
}

export interface ReclaimEvent {
  /** The key reclaimed (undefined for watch()'s release of every lease of a dead thread). */
  key: string | undefined;
  mode: Mode | undefined;
  limit: number;
  /** The thread that reclaimed. */
  threadId: number;
  /** The grant that reclaimed ('deadline'), or the thread whose leases were freed ('exit'). */
  token?: bigint;
  owner?: number;
  leases?: number;
  by: 'deadline' | 'exit';
}

export interface ReleaseEvent {
  key: string;
  mode: Mode;
  threadId: number;
  token: bigint;
}
