// RawQuery writes its Bind, Execute and Sync as bytes of its own (encodeBind), cached per session
// and statement (BoundStatements): they must be the bytes pg's own serializer (the pg-protocol
// that pg loads) makes for the same statement and parameters, as pg's Query would send them. And
// the replies still go through pg's machinery: rows, a server error (the session goes on), a
// failed Parse, a cancel, a notice, and the connection's end.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, describe, test } from 'node:test';
import type pg from 'pg';
import { BoundStatements, encodeBind, toText } from '../../src/postgres/raw-query.js';
import { Session } from '../../src/postgres/session.js';
import {
  DEFAULT_NAMESPACE,
  fastGrant,
  HEARTBEAT,
  releaseStatement,
  type GrantWait,
} from '../../src/postgres/sql.js';
import { databaseUrl, eventually, rawClient, skipWithoutPostgres } from './db.js';

/** Until the server process `pid` runs a pg_sleep statement (polled through `admin`). */
async function sleepingOnServer(admin: pg.Client, pid: number): Promise<void> {
  await eventually(
    async () =>
      (
        await admin.query(
          "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%' AND state = 'active'",
          [pid],
        )
      ).rows.length > 0,
    10_000,
    'the statement to run on the server',
  );
}

/** pg-protocol as pg itself loads it. */
const pgRequire = createRequire(createRequire(import.meta.url).resolve('pg'));
const { serialize } = pgRequire('pg-protocol') as {
  serialize: {
    bind(config: object): Buffer;
    execute(config: object): Buffer;
    sync(): Buffer;
  };
};

/** What pg's Query writes for a prepared statement's Bind, Execute and Sync. */
function pgBytes(statement: string, values: unknown[]): Buffer {
  return Buffer.concat([
    serialize.bind({ portal: '', statement, values, binary: false, valueMapper: toText }),
    serialize.execute({ portal: '' }),
    serialize.sync(),
  ]);
}

const MARKER = 'locktable:7f1c3a52-90d4-4c1e-8b7a-1d2e3f405162';

describe('RawQuery bytes', () => {
  test('equal pg’s serializer’s for every hot statement and parameters', () => {
    const cases: Array<[string, unknown[]]> = [[HEARTBEAT.name, []]];
    for (const wait of ['try', 'forever', 'timed'] as GrantWait[]) {
      for (const exclusive of [true, false]) {
        const values: unknown[] = [DEFAULT_NAMESPACE, 12345, MARKER];
        if (wait === 'timed') values.push(1999);
        cases.push([fastGrant(wait, exclusive).name, values]);
      }
    }
    for (const exclusive of [true, false]) {
      cases.push([releaseStatement(exclusive).name, [-2147483648, 2147483647, MARKER]]);
    }
    // Parameters of other shapes: null, booleans, text beyond ASCII, a lone surrogate (both
    // sides write U+FFFD), an empty string, a long one, a name beyond ASCII.
    cases.push(['locktable_grant', [1, 'clé 🔒', true, 0, 0, MARKER]]);
    cases.push(['x', [null, false, '', '\ud800', 'a'.repeat(5000), undefined]]);
    cases.push(['nom_é', [0, -1, 1.5]]);
    for (const [name, values] of cases) {
      assert.deepEqual(encodeBind(name, values), pgBytes(name, values), `${name} ${values}`);
    }
  });

  test('are cached per statement for its last parameters, and remade when they change', () => {
    const bound = new BoundStatements();
    const values = [DEFAULT_NAMESPACE, 7, MARKER];
    const first = bound.bytes('locktable_release_x', values);
    assert.equal(bound.bytes('locktable_release_x', [...values]), first, 'the same buffer again');
    // The caller's array changing later does not change what the cache holds.
    values[1] = 8;
    const other = bound.bytes('locktable_release_x', values);
    assert.notEqual(other, first);
    assert.deepEqual(other, pgBytes('locktable_release_x', values));
    // Another statement with the same parameters has bytes of its own.
    assert.deepEqual(
      bound.bytes('locktable_release_s', values),
      pgBytes('locktable_release_s', values),
    );
  });
});

