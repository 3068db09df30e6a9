// Fencing tokens across server crashes: a grant's counter lives in an UNLOGGED table (no disk
// flush per grant), which PostgreSQL empties when it starts after a crash; the epoch, bumped with
// a flushed commit by the first grant that finds the counters gone, keeps every later token above
// every earlier one. These tests crash a server of their own (an immediate shutdown, and a killed
// server process that makes the postmaster reinitialise), so they need PostgreSQL's binaries, not
// only a DATABASE_URL.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { PgLockTable } from '../../src/postgres/index.js';
import { FENCE_BITS } from '../../src/postgres/sql.js';
import { COHORT_BITS } from '../../src/postgres/options.js';
// @ts-expect-error: a JavaScript module without types
import { findBinaries, startCluster } from './cluster.mjs';

interface Cluster {
  url: string;
  pgdata: string;
  crash: () => Promise<unknown>;
  start: () => Promise<void>;
  stop: () => Promise<void>;
}

const skip =
  findBinaries() === undefined
    ? 'PostgreSQL binaries not found (initdb): these tests crash a server of their own'
    : false;

const FENCE_MASK = (1n << BigInt(FENCE_BITS)) - 1n;
/** The server's part of a token: (epoch << FENCE_BITS) | fence. */
const serverToken = (token: bigint): bigint => token >> COHORT_BITS;
const epochOf = (token: bigint): bigint => serverToken(token) >> BigInt(FENCE_BITS);
const fenceOf = (token: bigint): bigint => serverToken(token) & FENCE_MASK;

describe('fencing tokens across server crashes', { skip }, () => {
  let cluster: Cluster;

  before(async () => {
    cluster = (await startCluster({ own: true })) as Cluster;
  });
  after(async () => {
    await cluster?.stop();
  });

  const open = (): PgLockTable =>
    new PgLockTable({ connectionString: cluster.url, lease: Infinity, poolSize: 4 });

  async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ connectionString: cluster.url });
    client.on('error', () => {});
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** Grants `key` `n` times in a row; returns the tokens. */
  async function grants(locks: PgLockTable, key: string, n: number): Promise<bigint[]> {
    const tokens: bigint[] = [];
    for (let i = 0; i < n; i++) {
      const lease = await locks.acquire(key);
      tokens.push(lease.token);
      await lease.release();
    }
    return tokens;
  }

  const durableEpoch = (): Promise<bigint> =>
    admin(async (c) =>
      BigInt((await c.query('SELECT epoch::text FROM locktable.epoch')).rows[0].epoch),
    );

  test('an immediate shutdown: the next token is larger, though the counters were lost', async (t) => {
    let locks = open();
    const before = await grants(locks, 'invoice:1', 5);
    await grants(locks, 'invoice:2', 3);
    await locks.close();
    const epochBefore = await durableEpoch();

    await cluster.crash();
    await cluster.start();

    locks = open();
    const afterCrash = await grants(locks, 'invoice:1', 3);
    const other = await grants(locks, 'invoice:2', 1);
    await locks.close();
    t.diagnostic(`before: ${before.at(-1)}, after: ${afterCrash[0]}`);

    // Negative control: the crash did empty the unlogged counters, so a token made of the fence
    // alone would have gone back (the key counts from 1 again).
    assert.equal(fenceOf(afterCrash[0]!), 1n);
    assert.ok(fenceOf(afterCrash[0]!) <= fenceOf(before.at(-1)!));
    // The epoch is what keeps the tokens increasing: bumped once, durably, for every key.
    assert.equal(await durableEpoch(), epochBefore + 1n);
    assert.equal(epochOf(afterCrash[0]!), epochOf(before.at(-1)!) + 1n);
    assert.ok(afterCrash[0]! > before.at(-1)!, 'the first token after the crash is larger');
    for (let i = 1; i < afterCrash.length; i++) assert.ok(afterCrash[i]! > afterCrash[i - 1]!);
    assert.equal(epochOf(other[0]!), epochOf(afterCrash[0]!));
  });

  test('a server process killed: the postmaster reinitialises, and tokens still increase', async (t) => {
    let locks = open();
    const before = await grants(locks, 'order:7', 4);
    await locks.close();
    const epochBefore = await durableEpoch();

    // SIGKILL one backend: the postmaster ends every session and runs crash recovery.
    const victim = new pg.Client({ connectionString: cluster.url });
    victim.on('error', () => {});
    await victim.connect();
    const { pid } = (await victim.query('SELECT pg_backend_pid() AS pid')).rows[0];
    process.kill(pid, 'SIGKILL');
    await victim.end().catch(() => {});

    // The server takes connections again once recovery is done.
    locks = open();
    let afterCrash: bigint[] | undefined;
    for (let attempt = 0; afterCrash === undefined; attempt++) {
      try {
        afterCrash = await grants(locks, 'order:7', 2);
      } catch (error) {
        if (attempt > 200) throw error;
        await locks.close().catch(() => {});
        locks = open();
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
    await locks.close();
    t.diagnostic(`before: ${before.at(-1)}, after: ${afterCrash[0]}`);
    assert.equal(fenceOf(afterCrash[0]!), 1n, 'the reinitialisation emptied the counters');
    assert.equal(await durableEpoch(), epochBefore + 1n);
    assert.ok(afterCrash[0]! > before.at(-1)!);
    assert.ok(afterCrash[1]! > afterCrash[0]!);
  });

  test('after a crash, many first grants at once start exactly one new epoch', async () => {
    await cluster.crash();
    await cluster.start();
    const epochBefore = await durableEpoch();
    const tables = Array.from({ length: 4 }, open);
    const tokens = await Promise.all(
      tables.flatMap((locks, i) =>
        Array.from({ length: 4 }, (_, j) => grants(locks, `first:${i}:${j}`, 1)),
      ),
    );
    await Promise.all(tables.map((locks) => locks.close()));
    assert.equal(await durableEpoch(), epochBefore + 1n);
    for (const [token] of tokens) assert.equal(epochOf(token!), epochBefore + 1n);
  });

  test("a key's counter that fills its bits starts a new epoch, and its tokens go on increasing", async () => {
    const locks = open();
    const [first] = await grants(locks, 'full', 1);
    const epochBefore = await durableEpoch();
    await admin((c) =>
      c.query(
        `UPDATE locktable.fences SET fence = $1 WHERE id = (SELECT id FROM locktable.keys WHERE key = 'full' AND namespace = $2)`,
        [((1n << BigInt(FENCE_BITS)) - 2n).toString(), 0x6c6f636b],
      ),
    );
    const [last, next, then] = await grants(locks, 'full', 3);
    const [otherKey] = await grants(locks, 'not-full', 1);
    await locks.close();
    assert.ok(last! > first!);
    assert.equal(fenceOf(last!), FENCE_MASK, 'the last fence of the epoch');
    assert.equal(epochOf(next!), epochOf(last!) + 1n);
    assert.equal(fenceOf(next!), 1n);
    assert.ok(next! > last! && then! > next!);
    assert.equal(await durableEpoch(), epochBefore + 1n);
    assert.equal(epochOf(otherKey!), epochBefore + 1n, 'other keys follow the new epoch');
  });
});
