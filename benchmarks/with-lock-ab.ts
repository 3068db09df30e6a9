/**
 * withLock of several builds of the package, paired in one process: each build's withLock and a
 * bare `pool.run` of the same task run in rotating turns of 30 ms on the same 1-thread pool (the
 * `with-lock` scenario's method), so a change is read against the build before it at the same
 * moment of the machine. Each build is a dist/ directory (copy one aside before rebuilding, with a
 * node_modules link beside it so that it finds piscina); builds of one package version may share
 * the pool, since each runs its own runner file on it.
 *
 *   npm run build   (after copying the build before the change to /tmp/before/dist)
 *   npm run bench:with-lock-ab -- <turns> before=/tmp/before/dist after=dist
 *
 * Prints each build's µs per call and ratio to the bare run (medians of per-turn figures), and
 * each build's per-turn ratio to the first build.
 */
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Piscina } from 'piscina';
import type { WithLock } from './library.js';
import { pairedTurn } from './scenarios/with-lock.js';
import { median } from './stats.js';
import type { IncrementArgs } from './tasks/pool-tasks.js';

/** One build under test: its withLock, and a table of its own. */
interface Build {
  name: string;
  withLock: WithLock;
  table: unknown;
}

const TASKS = new URL('./tasks/pool-tasks.js', import.meta.url).href;
/** As in the `with-lock` scenario: each form runs this long per turn, after warm-up turns. */
const CHUNK_MS = 30;
const WARMUP_TURNS = 3;

async function load(name: string, dir: string): Promise<Build> {
  const lib = (await import(pathToFileURL(resolve(dir, 'index.js')).href)) as {
    LockTable: new () => unknown;
    withLock: WithLock;
  };
  return { name, withLock: lib.withLock, table: new lib.LockTable() };
}

async function main(): Promise<void> {
  const turns = Number(process.argv[2]);
  const specs = process.argv.slice(3).map((arg) => arg.split('=') as [string, string]);
  if (!(turns > 0) || specs.length === 0 || specs.some((s) => s.length !== 2)) {
    throw new Error('usage: with-lock-ab.js <turns> name=distdir [name=distdir ...]');
  }
  const builds = await Promise.all(specs.map(([name, dir]) => load(name, dir)));
  const pool = new Piscina({ filename: TASKS, minThreads: 1, maxThreads: 1 });
  const args: IncrementArgs = { counter: new SharedArrayBuffer(4) };
  const forms: Record<string, () => Promise<unknown>> = {
    bare: () => pool.run(args, { name: 'increment' }),
  };
  for (const b of builds) {
    forms[b.name] = () =>
      b.withLock(b.table as Parameters<WithLock>[0], 'account:42', 'increment', { pool, args });
  }
  const names = Object.keys(forms);
  for (const name of names) for (let i = 0; i < 200; i++) await forms[name]!();
  const perCall: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const load0 = loadavg()[0]!;
  for (let turn = -WARMUP_TURNS; turn < turns; turn++) {
    const { us } = await pairedTurn(forms, names, turn + WARMUP_TURNS, CHUNK_MS);
    if (turn < 0) continue;
    for (const name of names) perCall[name]!.push(us[name]!);
  }
  await pool.destroy();
  const bare = perCall.bare!;
  console.log(
    `withLock A/B: ${turns} turns of ${CHUNK_MS} ms per form, 1-thread pool, load ` +
      `${load0.toFixed(1)} -> ${loadavg()[0]!.toFixed(1)}; bare ${median(bare).toFixed(1)} µs`,
  );
  const first = builds[0]!.name;
  for (const { name } of builds) {
    const mine = perCall[name]!;
    const overBare = median(mine.map((v, i) => v / bare[i]!));
    const overFirst = median(mine.map((v, i) => v / perCall[first]![i]!));
    console.log(
      `  ${name.padEnd(12)} ${median(mine).toFixed(1).padStart(7)} µs   / bare ` +
        `${overBare.toFixed(3)}   / ${first} ${overFirst.toFixed(3)}`,
    );
  }
}

await main();
