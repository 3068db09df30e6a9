// `npm test`: runs every test/**/*.test.ts file (or the files given as arguments) with Node's test
// runner, against a throwaway PostgreSQL cluster that it starts and stops (test/postgres/cluster.mjs).
// DATABASE_URL (or PG_CONNECTION_STRING) points the tests at an existing server instead. Without
// PostgreSQL the Postgres tests skip with a message, except under CI=true, where that fails the run.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existingServer, findBinaries, startCluster } from './postgres/cluster.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

function testFiles(dir) {
  const files = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...testFiles(path));
    else if (entry.name.endsWith('.test.ts')) files.push(relative(root, path));
  }
  return files.sort();
}

const files = process.argv.length > 2 ? process.argv.slice(2) : testFiles(join(root, 'test'));
const env = { ...process.env };
let cluster;
if (existingServer() !== undefined) {
  env.DATABASE_URL = existingServer();
} else if (findBinaries() !== undefined) {
  cluster = await startCluster({ log: (line) => console.error(`# postgres: ${line}`) });
  env.DATABASE_URL = cluster.url;
} else if (process.env.CI === 'true') {
  console.error(
    '# PostgreSQL is not installed (no initdb) and DATABASE_URL is not set: under CI=true the ' +
      'Postgres tests must run. Install PostgreSQL (Debian: apt-get install -y postgresql).',
  );
  process.exit(1);
} else {
  console.error(
    '# PostgreSQL not found: the Postgres tests will be skipped. Install PostgreSQL (initdb on ' +
      'PATH or under /usr/lib/postgresql) or set DATABASE_URL to run them.',
  );
}

const child = spawn(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=120000', ...files],
  { cwd: root, env, stdio: 'inherit' },
);
const forward = (signal) => child.kill(signal);
process.on('SIGINT', forward);
process.on('SIGTERM', forward);
const code = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
await cluster?.stop();
process.exit(code);
