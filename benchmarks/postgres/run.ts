/**
 * `npm run bench:postgres [-- options]`: PgLockTable (locktable/postgres, with its shared table in
 * front) beside raw session advisory locks through `pg` (the honest baseline) and npm
 * `advisory-lock`, on the same server in the same run. Starts a throwaway cluster
 * (test/postgres/cluster.mjs) or uses DATABASE_URL. Each configuration runs in fresh processes,
 * several runs, interleaved (run 1 of every configuration, then run 2, ...), medians with ranges.
 * Writes benchmarks/results/postgres/results.md and results.json. Exits 1 when raw or locktable
 * lost an update, granted unsafely, hung or crashed, or when the negative control (no lock) lost
 * none; a peer that does is reported BROKEN.
 */
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import process from 'node:process';
import pg from 'pg';
import { BENCHMARKS_DIR } from '../paths.js';
import { machineInfo } from '../report.js';
import { fairness, median, spread, type Spread } from '../stats.js';
import {
  PAIRED_CHUNK_MS,
  type PeerName,
  type ScenarioName,
  type WorkerResult,
  type WorkerTask,
} from './types.js';

const USAGE = `npm run bench:postgres [-- options]
  --runs N          runs of each configuration (default 3)
  --ms N            measured window per run, ms (default 2000)
  --quick           1 run of 500 ms: a smoke test (writes benchmarks/results/postgres-quick/)
  --only a,b        scenarios: uncontended, paired, hot-key, processes, handoff, handoff-paired
                    (a narrowed run writes benchmarks/results/postgres-partial/)
  --peers a,b       peers: raw, statements (locktable's SQL sent by hand: its server side),
                    locktable, advisory-lock, none (no lock: the negative control, in hot-key
                    and processes only; it must lose updates)
  --fsync on|off    the throwaway cluster's fsync (default on, as on a real server: a flushed
                    commit then costs a disk flush)
  DATABASE_URL      use this server instead of a throwaway cluster`;

const SCENARIOS: ScenarioName[] = [
  'uncontended',
  'paired',
  'hot-key',
  'processes',
  'handoff',
  'handoff-paired',
];
/** The scenarios where one process runs raw, statements and locktable (the locktable peer's run). */
const PAIRED: ScenarioName[] = ['paired', 'handoff-paired'];
const PEERS: PeerName[] = ['raw', 'statements', 'locktable', 'advisory-lock', 'none'];
/** The scenarios where the negative control runs (it has no waiter to hand off to). */
const CONTROLLED: ScenarioName[] = ['hot-key', 'processes'];
const peersOf = (o: Options, s: ScenarioName): PeerName[] =>
  PAIRED.includes(s)
    ? o.peers.filter((p) => p === 'locktable') // one process runs raw, statements and locktable
    : o.peers.filter((p) => p !== 'none' || CONTROLLED.includes(s));
const TITLES: Record<ScenarioName, string> = {
  uncontended: 'Uncontended acquire + release, one client',
  paired: 'Uncontended, paired: raw, statements and locktable in one process, alternating chunks',
  'hot-key': 'One hot key, 8 clients in one process',
  processes: 'One hot key, 4 processes x 2 clients',
  handoff: 'Handoff: release -> grant of a waiter waiting on the server',
  'handoff-paired':
    'Handoff, paired: raw, statements and locktable in one process, one handoff of each per round',
};
const PROCESSES = 4;

interface Options {
  runs: number;
  ms: number;
  quick: boolean;
  scenarios: ScenarioName[];
  peers: PeerName[];
  /** --only or --peers narrowed the run: its results go apart from the full run's. */
  filtered: boolean;
  fsync: boolean;
}

