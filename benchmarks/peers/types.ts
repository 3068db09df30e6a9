/**
 * What every peer (locktable, the raw baseline, and each other lock) provides to the scenarios:
 * one way to run a critical section under an exclusive lock on a string key, from the main thread
 * and from workers. Each peer is set up the way its own documentation requires (see PEERS.md);
 * that setup lives in its host (main thread) and connect (worker) functions.
 */
import type { Worker } from 'node:worker_threads';

export type PeerName =
  'baseline' | 'locktable' | 'node-locks' | 'web-locks' | 'mortice' | 'async-mutex';

/** `sync` blocks the calling thread until the lock is granted; `async` returns a promise. */
export type Api = 'sync' | 'async';

/** `default`: the Node that runs the benchmarks; `node24`: a Node 24 binary fetched on demand (runtimes.ts). */
export type Runtime = 'default' | 'node24';

/** Runs `section` while holding `key` exclusively, then releases it (also when section throws). */
export interface LockClient {
  /** Present only for peers that can block a thread (locktable and the raw baseline). */
  sync?: (key: string, section: () => void) => void;
  async: (key: string, section: () => void) => Promise<void>;
  /**
   * locktable only: one prepared lock per key (KeyHandle), in the order of `keys`, for the
   * `handle` variants (spec.ts, usesHandles).
   */
  prepare?: (keys: readonly string[]) => PreparedLock[];
}

/** A lock on one key, prepared ahead of time: LockClient without the key argument. */
export interface PreparedLock {
  sync?: (section: () => void) => void;
  async: (section: () => void) => Promise<void>;
}

/** The prepared locks of `client` for `keys`: the peer's own, or an error. */
export function prepared(client: LockClient, keys: readonly string[]): PreparedLock[] {
  if (client.prepare === undefined) throw new Error('this peer has no prepared keys');
  return client.prepare(keys);
}

/** What a scenario asks of a peer's host. Only locktable uses the recovery options. */
export interface HostOptions {
  /** Every key the scenario will lock (some peers must create each name before workers use it). */
  keys: readonly string[];
  /** locktable: `table.watch(worker)` on every worker, so a dead worker's locks are freed. */
  watch?: boolean;
  /** locktable: the hold (ms) of every lease, stamped as a deadline in the slot. */
  hold?: number;
  /** locktable: the table's failTimeout (ms after a deadline before a waiter may reclaim). */
  failTimeout?: number;
}

/** The main thread's side of a peer within one benchmark process. */
export interface PeerHost {
  /** Structured-cloneable (SharedArrayBuffers are shared): handed to every worker. */
  readonly shared: unknown;
  /** Called for each worker right after it is created. */
  adopt(worker: Worker): void;
  /** Called once every worker has connected, before any of them may take a lock. */
  prepare(): Promise<void>;
  /** The main thread's own client. */
  readonly client: LockClient;
}

export interface PeerAdapter {
  host(options: HostOptions): Promise<PeerHost>;
  /** Worker side: the client for this thread, from the host's `shared`. */
  connect(shared: unknown): Promise<LockClient>;
}
