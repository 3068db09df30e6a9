// `npm run demo:postgres`: the PostgreSQL backend doing its job across processes, in about 15 s.
// Starts a throwaway PostgreSQL cluster (test/postgres/cluster.mjs), or uses DATABASE_URL.
//   1. A bank of accounts in a table; teller processes move money between random pairs under
//      acquireAll, reading both balances and writing both with two separate UPDATEs (not atomic:
//      only the locks keep the total), each write fenced by its account's token.
//   2. One teller is killed with SIGKILL while it holds two accounts' locks: how long until
//      another process is granted one of them.
//   3. The same tellers without locks: the total is wrong.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { availableParallelism } from 'node:os';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startCluster } from '../test/postgres/cluster.mjs';

const ACCOUNTS = 20;
const OPENING_BALANCE = 1000;
const TELLERS = 4;
const LOOPS = 2;
const RUN_MS = Number(process.env.DEMO_RUN_MS ?? 6000);
const KILL_AFTER_MS = RUN_MS / 3;
const fmt = (n) => Math.round(n).toLocaleString('en-US');
const now = () => performance.timeOrigin + performance.now();
const teller = fileURLToPath(new URL('./demo-postgres-teller.mjs', import.meta.url));

const t0 = performance.now();
const cluster = await startCluster();
const admin = new pg.Client({ connectionString: cluster.url });
await admin.connect();
const version = (await admin.query('SHOW server_version')).rows[0].server_version;
console.log(
  `locktable PostgreSQL demo: Node ${process.version}, ${availableParallelism()} cores, ` +
    `PostgreSQL ${version} (${cluster.port === undefined ? 'DATABASE_URL' : `throwaway cluster on port ${cluster.port}, started in ${fmt(performance.now() - t0)} ms`})\n`,
);
const namespace = 2_000_000 + (process.pid % 1_000_000);
const schema = `locktable_demo_${process.pid}`;
await admin.query(`CREATE SCHEMA ${schema}`);
await admin.query(
  `CREATE TABLE ${schema}.accounts (id int PRIMARY KEY, balance int NOT NULL, fence bigint NOT NULL DEFAULT 0)`,
);
const expected = ACCOUNTS * OPENING_BALANCE;

async function open() {
  await admin.query(`DELETE FROM ${schema}.accounts`);
  await admin.query(
    `INSERT INTO ${schema}.accounts (id, balance) SELECT i, $1 FROM generate_series(0, $2 - 1) i`,
    [OPENING_BALANCE, ACCOUNTS],
  );
}

async function total() {
  return (await admin.query(`SELECT sum(balance)::int AS total FROM ${schema}.accounts`)).rows[0]
    .total;
}

/** One run: TELLERS processes for RUN_MS (with locks: the first is killed holding a pair). */
async function run(useLocks, ms) {
  await open();
  const procs = Array.from({ length: TELLERS }, (_, i) => {
    const config = {
      url: cluster.url,
      namespace,
      schema,
      accounts: ACCOUNTS,
      loops: LOOPS,
      useLocks,
      seed: 17 + i * 7919,
      victimAfterMs: useLocks && i === 0 ? KILL_AFTER_MS : undefined,
    };
    return fork(teller, [JSON.stringify(config)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
  });
  const exits = procs.map((p) => once(p, 'exit'));
  await Promise.all(procs.map((p) => once(p, 'message')));
  const started = performance.now();
  const victim = useLocks ? procs[0] : undefined;
  const held = victim && once(victim, 'message');
  for (const p of procs) p.send('go');
  let kill;
  if (victim !== undefined) {
    const [{ holding, transfers }] = await held;
    const killedAt = now();
    victim.kill('SIGKILL');
    await exits[0];
    kill = { holding, transfers, killedAt, pid: victim.pid };
  }
  await new Promise((resolve) =>
    setTimeout(resolve, Math.max(0, ms - (performance.now() - started))),
  );
  const survivors = victim === undefined ? procs : procs.slice(1);
  const reports = survivors.map((p) => once(p, 'message').then(([m]) => m));
  for (const p of survivors) p.send({ op: 'stop', watch: kill?.holding });
  const results = await Promise.all(reports);
  await Promise.all(exits);
  const seconds = (performance.now() - started) / 1000;
  const transfers = results.reduce((a, r) => a + r.transfers, kill?.transfers ?? 0);
  const refused = results.reduce((a, r) => a + r.refused, 0);
  const recovered = results
    .map((r) => r.recoveredAt)
    .filter((at) => at !== null)
    .sort((a, b) => a - b)[0];
  return {
    transfers,
    perSecond: transfers / seconds,
    refused,
    total: await total(),
    kill,
    recovery: recovered === undefined || kill === undefined ? undefined : recovered - kill.killedAt,
  };
}

const verdict = (t) =>
  t === expected
    ? 'exact'
    : `WRONG: ${fmt(Math.abs(expected - t))} ${t < expected ? 'lost' : 'made'} by races`;

console.log(
  `${ACCOUNTS} accounts of ${fmt(OPENING_BALANCE)} (${fmt(expected)} in all). ${TELLERS} teller ` +
    `processes x ${LOOPS} connections move money between random pairs for ${RUN_MS / 1000} s:\n` +
    '  acquireAll([a, b]), read both balances, write both (two UPDATEs, each fenced by its ' +
    "account's token).\n",
);
const locked = await run(true, RUN_MS);
console.log(
  `with locks:     ${fmt(locked.transfers).padStart(6)} transfers (${fmt(locked.perSecond)}/s), ` +
    `total ${fmt(locked.total)}: ${verdict(locked.total)}; fenced writes refused: ${locked.refused}`,
);
if (locked.kill !== undefined) {
  const keys = Object.keys(locked.kill.holding).join(' and ');
  console.log(
    `  teller 1 (pid ${locked.kill.pid}) was killed with SIGKILL ${fmt(KILL_AFTER_MS)} ms in, ` +
      `holding ${keys} (both balances read, neither written)`,
  );
  console.log(
    locked.recovery === undefined
      ? '  (no other teller asked for those accounts afterwards)'
      : `  recovery: SIGKILL -> next grant of one of them, in another teller process: ` +
          `${locked.recovery.toFixed(1)} ms`,
  );
}
const unlocked = await run(false, RUN_MS / 2);
console.log(
  `without locks:  ${fmt(unlocked.transfers).padStart(6)} transfers (${fmt(unlocked.perSecond)}/s), ` +
    `total ${fmt(unlocked.total)}: ${verdict(unlocked.total)}`,
);

await admin.query(`DROP SCHEMA ${schema} CASCADE`);
await admin.end();
await cluster.stop();
const ok = locked.total === expected && locked.refused === 0;
process.exitCode = ok ? 0 : 1;
