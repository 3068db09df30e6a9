/** The command line of `npm run bench -- [options]`. */
import { PEERS } from './peers/catalogue.js';
import type { PeerName } from './peers/types.js';
import { SCENARIOS } from './plan.js';
import type { ScenarioId } from './spec.js';

export interface CliOptions {
  quick: boolean;
  scenarios: Set<ScenarioId>;
  peers: Set<PeerName>;
  workers: Set<number>;
  runs?: number;
  seed?: number;
  out?: string | undefined;
  /** Run every peer (locktable and the baseline too) under the Node 24 binary. */
  allOnNode24: boolean;
  /** Print the plan and the estimate, run nothing. */
  list: boolean;
  /** Re-render the tables and charts of an earlier run from its results.json, run nothing. */
  rerender?: string | undefined;
  help: boolean;
  /** true when --only or --peers or --workers narrowed the run. */
  filtered: boolean;
}

export const USAGE = `npm run bench -- [options]

  --quick              a smoke run: one run of each configuration, short windows (about a minute)
  --only a,b           scenarios to run (default all): ${SCENARIOS.map((s) => s.id).join(', ')}
  --peers a,b          peers to run (default all): ${PEERS.map((p) => p.name).join(', ')}
                       (the raw baseline always runs: every ratio is taken against it)
  --workers 2,16       hot-key worker counts to run (default 1,2,4,8; --quick: 1,2,8)
  --runs N             runs of every configuration (default 3; --quick: 1)
  --seed N             seed of the random key choices (default: printed)
  --out DIR            where to write results (default benchmarks/results/latest, or
                       results/quick for --quick, results/partial for a filtered run)
  --all-on-node24      run every peer under the fetched Node 24 (same runtime as
                       worker_threads.locks); default: only the peers that need it
  --list               print the jobs and the time estimate, run nothing
  --rerender DIR       rewrite DIR/results.md and the charts from DIR/results.json, run nothing
  --help               this text
`;

function list<T extends string>(
  value: string | undefined,
  known: readonly T[],
  flag: string,
): Set<T> {
  if (value === undefined || value === '') throw new Error(`${flag} needs a comma-separated list`);
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const item of items) {
    if (!known.includes(item as T)) {
      throw new Error(`${flag}: unknown ${JSON.stringify(item)} (known: ${known.join(', ')})`);
    }
  }
  return new Set(items as T[]);
}

function integer(value: string | undefined, flag: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`${flag} needs an integer >= ${min}, got ${value}`);
  return n;
}

export function parseArgs(argv: readonly string[]): CliOptions {
  const options: CliOptions = {
    quick: false,
    scenarios: new Set(SCENARIOS.map((s) => s.id)),
    peers: new Set(PEERS.map((p) => p.name)),
    workers: new Set(),
    allOnNode24: false,
    list: false,
    help: false,
    filtered: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.includes('=')
      ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
      : [arg, undefined];
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case '--quick':
        options.quick = true;
        break;
      case '--only':
        options.scenarios = list(
          value(),
          SCENARIOS.map((s) => s.id),
          '--only',
        );
        options.filtered = true;
        break;
      case '--peers':
        options.peers = list(
          value(),
          PEERS.map((p) => p.name),
          '--peers',
        );
        options.peers.add('baseline');
        options.filtered = true;
        break;
      case '--workers':
        options.workers = new Set(
          value()!
            .split(',')
            .map((w) => integer(w, '--workers', 1)),
        );
        options.filtered = true;
        break;
      case '--runs':
        options.runs = integer(value(), '--runs', 1);
        break;
      case '--seed':
        options.seed = integer(value(), '--seed', 0);
        break;
      case '--out':
        options.out = value();
        break;
      case '--rerender':
        options.rerender = value();
        break;
      case '--all-on-node24':
        options.allOnNode24 = true;
        break;
      case '--list':
        options.list = true;
        break;
      case '--help':
      case '-h':
        options.help = true;
        break;
      default:
        throw new Error(`unknown option ${JSON.stringify(arg)}\n\n${USAGE}`);
    }
  }
  return options;
}
