/**
 * The quiescence guarantee, as a seeded property test: whenever no thread holds or waits for a
 * key, every thread gets it at the first attempt through every API (tryAcquire, acquireSync /
 * acquire with waitTimeout 0, exclusive and shared, one key and acquireAll(Sync)), and inspect() /
 * held() agree (nobody listed). A request that leaves - granted, timed out, aborted, refused, or
 * its thread terminated at any call - leaves nothing behind.
 *
 * In rounds, 3 workers (fixtures/quiescence-worker.ts) and the main thread run seeded random mixes
 * of every kind of request (fixtures/quiescence-mix.ts): waitTimeouts from 0 to Infinity, signals
 * aborted before the call or a few ms into it, shared and exclusive, extend, finite holds with a
 * 20 ms failTimeout, a small table where a family needs slot reuse. The main thread also calls
 * withLock (on the built package: `npm run build` first; `npm test` does; its pools' threads are
 * started before round 1), and terminates workers at random moments (mostly while they wait),
 * watched or not; fresh workers take their place.
 * Then everyone stops at a barrier (acks in shared memory) and the guarantee is checked for every
 * key, from the main thread and from a worker, once the holds of dead unwatched holders have
 * expired (deadline + failTimeout, read with inspect()). A round whose requests do not all finish
 * within their waitTimeout + 5 s is a hang, reported with what every participant is doing and
 * inspect() of the keys they wait for. On the side, holders count themselves in per key in shared
 * memory (exclusive alone; shared with no exclusive). A failure names the property (stuck try,
 * inspect disagreement, dead holder not reclaimed, hang, exclusion violation, unexpected error),
 * the key, the thread, the round and the seed, with inspect() and the slot's raw state word.
 *
 * Each family is a subtest, so a failure says which kind of request leaves something behind:
 *  - timeouts and aborts: finite waits and aborts, no terminations, no slot reuse
 *  - terminated waiters: only infinite waits (no timeouts, no aborts), workers terminated
 *  - slot reuse: a table smaller than the key set, only infinite waits (a hang shows here)
 *  - semaphores: every key a semaphore of 2 permits, with all of the above but acquireAll and
 *    withLock; a holder counts the others in, and more than 2 inside is a violation
 *  - everything: all of it at once
 *
 * LOCKTABLE_SEED replays a run; LOCKTABLE_QUIESCENCE_ROUNDS sets the rounds of every family.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { type Lease, LockTable } from '../src/index.js';
import { prng, seedFor } from './harness.js';
import {
  C_ABORTED,
  C_BUSY,
  C_EXTENDED,
  C_GRANTED,
  C_KILLED_HOLDING,
  C_KILLED_IDLE,
  C_KILLED_WAITING,
  C_OPS,
  C_RECOVERED,
  C_REFUSED,
  C_STALE,
  C_TIMEOUT,
  C_UNEXPECTED,
  C_WITHLOCK,
  C_WITHLOCK_STOPPED,
  CMD_CHECK,
  CMD_RUN,
  CTL_OPS,
  CTL_PROGRESS,
  checkKeys,
  createShared,
  delay,
  describeKey,
  settleDeadBinders,
  errorCode,
  type Failure,
  type Family,
  MAX_KEYS,
  MAX_WORKERS,
  Mix,
  type Mode,
  OP_WITHLOCK,
  P_MAIN,
  P_WITHLOCK,
  PARTICIPANTS,
  PH_HOLDING,
  PH_WAITING,
  pick,
  ST_PHASE,
  ST_SEQ,
  ST_WORDS,
  timer,
  Views,
  type WorkerData,
} from './fixtures/quiescence-mix.js';

type Api = typeof import('../src/index.js');
const dist = (await import(new URL('../dist/index.js', import.meta.url).href)) as Api;

const TASKS = new URL('./fixtures/tasks.mjs', import.meta.url);

/** A request that runs this much longer than its waitTimeout (+ execTimeout for withLock) hangs. */
const HANG_MARGIN = 5000;
const EXEC_TIMEOUT = 2000;
/** The binding mutex's lease (DESIGN.md): a binder that died unwatched holds it this long. */
const BIND_LEASE_MS = 100;
const STARTUP_MS = 30_000;
/** After a failed check: how long until the failing keys are tried once more (for the message). */
const RECHECK_MS = 1500;
/** Workers started ahead, in families that terminate workers. */
const SPARES = 2;

