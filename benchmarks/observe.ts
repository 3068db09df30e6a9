/**
 * What seeing contention costs, and what a semaphore's permit costs: one thread, uncontended
 * acquireSync + release of one key on the built package (dist/), in variants that each run in a
 * process of their own (a subscriber changes the channels' shapes for the rest of a process, so
 * that "nobody subscribes" is measured in a process where nobody ever did):
 *
 *   plain        a table without stats, no subscriber: the path every user gets by default
 *   subscriber   the same, with a subscriber on locktable.request.grant and .release
 *   stats        a table made with stats: true (every grant and release counted in shared memory)
 *   permit       a semaphore of 4 permits: tryAcquire + release (the shared path, with records)
 *   shared       a lock in shared mode: tryAcquire + release (the same path, without a limit)
 *
 * Rounds interleave the variants (plain, subscriber, stats, ... then again), and each prints the
 * median of its rounds in M ops/s and as a ratio to `plain` of the same run. Compare ratios, not
 * absolute figures: the machine is shared.
 *
 *   npm run bench:observe [-- rounds]
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';

const VARIANTS = ['plain', 'subscriber', 'stats', 'permit', 'shared'] as const;
type Variant = (typeof VARIANTS)[number];
/** Operations per measurement, and measurements per process (the best one counts: warm JIT). */
const OPS = 2_000_000;
const REPEATS = 5;

async function child(variant: Variant): Promise<number> {
  const dist = new URL('../dist/index.js', import.meta.url).href;
  const { LockTable, CHANNELS } = (await import(dist)) as typeof import('../src/index.js');
  const table = new LockTable({ capacity: 16, stats: variant === 'stats' });
  if (variant === 'subscriber') {
    const dc = await import('node:diagnostics_channel');
    let seen = 0;
    dc.subscribe(CHANNELS.grant, () => seen++);
    dc.subscribe(CHANNELS.release, () => seen++);
  }
  const key = 'bench:key';
  let best = 0;
  for (let r = 0; r < REPEATS; r++) {
    const t0 = performance.now();
    if (variant === 'permit') {
      const sem = table.semaphore(key, 4);
      for (let i = 0; i < OPS; i++) sem.tryAcquire()!.release();
    } else if (variant === 'shared') {
      const shared = { mode: 'shared' } as const;
      for (let i = 0; i < OPS; i++) table.tryAcquire(key, shared)!.release();
    } else {
      for (let i = 0; i < OPS; i++) table.acquireSync(key).release();
    }
    best = Math.max(best, OPS / (performance.now() - t0) / 1000);
  }
  return best;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const self = fileURLToPath(import.meta.url);
const asChild = process.argv[2] === '--child';
if (asChild) {
  process.stdout.write(String(await child(process.argv[3] as Variant)));
} else {
  const rounds = Number(process.argv[2] ?? 5);
  const results = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]));
  const load0 = loadavg()[0]!;
  for (let r = 0; r < rounds; r++) {
    for (const v of VARIANTS) {
      const out = execFileSync(process.execPath, [...process.execArgv, self, '--child', v], {
        encoding: 'utf8',
      });
      results.get(v)!.push(Number(out));
    }
  }
  const plain = median(results.get('plain')!);
  console.log(
    `uncontended acquire + release, one thread, ${process.version}; median of ${rounds} rounds ` +
      `(each the best of ${REPEATS} x ${OPS / 1e6}M ops in its own process); ` +
      `load average ${load0.toFixed(2)} -> ${loadavg()[0]!.toFixed(2)}`,
  );
  for (const v of VARIANTS) {
    const m = median(results.get(v)!);
    const all = results
      .get(v)!
      .map((x) => x.toFixed(1))
      .join(' ');
    console.log(
      `  ${v.padEnd(11)} ${m.toFixed(2).padStart(6)} M/s  ${(m / plain).toFixed(2)}x plain  (${all})`,
    );
  }
}
