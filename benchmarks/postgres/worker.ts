/**
 * One benchmark process of `npm run bench:postgres` (forked by run.ts, one per configuration and
 * run; four per run of the cross-process scenario). It connects its clients, says `ready`, waits
 * for `go`, runs its scenario for the measured window and sends back one `result`.
 *
 * Every critical section is a deliberately non-atomic read-modify-write that only the lock keeps
 * whole: within a process a counter in a SharedArrayBuffer read, an await, then written; across
 * processes a counter row read with one statement and written with another. The parent compares
 * the counter with the sections counted to find lost updates.
 */
import process from 'node:process';
import { median } from '../stats.js';
import pg from 'pg';
import {
  PAIRED_CHUNK_MS,
  type PeerName,
  type ScenarioName,
  type WorkerResult,
  type WorkerTask,
} from './types.js';
import { ACQUIRE, fastGrant, releaseStatement } from '../../src/postgres/sql.js';

type PgModule = typeof import('../../src/postgres/index.js');
type PgLockTable = import('../../src/postgres/index.js').PgLockTable;

const specifier = 'locktable/postgres';
const { PgLockTable } = (await import(specifier)) as PgModule;

interface Release {
  (): Promise<void>;
}

/** One lock client: acquire a key (the same key every time) and get back its release. */
interface LockClient {
  acquire(): Promise<Release>;
  close(): Promise<void>;
}

const now = (): number => performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The raw baseline's key: computed once per client, outside the measured loop. */
function rawKey(key: string): string {
  let h = 0n;
  for (const c of Buffer.from(key)) h = (h * 131n + BigInt(c)) & 0x7fffffffffffffffn;
  return h.toString();
}

/** A raw client: one dedicated pg.Client, named prepared statements. */
async function rawClient(url: string, key: string): Promise<LockClient> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const id = rawKey(key);
  const lock = { name: 'bench_lock', text: 'SELECT pg_advisory_lock($1)', values: [id] };
  const unlock = { name: 'bench_unlock', text: 'SELECT pg_advisory_unlock($1)', values: [id] };
  const release: Release = async () => {
    await client.query(unlock);
  };
  return {
    async acquire() {
      await client.query(lock);
      return release;
    },
    close: () => client.end(),
  };
}

/**
 * locktable's streaks: the grants of one server grant (token = (server token << 12) | i) and how
 * long this process kept the server lock for them, from the first grant to the last release.
 */
const streaks = new Map<bigint, { start: number; end: number; sections: number }>();

/**
 * locktable: the callers of one process share one PgLockTable (and so its front). With
 * `trackStreaks` (the cross-process scenario, the only one that reports them), each grant is
 * counted in its streak; elsewhere that bookkeeping (a Map keyed by a bigint, an entry per server
 * grant) would be charged to locktable alone, and it was not small against a round trip.
 */
function locktableClient(locks: PgLockTable, key: string, trackStreaks = false): LockClient {
  return {
    async acquire() {
      const lease = await locks.acquire(key);
      if (!trackStreaks) return () => lease.release();
      const fence = lease.token >> 12n;
      let streak = streaks.get(fence);
      if (streak === undefined) {
        streak = { start: now(), end: 0, sections: 0 };
        streaks.set(fence, streak);
      }
      const s = streak;
      return async () => {
        await lease.release();
        s.end = now();
        s.sections++;
      };
    },
    close: async () => {},
  };
}

/**
 * locktable's statements sent by hand on one pg.Client, as PgLockTable sends them for a key it
 * has granted before: the grant (fastGrant, a wait forever) and the release (releaseStatement),
 * on a session set up as SESSION_START sets one. The server's
 * part of a locktable grant without its client (front table, sessions, leases, heartbeat): the gap
 * between this peer and `raw` is the server's, the gap between `locktable` and this peer the
 * client's.
 */