const FAMILIES: Family[] = [
  {
    // Bug class: a waiter that times out or is aborted leaves its announcement behind.
    name: 'timeouts and aborts',
    capacity: 12,
    keys: 6,
    maxSharedHolders: 12,
    failTimeout: 20,
    waitTimeouts: [0, 1, 2, 5, 20, 100],
    mainSyncWaitTimeouts: [0, 1, 2, 5, 20],
    withLockWaitTimeouts: [0, 1, 5, 20, 100],
    abortRate: 0.35,
    kills: 0,
    watchRate: 0,
    withLockRate: 0.15,
    weights: [2, 2.5, 3, 1.2, 1.3],
    sleepRate: 0.45,
    workers: 3,
    workerOps: 15,
    mainOps: 8,
    rounds: 24,
  },
  {
    // Bug class: a waiter whose thread is terminated leaves its announcement behind. No timeouts,
    // no aborts (the main thread's blocking calls make one attempt).
    name: 'terminated waiters',
    capacity: 12,
    keys: 4,
    maxSharedHolders: 12,
    failTimeout: 20,
    waitTimeouts: [Infinity],
    mainSyncWaitTimeouts: [0],
    withLockWaitTimeouts: [Infinity],
    abortRate: 0,
    kills: 1.5,
    watchRate: 0.5,
    withLockRate: 0.1,
    weights: [1, 3, 3, 1, 1],
    sleepRate: 0.6,
    workers: 3,
    workerOps: 15,
    mainOps: 8,
    rounds: 20,
  },
  {
    // Bug class: a sleeper on a slot that is evicted and rebound waits for another key (a hang).
    // Long rounds of mostly acquireAll with infinite waits, in a table smaller than the key set.
    name: 'slot reuse',
    capacity: 4,
    keys: 8,
    maxSharedHolders: 8,
    failTimeout: 20,
    waitTimeouts: [Infinity],
    mainSyncWaitTimeouts: [0],
    withLockWaitTimeouts: [Infinity],
    abortRate: 0,
    kills: 0,
    watchRate: 0,
    withLockRate: 0.1,
    weights: [1, 1, 2, 2, 3],
    sleepRate: 0.15,
    workers: 3,
    workerOps: 200,
    mainOps: 60,
    rounds: 8,
  },
  {
    // Bug class: a permit request that leaves (timed out, aborted, terminated) keeps a permit or
    // its starvation announcement; a dead holder's permit never comes back; more holders than
    // permits. Every key is a semaphore of 2 permits, in a table smaller than the key set; the
    // check also takes each key as a lock, so every round rebinds them (another limit).
    name: 'semaphores',
    capacity: 3,
    keys: 4,
    maxSharedHolders: 12,
    failTimeout: 20,
    waitTimeouts: [0, 1, 2, 5, 20, 100, Infinity],
    mainSyncWaitTimeouts: [0, 1, 2, 5, 20, 50],
    withLockWaitTimeouts: [0],
    abortRate: 0.3,
    kills: 1,
    watchRate: 0.5,
    withLockRate: 0,
    weights: [2, 3, 3, 0, 0],
    sleepRate: 0.4,
    workers: 3,
    permits: 2,
    workerOps: 25,
    mainOps: 12,
    rounds: 16,
  },
  {
    name: 'everything',
    capacity: 5,
    keys: 9,
    maxSharedHolders: 8,
    failTimeout: 20,
    waitTimeouts: [0, 1, 2, 5, 20, 100, Infinity],
    mainSyncWaitTimeouts: [0, 1, 2, 5, 20, 50],
    withLockWaitTimeouts: [0, 1, 5, 20, 100, Infinity],
    abortRate: 0.3,
    kills: 1,
    watchRate: 0.5,
    withLockRate: 0.12,
    weights: [2, 2.5, 3, 1.5, 1.5],
    sleepRate: 0.35,
    workers: 3,
    workerOps: 25,
    mainOps: 12,
    rounds: 16,
  },
];

/**
 * The worker fixture bundled with src/ into one self-contained JavaScript file (in a temporary
 * directory), by esbuild (the one tsup, a devDependency, brings): such a worker starts in tens of
 * ms, where one that registers tsx takes about half a second, and this test starts dozens.
 */
async function bundleWorker(): Promise<{ url: URL; dir: string }> {
  const esbuild = createRequire(import.meta.resolve('tsup'))('esbuild') as {
    build(options: Record<string, unknown>): Promise<unknown>;
  };
  const dir = await mkdtemp(join(tmpdir(), 'locktable-quiescence-'));
  const outfile = join(dir, 'worker.mjs');
  await esbuild.build({
    entryPoints: [fileURLToPath(new URL('./fixtures/quiescence-worker.ts', import.meta.url))],
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    // CommonJS packages, if any get bundled, require() Node's own modules.
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
    outfile,
    logLevel: 'silent',
  });
  return { url: pathToFileURL(outfile), dir };
}

const bundle = await bundleWorker();
const WORKER = bundle.url;
after(() => rm(bundle.dir, { recursive: true, force: true }));

