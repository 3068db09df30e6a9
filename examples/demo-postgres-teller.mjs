// A teller process of `npm run demo:postgres` (examples/demo-postgres.mjs). argv[2] is the JSON
// config: { url, namespace, schema, accounts, loops, useLocks, victimAfterMs, seed }. It runs
// `loops` transfer loops, each on its own data connection, sharing one PgLockTable.
//
// A transfer: take both accounts' locks (acquireAll, deadlock-free), read both balances, write
// both, one UPDATE each, fenced by that account's token (refused if a newer token already wrote).
// Without locks: the same reads and writes, unfenced.
//
// IPC: sends 'ready', waits for 'go'. A victim (victimAfterMs set) stops its loops after that
// long, takes one more pair of locks, reads both balances, and sends { holding } (then waits to
// be killed). 'stop' { watch: { key: token } } ends the loops and is answered with { transfers,
// refused, recoveredAt }: the earliest time (ms since the epoch, sub-ms) at which this process
// was granted a watched key with a newer token than the watched one.
import { once } from 'node:events';
import pg from 'pg';
import { PgLockTable } from '../dist/postgres.js';

const config = JSON.parse(process.argv[2]);
const { url, schema, accounts, loops, useLocks, victimAfterMs } = config;
const now = () => performance.timeOrigin + performance.now();
const locks = new PgLockTable({
  connectionString: url,
  namespace: config.namespace,
  poolSize: loops,
});
const clients = await Promise.all(
  Array.from({ length: loops }, async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    return client;
  }),
);
let seed = config.seed >>> 0 || 1;
const random = (n) => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
};
const pickPair = () => {
  const a = random(accounts);
  let b = random(accounts - 1);
  if (b >= a) b++;
  return [a, b];
};
/** Every grant: [key, token, time]. */
const grants = [];
let transfers = 0;
let refused = 0;
let stopping = false;

async function transfer(data, [a, b]) {
  const keys = [`account:${a}`, `account:${b}`];
  let leases = [];
  if (useLocks) {
    leases = await locks.acquireAll(keys);
    const at = now();
    for (const l of leases) grants.push([l.key, l.token, at]);
  }
  const token = (id) => leases.find((l) => l.key === `account:${id}`)?.token;
  try {
    const { rows } = await data.query(
      `SELECT id, balance FROM ${schema}.accounts WHERE id = ANY($1::int[])`,
      [[a, b]],
    );
    const balance = new Map(rows.map((r) => [r.id, r.balance]));
    const amount = 1 + random(100);
    for (const [id, value] of [
      [a, balance.get(a) - amount],
      [b, balance.get(b) + amount],
    ]) {
      const r = useLocks
        ? await data.query(
            `UPDATE ${schema}.accounts SET balance = $1, fence = $2 WHERE id = $3 AND fence < $2`,
            [value, String(token(id)), id],
          )
        : await data.query(`UPDATE ${schema}.accounts SET balance = $1 WHERE id = $2`, [value, id]);
      if (r.rowCount === 0) refused++;
    }
    transfers++;
  } finally {
    for (const l of leases) await l.release();
  }
}

async function loop(data, until) {
  while (!stopping && now() < until) await transfer(data, pickPair());
}

// Connect the lock sessions before the start.
await Promise.all(
  Array.from({ length: loops }, async (_, i) => {
    await (await locks.acquire(`warm-up:${process.pid}:${i}`)).release();
  }),
);
process.send('ready');
await once(process, 'message'); // 'go'
const started = now();
const running = Promise.all(
  clients.map((data) =>
    loop(data, victimAfterMs === undefined ? Infinity : started + victimAfterMs),
  ),
);
process.on('message', async (message) => {
  if (message?.op !== 'stop') return;
  stopping = true;
  await running;
  let recoveredAt = null;
  for (const [key, token, at] of grants) {
    const watched = message.watch?.[key];
    if (
      watched !== undefined &&
      token > BigInt(watched) &&
      (recoveredAt === null || at < recoveredAt)
    )
      recoveredAt = at;
  }
  await locks.close();
  await Promise.all(clients.map((c) => c.end()));
  process.send({ transfers, refused, recoveredAt });
  process.disconnect();
});
if (victimAfterMs !== undefined) {
  await running;
  // Every loop has finished its last transfer: now hold a pair, mid-transfer, and be killed.
  const [a, b] = pickPair();
  const leases = await locks.acquireAll([`account:${a}`, `account:${b}`]);
  await clients[0].query(`SELECT balance FROM ${schema}.accounts WHERE id = ANY($1::int[])`, [
    [a, b],
  ]);
  process.send({
    holding: Object.fromEntries(leases.map((l) => [l.key, String(l.token)])),
    transfers,
  });
}