async function statementsClient(url: string, namespace: number, key: string): Promise<LockClient> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const marker = 'locktable:bench';
  // As SESSION_START sets a lock session up: an idle_session_timeout (the server arms its timer
  // whenever the session goes idle; a minute, not the lease, since this client sends no
  // heartbeat while it waits for the run to start) and synchronous_commit off.
  await client.query(
    "SELECT set_config('lock_timeout', '0', false), set_config('locktable.session', $1, false), " +
      "set_config('idle_session_timeout', '60000', false), set_config('synchronous_commit', 'off', false)",
    [marker],
  );
  // The first grant learns the key's id (and makes sure of the token epoch), as PgLockTable's.
  const { rows } = await client.query<{ lock_id: number }>(ACQUIRE.text, [
    namespace,
    key,
    true,
    0,
    0,
    marker,
  ]);
  const id = rows[0]!.lock_id;
  await client.query('SELECT pg_advisory_unlock($1::int4, $2::int4)', [namespace, id]);
  const grant = { ...fastGrant('forever', true), values: [namespace, id, marker] };
  const release = { ...releaseStatement(true), values: [namespace, id, marker] };
  return {
    async acquire() {
      await client.query(grant);
      return async () => {
        await client.query(release);
      };
    },
    close: () => client.end(),
  };
}

interface AdvisoryMutex {
  lock(): Promise<() => Promise<void>>;
}
type CreateMutex = (name: string) => AdvisoryMutex;

async function advisoryClient(url: string, key: string): Promise<LockClient> {
  // Its README's `import advisoryLock from 'advisory-lock'` does not give the function: `.default`.
  const mod = (await import('advisory-lock')) as unknown as {
    default: { default: (url: string) => CreateMutex };
  };
  const mutex = mod.default.default(url)(key);
  return {
    async acquire() {
      return mutex.lock();
    },
    close: async () => {},
  };
}

/** The negative control: no lock at all (its sections must lose updates). */
const noLock: LockClient = {
  acquire: async () => async () => {},
  close: async () => {},
};

async function makeClients(task: WorkerTask, count: number): Promise<LockClient[]> {
  const out: LockClient[] = [];
  if (task.peer === 'none') return Array.from({ length: count }, () => noLock);
  if (task.peer === 'locktable') {
    const locks = new PgLockTable({ connectionString: task.url, namespace: task.namespace });
    shared.push(locks);
    for (let i = 0; i < count; i++) {
      out.push(locktableClient(locks, task.key, task.scenario === 'processes'));
    }
    return out;
  }
  for (let i = 0; i < count; i++) {
    out.push(
      task.peer === 'raw'
        ? await rawClient(task.url, task.key)
        : task.peer === 'statements'
          ? await statementsClient(task.url, task.namespace, task.key)
          : await advisoryClient(task.url, task.key),
    );
  }
  return out;
}

const shared: PgLockTable[] = [];

function message(m: Record<string, unknown>): void {
  process.send?.(m);
}

function waitForGo(): Promise<number> {
  return new Promise((resolve) => {
    process.on('message', (m: { go?: number }) => {
      if (typeof m.go === 'number') resolve(m.go);
    });
  });
}

/** Sleeps until the wall-clock time `at` (ms since the epoch), shared by every process. */
async function until(at: number): Promise<void> {
  const left = at - (performance.timeOrigin + now());
  if (left > 0) await sleep(left);
}

/** Clients loop acquire, section, release until `end`; counts sections and acquire waits. */
async function loop(
  clients: LockClient[],
  end: number,
  section: (client: number) => Promise<void>,
): Promise<{ sections: number[]; waits: number[]; elapsed: number }> {
  const sections = clients.map(() => 0);
  const waits: number[] = [];
  const start = now();
  await Promise.all(
    clients.map(async (c, i) => {
      while (now() < end) {
        const t = now();
        const release = await c.acquire();
        waits.push(now() - t);
        try {
          await section(i);
        } finally {
          await release();
        }
        sections[i]!++;
      }
    }),
  );
  return { sections, waits, elapsed: now() - start };
}