const SEED = seedFor('quiescence');
const ROUNDS = process.env.LOCKTABLE_QUIESCENCE_ROUNDS;

/** A family's seed: from the run's seed and the family's name (so that filtering keeps it). */
function familySeed(name: string): number {
  let h = SEED;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x9e3779b1) >>> 0;
  return h;
}

/**
 * A withLock task that counts itself in under its key, as the participant P_WITHLOCK (the layout of
 * Views.enter), and returns a bit mask of the participants it found inside incompatibly. It runs
 * from its source text in a pool worker: self-contained.
 */
const guardedTask = (a: {
  inside: SharedArrayBuffer;
  p: number;
  k: number;
  keys: number;
  participants: number;
  shared: boolean;
}): number => {
  const f = new Int32Array(a.inside);
  const me = (a.p * a.keys + a.k) * 2 + (a.shared ? 1 : 0);
  Atomics.store(f, me, 1);
  let hits = 0;
  for (let q = 0; q < a.participants; q++) {
    if (q === a.p) continue;
    const b = (q * a.keys + a.k) * 2;
    if (Atomics.load(f, b) !== 0 || (!a.shared && Atomics.load(f, b + 1) !== 0)) hits |= 1 << q;
  }
  for (let i = 0; i < 200; i++) Atomics.load(f, me);
  Atomics.store(f, me, 0);
  return hits;
};

/** Thread ids, the last 12. */
function ids(set: Set<number>): string {
  const all = [...set];
  return all.length === 0 ? '-' : `${all.length > 12 ? '... ' : ''}${all.slice(-12).join(' ')}`;
}

/** One line per property, key and thread, with every call that failed there; then the state. */
function formatFailures(failures: Failure[]): string[] {
  const groups = new Map<string, Failure[]>();
  for (const f of failures) {
    const id = `[${f.property}] ${f.key}, ${f.who}`;
    groups.set(id, [...(groups.get(id) ?? []), f]);
  }
  return [...groups].map(
    ([id, fs]) =>
      `${id}: ${fs.map((f) => `${f.call} -> ${f.outcome}`).join(', ')}\n    ${fs.at(-1)!.state}`,
  );
}

interface Slot {
  index: number;
  worker: Worker;
  threadId: number;
  watched: boolean;
  alive: boolean;
  errors: string[];
  onCheck: ((failures: Failure[]) => void) | undefined;
}

class RoundFailure extends Error {}

/** One family: its table, workers, pool, rounds. */
class Run {
  readonly fam: Family;
  readonly seed: number;
  readonly rand: () => number;
  readonly keys: string[];
  readonly table: LockTable;
  readonly distTable: InstanceType<Api['LockTable']>;
  readonly shared = createShared();
  readonly v: Views;
  readonly pool: Piscina;
  readonly mix: Mix;
  readonly slots: (Slot | undefined)[] = [];
  readonly mainErrors: string[] = [];
  /** Thread ids of workers terminated unwatched (their holds expire by deadline). */
  readonly deadUnwatched = new Set<number>();
  readonly deadWatched = new Set<number>();
  lastUnwatchedDeath = -Infinity;
  /** What participants noted (MixOptions.note), shown with an exclusion violation. */
  readonly notes: string[] = [];
  withLockStopped = false;
  /** The workers that take part in rounds (the others are spares, or dead). */
  active: Slot[] = [];
  round = 0;
  roundAbort = new AbortController();
  /** The workers running this round: their RUN command, and their request count before it. */
  running = new Map<Slot, { seq: number; startOps: number }>();

  constructor(fam: Family, seed: number) {
    this.fam = fam;
    this.seed = seed;
    this.rand = prng(seed);
    this.keys = Array.from({ length: fam.keys }, (_, i) => `q-${i}`);
    assert.ok(fam.keys <= MAX_KEYS);
    this.table = new LockTable({
      capacity: fam.capacity,
      maxSharedHolders: fam.maxSharedHolders,
      failTimeout: fam.failTimeout,
      maxKeyLength: 8,
    });
    // withLock runs on the built package: its own handle on the same buffer (same thread).
    this.distTable = dist.LockTable.attach(this.table.buffer);
    this.v = new Views(this.shared);
    this.pool = new Piscina({ filename: TASKS.href, minThreads: 1, maxThreads: 1 });
    this.mix = new Mix({
      table: this.table,
      views: this.v,
      family: fam,
      keys: this.keys,
      p: P_MAIN,
      rand: prng((this.rand() * 2 ** 32) >>> 0),
      finiteOnly: false, // the main thread is never terminated
      isMain: true,
      report: (text) => this.mainErrors.push(text),
      note: (text) => this.notes.push(`main thread: ${text}`),
    });
  }

  // ---- workers ----

