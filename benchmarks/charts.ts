/**
 * SVG charts, written by hand: a line chart (throughput against workers, one line per peer) and a
 * horizontal grouped bar chart (percentiles, or one figure per peer). Both use a log scale: the
 * peers differ by up to four orders of magnitude. Whiskers show the min-max spread over runs.
 */
import type { Spread } from './stats.js';

const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';

export const PEER_COLORS: Record<string, string> = {
  baseline: '#7f7f7f',
  locktable: '#1f62b4',
  'node-locks': '#2ca02c',
  'web-locks': '#ff7f0e',
  mortice: '#9467bd',
  'async-mutex': '#8c564b',
};
const SERIES_COLORS = ['#1f62b4', '#ff9f1c', '#d62728', '#2ca02c'];

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function compact(value: number): string {
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${+(value / 1e9).toPrecision(3)}G`;
  if (abs >= 1e6) return `${+(value / 1e6).toPrecision(3)}M`;
  if (abs >= 1e3) return `${+(value / 1e3).toPrecision(3)}k`;
  if (abs >= 1) return `${+value.toPrecision(3)}`;
  return `${+value.toPrecision(2)}`;
}

/** A log10 scale over [lo, hi] widened to whole decades, mapped onto [from, to] pixels. */
function logScale(values: number[], from: number, to: number) {
  const positive = values.filter((v) => v > 0 && Number.isFinite(v));
  const lo = 10 ** Math.floor(Math.log10(Math.min(...(positive.length ? positive : [1]))));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...(positive.length ? positive : [10]))) + 1e-9);
  const top = hi === lo ? hi * 10 : hi;
  const at = (v: number) =>
    from +
    ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(top) - Math.log10(lo))) *
      (to - from);
  const ticks: number[] = [];
  for (let t = lo; t <= top * 1.0001; t *= 10) ticks.push(t);
  return { at, ticks, lo };
}

function frame(width: number, height: number, title: string, subtitle: string, body: string[]) {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="600">${esc(title)}</text>`,
    `<text x="16" y="42" fill="#555">${esc(subtitle)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

export interface LineSeries {
  name: string;
  color: string;
  dashed: boolean;
  points: (Spread | null)[];
  broken?: boolean;
}

export function lineChart(options: {
  title: string;
  subtitle: string;
  xTitle: string;
  yTitle: string;
  xLabels: string[];
  series: LineSeries[];
}): string {
  const width = 760;
  const height = 440;
  const plot = { left: 70, right: 540, top: 60, bottom: 380 };
  const all = options.series.flatMap((s) => s.points.flatMap((p) => (p ? [p.min, p.max] : [])));
  const y = logScale(all, plot.bottom, plot.top);
  const n = options.xLabels.length;
  const x = (i: number) => plot.left + ((i + 0.5) / n) * (plot.right - plot.left);
  const body: string[] = [];
  for (const t of y.ticks) {
    const py = y.at(t).toFixed(1);
    body.push(
      `<line x1="${plot.left}" x2="${plot.right}" y1="${py}" y2="${py}" stroke="#e6e6e6"/>`,
    );
    body.push(
      `<text x="${plot.left - 6}" y="${py}" dy="4" text-anchor="end" fill="#555">${compact(t)}</text>`,
    );
  }
  body.push(
    `<rect x="${plot.left}" y="${plot.top}" width="${plot.right - plot.left}" height="${plot.bottom - plot.top}" fill="none" stroke="#999"/>`,
  );
  options.xLabels.forEach((label, i) => {
    body.push(
      `<text x="${x(i).toFixed(1)}" y="${plot.bottom + 18}" text-anchor="middle">${esc(label)}</text>`,
    );
  });
  body.push(
    `<text x="${(plot.left + plot.right) / 2}" y="${plot.bottom + 38}" text-anchor="middle" fill="#555">${esc(options.xTitle)}</text>`,
  );
  body.push(
    `<text transform="translate(18 ${(plot.top + plot.bottom) / 2}) rotate(-90)" text-anchor="middle" fill="#555">${esc(options.yTitle)}</text>`,
  );
  options.series.forEach((s, k) => {
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    const pts = s.points.map((p, i) =>
      p ? `${x(i).toFixed(1)},${y.at(p.median).toFixed(1)}` : null,
    );
    // Lines break where a point is missing.
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1)
        body.push(
          `<polyline points="${run.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`,
        );
      run = [];
    };
    for (const p of pts) {
      if (p === null) flush();
      else run.push(p);
    }
    flush();
    s.points.forEach((p, i) => {
      if (!p) return;
      const px = x(i).toFixed(1);
      body.push(
        `<line x1="${px}" x2="${px}" y1="${y.at(p.min).toFixed(1)}" y2="${y.at(p.max).toFixed(1)}" stroke="${s.color}" stroke-width="1.5"/>`,
      );
      body.push(
        `<circle cx="${px}" cy="${y.at(p.median).toFixed(1)}" r="3.5" fill="${s.dashed ? '#fff' : s.color}" stroke="${s.color}" stroke-width="2"/>`,
      );
    });
    const ly = plot.top + 8 + k * 20;
    body.push(
      `<line x1="${plot.right + 16}" x2="${plot.right + 44}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`,
    );
    body.push(
      `<text x="${plot.right + 50}" y="${ly}" dy="4"${s.broken ? ' fill="#c00"' : ''}>${esc(s.name)}${s.broken ? ' (broken)' : ''}</text>`,
    );
  });
  return frame(width, height, options.title, options.subtitle, body);
}

