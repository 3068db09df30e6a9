// `npm run bench:postgres:split`: where an uncontended PgLockTable acquire + release spends its
// time (run through tsx: it takes the grant statement from src/postgres/sql.ts). It times, in rounds on one throwaway cluster (fsync on), PgLockTable's acquire + release
// of one key (and, within it, the time spent inside pg's query calls), the same two statements sent
// by hand on one pg.Client, and raw pg_advisory_lock + unlock. Each round is 1,000 operations;
// the first rounds include the JIT's warm-up, so read the last ones.
import pg from 'pg';
import { PgLockTable } from '../../dist/postgres.js';
import { fastGrant, releaseStatement } from '../../src/postgres/sql.ts';
import { startCluster } from '../../test/postgres/cluster.mjs';

const ROUNDS = 5;
const N = 1000;
const NAMESPACE = 0x6c6f636b;

const cluster = await startCluster({ own: true, fsync: true });
let inQuery = 0;
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function timedQuery(config, ...rest) {
  const start = performance.now();
  if (typeof config?.submit === 'function' && typeof config.callback === 'function') {
    // PgLockTable's own statements (a pg Submittable): timed up to their callback.
    const callback = config.callback;
    config.callback = (...args) => {
      inQuery += performance.now() - start;
      callback(...args);
    };
  }
  const result = query.call(this, config, ...rest);
  if (result && typeof result.then === 'function') {
    return result.finally(() => {
      inQuery += performance.now() - start;
    });
  }
  return result;
};

try {
  const locks = new PgLockTable({ connectionString: cluster.url });
  await (await locks.acquire('k')).release();
  const raw = new pg.Client({ connectionString: cluster.url });
  await raw.connect();
  // As SESSION_START sets a lock session up (an idle_session_timeout, synchronous_commit off).
  await raw.query(
    "SELECT set_config('locktable.session', 'locktable:by-hand', false), " +
      "set_config('idle_session_timeout', '60000', false), set_config('synchronous_commit', 'off', false)",
  );
  const { rows } = await raw.query('SELECT id FROM locktable.keys WHERE key = $1', ['k']);
  const id = rows[0].id;
  // The statement PgLockTable sends for a key whose id it knows (a wait forever, exclusive).
  const grant = {
    ...fastGrant('forever', true),
    values: [NAMESPACE, id, 'locktable:by-hand'],
  };
  const release = { ...releaseStatement(true), values: [NAMESPACE, id, 'locktable:by-hand'] };
  const lock = {
    name: 'split_lock',
    text: 'SELECT pg_advisory_lock($1::int4, $2::int4)',
    values: [1, 1],
  };
  const unlock = {
    name: 'split_unlock',
    text: 'SELECT pg_advisory_unlock($1::int4, $2::int4)',
    values: [1, 1],
  };
  const time = async (body) => {
    inQuery = 0;
    const start = performance.now();
    for (let i = 0; i < N; i++) await body();
    return { op: ((performance.now() - start) * 1000) / N, inQuery: (inQuery * 1000) / N };
  };
  console.log(
    'round | locktable µs/op (in pg queries) | its statements by hand | raw lock + unlock',
  );
  for (let round = 1; round <= ROUNDS; round++) {
    const a = await time(async () => {
      const lease = await locks.acquire('k');
      await lease.release();
    });
    const b = await time(async () => {
      await raw.query(grant);
      await raw.query(release);
    });
    const c = await time(async () => {
      await raw.query(lock);
      await raw.query(unlock);
    });
    console.log(
      `${round} | ${a.op.toFixed(0)} (${a.inQuery.toFixed(0)}) | ${b.op.toFixed(0)} | ${c.op.toFixed(0)}`,
    );
  }
  await raw.end();
  await locks.close();
} finally {
  await cluster.stop();
}