  spawn(i: number): Slot {
    const v = this.v;
    v.resetSlot(i);
    const watched = this.rand() < this.fam.watchRate;
    const data: WorkerData = {
      buffer: this.table.buffer,
      shared: this.shared,
      family: this.fam,
      keys: this.keys,
      index: i,
      seed: (this.rand() * 2 ** 32) >>> 0,
      watched,
    };
    const worker = new Worker(WORKER, { workerData: data });
    const slot: Slot = {
      index: i,
      worker,
      threadId: worker.threadId,
      watched,
      alive: true,
      errors: [],
      onCheck: undefined,
    };
    // First (before watch's own listener frees its locks): it is out of every key, and idle.
    worker.once('exit', () => {
      slot.alive = false;
      v.clearInside(i);
      v.setIdle(i);
    });
    if (watched) this.table.watch(worker);
    worker.on('message', (m: { kind: string; text?: string; failures?: Failure[] }) => {
      if (m.kind === 'error') slot.errors.push(m.text!);
      else if (m.kind === 'note') this.notes.push(`worker ${i}: ${m.text!}`);
      else if (m.kind === 'check') slot.onCheck?.(m.failures!);
    });
    worker.on('error', (error) => slot.errors.push(`worker ${i} crashed: ${error.stack}`));
    this.slots[i] = slot;
    return slot;
  }

  /**
   * Makes up to fam.workers live, ready workers active, taking spares in place of the dead ones, and
   * starts new spares in free slots; waits only until `atLeast` are active. A worker takes a few
   * hundred ms to start on a loaded machine: replacements start when a worker is terminated, and
   * join the first round that finds them ready.
   */
  async fill(atLeast: number): Promise<void> {
    this.active = this.active.filter((slot) => slot.alive);
    const spares = this.fam.kills > 0 ? SPARES : 0;
    const end = performance.now() + STARTUP_MS;
    for (;;) {
      const idle = this.slots.filter(
        (slot): slot is Slot => slot?.alive === true && !this.active.includes(slot),
      );
      for (const slot of idle) {
        if (this.active.length < this.fam.workers && this.v.acked(slot.index) >= 0)
          this.active.push(slot);
      }
      const missing = this.fam.workers - this.active.length;
      const spare = idle.filter((slot) => !this.active.includes(slot)).length;
      this.startSpares(missing + spares - spare);
      if (this.active.length >= atLeast) return;
      for (const slot of this.slots) {
        if (slot?.alive === false && slot.errors.length > 0)
          throw new Error(`worker ${slot.index} did not start: ${slot.errors.join('\n')}`);
      }
      if (performance.now() > end) throw new Error('no worker started in time');
      const progress = Atomics.load(this.v.ctrl, CTL_PROGRESS);
      const w = Atomics.waitAsync(this.v.ctrl, CTL_PROGRESS, progress, 50);
      if (w.async) await w.value;
    }
  }

  /** Starts n workers in free slots. */
  startSpares(n: number): void {
    for (let started = 0; started < n; started++) {
      let free = 0;
      while (this.slots[free]?.alive === true) free++;
      assert.ok(free < MAX_WORKERS, 'no free worker slot');
      this.spawn(free);
    }
  }

  /** Active workers that are alive. */
  live(): Slot[] {
    return this.active.filter((slot) => slot.alive);
  }

  /**
   * Terminates a worker at a random moment of this round: after a random number of its round's
   * requests (more often late), mostly once it waits (and 0-3 ms into that wait: an exclusive waiter announces itself
   * after 1 ms), else wherever it is. Its replacement starts at once, for the next round.
   */
  async terminateOne(slot: Slot): Promise<void> {
    const { v, rand } = this;
    const { startOps, seq } = this.running.get(slot)!;
    const i = slot.index;
    // Late in the round more often than early: what a dead request leaves behind then has fewer
    // requests after it that could clear it by chance before the check.
    const target = startOps + Math.floor((1 - rand() ** 2) * this.fam.workerOps);
    const untilWaiting = rand() < 0.7;
    const into = rand() * 3;
    const end = performance.now() + 200;
    const busy = () => v.acked(i) < seq && performance.now() < end;
    while (v.ops(i) < target && busy()) {
      const ops = v.ops(i);
      const w = Atomics.waitAsync(v.ctrl, v.ctl(i, CTL_OPS), ops, end - performance.now());
      if (w.async) await w.value;
    }
    const at = i * ST_WORDS + ST_SEQ;
    while (untilWaiting && busy()) {
      // Until it waits, then `into` ms more, in that same wait (else until its next wait).
      while (v.statusWord(i, ST_PHASE) !== PH_WAITING && busy()) {
        const w = Atomics.waitAsync(v.status, at, Atomics.load(v.status, at), 5);
        if (w.async) await w.value;
      }
      const seen = Atomics.load(v.status, at);
      if (v.statusWord(i, ST_PHASE) === PH_WAITING) await delay(into);
      if (v.statusWord(i, ST_PHASE) === PH_WAITING && Atomics.load(v.status, at) === seen) break;
    }
    const phase = v.statusWord(i, ST_PHASE);
    v.count(
      phase === PH_WAITING
        ? C_KILLED_WAITING
        : phase === PH_HOLDING
          ? C_KILLED_HOLDING
          : C_KILLED_IDLE,
    );
    await slot.worker.terminate();
    if (slot.watched) this.deadWatched.add(slot.threadId);
    else {
      this.deadUnwatched.add(slot.threadId);
      this.lastUnwatchedDeath = LockTable.now();
    }
    // Its replacement starts now (it joins at the next fill).
    if (this.slots.filter((s) => s?.alive === true).length < MAX_WORKERS) this.startSpares(1);
  }