async function main(): Promise<void> {
  const task = JSON.parse(process.argv[2]!) as WorkerTask;
  const counter = new Int32Array(new SharedArrayBuffer(4));
  const local = async (): Promise<void> => {
    const v = counter[0]!;
    await null; // any other caller of this process may run here: only the lock keeps v current
    counter[0] = v + 1;
  };
  const scenario: ScenarioName = task.scenario;
  const peer: PeerName = task.peer;
  let result: WorkerResult;
  if (scenario === 'handoff' || scenario === 'handoff-paired') {
    result = await handoff(task);
  } else if (scenario === 'paired') {
    result = await paired(task, local, counter);
  } else {
    const clients = await makeClients(task, task.clients);
    let data: pg.Client[] = [];
    let section: (i: number) => Promise<void> = local;
    if (scenario === 'processes') {
      data = await Promise.all(
        clients.map(async () => {
          const c = new pg.Client({ connectionString: task.url });
          await c.connect();
          return c;
        }),
      );
      const read = { name: 'read', text: `SELECT v FROM ${task.table} WHERE id = 1` };
      const write = `UPDATE ${task.table} SET v = $1 WHERE id = 1`;
      section = async (i) => {
        const c = data[i]!;
        const v = (await c.query<{ v: number }>(read)).rows[0]!.v;
        await c.query({ name: 'write', text: write, values: [v + 1] });
      };
    }
    // Warm-up: connections, prepared statements, the locktable schema and sessions.
    await loop(clients, now() + task.warmupMs, local);
    counter[0] = 0;
    streaks.clear();
    const before = shared[0]?.stats;
    message({ ready: true });
    const go = await waitForGo();
    await until(go);
    const run = await loop(clients, now() + task.ms, section);
    result = {
      peer,
      scenario,
      sections: run.sections,
      elapsedMs: run.elapsed,
      counter: counter[0]!,
      waits: summarizeWaits(run.waits),
      stats: delta(before, shared[0]?.stats),
      streaks: summarizeStreaks(),
    };
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(data.map((c) => c.end()));
  }
  for (const locks of shared) await locks.close();
  message({ result });
  process.disconnect?.();
}

/** The front's counts over the measured window only. */
function delta(a: WorkerResult['stats'], b: WorkerResult['stats']): WorkerResult['stats'] {
  if (a === undefined || b === undefined) return undefined;
  return { serverGrants: b.serverGrants - a.serverGrants, handoffs: b.handoffs - a.handoffs };
}

function summarizeStreaks(): WorkerResult['streaks'] {
  if (streaks.size === 0) return undefined;
  const done = [...streaks.values()].filter((s) => s.sections > 0);
  const ms = done.map((s) => s.end - s.start).sort((a, b) => a - b);
  return {
    count: done.length,
    p99Ms: ms[Math.min(ms.length - 1, Math.floor(0.99 * ms.length))] ?? NaN,
    maxMs: ms[ms.length - 1] ?? NaN,
    maxSections: Math.max(0, ...done.map((s) => s.sections)),
  };
}

function summarizeWaits(waits: number[]): { p50: number; p99: number; max: number } {
  const sorted = waits.sort((a, b) => a - b);
  const at = (q: number): number =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN };
}

/**
 * The paired uncontended measure: raw, statements and locktable (one client each, one key each
 * in its own lock space) in this one process, warmed up together, then in chunks of
 * PAIRED_CHUNK_MS, one of each per triple, in an order that rotates; each triple gives the
 * ratios locktable / raw and statements / raw of its chunks' rates, and the result is their
 * medians.
 */
