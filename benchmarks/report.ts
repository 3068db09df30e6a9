/**
 * The results: a table per scenario configuration on the console, and under the output folder
 * results.json (everything, every run), results.md (the tables, the goals, the charts) and the
 * SVG charts.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { barChart, compact, lineChart, PEER_COLORS, type BarRow } from './charts.js';
import { peerInfo, PEERS } from './peers/catalogue.js';
import { type MetricDef, type NotRun, SCENARIOS, scenarioDef } from './plan.js';
import type { Settings } from './spec.js';
import { type Goal, isPaired, type Row, type RunRecord } from './summarize.js';
import type { Spread } from './stats.js';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  os: string;
  date: string;
  commit: string;
}

export function machineInfo(): Machine {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    date: new Date().toISOString(),
    commit: gitCommit(),
  };
}

/** HEAD, plus "+dirty" when src/ has uncommitted changes (the bundle was built from those). */
function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { encoding: 'utf8' });
    return dirty.trim() === '' ? head : `${head}+dirty`;
  } catch {
    return 'unknown';
  }
}

export function formatValue(value: number, unit: MetricDef['unit']): string {
  switch (unit) {
    case 'ops/s':
      return `${compact(value)}/s`;
    case 'us':
      return value >= 1000 ? `${(value / 1000).toPrecision(3)} ms` : `${value.toPrecision(3)} µs`;
    case 'ms':
      return `${value.toFixed(1)} ms`;
    case 'x':
      return `${value.toFixed(2)}x`;
    case 'ratio':
      return value.toFixed(2);
    case 'bytes':
      return `${Math.round(value * 10) / 10} B`;
  }
}

function cell(row: Row, metric: MetricDef): string {
  const s = row.metrics[metric.key];
  if (!s) return row.missing[metric.key] ? (row.scenario === 'recovery' ? 'never' : 'n/a') : '-';
  const main = formatValue(s.median, metric.unit);
  const range =
    row.runs > 1 && s.min !== s.max
      ? ` (${formatValue(s.min, metric.unit)}–${formatValue(s.max, metric.unit)})`
      : '';
  const never = row.missing[metric.key] ? `, never in ${row.missing[metric.key]} run(s)` : '';
  return main + range + never;
}

function label(row: Row): string {
  if (isPaired(row))
    return `${row.peer} ${row.api}${row.variant === 'paired-handle' ? ' handle' : ''}, paired with baseline (${row.group.startsWith('random-keys') ? 'same workers' : 'same thread'})`;
  return `${row.peer} ${row.api}${row.variant && row.variant !== 'none' ? ` ${row.variant}` : ''}`;
}

function status(row: Row): string {
  if (row.status === 'skipped') return `skipped: ${row.skipReason}`;
  if (row.status === 'broken') return `BROKEN: ${row.problems.join('; ')}`;
  return 'ok';
}

function tableOf(rows: readonly Row[]): string[][] {
  const def = scenarioDef(rows[0]!.scenario);
  const header = [
    'peer',
    ...def.metrics.map((m) => m.label),
    'vs baseline',
    'lost updates',
    'status',
  ];
  const body = rows.map((row) => [
    label(row),
    ...def.metrics.map((m) => (row.status === 'skipped' ? '-' : cell(row, m))),
    row.ratio === null ? '' : `${row.ratio.toFixed(2)}x`,
    row.status === 'skipped' ? '-' : String(row.lostUpdates),
    status(row),
  ]);
  return [header, ...body];
}

function groupsInOrder(rows: readonly Row[]): Row[][] {
  const groups = new Map<string, Row[]>();
  for (const scenario of SCENARIOS) {
    for (const row of rows.filter((r) => r.scenario === scenario.id)) {
      const list = groups.get(row.group) ?? [];
      list.push(row);
      groups.set(row.group, list);
    }
  }
  return [...groups.values()];
}

export function consoleReport(rows: readonly Row[], goalList: readonly Goal[]): string {
  const out: string[] = [];
  for (const group of groupsInOrder(rows)) {
    const table = tableOf(group);
    const widths = table[0]!.map((_, c) =>
      Math.max(...table.map((r) => Math.min(60, r[c]!.length))),
    );
    out.push('', `${group[0]!.group}: ${scenarioDef(group[0]!.scenario).description}`);
    for (const [i, r] of table.entries()) {
      out.push(
        r
          .map((c, k) => c.padEnd(widths[k]!))
          .join('  ')
          .trimEnd(),
      );
      if (i === 0) out.push(widths.map((w) => '-'.repeat(w)).join('  '));
    }
  }
  out.push('', 'Goals');
  for (const g of goalList) {
    const verdict = g.met === null ? 'N/A    ' : g.met ? 'MET    ' : 'NOT MET';
    out.push(`  ${verdict}  ${g.goal}: ${g.value} (target ${g.target})`);
  }
  return `${out.join('\n')}\n`;
}