  // ---- the main thread's own requests ----

  async withLockOp(): Promise<void> {
    const { v, rand, fam } = this;
    const k = Math.floor(rand() * this.keys.length);
    const key = this.keys[k]!;
    const mode: Mode = rand() < 0.35 ? 'shared' : 'exclusive';
    const waitTimeout = pick(rand, fam.withLockWaitTimeouts);
    const variant = Math.floor(rand() * 3);
    const ownPool = variant === 2 || rand() < 0.5;
    const s = this.mix.signal(this.roundAbort.signal);
    v.publish(P_MAIN, OP_WITHLOCK, mode, [k], waitTimeout, s.abort, this.round);
    v.count(C_WITHLOCK);
    const options = {
      mode,
      waitTimeout,
      execTimeout: EXEC_TIMEOUT,
      failTimeout: fam.failTimeout,
      signal: s.signal,
      ...(ownPool ? { pool: this.pool } : {}),
    };
    try {
      if (variant === 0) {
        const args = {
          inside: this.shared.inside,
          p: P_WITHLOCK,
          k,
          keys: MAX_KEYS,
          participants: PARTICIPANTS,
          shared: mode === 'shared',
        };
        const hits = await dist.withLock(this.distTable, key, guardedTask, { ...options, args });
        for (let q = 0; q < PARTICIPANTS; q++)
          if ((hits & (1 << q)) !== 0) v.violation(P_WITHLOCK, q, k, this.round);
      } else if (variant === 1) {
        await dist.withLock(this.distTable, key, { module: TASKS, name: 'quick' }, options);
      } else {
        await dist.withLock(this.distTable, key, 'quick', { ...options, pool: this.pool });
      }
      v.count(C_GRANTED);
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ERR_LOCK_TIMEOUT') v.count(C_TIMEOUT);
      else if (code === 'AbortError') {
        // Maybe stopped while it ran: its thread died inside its key.
        v.count(C_ABORTED);
        v.count(C_WITHLOCK_STOPPED);
        v.clearInside(P_WITHLOCK);
        this.withLockStopped = true;
      } else if (code === 'ERR_LOCK_TABLE_FULL') v.count(C_REFUSED);
      else {
        v.count(C_UNEXPECTED);
        this.mainErrors.push(
          `withLock(${key}) ${mode} waitTimeout ${waitTimeout}: ${(error as Error).stack}`,
        );
      }
    } finally {
      clearTimeout(s.timer);
      v.setIdle(P_MAIN);
    }
  }

  /** Terminates 0 to 2 x fam.kills workers of this round (distinct ones, each at its moment). */
  async killer(): Promise<void> {
    const victims = [...this.running.keys()];
    const kills = Math.min(victims.length, Math.floor(this.rand() * (2 * this.fam.kills + 1)));
    const chosen: Slot[] = [];
    while (chosen.length < kills) {
      const slot = pick(this.rand, victims);
      if (!chosen.includes(slot)) chosen.push(slot);
    }
    await Promise.all(chosen.map((slot) => this.terminateOne(slot)));
  }

  async mainLane(): Promise<void> {
    const { fam, rand } = this;
    const signal = this.roundAbort.signal;
    for (let n = 0; n < fam.mainOps && !signal.aborted; n++) {
      const roll = rand();
      if (roll < fam.withLockRate) await this.withLockOp();
      else await this.mix.randomOp(this.round, signal);
    }
  }

  // ---- a round ----