function parse(argv: string[]): Options {
  const o: Options = {
    runs: 3,
    ms: 2000,
    quick: false,
    scenarios: SCENARIOS,
    peers: PEERS,
    filtered: false,
    fsync: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n\n${USAGE}`);
      return v;
    };
    if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else if (a === '--runs') o.runs = Number(next());
    else if (a === '--ms') o.ms = Number(next());
    else if (a === '--quick') {
      o.quick = true;
      o.runs = 1;
      o.ms = 500;
    } else if (a === '--only') {
      o.scenarios = next().split(',') as ScenarioName[];
      o.filtered = true;
    } else if (a === '--peers') {
      o.peers = next().split(',') as PeerName[];
      o.filtered = true;
    } else if (a === '--fsync') {
      const v = next();
      if (v !== 'on' && v !== 'off') throw new Error(`--fsync takes on or off, got ${v}`);
      o.fsync = v === 'on';
    } else throw new Error(`unknown option ${a}\n\n${USAGE}`);
  }
  for (const s of o.scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}`);
  for (const p of o.peers) if (!PEERS.includes(p)) throw new Error(`unknown peer ${p}`);
  if (!o.peers.includes('raw')) o.peers = ['raw', ...o.peers]; // every ratio is against raw
  return o;
}

/** One run of one configuration. */
interface RunRecord {
  scenario: ScenarioName;
  peer: PeerName;
  run: number;
  /** sections/s (loops) or handoff p50 µs. */
  value: number;
  lost: number;
  error?: string;
  perProcess?: number[];
  fairness?: number;
  waits?: { p50: number; p99: number; max: number } | undefined;
  stats?: { serverGrants: number; handoffs: number } | undefined;
  /** paired, handoff-paired: statements / raw (value holds locktable / raw). */
  pairedStatements?: number;
  results: WorkerResult[];
}

const log = (line: string): void => void process.stderr.write(`${line}\n`);
const fmtRate = (v: number): string =>
  v >= 1e6
    ? `${(v / 1e6).toPrecision(3)}M/s`
    : v >= 1000
      ? `${(v / 1000).toPrecision(3)}k/s`
      : `${v.toPrecision(3)}/s`;
const fmtUs = (v: number): string =>
  v >= 1000 ? `${(v / 1000).toPrecision(3)} ms` : `${v.toPrecision(3)} µs`;
const fmt = (s: ScenarioName, v: number): string =>
  Number.isFinite(v)
    ? s === 'handoff'
      ? fmtUs(v)
      : PAIRED.includes(s)
        ? `${v.toFixed(2)}x raw`
        : fmtRate(v)
    : '-';