describe('RawQuery replies, through pg', { skip: skipWithoutPostgres }, () => {
  const sessions: Session[] = [];
  after(async () => {
    await Promise.all(sessions.map((s) => s.end()));
  });

  async function session(): Promise<Session> {
    const s = await Session.open({ connectionString: databaseUrl }, 60_000);
    sessions.push(s);
    return s;
  }

  test('rows, a server error (the session goes on, the same bytes fail again), a notice', async () => {
    const s = await session();
    const divide = { name: 'test_raw_divide', text: 'SELECT (10 / $1::int4)::text, $2::text' };
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await s.rows(divide, [5, 'clé']), [['2', 'clé']]);
    }
    for (let i = 0; i < 2; i++) {
      await assert.rejects(s.rows(divide, [0, 'x']), (error: { code?: string }) => {
        assert.equal(error.code, '22012');
        return true;
      });
      assert.equal(s.alive, true);
      assert.deepEqual(await s.rows(divide, [5, null]), [['2', null]]);
    }
    // An unlock of a lock not held: the server answers false with a WARNING (a notice).
    const unlock = { name: 'test_raw_unlock', text: 'SELECT pg_advisory_unlock($1, $2)' };
    assert.deepEqual(await s.rows(unlock, [1, 2]), [['f']]);
    assert.deepEqual(await s.rows(HEARTBEAT, []), [[String(s.pid), s.marker]]);
  });

  test('a parameter whose text cannot be made rejects the statement before pg sees it; the session goes on', async () => {
    const s = await session();
    const echo = { name: 'test_raw_echo', text: 'SELECT $1::text' };
    const noText = {
      toString(): string {
        throw new Error('no text for this value');
      },
    };
    await assert.rejects(s.rows(echo, [noText]), /no text for this value/);
    await assert.rejects(
      s.rows(echo, () => {
        throw new Error('no values');
      }),
      /no values/,
    );
    assert.equal(s.alive, true);
    // pg never saw them: its client is not left waiting for their replies (the next statement
    // would then wait forever in pg's queue; its bound cuts the session instead).
    assert.deepEqual(await s.rowsWithin(echo, ['x'], 2000), [['x']]);
    assert.deepEqual(await s.rowsWithin(HEARTBEAT, [], 2000), [[String(s.pid), s.marker]]);
  });

  test('values through the server: non-ASCII, long, null, empty, a bigint past 2^53; the cached bytes again', async () => {
    const s = await session();
    const echo = {
      name: 'test_raw_values',
      text: 'SELECT $1::text, $2::text, $3::text, length($4::text)::text, ($5::int8 + 1)::text',
    };
    const long = 'é'.repeat(100_000);
    const values = ['clé 🔒', null, '', long, 9007199254740993n];
    const expected = [['clé 🔒', null, '', '100000', '9007199254740994']];
    assert.deepEqual(await s.rows(echo, values), expected);
    assert.deepEqual(await s.rows(echo, values), expected);
  });

  test('a statement whose Parse fails is parsed again next time; the session goes on', async () => {
    const s = await session();
    const bad = { name: 'test_raw_bad', text: 'SELEC 1' };
    for (let i = 0; i < 2; i++) {
      await assert.rejects(s.rows(bad, []), { code: '42601' });
    }
    assert.deepEqual(await s.rows(HEARTBEAT, []), [[String(s.pid), s.marker]]);
  });

  test('a statement cancelled by pg_cancel_backend fails with 57014; the one queued behind it is answered, the session goes on', async () => {
    const s = await session();
    const sleep = { name: 'test_raw_cancelled', text: 'SELECT pg_sleep($1)::text, $2::text' };
    assert.deepEqual(await s.rows(sleep, [0, 'a']), [['', 'a']]);
    const pending = s.rows(sleep, [30, 'a']).then(
      () => undefined,
      (error: unknown) => error as { code?: string },
    );
    const queued = s.rows(HEARTBEAT, []);
    const admin = await rawClient();
    try {
      await sleepingOnServer(admin, s.pid);
      await admin.query('SELECT pg_cancel_backend($1)', [s.pid]);
    } finally {
      await admin.end();
    }
    assert.equal((await pending)?.code, '57014');
    assert.deepEqual(await queued, [[String(s.pid), s.marker]]);
    assert.equal(s.alive, true);
    // The cancelled statement again, prepared still (its bytes remade for other parameters).
    assert.deepEqual(await s.rows(sleep, [0, 'a']), [['', 'a']]);
  });

  test('the connection’s end fails the statement in flight', async () => {
    const s = await session();
    const sleep = { name: 'test_raw_sleep', text: 'SELECT pg_sleep($1)' };
    const pending = s.rows(sleep, [30]).then(
      () => undefined,
      (error: unknown) => error as { code?: string },
    );
    const admin = await rawClient();
    try {
      // Once the statement runs on the server, its process is ended from outside.
      await sleepingOnServer(admin, s.pid);
      await admin.query('SELECT pg_terminate_backend($1)', [s.pid]);
    } finally {
      await admin.end();
    }
    assert.equal((await pending)?.code, '57P01', 'the statement failed with the server’s FATAL');
    assert.equal(s.alive, false);
  });
});