  /** Runs round r to its barrier; returns a hang report, or undefined. */
  async runRound(): Promise<string | undefined> {
    const v = this.v;
    Atomics.store(v.violations, 0, 0);
    v.resetExpired();
    this.withLockStopped = false;
    this.roundAbort = new AbortController();
    this.running = new Map();
    for (const slot of this.live()) {
      const i = slot.index;
      const startOps = v.ops(i);
      this.running.set(slot, { seq: v.command(i, CMD_RUN, this.round), startOps });
    }
    let laneDone = false;
    let laneError: unknown;
    const lane = Promise.all([this.mainLane(), this.killer()]).then(
      () => {
        laneDone = true;
      },
      (error: unknown) => {
        laneDone = true;
        laneError = error;
      },
    );
    for (;;) {
      if (laneError !== undefined) throw laneError;
      const waiting = [...this.running]
        .filter(([slot, { seq }]) => slot.alive && v.acked(slot.index) < seq)
        .map(([slot]) => slot.index);
      if (laneDone && waiting.length === 0) return undefined;
      // The bound first: it reads the operation's kind (Atomics.load), and publish writes the start
      // time before the kind, so the start read after it is that operation's. Read the other way,
      // a participant's first operation could pair a start of 0 with its kind: a false hang.
      const hung = [...waiting, ...(laneDone ? [] : [P_MAIN])].filter((p) => {
        const bound = v.opBound(p, HANG_MARGIN, EXEC_TIMEOUT);
        return v.elapsed(p) > bound;
      });
      if (hung.length > 0) {
        const report = this.hangReport(hung);
        this.roundAbort.abort(new Error('hang'));
        // The main thread's requests take the round's signal: they settle now.
        const bound = timer(3000);
        await Promise.race([lane, bound.done]);
        bound.cancel();
        return report;
      }
      const progress = Atomics.load(v.ctrl, CTL_PROGRESS);
      const w = Atomics.waitAsync(v.ctrl, CTL_PROGRESS, progress, 50);
      if (w.async) await Promise.race([w.value, lane]);
    }
  }

  hangReport(hung: number[]): string {
    const v = this.v;
    const name = (p: number) =>
      p === P_MAIN ? 'main thread' : `worker ${p} (thread ${this.slots[p]!.threadId})`;
    const lines = [
      `not finished within waitTimeout + ${HANG_MARGIN} ms: ${hung.map(name).join(', ')}`,
      'what each participant is doing:',
    ];
    let mask = 0;
    for (const p of [...this.live().map((slot) => slot.index), P_MAIN]) {
      lines.push(`  ${name(p)}: ${v.describe(p, this.keys)}`);
      if (hung.includes(p)) mask |= v.keyMask(p);
    }
    lines.push('the keys they wait for:');
    this.keys.forEach((key, k) => {
      if ((mask & (1 << k)) !== 0) lines.push(`  ${key}: ${describeKey(this.table, key)}`);
    });
    return lines.join('\n');
  }

  /** Exclusion violations seen this round that no expired lease or stopped task explains. */
  violations(): string[] {
    const out: string[] = [];
    for (const x of this.v.violationList()) {
      if (x.round !== this.round) continue;
      if (this.v.expiredOn(x.key)) continue; // a holder that overran its hold was reclaimed
      if ((x.p === P_WITHLOCK || x.q === P_WITHLOCK) && this.withLockStopped) continue;
      const who = (p: number) =>
        p === P_MAIN ? 'main thread' : p === P_WITHLOCK ? 'a withLock task' : `worker ${p}`;
      out.push(
        x.p === x.q
          ? `${this.keys[x.key]}: ${who(x.p)} found ${this.fam.permits} other permit holders inside`
          : `${this.keys[x.key]}: ${who(x.p)} found ${who(x.q)} inside incompatibly`,
      );
    }
    return out;
  }