export interface ReportContext {
  machine: Machine;
  settings: Settings;
  command: string;
  runtimes: Record<string, string>;
  notRun: readonly NotRun[];
  durationMs: number;
}

function mdTable(table: string[][]): string[] {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${table[0]!.map(esc).join(' | ')} |`,
    `| ${table[0]!.map(() => '---').join(' | ')} |`,
    ...table.slice(1).map((r) => `| ${r.map(esc).join(' | ')} |`),
  ];
}

export function goalsTable(goalList: readonly Goal[]): string[] {
  return mdTable([
    ['goal', 'target', 'measured', 'verdict'],
    ...goalList.map((g) => [
      g.goal,
      g.target,
      g.value,
      g.met === null ? 'n/a' : g.met ? 'MET' : '**NOT MET**',
    ]),
  ]);
}

/**
 * One line per table, one column per peer: each peer's best row there (its faster API, or
 * locktable's faster recovery), primary metric only. The README shows this.
 */
export function overview(rows: readonly Row[]): string[] {
  const peers = PEERS.filter((p) => rows.some((r) => r.peer === p.name));
  const table: string[][] = [['scenario', 'metric', ...peers.map((p) => p.name)]];
  for (const group of groupsInOrder(rows)) {
    const def = scenarioDef(group[0]!.scenario);
    const metric = def.metrics.find((m) => m.key === def.primary)!;
    const cells = peers.map((peer) => {
      const mine = group.filter(
        (r) => r.peer === peer.name && r.status !== 'skipped' && !isPaired(r),
      );
      if (mine.length === 0) {
        const skipped = group.find((r) => r.peer === peer.name);
        return skipped ? 'skipped' : '-';
      }
      const value = (r: Row) => r.metrics[metric.key]?.median ?? null;
      const best = mine.reduce((a, b) => {
        const va = value(a);
        const vb = value(b);
        if (va === null) return b;
        if (vb === null) return a;
        return (metric.better === 'lower' ? vb < va : vb > va) ? b : a;
      });
      const v = value(best);
      const shown =
        v !== null
          ? formatValue(v, metric.unit)
          : best.scenario === 'recovery'
            ? 'never'
            : best.status === 'broken'
              ? 'no result'
              : 'n/a';
      const how =
        best.variant && best.variant !== 'none' ? `${best.api}, ${best.variant}` : best.api;
      return `${shown} (${how})${best.status === 'broken' ? ' **BROKEN**' : ''}`;
    });
    table.push([group[0]!.group, metric.label, ...cells]);
  }
  return mdTable(table);
}

function settingsLine(s: Settings): string {
  const parts = [
    `${s.runs} run(s) of every configuration, each in a fresh process`,
    `window ${s.windowMs} ms`,
    `tinybench time ${s.microTimeMs} ms`,
  ];
  // Results written before the paired measurement have neither field.
  if (s.uncontendedTimeMs !== undefined) {
    parts.push(`${s.uncontendedTimeMs} ms for the unpaired uncontended rows`);
  }
  if (s.pairedChunks !== undefined) {
    parts.push(`paired: ${s.pairedChunks} chunk pairs of ${s.pairedChunkMs} ms`);
  }
  parts.push(`seed ${s.seed}`);
  return parts.join('; ');
}

/** How the uncontended goals are measured, for results.md. */
const PAIRED_METHOD = [
  'The uncontended goals (locktable / baseline) are read from the rows "paired with baseline',
  '(same thread)": one process per run and per API and place, in which one thread runs both the',
  'raw baseline and locktable, same key and same critical section, in alternating chunks of equal',
  'time after a warm-up. Each pair of adjacent chunks gives a ratio; a run reports the median of',
  'those ratios ("paired: locktable / baseline", its lowest and highest chunk pair beside it), and',
  'the goal takes the median over runs. Separate processes on this machine land in faster or',
  'slower modes at random, so the ratio of two rows measured in separate processes ("vs baseline"',
  'of the unpaired rows) moves by much more than the paired ratio does.',
  '',
  'The round-robin goals are read the same way (one thread, alternating chunks over the same',
  '1,000 keys). The random-keys goals are read from the rows "paired with baseline (same',
  'workers)": one process per run and per API, whose 4 workers run the baseline and locktable in',
  'alternating phases of equal time (the order within a pair alternates), each on counters of its',
  'own; each pair of adjacent phases gives a ratio of their sections per second.',
];

export function markdown(
  rows: readonly Row[],
  goalList: readonly Goal[],
  charts: readonly Chart[],
  ctx: ReportContext,
): string {
  const m = ctx.machine;
  const lines = [
    '# locktable benchmarks',
    '',
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; ${m.os}`,
    `- Node: ${Object.entries(ctx.runtimes)
      .map(([peers, version]) => `${version} for ${peers}`)
      .join('; ')}`,
    `- Date: ${m.date}, commit ${m.commit}, ${(ctx.durationMs / 60_000).toFixed(1)} min`,
    `- Command: \`${ctx.command}\``,
    `- Settings: ${settingsLine(ctx.settings)}`,
    '',
    'Figures are medians over runs, with the min-max spread in parentheses. "vs baseline" is the',
    'peer against the raw Atomics baseline of the same API in the same run set (higher = faster).',
    'A peer that lost any update, granted unsafely, hung or crashed is marked BROKEN.',
    '',
    ...(rows.some(isPaired) ? [...PAIRED_METHOD, ''] : []),
    '## Goals',
    '',
    ...goalsTable(goalList),
    '',
    '## Overview',
    '',
    "Each peer's best figure per table (its faster API); details and spreads below.",
    '',
    ...overview(rows),
    '',
  ];
  for (const group of groupsInOrder(rows)) {
    const def = scenarioDef(group[0]!.scenario);
    lines.push(
      `## ${group[0]!.group}`,
      '',
      `${def.title}: ${def.description}.`,
      '',
      ...mdTable(tableOf(group)),
      '',
    );
    const notes = [...new Set(group.flatMap((r) => r.notes.map((n) => `${label(r)}: ${n}`)))];
    if (notes.length) lines.push(...notes.map((n) => `- ${n}`), '');
    for (const chart of charts.filter((c) => c.after === group[0]!.group)) {
      lines.push(`![${chart.title}](${chart.file})`, '');
    }
  }
  if (ctx.notRun.length) {
    lines.push('## Not run, and why', '');
    const seen = new Set<string>();
    for (const n of ctx.notRun) {
      const key = `${n.peer}: ${n.reason}`;
      const scen = ctx.notRun
        .filter((x) => `${x.peer}: ${x.reason}` === key)
        .map((x) => x.scenario);
      if (seen.has(key)) continue;
      seen.add(key);
      lines.push(`- ${n.peer} (${scen.join(', ')}): ${n.reason}`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

export interface Chart {
  file: string;
  title: string;
  /** The group whose table it follows in results.md. */
  after: string;
  svg: string;
}

function rowSeries(row: Row, keys: string[]): (Spread | null)[] {
  return keys.map((k) => row.metrics[k] ?? null);
}

export function charts(rows: readonly Row[], settings: Settings): Chart[] {
  const out: Chart[] = [];
  const ran = rows.filter((r) => r.status !== 'skipped');
  const sub = (extra: string) => `${extra}; median of ${settings.runs} run(s), whiskers: min-max`;

  const hot = ran.filter((r) => r.scenario === 'hot-key');
  if (hot.length) {
    const counts = [...new Set(hot.map((r) => r.workers!))].sort((a, b) => a - b);
    const lines = PEERS.flatMap((peer) =>
      (['sync', 'async'] as const).flatMap((api) => {
        const mine = hot.filter((r) => r.peer === peer.name && r.api === api);
        if (mine.length === 0) return [];
        return [
          {
            name: `${peer.name} ${api}`,
            color: PEER_COLORS[peer.name]!,
            dashed: api === 'async',
            broken: mine.some((r) => r.status === 'broken'),
            points: counts.map(
              (n) => mine.find((r) => r.workers === n)?.metrics.opsPerSecond ?? null,
            ),
          },
        ];
      }),
    );
    out.push({
      file: 'hot-key-throughput.svg',
      title: 'One hot key: sections/s against workers',
      after: `hot-key x${counts[counts.length - 1]}`,
      svg: lineChart({
        title: 'One hot key: critical sections per second',
        subtitle: sub('higher is better; 2 cores, so 4 and 8 workers oversubscribe'),
        xTitle: 'workers',
        yTitle: 'sections/s (log scale)',
        xLabels: counts.map(String),
        series: lines,
      }),
    });
    for (const n of counts) {
      const group = hot.filter((r) => r.workers === n);
      out.push({
        file: `hot-key-wait-x${n}.svg`,
        title: `One hot key, ${n} workers: wait percentiles`,
        after: `hot-key x${n}`,
        svg: barChart({
          title: `One hot key, ${n} worker${n > 1 ? 's' : ''}: wait from request to grant`,
          subtitle: sub('lower is better; every 16th request sampled'),
          unit: 'µs',
          seriesNames: ['p50', 'p99', 'max'],
          rows: group.map((r) => ({
            label: label(r),
            color: PEER_COLORS[r.peer]!,
            values: rowSeries(r, ['waitP50Us', 'waitP99Us', 'waitMaxUs']),
            broken: r.status === 'broken',
          })),
        }),
      });
    }
  }

  const single = (
    scenario: 'uncontended' | 'round-robin' | 'random-keys',
    file: string,
    title: string,
  ) => {
    const list = ran.filter((r) => r.scenario === scenario && !isPaired(r));
    if (!list.length) return;
    const rowsOut: BarRow[] = list.map((r) => ({
      label: `${label(r)}${r.place ? (r.place === 'main' ? ' (main)' : ' (worker)') : ''}`,
      color: PEER_COLORS[r.peer]!,
      values: [r.metrics.opsPerSecond ?? null],
      broken: r.status === 'broken',
    }));
    out.push({
      file,
      title,
      after: list[list.length - 1]!.group,
      svg: barChart({
        title,
        subtitle: sub('higher is better'),
        unit: 'operations/s',
        seriesNames: ['ops/s'],
        rows: rowsOut,
      }),
    });
  };
  single('uncontended', 'uncontended.svg', 'Uncontended acquire + release, one key');
  single('round-robin', 'round-robin.svg', '1,000 keys round robin, one worker');
  single('random-keys', 'random-keys.svg', '64 random keys, 4 workers');

  const handoffRows = ran.filter((r) => r.scenario === 'handoff');
  if (handoffRows.length) {
    out.push({
      file: 'handoff.svg',
      title: 'Handoff latency',
      after: 'handoff',
      svg: barChart({
        title: 'Handoff: release by one worker -> acquire by a sleeping waiter',
        subtitle: sub('lower is better'),
        unit: 'µs',
        seriesNames: ['p50', 'p99'],
        rows: handoffRows.map((r) => ({
          label: label(r),
          color: PEER_COLORS[r.peer]!,
          values: rowSeries(r, ['handoffP50Us', 'handoffP99Us']),
          broken: r.status === 'broken',
        })),
      }),
    });
  }
  const recoveryRows = ran.filter((r) => r.scenario === 'recovery');
  if (recoveryRows.length) {
    out.push({
      file: 'recovery.svg',
      title: 'Recovery after a holder is terminated',
      after: 'recovery',
      svg: barChart({
        title: 'Recovery: holder terminated -> the waiter holds the key',
        subtitle: sub(`lower is better; "never" = not within ${settings.recoveryCapMs} ms`),
        unit: 'ms',
        seriesNames: ['ms'],
        rows: recoveryRows.map((r) => ({
          label: label(r),
          color: PEER_COLORS[r.peer]!,
          values: [r.metrics.recoveryMs ?? null],
          missing: `never (not within ${settings.recoveryCapMs} ms)`,
          broken: r.status === 'broken',
        })),
      }),
    });
  }
  return out;
}

export function writeResults(
  dir: URL,
  rows: readonly Row[],
  goalList: readonly Goal[],
  records: readonly RunRecord[],
  ctx: ReportContext,
): Chart[] {
  mkdirSync(dir, { recursive: true });
  const chartList = charts(rows, ctx.settings);
  for (const chart of chartList) writeFileSync(new URL(chart.file, dir), chart.svg);
  const peers = Object.fromEntries(
    PEERS.map((p) => [p.name, { ...p, label: peerInfo(p.name).label }]),
  );
  const context: ReportContext = {
    machine: ctx.machine,
    settings: ctx.settings,
    command: ctx.command,
    runtimes: ctx.runtimes,
    notRun: ctx.notRun,
    durationMs: ctx.durationMs,
  };
  const json = { ...context, peers, goals: goalList, rows, runs: records };
  writeFileSync(new URL('results.json', dir), `${JSON.stringify(json, null, 2)}\n`);
  writeFileSync(new URL('results.md', dir), markdown(rows, goalList, chartList, context));
  return chartList;
}