export interface BarRow {
  label: string;
  color: string;
  values: (Spread | null)[];
  /** Shown instead of a bar when a value is null (e.g. "never", "skipped"). */
  missing?: string;
  broken?: boolean;
}

export function barChart(options: {
  title: string;
  subtitle: string;
  unit: string;
  seriesNames: string[];
  rows: BarRow[];
}): string {
  const multi = options.seriesNames.length > 1;
  const band = multi ? 10 + options.seriesNames.length * 12 : 22;
  const labelWidth = 190;
  const width = 760;
  const plot = { left: labelWidth, right: width - 70, top: multi ? 76 : 60 };
  const bottom = plot.top + options.rows.length * band;
  const height = bottom + 40;
  const all = options.rows.flatMap((r) => r.values.flatMap((v) => (v ? [v.min, v.max] : [])));
  const x = logScale(all, plot.left, plot.right);
  const body: string[] = [];
  for (const t of x.ticks) {
    const px = x.at(t).toFixed(1);
    body.push(`<line x1="${px}" x2="${px}" y1="${plot.top}" y2="${bottom}" stroke="#e6e6e6"/>`);
    body.push(
      `<text x="${px}" y="${bottom + 16}" text-anchor="middle" fill="#555">${compact(t)}</text>`,
    );
  }
  body.push(
    `<text x="${(plot.left + plot.right) / 2}" y="${bottom + 34}" text-anchor="middle" fill="#555">${esc(options.unit)} (log scale)</text>`,
  );
  if (multi) {
    options.seriesNames.forEach((name, k) => {
      const lx = plot.left + k * 110;
      body.push(
        `<rect x="${lx}" y="${plot.top - 22}" width="12" height="12" fill="${SERIES_COLORS[k % SERIES_COLORS.length]}"/>`,
      );
      body.push(`<text x="${lx + 18}" y="${plot.top - 12}">${esc(name)}</text>`);
    });
  }
  options.rows.forEach((row, r) => {
    const y0 = plot.top + r * band;
    body.push(
      `<text x="${labelWidth - 8}" y="${y0 + band / 2}" dy="4" text-anchor="end"${row.broken ? ' fill="#c00"' : ''}>${esc(row.label)}${row.broken ? ' (broken)' : ''}</text>`,
    );
    if (r > 0)
      body.push(
        `<line x1="${plot.left}" x2="${plot.right}" y1="${y0}" y2="${y0}" stroke="#f0f0f0"/>`,
      );
    row.values.forEach((v, k) => {
      const h = multi ? 10 : 14;
      const y = y0 + (multi ? 5 + k * 12 : (band - h) / 2);
      const color = multi ? SERIES_COLORS[k % SERIES_COLORS.length] : row.color;
      if (!v) {
        body.push(
          `<text x="${plot.left + 4}" y="${y + h - 1}" fill="#888" font-size="11">${esc(row.missing ?? 'n/a')}</text>`,
        );
        return;
      }
      const x1 = x.at(v.median);
      body.push(
        `<rect x="${plot.left}" y="${y}" width="${Math.max(1, x1 - plot.left).toFixed(1)}" height="${h}" fill="${color}"${row.broken ? ' fill-opacity="0.45"' : ''}/>`,
      );
      body.push(
        `<line x1="${x.at(v.min).toFixed(1)}" x2="${x.at(v.max).toFixed(1)}" y1="${y + h / 2}" y2="${y + h / 2}" stroke="#222" stroke-width="1"/>`,
      );
      body.push(
        `<text x="${(Math.max(x1, x.at(v.max)) + 4).toFixed(1)}" y="${y + h - 2}" font-size="11" fill="#333">${compact(v.median)}</text>`,
      );
    });
  });
  body.push(
    `<line x1="${plot.left}" x2="${plot.left}" y1="${plot.top}" y2="${bottom}" stroke="#999"/>`,
  );
  return frame(width, height, options.title, options.subtitle, body);
}