  /**
   * Dead unwatched holders: wait until their holds have expired (deadline + failTimeout, read with
   * inspect()) and a binding mutex they may have held has too, then reclaim each such key once.
   * Any other holder at the barrier is a failure.
   */
  async settleDeadHolders(): Promise<Failure[]> {
    const failures: Failure[] = [];
    const { table, fam } = this;
    let until = this.lastUnwatchedDeath + BIND_LEASE_MS + fam.failTimeout;
    const deadKeys: string[] = [];
    for (const key of this.keys) {
      const info = table.inspect(key);
      if (info === null) continue;
      let dead = false;
      for (const h of info.holders) {
        if (this.deadUnwatched.has(h.threadId) && h.deadline !== Infinity) {
          dead = true;
          until = Math.max(until, h.deadline + fam.failTimeout);
        } else {
          const whose = this.deadWatched.has(h.threadId)
            ? 'a watched worker that was terminated'
            : this.deadUnwatched.has(h.threadId)
              ? 'an unwatched dead worker, with no deadline'
              : 'a live thread';
          failures.push({
            property: 'inspect disagreement',
            key,
            who: 'main thread',
            call: 'inspect() at the barrier',
            outcome: `names thread ${h.threadId}, ${whose}`,
            state: describeKey(table, key),
          });
        }
      }
      if (dead) deadKeys.push(key);
    }
    while (LockTable.now() <= until) await delay(Math.min(50, until - LockTable.now() + 1));
    const quarantined = await settleDeadBinders(table, this.deadUnwatched);
    if (quarantined !== '')
      console.log(`# a dead binder's slot was quarantined (round ${this.round}): ${quarantined}`);
    // A semaphore family's keys are reclaimed by a permit request (a lock's would be refused).
    const permits = fam.permits;
    const sem = (key: string) =>
      permits === undefined ? undefined : table.semaphore(key, permits);
    for (const key of deadKeys) {
      const semaphore = sem(key);
      if (semaphore !== undefined) {
        // Every permit at once: the request that finds the group full reclaims the dead ones (a
        // request that finds a permit free needs no reclaim, and leaves the dead holder listed).
        const taken: Lease[] = [];
        for (let i = 0; i < permits!; i++) {
          const lease =
            semaphore.tryAcquire() ??
            (await semaphore
              .acquire({ waitTimeout: Math.max(fam.failTimeout, 1000) + 1000 })
              .catch(() => null));
          if (lease !== null) taken.push(lease);
        }
        for (const lease of taken) lease.release();
        if (taken.length < permits!) {
          failures.push({
            property: 'dead holder not reclaimed',
            key,
            who: 'main thread',
            call: `${permits} permits past the dead holders' deadline + failTimeout`,
            outcome: `${taken.length} granted`,
            state: describeKey(table, key),
          });
        }
        continue;
      }
      let lease = table.tryAcquire(key);
      if (lease === null) {
        // A thread that died inside a shared grant or release (between its count and its record's
        // next step) is recovered by another rule: its record is taken over once a waiter has
        // seen it stuck for max(failTimeout, 1 s) (README, Non-guarantees). Wait for that, with a
        // bound, and say so.
        const stuckMs = Math.max(fam.failTimeout, 1000);
        try {
          lease = await table.acquire(key, { waitTimeout: stuckMs + 1000 });
          console.log(
            `# ${key}: a dead holder's stuck record was taken over (round ${this.round})`,
          );
        } catch {
          lease = null;
        }
      }
      if (lease === null) {
        failures.push({
          property: 'dead holder not reclaimed',
          key,
          who: 'main thread',
          call: "tryAcquire past the dead holders' deadline + failTimeout, then a wait of 1 s + 1 s",
          outcome: 'null',
          state: describeKey(table, key),
        });
      } else lease.release();
    }
    return failures;
  }

  /** The check from worker i. */
  async checkFrom(slot: Slot): Promise<Failure[]> {
    const i = slot.index;
    const got = new Promise<Failure[]>((resolve) => (slot.onCheck = resolve));
    this.v.command(i, CMD_CHECK, this.round);
    const bound = timer(HANG_MARGIN);
    const timeout = bound.done.then((): Failure[] => [
      {
        property: 'hang',
        key: '-',
        who: `worker ${i}`,
        call: 'the check (waitTimeout 0 everywhere)',
        outcome: `not done in ${HANG_MARGIN} ms`,
        state: this.v.describe(i, this.keys),
      },
    ]);
    try {
      return await Promise.race([got, timeout]);
    } finally {
      bound.cancel();
      slot.onCheck = undefined;
    }
  }

  /**
   * For the failure message: is each failing key still stuck RECHECK_MS later (a state that nothing
   * recovers), or free again (recovered by some timeout of the core)?
   */
  async recheck(failures: Failure[]): Promise<string> {
    await delay(RECHECK_MS);
    const keys = [...new Set(failures.map((f) => f.key))].filter((k) => this.keys.includes(k));
    const states = keys.map((key) => {
      const lease = this.table.tryAcquire(key);
      lease?.release();
      return `${key} ${lease === null ? 'still stuck' : 'free'}`;
    });
    return `${RECHECK_MS} ms later, tryAcquire from the main thread: ${states.join(', ')}`;
  }

  fail(property: string, lines: string[]): never {
    throw new RoundFailure(
      `quiescence "${this.fam.name}": ${property}, round ${this.round} of ${this.fam.rounds}, ` +
        `seed ${SEED} (replay with LOCKTABLE_SEED=${SEED}; family seed ${this.seed})\n` +
        lines.slice(0, 24).join('\n') +
        (lines.length > 24 ? `\n... and ${lines.length - 24} more` : '') +
        `\n${this.summary()}`,
    );
  }

