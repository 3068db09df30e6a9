/**
 * `npm run bench:postgres:client [-- --rounds N --ops N]`: the client's own time per uncontended
 * acquire + release, against a server stand-in that answers at once (stub.ts): `raw` (pg's Query,
 * `SELECT pg_advisory_lock($1)` and unlock, as the raw peer of `npm run bench:postgres`),
 * `statements` (locktable's fastGrant and release through pg's Query, as that bench's statements
 * peer) and `locktable` (PgLockTable, with its front, sessions and leases). One process, rounds of
 * `ops` acquire + release per client in an order that rotates; each round gives each client's µs
 * per acquire + release and its ratio to raw's in the same round, and the report their medians.
 * What it measures is CPU work in this process only (no server, no network, no waiting), so it
 * reads steadier on a loaded machine than the benchmarks against a real server, which it does not
 * replace: it says how much of a grant's time is the client's. `--against` times another build
 * beside this one, in the same rounds: the ratio of the two is the steadiest figure it gives.
 */
import os from 'node:os';
import process from 'node:process';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { machineInfo } from '../report.js';
import { median } from '../stats.js';
import { fastGrant, releaseStatement } from '../../src/postgres/sql.js';
import { StubServer } from './stub.js';

type PgModule = typeof import('../../src/postgres/index.js');
const specifier = 'locktable/postgres';
const { PgLockTable } = (await import(specifier)) as PgModule;

const USAGE = `npm run bench:postgres:client [-- options]
  --rounds N      measured rounds (default 15; 3 more warm up first)
  --ops N         acquire + release per client per round (default 3000)
  --against PATH  also time another build of locktable/postgres (e.g. another commit's
                  dist/postgres.js, built in a worktree of it) in the same rounds`;

interface Options {
  rounds: number;
  ops: number;
  against: string | undefined;
}

function parse(argv: string[]): Options {
  const o: Options = { rounds: 15, ops: 3000, against: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = argv[++i];
    const n = Number(value);
    if (a === '--rounds' && Number.isInteger(n) && n > 0) o.rounds = n;
    else if (a === '--ops' && Number.isInteger(n) && n > 0) o.ops = n;
    else if (a === '--against' && value !== undefined) o.against = value;
    else throw new Error(`bad option ${a} ${value}\n\n${USAGE}`);
  }
  return o;
}

/** Every connection (each client's, each of PgLockTable's sessions) gets a stub of its own. */
const config = { stream: () => new StubServer(), host: 'stub', user: 'stub', database: 'stub' };
const NAMESPACE = 0x6c6f636b;
const MARKER = 'locktable:stub';

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const load0 = os.loadavg();
  const raw = new pg.Client(config);
  await raw.connect();
  const lock = { name: 'raw_lock', text: 'SELECT pg_advisory_lock($1)', values: ['12345'] };
  const unlock = { name: 'raw_unlock', text: 'SELECT pg_advisory_unlock($1)', values: ['12345'] };
  const statements = new pg.Client(config);
  await statements.connect();
  const grant = { ...fastGrant('forever', true), values: [NAMESPACE, 1, MARKER] };
  const release = { ...releaseStatement(true), values: [NAMESPACE, 1, MARKER] };
  const locks = new PgLockTable(config);
  const clients: Array<{ name: string; once: () => Promise<void> }> = [
    {
      name: 'raw',
      once: async () => {
        await raw.query(lock);
        await raw.query(unlock);
      },
    },
    {
      name: 'statements',
      once: async () => {
        await statements.query(grant);
        await statements.query(release);
      },
    },
    {
      name: 'locktable',
      once: async () => {
        await (await locks.acquire('key')).release();
      },
    },
  ];
  const other =
    o.against === undefined
      ? undefined
      : new ((await import(pathToFileURL(o.against).href)) as PgModule).PgLockTable(config);
  if (other !== undefined) {
    clients.push({
      name: `locktable (${o.against})`,
      once: async () => {
        await (await other.acquire('key')).release();
      },
    });
  }
  const us: number[][] = clients.map(() => []);
  const WARM_UP = 3;
  for (let round = 0; round < WARM_UP + o.rounds; round++) {
    for (let k = 0; k < clients.length; k++) {
      const i = (round + k) % clients.length;
      const client = clients[i]!;
      const start = performance.now();
      for (let n = 0; n < o.ops; n++) await client.once();
      if (round >= WARM_UP) us[i]!.push(((performance.now() - start) * 1000) / o.ops);
    }
  }
  await locks.close();
  await other?.close();
  await raw.end();
  await statements.end();
  const load1 = os.loadavg();
  const machine = machineInfo();
  console.log(
    `${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, commit ${machine.commit}, ` +
      `load average ${load0[0]!.toFixed(2)} before, ${load1[0]!.toFixed(2)} after; ` +
      `${o.rounds} rounds of ${o.ops} acquire + release per client\n`,
  );
  /** The median over rounds of client i's time over client j's in the same round. */
  const ratio = (i: number, j: number): string =>
    median(us[i]!.map((x, round) => x / us[j]![round]!)).toFixed(3);
  console.log(
    '| client | µs per acquire + release (median [min-max] over rounds) | / raw | / locktable |',
  );
  console.log('| --- | --- | --- | --- |');
  for (let i = 0; i < clients.length; i++) {
    const xs = us[i]!;
    console.log(
      `| ${clients[i]!.name} | ${median(xs).toFixed(1)} [${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)}] | ${ratio(i, 0)} | ${ratio(i, 2)} |`,
    );
  }
}

await main();