async function paired(
  task: WorkerTask,
  section: () => Promise<void>,
  counter: Int32Array,
): Promise<WorkerResult> {
  const locks = new PgLockTable({ connectionString: task.url, namespace: task.namespace });
  shared.push(locks);
  const clients = [
    await rawClient(task.url, task.key),
    await statementsClient(task.url, task.namespace, `${task.key}:statements`),
    locktableClient(locks, task.key),
  ];
  const one = async (c: LockClient): Promise<void> => {
    const release = await c.acquire();
    try {
      await section();
    } finally {
      await release();
    }
  };
  const warmEnd = now() + task.warmupMs;
  while (now() < warmEnd) for (const c of clients) await one(c);
  counter[0] = 0;
  streaks.clear();
  message({ ready: true });
  await until(await waitForGo());
  const lt: number[] = [];
  const st: number[] = [];
  let sections = 0;
  const triples = Math.max(1, Math.floor(task.ms / (3 * PAIRED_CHUNK_MS)));
  for (let t = 0; t < triples; t++) {
    const rate = [0, 0, 0];
    for (let k = 0; k < 3; k++) {
      const i = (t + k) % 3;
      let n = 0;
      const start = now();
      const end = start + PAIRED_CHUNK_MS;
      while (now() < end) {
        await one(clients[i]!);
        n++;
      }
      rate[i] = n / (now() - start);
      sections += n;
    }
    lt.push(rate[2]! / rate[0]!);
    st.push(rate[1]! / rate[0]!);
  }
  await Promise.all(clients.map((c) => c.close()));
  return {
    peer: task.peer,
    scenario: 'paired',
    sections: [sections],
    elapsedMs: task.ms,
    counter: counter[0]!,
    paired: { locktable: median(lt), statements: median(st), triples },
  };
}

/** A lock request waiting on the server (runs are sequential: it is this process's waiter). */
const WAITING = {
  name: 'waiting',
  text: "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted LIMIT 1",
};

/**
 * Two clients of one peer that hand one key back and forth: the holder holds (`release`), the
 * waiter asks and waits on the server. locktable: two PgLockTables, each with its own front, so
 * that the waiter really waits on the server.
 */
interface HandoffPair {
  holder: LockClient;
  waiter: LockClient;
  release: Release;
  close(): Promise<void>;
}

async function handoffPair(task: WorkerTask, peer: PeerName, key: string): Promise<HandoffPair> {
  let a: LockClient;
  let b: LockClient;
  if (peer === 'locktable') {
    const la = new PgLockTable({ connectionString: task.url, namespace: task.namespace });
    const lb = new PgLockTable({ connectionString: task.url, namespace: task.namespace });
    shared.push(la, lb);
    a = locktableClient(la, key);
    b = locktableClient(lb, key);
  } else {
    a = (await makeClients({ ...task, peer, key }, 1))[0]!;
    b = (await makeClients({ ...task, peer, key }, 1))[0]!;
  }
  // Warm-up, as the other scenarios have: the same clients' acquire + release, uncontended, so
  // that the JIT has compiled the path before the (few hundred) measured handoffs.
  const warmEnd = now() + task.warmupMs;
  while (now() < warmEnd) {
    await (
      await a.acquire()
    )();
    await (
      await b.acquire()
    )();
  }
  return {
    holder: a,
    waiter: b,
    release: await a.acquire(),
    close: async () => {
      await a.close();
      await b.close();
    },
  };
}

/** What handoffs count across pairs: sections (the counter is the check), and early grants. */
interface HandoffTally {
  counter: Int32Array;
  sections: number;
  /** Grants seen before the holder's release was sent (must be 0). */
  unsafe: number;
}

/**
 * One handoff on `pair`: the waiter asks; once the server shows it waiting (then handoffGapMs
 * later) the holder ends its section and releases. Returns the µs from the release call to the
 * waiter's grant, on one clock; the roles swap.
 */
async function handoffOnce(
  task: WorkerTask,
  pair: HandoffPair,
  probe: pg.Client,
  tally: HandoffTally,
): Promise<number> {
  let grantedAt = 0;
  const granted = pair.waiter.acquire().then((r) => {
    grantedAt = now();
    return r;
  });
  // Until the server shows the waiter's lock request waiting (then a little longer).
  const deadline = now() + 5000;
  while ((await probe.query(WAITING)).rowCount === 0) {
    if (now() > deadline) throw new Error('the waiter never waited on the server');
    await sleep(1);
  }
  await sleep(task.handoffGapMs);
  const v = tally.counter[0]!;
  tally.counter[0] = v + 1;
  tally.sections++;
  if (grantedAt !== 0) tally.unsafe++; // granted while the holder still held it
  const t0 = now();
  await pair.release();
  pair.release = await granted;
  [pair.holder, pair.waiter] = [pair.waiter, pair.holder];
  return (grantedAt - t0) * 1000;
}