  summary(): string {
    const c = (i: number) => this.v.counter(i);
    return (
      `requests ${c(C_OPS) + c(C_WITHLOCK)} (withLock ${c(C_WITHLOCK)}): granted ${c(C_GRANTED)}, ` +
      `try busy ${c(C_BUSY)}, timed out ${c(C_TIMEOUT)}, aborted ${c(C_ABORTED)}, ` +
      `refused ${c(C_REFUSED)}, recovered ${c(C_RECOVERED)}, extended ${c(C_EXTENDED)}, ` +
      `stale ${c(C_STALE)}, withLock aborted ${c(C_WITHLOCK_STOPPED)}; terminated while waiting ` +
      `${c(C_KILLED_WAITING)}, holding ${c(C_KILLED_HOLDING)}, between requests ${c(C_KILLED_IDLE)}` +
      (this.deadWatched.size + this.deadUnwatched.size === 0
        ? ''
        : ` (dead threads: watched ${ids(this.deadWatched)}; unwatched ${ids(this.deadUnwatched)})`)
    );
  }

  errors(): string[] {
    const out = [...this.mainErrors.map((e) => `main thread: ${e}`)];
    this.slots.forEach((s, i) => s?.errors.forEach((e) => out.push(`worker ${i}: ${e}`)));
    return out;
  }

  /**
   * Starts the threads of both pools withLock uses here (this.pool, and the main thread's default
   * pool, which its first call creates) before round 1, outside the hang check: a thread's
   * start-up is not a request of the property, yet a call waits for it QUEUED, under its lock.
   * Pool threads inherit this process's `--import tsx`, which makes their start-up slow: 165 ms
   * of CPU against 57 without, and about 150 ms blocked (neither running nor runnable) against
   * 15 (load 11). At load 20 the first withLock call of round 1 (seed 86419032) waited 7-12 s
   * for the default pool's thread (one reached the runner after 198 ms on a CPU, 6.3 s on a run
   * queue, the rest blocked), past its waitTimeout + execTimeout + HANG_MARGIN: a hang report,
   * though the thread then ran the task. Two shared calls on the default pool at once, so that
   * both its threads have started.
   */
  async warmPools(): Promise<void> {
    const key = this.keys[0]!;
    const options = { mode: 'shared' as const, waitTimeout: 0, execTimeout: EXEC_TIMEOUT };
    const bound = timer(STARTUP_MS);
    try {
      const started = await Promise.race([
        Promise.all([
          dist.withLock(this.distTable, key, 'quick', { ...options, pool: this.pool }),
          dist.withLock(this.distTable, key, { module: TASKS, name: 'quick' }, options),
          dist.withLock(this.distTable, key, { module: TASKS, name: 'quick' }, options),
        ]).then(() => true),
        bound.done.then(() => false),
      ]);
      if (!started) throw new Error(`withLock's pool threads did not start in ${STARTUP_MS} ms`);
    } finally {
      bound.cancel();
    }
  }

  async run(): Promise<void> {
    const rounds = ROUNDS === undefined ? this.fam.rounds : Number(ROUNDS);
    if (this.fam.withLockRate > 0) await this.warmPools();
    for (this.round = 1; this.round <= rounds; this.round++) {
      await this.fill(this.fam.workers - (this.round === 1 ? 0 : 1));
      const hang = await this.runRound();
      if (hang !== undefined) this.fail('hang', [hang]);
      const errors = this.errors();
      if (errors.length > 0) this.fail('unexpected error', errors);
      const violations = this.violations();
      if (violations.length > 0) {
        // The participants' reports of what they saw (posted before their acks, maybe delivered
        // after them).
        await delay(100);
        const notes = this.notes.filter((n) => n.includes(`round ${this.round}:`));
        this.fail('exclusion violation', [...violations, ...notes]);
      }
      // A worker for the check from another thread.
      await this.fill(1);
      const failures = await this.settleDeadHolders();
      const keys = this.v.byRecentUse(this.keys);
      failures.push(...(await checkKeys(this.table, keys, 'main thread', this.fam)));
      failures.push(...(await this.checkFrom(pick(this.rand, this.live()))));
      if (failures.length > 0) {
        const first = failures[0]!;
        const later = await this.recheck(failures);
        this.fail(`${first.property} on ${first.key}`, [...formatFailures(failures), later]);
      }
    }
    console.log(`# quiescence "${this.fam.name}": ${rounds} rounds; ${this.summary()}`);
  }

  async close(): Promise<void> {
    this.roundAbort.abort(new Error('closing'));
    await Promise.all(this.slots.map((s) => s?.worker.terminate()));
    await this.pool.destroy();
  }
}

describe('quiescence: a key nobody holds or waits for is free for everyone at once', () => {
  for (const fam of FAMILIES) {
    test(fam.name, async () => {
      const run = new Run(fam, familySeed(fam.name));
      try {
        await run.run();
      } finally {
        await run.close();
      }
    });
  }
});
