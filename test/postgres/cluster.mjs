// A throwaway PostgreSQL cluster for tests, benchmarks and the demo: initdb into a temporary
// directory, start on a free port (loopback and a unix socket in that directory), stop and delete
// it afterwards. DATABASE_URL (or PG_CONNECTION_STRING) points everything at an existing server
// instead, and then nothing is started.
//
//   node test/postgres/cluster.mjs            start one, print its URL, stop it on Ctrl-C
//   import { startCluster } from './cluster.mjs'; const pg = await startCluster(); ...; await pg.stop();
//
// PostgreSQL refuses to run as root: as root, every server command runs as the `postgres` user
// (runuser), in a directory that user owns. fsync is off (a crash of this machine loses a
// throwaway cluster, nothing else); synchronous_commit stays on, so a commit is written to the
// kernel before it returns and survives a kill of the server's processes.
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The URL of an existing server named by the environment, or undefined. */
export function existingServer() {
  return process.env.DATABASE_URL || process.env.PG_CONNECTION_STRING || undefined;
}

/** The directory of initdb and pg_ctl, or undefined when PostgreSQL is not installed. */
export function findBinaries() {
  const candidates = [];
  if (process.env.PG_BINDIR) candidates.push(process.env.PG_BINDIR);
  const pgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (pgConfig.status === 0) candidates.push(pgConfig.stdout.trim());
  for (const root of ['/usr/lib/postgresql', '/usr/local/pgsql']) {
    if (!existsSync(root)) continue;
    if (existsSync(join(root, 'bin'))) candidates.push(join(root, 'bin'));
    const versions = readdirSync(root)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) candidates.push(join(root, v, 'bin'));
  }
  return candidates.find(
    (dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl')),
  );
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts a throwaway cluster, or returns the existing server's URL. Resolves to
 * { url, port, dataDir, stop() } (dataDir and port undefined for an existing server).
 */
// Options: `own` starts a cluster even when DATABASE_URL names a server (a test that crashes the
// server needs its own); `fsync` turns fsync on (a real server's cost of a flushed commit);
// `settings` adds server settings ({ name: value }, each a `-c name=value`).
export async function startCluster({
  log = () => {},
  own = false,
  fsync = false,
  settings = {},
} = {}) {
  const existing = own ? undefined : existingServer();
  if (existing !== undefined) return { url: existing, stop: async () => {} };
  const bin = findBinaries();
  if (bin === undefined) {
    throw new Error(
      'PostgreSQL is not installed (no initdb found; set PG_BINDIR, or DATABASE_URL to use a server)',
    );
  }
  const asRoot = userInfo().uid === 0;
  const dataDir = mkdtempSync(join(tmpdir(), 'locktable-pg-'));
  if (asRoot) {
    const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    if (id.status !== 0)
      throw new Error('running as root, but there is no postgres user to run the server as');
    chownSync(dataDir, Number(id.stdout), Number(gid.stdout));
  }
  chmodSync(dataDir, 0o700);
  const as = (cmd, args) =>
    asRoot
      ? ['runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]]
      : [join(bin, cmd), args];
  const port = await freePort();
  const pgdata = join(dataDir, 'data');
  log(`initdb ${pgdata}`);
  await run(
    ...as('initdb', ['-D', pgdata, '-U', 'locktable', '--auth=trust', '-E', 'UTF8', '--no-sync']),
  );
  const options = [
    `-p ${port}`,
    `-k ${dataDir}`,
    '-c listen_addresses=127.0.0.1',
    `-c fsync=${fsync ? 'on' : 'off'}`,
    '-c max_connections=200',
    '-c shared_buffers=32MB',
    ...Object.entries(settings).map(([name, value]) => `-c ${name}=${value}`),
  ].join(' ');
  const start = async () => {
    log(`start on port ${port}`);
    await run(
      ...as('pg_ctl', [
        '-D',
        pgdata,
        '-o',
        options,
        '-l',
        join(dataDir, 'server.log'),
        '-w',
        'start',
      ]),
    );
  };
  await start();
  // An immediate shutdown: every server process quits at once, without a checkpoint, and the next
  // start runs crash recovery, as after a power cut (but the kernel keeps what was written).
  const crash = () => run(...as('pg_ctl', ['-D', pgdata, '-m', 'immediate', '-w', 'stop']));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      await run(...as('pg_ctl', ['-D', pgdata, '-m', 'immediate', '-w', 'stop']));
    } catch {
      // Already gone (a test may kill it): the directory goes either way.
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  return {
    url: `postgres://locktable@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    pgdata,
    bin,
    asRoot,
    stop,
    crash,
    start,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const cluster = await startCluster({ log: (line) => console.error(`# ${line}`) });
  console.log(cluster.url);
  const done = async () => {
    await cluster.stop();
    process.exit(0);
  };
  process.once('SIGINT', done);
  process.once('SIGTERM', done);
  setInterval(() => {}, 1 << 30);
}
