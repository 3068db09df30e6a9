// Fencing tokens across server crashes: a grant's token comes from one sequence, which is not
// flushed per grant (its WAL is written once per 32 values, and a grant commits with
// synchronous_commit off), so a crash may take it back; the epoch, bumped with a flushed commit by
// the first grant that finds the UNLOGGED table `alive` emptied by the crash, moves the sequence
// to a range above every earlier token. These tests crash a server of their own (an immediate
// shutdown, and a killed server process that makes the postmaster reinitialise), so they need
// PostgreSQL's binaries, not only a DATABASE_URL.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { PgLockTable } from '../../src/postgres/index.js';
import { TOKEN_BITS } from '../../src/postgres/sql.js';
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

/** The server's part of a token: (epoch << TOKEN_BITS) | n. */
const serverToken = (token: bigint): bigint => token >> COHORT_BITS;
const epochOf = (token: bigint): bigint => serverToken(token) >> BigInt(TOKEN_BITS);

describe('fencing tokens across server crashes', { skip }, () => {
  let cluster: Cluster;

  before(async () => {
    // The WAL writer flushes asynchronous commits every 10 s here (200 ms by default), so that a
    // crash right after some grants loses their sequence WAL: the negative control below.
    cluster = (await startCluster({ own: true, settings: { wal_writer_delay: '10s' } })) as Cluster;
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

  const sequenceValue = (): Promise<bigint> =>
    admin(async (c) =>
      BigInt((await c.query('SELECT last_value::text AS v FROM locktable.tokens')).rows[0].v),
    );
  const aliveRows = (): Promise<number> =>
    admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM locktable.alive')).rows[0].n);

  test('an immediate shutdown: the next token is larger, though the sequence went back', async (t) => {
    // Negative control: a crash right after 40 grants (the sequence logs 32 values ahead, so the
    // 33rd grant wrote WAL that nothing flushed) takes the sequence back below the last token
    // handed out: a token drawn from the sequence alone would repeat. The WAL writer may still
    // flush in that instant (every 10 s here), so the scenario is tried up to 3 times.
    let wentBack = false;
    for (let attempt = 1; attempt <= 3 && !wentBack; attempt++) {
      const survivor = open();
      await grants(survivor, 'invoice:1', 1); // learns the key's id: its next grant is FAST_GRANT
      const before = await grants(survivor, 'invoice:1', 40);
      const last = before.at(-1)!;
      await survivor.close();
      const epochBefore = await durableEpoch();

      await cluster.crash();
      await cluster.start();

      assert.equal(await aliveRows(), 0, 'the crash emptied the unlogged table');
      const sequence = await sequenceValue();
      wentBack = sequence << COHORT_BITS < last;
      t.diagnostic(
        `attempt ${attempt}: last token ${last}, sequence after the crash ${sequence << COHORT_BITS}`,
      );

      // A table that knew the key's id before the crash (FAST_GRANT finds `alive` empty and falls
      // back) and a new one.
      const locks = open();
      await grants(locks, 'invoice:2', 1);
      const afterCrash = await grants(locks, 'invoice:1', 3);
      const newTable = open();
      const other = await grants(newTable, 'invoice:3', 1);
      await Promise.all([locks.close(), newTable.close()]);
      // The epoch is what keeps the tokens increasing: bumped once, durably, for every key.
      assert.equal(await durableEpoch(), epochBefore + 1n);
      assert.equal(epochOf(afterCrash[0]!), epochOf(last) + 1n);
      assert.ok(afterCrash[0]! > last, 'the first token after the crash is larger');
      for (let i = 1; i < afterCrash.length; i++) assert.ok(afterCrash[i]! > afterCrash[i - 1]!);
      assert.equal(epochOf(other[0]!), epochOf(afterCrash[0]!));
    }
    assert.ok(wentBack, 'in 3 crashes, the sequence never went back (the control did not apply)');
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
    assert.equal(await durableEpoch(), epochBefore + 1n, 'the reinitialisation emptied `alive`');
    assert.equal(epochOf(afterCrash[0]!), epochOf(before.at(-1)!) + 1n);
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

  test('16 tables at the end of a token range at once: each is granted, one new epoch', async () => {
    const tables = Array.from(
      { length: 16 },
      () => new PgLockTable({ connectionString: cluster.url, lease: Infinity, poolSize: 1 }),
    );
    try {
      // Each learns its key's id, so that half ask with fastGrant and half (new keys) with
      // locktable.grant when the range runs out.
      const first = await Promise.all(
        tables.map(async (locks, i) => (i % 2 === 0 ? grants(locks, `end:${i}`, 1) : [0n])),
      );
      const epochBefore = await durableEpoch();
      const max = ((epochOf(first[0]![0]!) + 1n) << BigInt(TOKEN_BITS)) - 1n;
      await admin((c) => c.query('SELECT setval($1, $2)', ['locktable.tokens', max.toString()]));
      const tokens = await Promise.all(tables.map((locks, i) => grants(locks, `end:${i}`, 1)));
      assert.equal(await durableEpoch(), epochBefore + 1n, 'exactly one new epoch');
      for (const [token] of tokens) assert.equal(epochOf(token!), epochBefore + 1n);
    } finally {
      await Promise.all(tables.map((locks) => locks.close()));
    }
  });

  test('a renewal of the token range keeps within the wait: a try returns null, a wait times out', async () => {
    // The renewal waits for the install lock: held here from outside, it cannot finish in time.
    const locks = open();
    const holder = new pg.Client({ connectionString: cluster.url });
    holder.on('error', () => {});
    await holder.connect();
    try {
      const [first] = await grants(locks, 'renew-wait', 1); // the id is known: fastGrant next
      const max = ((epochOf(first!) + 1n) << BigInt(TOKEN_BITS)) - 1n;
      await admin((c) => c.query('SELECT setval($1, $2)', ['locktable.tokens', max.toString()]));
      await holder.query('SELECT pg_advisory_lock($1, 0)', [0x6c6f636b]); // the install lock
      let t0 = performance.now();
      assert.equal(await locks.tryAcquire('renew-wait'), null);
      assert.ok(performance.now() - t0 < 1000, 'a try does not wait for the renewal');
      t0 = performance.now();
      await assert.rejects(locks.acquire('renew-wait', { waitTimeout: 100 }), {
        code: 'ERR_LOCK_TIMEOUT',
      });
      const waited = performance.now() - t0;
      assert.ok(waited >= 100 && waited < 1000, `waited ${waited} ms for 100`);
      assert.deepEqual(await locks.held(), [], 'nothing left held');
      await holder.query('SELECT pg_advisory_unlock($1, 0)', [0x6c6f636b]);
      const [next] = await grants(locks, 'renew-wait', 1);
      assert.equal(epochOf(next!), epochOf(first!) + 1n, 'renewed once the lock is free');
    } finally {
      await holder.end().catch(() => {});
      await locks.close();
    }
  });

  test('a token range used up starts a new epoch, and tokens go on increasing', async () => {
    const locks = open();
    const [first] = await grants(locks, 'full', 1); // learns the id: the next grants are FAST_GRANT
    const epochBefore = await durableEpoch();
    const range = (epoch: bigint) => ({
      min: epoch << BigInt(TOKEN_BITS),
      max: ((epoch + 1n) << BigInt(TOKEN_BITS)) - 1n,
    });
    const { max } = range(epochOf(first!));
    await admin((c) =>
      c.query('SELECT setval($1, $2)', ['locktable.tokens', (max - 2n).toString()]),
    );
    // max - 1 and max, then the range is used up: FAST_GRANT fails after taking the lock (2200H),
    // the client unlocks and sends locktable.grant, which starts the next epoch.
    const [last1, last, next, then] = await grants(locks, 'full', 4);
    const [otherKey] = await grants(locks, 'not-full', 1);
    assert.deepEqual(await locks.inspect('full'), null, 'nothing left held');
    await locks.close();
    assert.ok(last1! > first!);
    assert.equal(serverToken(last!), max, 'the last token of the range');
    assert.equal(epochOf(next!), epochOf(last!) + 1n);
    assert.equal(serverToken(next!), range(epochOf(next!)).min, 'the new range starts at its min');
    assert.ok(next! > last! && then! > next!);
    assert.equal(await durableEpoch(), epochBefore + 1n);
    assert.equal(epochOf(otherKey!), epochBefore + 1n, 'other keys follow the new epoch');

    // The same through locktable.grant (a key this table never granted: no id known).
    const fresh = open();
    const [a] = await grants(fresh, 'full-2', 1);
    const full = range(epochOf(a!)).max;
    await admin((c) => c.query('SELECT setval($1, $2)', ['locktable.tokens', full.toString()]));
    const [b] = await grants(fresh, 'full-3', 1);
    await fresh.close();
    assert.equal(epochOf(b!), epochOf(a!) + 1n);
    assert.equal(serverToken(b!), range(epochOf(b!)).min);
    assert.equal(await durableEpoch(), epochBefore + 2n);
  });
});
