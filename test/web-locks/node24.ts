// `npm run test:web-locks:node24`: the Web Locks tests under Node 24, where they run against
// locktable's LockManager and against Node's own worker_threads.locks in the same process (see
// test/web-locks.test.ts). Node 24 is the one the benchmarks use, fetched on first use into
// benchmarks/.cache/node24 (benchmarks/runtimes.ts): it is not a dependency, and `npm test` does
// not need it. Builds first (the worker fixtures load the built package).
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { resolveRuntimes } from '../../benchmarks/runtimes.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const node24 = resolveRuntimes(new Set(['node24']), (line) => console.error(`# ${line}`)).get(
  'node24',
);
if (node24 === undefined || !node24.ok) {
  console.error(`# Node 24 is not available: ${node24?.ok === false ? node24.reason : 'unknown'}`);
  process.exit(1);
}
console.error(`# running the Web Locks tests under ${node24.version}`);
execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
const files =
  process.argv.length > 2
    ? process.argv.slice(2)
    : ['test/web-locks.test.ts', 'test/web-locks-threads.test.ts', 'test/web-locks/fifo.test.ts'];
const run = spawnSync(
  node24.path,
  ['--import', 'tsx', '--test', '--test-concurrency=1', ...files],
  {
    cwd: root,
    stdio: 'inherit',
  },
);
process.exit(run.status ?? 1);