/** Forks `count` worker processes of one task, starts them together, gathers their results. */
async function runProcesses(
  task: WorkerTask,
  count: number,
  timeoutMs: number,
): Promise<WorkerResult[]> {
  const workerPath = new URL('./worker.js', import.meta.url);
  const children = Array.from({ length: count }, () =>
    fork(workerPath, [JSON.stringify(task)], {
      execArgv: [],
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    }),
  );
  const stderr: string[] = children.map(() => '');
  const results: (WorkerResult | undefined)[] = children.map(() => undefined);
  let ready = 0;
  const done = children.map(
    (child, i) =>
      new Promise<void>((resolve, reject) => {
        child.stderr?.on('data', (d: Buffer) => (stderr[i] += d.toString()));
        child.on('message', (m: { ready?: boolean; result?: WorkerResult }) => {
          if (m.ready === true && ++ready === count) {
            const go = performance.timeOrigin + performance.now() + 50;
            for (const c of children) c.send({ go });
          }
          if (m.result !== undefined) results[i] = m.result;
        });
        child.on('exit', (code, signal) => {
          if (results[i] !== undefined) resolve();
          else {
            const last = stderr[i]!.trim().split('\n').slice(-3).join(' | ');
            reject(new Error(`crashed (exit ${code ?? signal}): ${last.slice(0, 300)}`));
          }
        });
      }),
  );
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`hung (no result after ${timeoutMs / 1000} s)`)),
      timeoutMs,
    );
  });
  try {
    await Promise.race([Promise.all(done), timeout]);
    return results as WorkerResult[];
  } finally {
    clearTimeout(timer);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const machine = machineInfo();
  const load0 = os.loadavg();
  const started = performance.now();
  const clusterUrl = new URL('../test/postgres/cluster.mjs', BENCHMARKS_DIR).href;
  const { startCluster } = (await import(clusterUrl)) as {
    startCluster: (o: {
      log: (l: string) => void;
      fsync: boolean;
    }) => Promise<{ url: string; port?: number; stop(): Promise<void> }>;
  };
  const cluster = await startCluster({ log: (l) => log(`# ${l}`), fsync: o.fsync });
  const admin = new pg.Client({ connectionString: cluster.url });
  await admin.connect();
  const serverVersion = (await admin.query<{ server_version: string }>('SHOW server_version'))
    .rows[0]!.server_version;
  const tag = `${process.pid}_${Date.now() % 1_000_000}`;
  const table = `locktable_bench_${tag}`;
  const namespace = 3_000_000 + (process.pid % 1_000_000);
  await admin.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int NOT NULL)`);
  await admin.query(`INSERT INTO ${table} VALUES (1, 0)`);
  log(
    `locktable PostgreSQL benchmarks: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ` +
      `PostgreSQL ${serverVersion} (${cluster.port === undefined ? 'DATABASE_URL' : `throwaway cluster on port ${cluster.port}`}), ` +
      `commit ${machine.commit}, load ${load0.map((l) => l.toFixed(2)).join(' ')}\n` +
      `${o.runs} run(s) x ${o.scenarios.length} scenario(s) x ${o.peers.length} peer(s), ${o.ms} ms each`,
  );
  // The locktable schema is installed once here, not in a measured process.
  {
    const { PgLockTable } = (await import(
      'locktable/postgres' as string
    )) as typeof import('../../src/postgres/index.js');
    const locks = new PgLockTable({ connectionString: cluster.url, namespace });
    await (await locks.acquire('warm-up')).release();
    await locks.close();
  }
  const records: RunRecord[] = [];
  try {
    for (let run = 0; run < o.runs; run++) {
      for (const scenario of o.scenarios) {
        for (const peer of peersOf(o, scenario)) {
          const rec = await runOne(
            o,
            { scenario, peer, run, url: cluster.url, namespace, table, tag },
            admin,
          );
          records.push(rec);
          log(
            `run ${run + 1}/${o.runs} ${scenario.padEnd(11)} ${peer.padEnd(13)} ` +
              (rec.error !== undefined
                ? `BROKEN: ${rec.error}`
                : `${fmt(scenario, rec.value)}${rec.lost ? `, ${rec.lost} LOST` : ''}${rec.fairness !== undefined ? `, fairness ${rec.fairness.toFixed(2)}` : ''}`),
          );
        }
      }
    }
  } finally {
    await admin.query(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
    await admin.end();
    await cluster.stop();
  }
  const load1 = os.loadavg();
  const minutes = (performance.now() - started) / 60_000;
  const report = summarizeAll(o, records);
  const header = [
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}`,
    `Node ${machine.node}, PostgreSQL ${serverVersion} (${cluster.port === undefined ? 'DATABASE_URL' : `throwaway cluster, loopback TCP, fsync ${o.fsync ? 'on' : 'off'}`}), pg ${version('pg')}, advisory-lock ${version('advisory-lock')}`,
    `Commit ${machine.commit}, ${machine.date}, ${minutes.toFixed(1)} minutes; load average ${load0[0]!.toFixed(2)} before, ${load1[0]!.toFixed(2)} after`,
    `${o.runs} run(s) of ${o.ms} ms per configuration, each in fresh processes; medians, [min-max] over runs`,
  ];
  const md = [
    `# PostgreSQL benchmarks (\`npm run bench:postgres\`)`,
    '',
    ...header.map((h) => `- ${h}`),
    '',
    ...report.md,
  ].join('\n');
  console.log(`\n${header.join('\n')}\n\n${report.md.join('\n')}`);
  // The README's figures come from a full run (results/postgres/): a quick or narrowed run must
  // not overwrite them.
  const dir = new URL(
    o.quick
      ? 'results/postgres-quick/'
      : o.filtered
        ? 'results/postgres-partial/'
        : 'results/postgres/',
    BENCHMARKS_DIR,
  );
  mkdirSync(dir, { recursive: true });
  writeFileSync(new URL('results.md', dir), `${md}\n`);
  writeFileSync(
    new URL('results.json', dir),
    `${JSON.stringify({ machine, serverVersion, load: { before: load0, after: load1 }, options: o, rows: report.rows, goals: report.goals, records }, null, 1)}\n`,
  );
  log(`\nwrote ${new URL('results.md', dir).pathname}`);
  const fatal = report.rows.some(
    (r) =>
      ((r.peer === 'raw' || r.peer === 'locktable') && r.status !== 'ok') ||
      (r.peer === 'none' && r.lost === 0),
  );
  process.exitCode = fatal ? 1 : 0;
}

