/** The results: a table on the console, and benchmarks/results/latest.{json,md}. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';

export interface Row {
  name: string;
  unit: string;
  locktable: number | null;
  baseline: number | null;
  /** locktable / baseline, or another ratio the row names. */
  ratio: number | null;
  /** Human-readable goal, '' when the row has none. */
  goal: string;
  /** null when the row has no goal. */
  pass: boolean | null;
  note?: string;
}

export interface Machine {
  cpu: string;
  cores: number;
  node: string;
  os: string;
  date: string;
  commit: string;
}

export function machineInfo(): Machine {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
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

function formatNumber(value: number | null, unit = ''): string {
  if (value === null) return '-';
  if (unit === 'ops/s' || unit === 'sections/s') {
    if (value >= 1e6) return `${(value / 1e6).toFixed(2)} M`;
    if (value >= 1e3) return `${(value / 1e3).toFixed(1)} k`;
    return value.toFixed(0);
  }
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(2);
}

function verdict(pass: boolean | null): string {
  return pass === null ? '' : pass ? 'PASS' : 'FAIL';
}

const HEADERS = ['benchmark', 'unit', 'locktable', 'baseline', 'ratio', 'goal', 'result'];

function cells(row: Row): string[] {
  return [
    row.name,
    row.unit,
    formatNumber(row.locktable, row.unit),
    formatNumber(row.baseline, row.unit),
    row.ratio === null ? '-' : row.ratio.toFixed(2),
    row.goal,
    verdict(row.pass),
  ];
}

export function consoleTable(rows: Row[]): string {
  const all = [HEADERS, ...rows.map(cells)];
  const widths = HEADERS.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  const notes = rows.filter((r) => r.note).map((r) => `  ${r.name}: ${r.note}`);
  return [line(HEADERS), rule, ...all.slice(1).map(line), ...(notes.length ? ['', ...notes] : [])]
    .join('\n')
    .concat('\n');
}

export function markdown(rows: Row[], machine: Machine, settings: object): string {
  const escape = (s: string) => s.replace(/\|/g, '\\|');
  const lines = [
    '# locktable benchmarks',
    '',
    `- CPU: ${machine.cpu} (${machine.cores} cores)`,
    `- Node: ${machine.node}, ${machine.os}`,
    `- Date: ${machine.date}, commit ${machine.commit}`,
    `- Settings: ${JSON.stringify(settings)}`,
    '',
    `| ${HEADERS.join(' | ')} |`,
    `| ${HEADERS.map(() => '---').join(' | ')} |`,
    ...rows.map((row) => `| ${cells(row).map(escape).join(' | ')} |`),
    '',
    ...rows.filter((r) => r.note).map((r) => `- ${r.name}: ${r.note}`),
    '',
  ];
  return lines.join('\n');
}

export function writeResults(
  rows: Row[],
  machine: Machine,
  settings: object,
  details: object,
): string {
  const dir = new URL('./results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  const json = { machine, settings, rows, details };
  writeFileSync(new URL('latest.json', dir), `${JSON.stringify(json, null, 2)}\n`);
  writeFileSync(new URL('latest.md', dir), markdown(rows, machine, settings));
  return dir.pathname;
}
