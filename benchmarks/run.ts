/**
 * `npm run bench [-- options]` (see cli.ts): every scenario for locktable and each peer, each
 * configuration in a fresh process, several runs; a table per configuration and the goals on the
 * console; results.json, results.md and SVG charts under benchmarks/results/. Exits 1 when
 * locktable or the baseline lost an update, granted unsafely, hung or crashed (those are bugs
 * here); a peer that does is reported BROKEN, and a missed performance goal is reported, not fatal.
 */
import { readFileSync } from 'node:fs';
import { runChild } from './child.js';
import { parseArgs, USAGE, type CliOptions } from './cli.js';
import { peerInfo } from './peers/catalogue.js';
import type { Runtime } from './peers/types.js';
import { expand, type Job, scenarioDef } from './plan.js';
import { BENCHMARKS_DIR } from './paths.js';
import {
  consoleReport,
  formatValue,
  machineInfo,
  type ReportContext,
  writeResults,
} from './report.js';
import { resolveRuntimes } from './runtimes.js';
import type { JobOutput, Settings } from './spec.js';
import { goals, type RunRecord, summarize } from './summarize.js';

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

let options: CliOptions;
try {
  options = parseArgs(process.argv.slice(2));
} catch (error) {
  log(error instanceof Error ? error.message : String(error));
  process.exit(2);
}
if (options.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

if (options.rerender !== undefined) {
  const folder = new URL(`${options.rerender.replace(/\/?$/, '/')}`, `file://${process.cwd()}/`);
  const saved = JSON.parse(
    readFileSync(new URL('results.json', folder), 'utf8'),
  ) as ReportContext & {
    runs: RunRecord[];
  };
  const rows = summarize(saved.runs);
  const goalList = goals(rows);
  process.stdout.write(consoleReport(rows, goalList));
  writeResults(folder, rows, goalList, saved.runs, saved);
  process.stdout.write(`\nrewrote ${folder.pathname}results.md and charts\n`);
  process.exit(0);
}

const settings: Settings = {
  quick: options.quick,
  windowMs: options.quick ? 300 : 1500,
  microTimeMs: options.quick ? 150 : 600,
  uncontendedTimeMs: options.quick ? 100 : 300,
  pairedChunks: options.quick ? 10 : 20,
  pairedChunkMs: 30,
  runs: options.runs ?? (options.quick ? 1 : 3),
  recoveryCapMs: options.quick ? 500 : 2000,
  seed: options.seed ?? Math.floor(Math.random() * 2 ** 31),
};
const { jobs, notRun } = expand(settings, {
  scenarios: options.scenarios,
  peers: options.peers,
  workers: options.workers,
});
const estimate = jobs.reduce((sum, job) => sum + job.estimateMs, 0);
const configurations = new Set(jobs.map((j) => j.id)).size;
log(
  `locktable benchmarks: ${configurations} configurations, ${jobs.length} jobs ` +
    `(${settings.runs} run(s) each, one process per job), seed ${settings.seed}; ` +
    `estimated ${duration(estimate)}`,
);
if (options.list) {
  for (const job of jobs) log(`  ${job.id}, run ${job.spec.run}  ~${duration(job.estimateMs)}`);
  for (const n of notRun) log(`  not run: ${n.scenario} / ${n.peer}: ${n.reason}`);
  process.exit(0);
}

const runtimeOf = (job: Job): Runtime =>
  options.allOnNode24 ? 'node24' : peerInfo(job.spec.peer).runtime;
const needed = new Set<Runtime>(jobs.map(runtimeOf));
const runtimes = resolveRuntimes(needed, log);
// For the report: which Node ran which peers.
const runtimeNames: Record<string, string> = {};
for (const [name, resolved] of runtimes) {
  if (!needed.has(name)) continue;
  const peers = [...new Set(jobs.filter((j) => runtimeOf(j) === name).map((j) => j.spec.peer))];
  const version = resolved.ok ? resolved.version : `unavailable (${resolved.reason})`;
  runtimeNames[peers.join(', ')] = version;
  if (!resolved.ok) log(`${name}: ${resolved.reason}; its peers are skipped`);
}

const records: RunRecord[] = [];
const started = performance.now();
let estimatedDone = 0;
for (const [i, job] of jobs.entries()) {
  const runtime = runtimes.get(runtimeOf(job))!;
  const elapsed = performance.now() - started;
  const pace = estimatedDone > 0 ? elapsed / estimatedDone : 1;
  const left = (estimate - estimatedDone) * pace;
  const prefix = `[${String(i + 1).padStart(String(jobs.length).length)}/${jobs.length}, ${duration(left)} left]`;
  let output: JobOutput;
  let durationMs = 0;
  if (!runtime.ok) {
    output = { kind: 'skip', reason: `needs Node 24: ${runtime.reason}` };
  } else {
    // A job that takes several times its estimate has hung (or its peer flooded the main thread):
    // kill it and report its last phase. The smoke run gives up sooner.
    const timeout = settings.quick
      ? Math.max(10_000, job.estimateMs * 3 + 5_000)
      : Math.max(30_000, job.estimateMs * 5 + 20_000);
    ({ output, durationMs } = await runChild(runtime.path, job.spec, timeout));
  }
  estimatedDone += job.estimateMs;
  records.push({ job, output, durationMs });
  log(
    `${prefix} ${job.id}, run ${job.spec.run}: ${describe(job, output)} (${(durationMs / 1000).toFixed(1)} s)`,
  );
}

function describe(job: Job, output: JobOutput): string {
  if (output.kind === 'skip') return `skipped: ${output.reason}`;
  if (output.kind === 'error') return `FAILED: ${output.message}`;
  const def = scenarioDef(job.spec.scenario);
  const metric = def.metrics.find((m) => m.key === def.primary)!;
  const value = output.result.metrics[metric.key];
  const shown = value === null || value === undefined ? 'never' : formatValue(value, metric.unit);
  const lost = output.result.lostUpdates;
  const unsafe = output.result.unsafe ? `, UNSAFE: ${output.result.unsafe}` : '';
  const { pairedRatio, baselineOpsPerSecond, pairedRatioLowest, pairedRatioHighest } =
    output.result.metrics;
  const paired =
    typeof pairedRatio === 'number'
      ? `, baseline ${formatValue(baselineOpsPerSecond!, 'ops/s')}, paired ratio ` +
        `${pairedRatio.toFixed(3)} (chunks ${pairedRatioLowest!.toFixed(2)}-${pairedRatioHighest!.toFixed(2)})`
      : '';
  return `${metric.label} ${shown}${paired}${lost ? `, LOST ${lost} UPDATES` : ''}${unsafe}`;
}

const rows = summarize(records);
const goalList = goals(rows);
const machine = machineInfo();
process.stdout.write(
  `\nlocktable benchmarks - ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ` +
    `${machine.date}, commit ${machine.commit}${settings.quick ? ', --quick' : ''}\n`,
);
process.stdout.write(consoleReport(rows, goalList));
const folder = options.out
  ? new URL(`${options.out.replace(/\/?$/, '/')}`, `file://${process.cwd()}/`)
  : new URL(
      `results/${options.quick ? 'quick' : options.filtered ? 'partial' : 'latest'}/`,
      BENCHMARKS_DIR,
    );
const args = process.argv.slice(2).join(' ');
writeResults(folder, rows, goalList, records, {
  machine,
  settings,
  command: `npm run bench${args ? ` -- ${args}` : ''}`,
  runtimes: runtimeNames,
  notRun,
  durationMs: performance.now() - started,
});
process.stdout.write(
  `\nwrote ${folder.pathname}results.{json,md} and charts (${duration(performance.now() - started)})\n`,
);
const ours = rows.filter(
  (r) => (r.peer === 'locktable' || r.peer === 'baseline') && r.status === 'broken',
);
if (ours.length > 0) {
  process.stdout.write(`\nBROKEN: ${ours.map((r) => r.id).join(', ')} (see above)\n`);
  process.exitCode = 1;
}