/** The installed version of a package (pg, advisory-lock), or 'unknown'. */
function version(name: string): string {
  try {
    return (createRequire(import.meta.url)(`${name}/package.json`) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

interface RunContext {
  scenario: ScenarioName;
  peer: PeerName;
  run: number;
  url: string;
  namespace: number;
  table: string;
  tag: string;
}

async function runOne(o: Options, c: RunContext, admin: pg.Client): Promise<RunRecord> {
  const task: WorkerTask = {
    peer: c.peer,
    scenario: c.scenario,
    url: c.url,
    key: `bench:${c.tag}:${c.scenario}:${c.run}`,
    namespace: c.namespace,
    table: c.table,
    clients: c.scenario === 'uncontended' ? 1 : c.scenario === 'hot-key' ? 8 : 2,
    // Long enough for the JIT to settle: an uncontended PgLockTable loop runs 2-4x slower in its
    // first second (npm run bench:postgres:split shows it round by round).
    warmupMs: 1500,
    ms: o.ms,
    handoffGapMs: 2,
  };
  const base: RunRecord = {
    scenario: c.scenario,
    peer: c.peer,
    run: c.run,
    value: NaN,
    lost: 0,
    results: [],
  };
  const timeout = o.ms + 30_000;
  try {
    if (c.scenario === 'processes') {
      await admin.query(`UPDATE ${c.table} SET v = 0 WHERE id = 1`);
      const results = await runProcesses(task, PROCESSES, timeout);
      const v = (await admin.query<{ v: number }>(`SELECT v FROM ${c.table} WHERE id = 1`)).rows[0]!
        .v;
      const perProcess = results.map((r) => r.sections.reduce((a, b) => a + b, 0));
      const total = perProcess.reduce((a, b) => a + b, 0);
      const elapsed = Math.max(...results.map((r) => r.elapsedMs));
      const waits = {
        p50: median(results.map((r) => r.waits!.p50)),
        p99: Math.max(...results.map((r) => r.waits!.p99)),
        max: Math.max(...results.map((r) => r.waits!.max)),
      };
      const stats = sumStats(results);
      return {
        ...base,
        value: (total / elapsed) * 1000,
        lost: total - v,
        perProcess,
        fairness: fairness(perProcess),
        waits,
        stats,
        results,
      };
    }
    const [r] = await runProcesses(task, 1, timeout);
    const total = r!.sections.reduce((a, b) => a + b, 0);
    if (c.scenario === 'paired') {
      return {
        ...base,
        value: r!.paired!.locktable,
        pairedStatements: r!.paired!.statements,
        lost: total - r!.counter,
        results: [r!],
      };
    }
    if (c.scenario === 'handoff-paired') {
      return {
        ...base,
        value: r!.pairedHandoff!.locktable,
        pairedStatements: r!.pairedHandoff!.statements,
        lost: total - r!.counter + (r!.unsafe ?? 0),
        results: [r!],
      };
    }
    if (c.scenario === 'handoff') {
      return {
        ...base,
        value: median(r!.handoffUs!),
        lost: total - r!.counter + (r!.unsafe ?? 0),
        results: [r!],
      };
    }
    return {
      ...base,
      value: (total / r!.elapsedMs) * 1000,
      lost: total - r!.counter,
      waits: r!.waits,
      stats: r!.stats,
      results: [r!],
    };
  } catch (error) {
    return { ...base, error: (error as Error).message };
  }
}

function sumStats(results: WorkerResult[]): { serverGrants: number; handoffs: number } | undefined {
  if (results[0]?.stats === undefined) return undefined;
  return {
    serverGrants: results.reduce((a, r) => a + (r.stats?.serverGrants ?? 0), 0),
    handoffs: results.reduce((a, r) => a + (r.stats?.handoffs ?? 0), 0),
  };
}

interface Row {
  scenario: ScenarioName;
  peer: PeerName;
  value: Spread | null;
  ratio: number;
  lost: number;
  status: string;
  fairness?: Spread | null;
  waitP99?: number;
  waitMax?: number;
  streak?: number;
  /** locktable, across processes: how long one process kept the server lock for its own callers. */
  holdMs?: { p99: number; max: number; sections: number };
}

interface Goal {
  goal: string;
  target: string;
  measured: string;
  met: boolean;
  why?: string;
}

/** A ratio to raw over runs: median [min-max]. */
const ratioCell = (x: Spread | null): string =>
  x === null ? 'no result' : `${x.median.toFixed(2)} [${x.min.toFixed(2)}-${x.max.toFixed(2)}]`;

/**
 * A scenario in which one process runs raw, statements and locktable (PAIRED): its runs, the
 * ratios locktable / raw and statements / raw over them, and its row.
 */
function pairedSummary(records: RunRecord[], scenario: ScenarioName) {
  const recs = records.filter((r) => r.scenario === scenario && r.peer === 'locktable');
  const good = recs.filter((r) => r.error === undefined);
  const lost = recs.reduce((a, r) => a + Math.max(0, r.lost), 0);
  const errors = [...new Set(recs.flatMap((r) => (r.error !== undefined ? [r.error] : [])))];
  const lt = spread(good.map((r) => r.value));
  const st = spread(good.map((r) => r.pairedStatements!));
  const status =
    errors.length > 0
      ? `**BROKEN**: ${errors.join('; ')} (${recs.length - good.length} of ${recs.length} runs)`
      : lost > 0
        ? '**BROKEN**: lost updates'
        : 'ok';
  const row: Row = {
    scenario,
    peer: 'locktable',
    value: lt,
    ratio: lt?.median ?? NaN,
    lost,
    status,
  };
  return { good, lost, lt, st, status, row };
}

function summarizeAll(o: Options, records: RunRecord[]) {
  const rows: Row[] = [];
  const md: string[] = [];
  let pairedRatio: { locktable: Spread; statements: Spread } | undefined;
  let pairedHandoff: { locktable: Spread; statements: Spread } | undefined;
  for (const scenario of o.scenarios) {
    md.push(`## ${TITLES[scenario]}`, '');
    if (scenario === 'paired') {
      const p = pairedSummary(records, scenario);
      if (p.lt !== null && p.st !== null) pairedRatio = { locktable: p.lt, statements: p.st };
      const triples = p.good[0]?.results[0]?.paired?.triples ?? 0;
      md.push(
        `One process per run: ${triples} triples of ${PAIRED_CHUNK_MS} ms chunks (raw, statements, locktable, in rotating order) after the warm-up; each run reports the median over its triples of each chunk's rate over raw's in the same triple, and the table the median over runs [min-max].`,
        '',
        '| locktable / raw | statements / raw | lost updates | status |',
        '| --- | --- | --- | --- |',
        `| ${ratioCell(p.lt)} | ${ratioCell(p.st)} | ${p.lost} | ${p.status} |`,
        '',
      );
      rows.push(p.row);
      continue;
    }
    if (scenario === 'handoff-paired') {
      const p = pairedSummary(records, scenario);
      if (p.lt !== null && p.st !== null) pairedHandoff = { locktable: p.lt, statements: p.st };
      const us = (f: (p: NonNullable<WorkerResult['pairedHandoff']>) => number): string => {
        const v = spread(p.good.map((r) => f(r.results[0]!.pairedHandoff!)));
        return v === null ? '-' : `${fmtUs(v.median)} [${fmtUs(v.min)}-${fmtUs(v.max)}]`;
      };
      const rounds = p.good.map((r) => r.results[0]!.pairedHandoff!.rounds);
      md.push(
        `One process per run: after the warm-up, rounds of one handoff each of raw, statements and locktable (${rounds.length > 0 ? Math.min(...rounds) : 0}-${rounds.length > 0 ? Math.max(...rounds) : 0} rounds per run), in rotating order; each run reports each peer's p50 and the median over its rounds of each handoff's ratio to raw's in the same round, and the table the median over runs [min-max]. Lost updates count early grants too.`,
        '',
        '| locktable / raw | statements / raw | raw p50 | statements p50 | locktable p50 | lost updates | status |',
        '| --- | --- | --- | --- | --- | --- | --- |',
        `| ${ratioCell(p.lt)} | ${ratioCell(p.st)} | ${us((x) => x.rawUs)} | ${us((x) => x.statementsUs)} | ${us((x) => x.locktableUs)} | ${p.lost} | ${p.status} |`,
        '',
      );
      rows.push(p.row);
      continue;
    }
    const proc = scenario === 'processes';
    const unit = scenario === 'handoff' ? 'p50' : 'sections/s';
    md.push(
      `| peer | ${unit} | range | vs raw | lost updates | ${proc ? 'fairness (processes) | wait p99 / max | ' : ''}status |`,
      `| --- | --- | --- | --- | --- | ${proc ? '--- | --- | ' : ''}--- |`,
    );
    const rawRecs = records.filter(
      (r) => r.scenario === scenario && r.peer === 'raw' && r.error === undefined,
    );
    const raw = median(rawRecs.map((r) => r.value));
    for (const peer of peersOf(o, scenario)) {
      const recs = records.filter((r) => r.scenario === scenario && r.peer === peer);
      const good = recs.filter((r) => r.error === undefined);
      const value = spread(good.map((r) => r.value));
      const lost = recs.reduce((a, r) => a + Math.max(0, r.lost), 0);
      const errors = [...new Set(recs.flatMap((r) => (r.error !== undefined ? [r.error] : [])))];
      const status =
        peer === 'none'
          ? lost > 0
            ? `negative control: loses updates, as it must`
            : `**control FAILED**: no lost update detected`
          : errors.length > 0
            ? `**BROKEN**: ${errors.join('; ')} (${recs.length - good.length} of ${recs.length} runs)`
            : lost > 0
              ? `**BROKEN**: lost updates`
              : 'ok';
      const ratio = value === null || peer === 'none' ? NaN : value.median / raw;
      const row: Row = { scenario, peer, value, ratio, lost, status };
      if (proc) {
        row.fairness = spread(good.map((r) => r.fairness!));
        row.waitP99 = median(good.map((r) => r.waits!.p99));
        row.waitMax = Math.max(...good.map((r) => r.waits!.max));
        const streaks = good.flatMap((r) =>
          r.results.flatMap((w) => (w.streaks ? [w.streaks] : [])),
        );
        if (streaks.length > 0) {
          row.holdMs = {
            p99: median(streaks.map((x) => x.p99Ms)),
            max: Math.max(...streaks.map((x) => x.maxMs)),
            sections: Math.max(...streaks.map((x) => x.maxSections)),
          };
        }
      }
      const st = good.map((r) => r.stats).filter((s) => s !== undefined);
      if (st.length > 0) {
        const grants = st.reduce((a, s) => a + s.serverGrants, 0);
        const hand = st.reduce((a, s) => a + s.handoffs, 0);
        row.streak = grants === 0 ? NaN : (grants + hand) / grants;
      }
      rows.push(row);
      const range =
        value === null ? '-' : `${fmt(scenario, value.min)}-${fmt(scenario, value.max)}`;
      const extra = proc
        ? `${row.fairness ? `${row.fairness.median.toFixed(2)} [${row.fairness.min.toFixed(2)}-${row.fairness.max.toFixed(2)}]` : '-'} | ${Number.isFinite(row.waitP99) ? `${row.waitP99!.toFixed(1)} / ${row.waitMax!.toFixed(1)} ms` : '-'} | `
        : '';
      md.push(
        `| ${peer} | ${value === null ? 'no result' : fmt(scenario, value.median)} | ${range} | ${Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : '-'} | ${lost} | ${extra}${status} |`,
      );
    }
    const lt = rows.find((r) => r.scenario === scenario && r.peer === 'locktable');
    if (lt?.streak !== undefined && Number.isFinite(lt.streak)) {
      md.push(
        '',
        `locktable: ${lt.streak.toFixed(1)} sections per server grant on average (its front's hand-overs).`,
      );
    }
    if (lt?.holdMs !== undefined) {
      md.push(
        `locktable: one process kept the server lock for its own callers (first grant to last release of one server grant) ${lt.holdMs.p99.toFixed(1)} ms at p99 (median over the processes), ${lt.holdMs.max.toFixed(1)} ms at most, for at most ${lt.holdMs.sections} sections (cohortLimit 32, cohortMs 2).`,
      );
    }
    md.push('');
  }
  const goals: Goal[] = [];
  const get = (s: ScenarioName): Row | undefined =>
    rows.find((r) => r.scenario === s && r.peer === 'locktable');
  const ratioGoal = (s: ScenarioName, name: string, target: number, atMost = false): void => {
    const r = get(s);
    if (r === undefined) return;
    const met =
      r.status === 'ok' &&
      Number.isFinite(r.ratio) &&
      (atMost ? r.ratio <= target : r.ratio >= target);
    goals.push({
      goal: name,
      target: `${atMost ? '<=' : '>='} ${target}x raw`,
      measured: Number.isFinite(r.ratio) ? `${r.ratio.toFixed(2)}x` : 'no result',
      met,
    });
  };
  // Both paired goals: the paired ratio, steady where the ratio of separate processes is not
  // (each lands in a faster or slower mode of this VM), as npm run bench reads its uncontended
  // goals; the separate processes' ratio beside it.
  const pairedGoal = (
    name: string,
    target: number,
    paired: { locktable: Spread; statements: Spread },
    scenario: ScenarioName,
    unpairedScenario: ScenarioName,
    atMost: boolean,
  ): void => {
    const unpaired = get(unpairedScenario);
    const lt = paired.locktable;
    goals.push({
      goal: name,
      target: `${atMost ? '<=' : '>='} ${target}x raw`,
      measured:
        `${lt.median.toFixed(2)}x (paired, one process; runs ` +
        `${lt.min.toFixed(2)}-${lt.max.toFixed(2)}; ` +
        `statements ${paired.statements.median.toFixed(2)}x` +
        (unpaired !== undefined && Number.isFinite(unpaired.ratio)
          ? `; separate processes: ${unpaired.ratio.toFixed(2)}x)`
          : ')'),
      met: get(scenario)!.status === 'ok' && (atMost ? lt.median <= target : lt.median >= target),
    });
  };
  const uncontended = 'uncontended acquire + release, one client';
  if (pairedRatio !== undefined) {
    pairedGoal(uncontended, 0.9, pairedRatio, 'paired', 'uncontended', false);
  } else {
    ratioGoal('uncontended', uncontended, 0.9);
  }
  ratioGoal('hot-key', 'one hot key, 8 clients in one process', 3);
  ratioGoal('processes', 'one hot key, 4 processes x 2 clients', 0.8);
  const p = get('processes');
  if (p?.fairness) {
    goals.push({
      goal: 'fairness between processes (slowest / fastest process)',
      target: '>= 0.8',
      measured: `${p.fairness.median.toFixed(2)} [${p.fairness.min.toFixed(2)}-${p.fairness.max.toFixed(2)}]`,
      met: p.fairness.median >= 0.8,
    });
  }
  if (pairedHandoff !== undefined) {
    pairedGoal('handoff p50', 1.2, pairedHandoff, 'handoff-paired', 'handoff', true);
  } else {
    ratioGoal('handoff', 'handoff p50', 1.2, true);
  }
  const lt = rows.filter((r) => r.peer === 'locktable');
  if (lt.length > 0) {
    const lost = lt.reduce((a, r) => a + r.lost, 0);
    goals.push({
      goal: 'locktable: no lost update, hang or crash in any run',
      target: '0',
      measured: String(lost + lt.filter((r) => r.status !== 'ok').length),
      met: lt.every((r) => r.status === 'ok'),
    });
  }
  md.push('## Goals', '', '| goal | target | measured | verdict |', '| --- | --- | --- | --- |');
  for (const g of goals)
    md.push(`| ${g.goal} | ${g.target} | ${g.measured} | ${g.met ? 'MET' : '**NOT MET**'} |`);
  return { rows, goals, md };
}

await main();
