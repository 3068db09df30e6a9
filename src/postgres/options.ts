/**
 * The options of PgLockTable, validated once at the boundary (with src/api/options.ts's
 * validators): locktable's own are taken out, and everything else is pg's connection config.
 */
import type pg from 'pg';
import { invalidValue, outOfRange } from '../api/errors.js';
import { checkInteger, checkKey, checkMs, checkOptionsObject } from '../api/options.js';
import { LockTable } from '../table/lock-table.js';
import { DEFAULT_NAMESPACE } from './sql.js';

export interface PgLockTableOptions extends pg.ClientConfig {
  /**
   * The first int4 of every lock (pg_advisory_lock(namespace, id)): programs that must not
   * share locks use different namespaces. Default 0x6c6f636b ('lock').
   */
  namespace?: number | undefined;
  /** How many sessions (connections) the backend opens at most. Default 10. */
  poolSize?: number | undefined;
  /**
   * ms a holder may go without talking to the server before the server ends its session and
   * frees its locks (each session's idle_session_timeout; a heartbeat runs every lease / 4 on
   * every session of the table, holding or idle). Infinity: never. Default 5000.
   */
  lease?: number | undefined;
  /** Default ms to wait for a lock (0 = one attempt, Infinity = forever). Default Infinity. */
  waitTimeout?: number | undefined;
  /**
   * pg's own option, with a default of ours: ms a new session may take to connect and be ready
   * (a server that accepts and never answers fails the request with ERR_LOCK_CONNECTION). pg's
   * default, 0, waits as long as TCP does; 0 given here keeps that. Default 10000.
   */
  connectionTimeoutMillis?: number | undefined;
  /**
   * The process's shared-memory table, in front of the server: requests of this process for one
   * key queue there, and only one of them talks to the server (the main thread creates it, each
   * worker passes `LockTable.attach(buffer)`). Default: a private table, which covers this
   * PgLockTable only. Keys must then fit its maxKeyLength less the front's prefix (frontKeyLength).
   */
  table?: LockTable | undefined;
  /**
   * Lock cohorting: most exclusive grants in a row handed among this PgLockTable's own waiters
   * for a key on one server grant, before the server lock is given back. 1 = never hand over.
   * Default 32, at most 2^12.
   */
  cohortLimit?: number | undefined;
  /** ms after the server grant after which no more hand-overs start (0 = never hand over). Default 2. */
  cohortMs?: number | undefined;
}

export interface ResolvedPgOptions {
  namespace: number;
  poolSize: number;
  lease: number;
  waitTimeout: number;
  table: LockTable | undefined;
  cohortLimit: number;
  cohortMs: number;
  client: pg.ClientConfig;
}

export const DEFAULT_COHORT_LIMIT = 32;
export const DEFAULT_COHORT_MS = 2;
/**
 * Cohort grants live in the token's low bits: token = (server token << COHORT_BITS) | i, where the
 * server token is (epoch << FENCE_BITS) | fence (sql.ts, version 2).
 */
export const COHORT_BITS = 12n;
export const MAX_COHORT_LIMIT = 2 ** 12;

export const DEFAULT_POOL_SIZE = 10;
/** A new session's connect bound unless the user gives one (pg's own default is none). */
export const DEFAULT_CONNECT_TIMEOUT = 10_000;
export const DEFAULT_LEASE = 5000;
export const MIN_LEASE = 100;
/** The largest value PostgreSQL takes for a timeout in ms (an int4). */
export const MAX_SERVER_MS = 2 ** 31 - 1;
/**
 * Longest key, in UTF-16 code units: at most 3 bytes each in UTF-8, so a key stays below
 * PostgreSQL's limit for a btree index entry (about 2,700 bytes).
 */
export const MAX_PG_KEY_LENGTH = 512;

export function resolvePgOptions(options: PgLockTableOptions | undefined): ResolvedPgOptions {
  checkOptionsObject('options', options);
  const { namespace, poolSize, lease, waitTimeout, table, cohortLimit, cohortMs, ...client } =
    options ?? {};
  client.connectionTimeoutMillis = connectTimeout(client.connectionTimeoutMillis);
  if (table !== undefined && !(table instanceof LockTable)) {
    throw invalidValue('options.table', 'must be a LockTable (or left out)', table);
  }
  const resolvedLease =
    lease === undefined ? DEFAULT_LEASE : checkMs('options.lease', lease, false);
  if (resolvedLease !== Infinity && (resolvedLease < MIN_LEASE || resolvedLease > MAX_SERVER_MS)) {
    throw invalidValue(
      'options.lease',
      `must be >= ${MIN_LEASE} and <= ${MAX_SERVER_MS} (ms), or Infinity`,
      lease,
    );
  }
  return {
    namespace:
      namespace === undefined
        ? DEFAULT_NAMESPACE
        : checkInteger('options.namespace', namespace, -(2 ** 31), 2 ** 31 - 1),
    poolSize:
      poolSize === undefined
        ? DEFAULT_POOL_SIZE
        : checkInteger('options.poolSize', poolSize, 1, 10_000),
    lease: resolvedLease,
    waitTimeout:
      waitTimeout === undefined ? Infinity : checkMs('options.waitTimeout', waitTimeout, true),
    table,
    cohortLimit:
      cohortLimit === undefined
        ? DEFAULT_COHORT_LIMIT
        : checkInteger('options.cohortLimit', cohortLimit, 1, MAX_COHORT_LIMIT),
    cohortMs:
      cohortMs === undefined ? DEFAULT_COHORT_MS : checkMs('options.cohortMs', cohortMs, true),
    client,
  };
}

/**
 * pg's connectionTimeoutMillis: ours by default; 0 and Infinity mean no bound (pg's 0), and a
 * longer bound than setTimeout takes (which would fire at once) is setTimeout's longest.
 */
function connectTimeout(value: unknown): number {
  if (value === undefined) return DEFAULT_CONNECT_TIMEOUT;
  const ms = checkMs('options.connectionTimeoutMillis', value, true);
  return ms === Infinity ? 0 : Math.min(ms, 2 ** 31 - 1);
}

/** A lone surrogate: UTF-8 cannot carry it (pg would send U+FFFD, merging distinct keys). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * A key as PostgreSQL can store it exactly: a string of at most MAX_PG_KEY_LENGTH code units,
 * well-formed UTF-16 (no lone surrogate) and without U+0000 (which text cannot hold).
 */
export function checkPgKey(name: string, key: unknown): string {
  const k = checkKey(name, key, Infinity);
  if (k.length > MAX_PG_KEY_LENGTH) {
    throw outOfRange(`${name}.length`, `<= ${MAX_PG_KEY_LENGTH} (UTF-16 code units)`, k.length);
  }
  if (k.includes('\0'))
    throw invalidValue(name, 'must not contain U+0000 (PostgreSQL text cannot)', k);
  if (LONE_SURROGATE.test(k)) {
    throw invalidValue(
      name,
      'must be well-formed UTF-16: a lone surrogate has no UTF-8 form, so two different keys would be stored as one',
      k,
    );
  }
  return k;
}