/** The holder's last section and release, then both clients close. */
async function endPair(pair: HandoffPair, tally: HandoffTally): Promise<void> {
  tally.counter[0] = tally.counter[0]! + 1;
  tally.sections++;
  await pair.release();
  await pair.close();
}

/** Handoffs measured before the first sample is kept (each pair's first ones run colder). */
const HANDOFF_SKIP = 3;

/**
 * Rounds of one handoff on each of `pairs`, in an order that rotates, for the measured window
 * (at least HANDOFF_SKIP + 7 rounds); then each pair's holder ends its section. Returns each
 * pair's samples (µs, the first HANDOFF_SKIP rounds left out) and the tally.
 */
async function handoffRounds(
  task: WorkerTask,
  pairs: HandoffPair[],
): Promise<{ samples: number[][]; tally: HandoffTally }> {
  const probe = new pg.Client({ connectionString: task.url });
  await probe.connect();
  const tally: HandoffTally = {
    counter: new Int32Array(new SharedArrayBuffer(4)),
    sections: 0,
    unsafe: 0,
  };
  const samples: number[][] = pairs.map(() => []);
  message({ ready: true });
  await until(await waitForGo());
  const end = now() + task.ms;
  for (let round = 0; now() < end || round < HANDOFF_SKIP + 7; round++) {
    for (let k = 0; k < pairs.length; k++) {
      const i = (round + k) % pairs.length;
      const us = await handoffOnce(task, pairs[i]!, probe, tally);
      if (round >= HANDOFF_SKIP) samples[i]!.push(us);
    }
  }
  for (const pair of pairs) await endPair(pair, tally);
  await probe.end();
  return { samples, tally };
}

/**
 * Handoff: one pair of task.peer's clients, handing off for the measured window. handoff-paired: a
 * pair each of raw, statements and locktable (each on a key of its own) in this one process, one
 * handoff of each per round, in an order that rotates; the result is each peer's p50 over the run
 * and the median over rounds of its handoff's ratio to raw's in the same round. Separate processes of this VM land in faster or slower
 * modes (a run of one peer's handoffs read from 260 to 564 µs in one full run), which the ratio
 * of adjacent handoffs cancels.
 */
async function handoff(task: WorkerTask): Promise<WorkerResult> {
  const paired = task.scenario === 'handoff-paired';
  const peers: PeerName[] = paired ? ['raw', 'statements', 'locktable'] : [task.peer];
  const pairs: HandoffPair[] = [];
  for (const peer of peers) {
    pairs.push(await handoffPair(task, peer, paired ? `${task.key}:${peer}` : task.key));
  }
  const { samples, tally } = await handoffRounds(task, pairs);
  const [raw, statements, locktable] = samples.map((s) => median(s));
  // Each round's ratio to raw's handoff of the same round, then their median (as `paired`).
  const ratio = (i: number) => median(samples[i]!.map((us, round) => us / samples[0]![round]!));
  return {
    peer: task.peer,
    scenario: task.scenario,
    sections: [tally.sections],
    elapsedMs: task.ms,
    counter: tally.counter[0]!,
    // The single peer's, or locktable's.
    handoffUs: samples[samples.length - 1]!.sort((x, y) => x - y),
    unsafe: tally.unsafe,
    pairedHandoff: paired
      ? {
          rawUs: raw!,
          statementsUs: statements!,
          locktableUs: locktable!,
          locktable: ratio(2),
          statements: ratio(1),
          rounds: samples[0]!.length,
        }
      : undefined,
  };
}

await main();
