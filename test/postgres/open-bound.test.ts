// A request's waitTimeout and signal bound its wait for a session to open, and close() cancels
// sessions still opening: against a server that accepts connections and never answers (a hung
// server, a half-open network path), pg's connect waits as long as TCP does, since its
// connectionTimeoutMillis is 0 (no bound) unless the user sets it.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { LockError } from '../../src/index.js';
import { PgLockTable, type PgLockTableOptions } from '../../src/postgres/index.js';
import { DEFAULT_CONNECT_TIMEOUT, resolvePgOptions } from '../../src/postgres/options.js';
import { END_GRACE_MS, Session } from '../../src/postgres/session.js';
import {
  databaseUrl,
  eventually,
  freshNamespace,
  rawClient,
  serverLocks,
  skipWithoutPostgres,
} from './db.js';

/** A TCP server that accepts connections and never writes: counts them, open and closed. */
async function silentServer() {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.resume(); // reads (and drops) what comes, so that it sees the client close
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `postgres://nobody@127.0.0.1:${port}/nothing`,
    get accepted() {
      return accepted;
    },
    get open() {
      return sockets.size;
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A TCP server that answers the startup (AuthenticationOk, BackendKeyData, ReadyForQuery: pg's
 * connect succeeds) and then never answers a statement (a server process frozen, a pooler whose
 * server never comes): counts the connections and the statements' bytes that reached it.
 */
async function startupOnlyServer() {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  let statements = 0;
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    let started = false;
    socket.on('data', () => {
      if (started) {
        statements++;
        return;
      }
      // The startup message came (pg sends it in one write): the session is ready.
      started = true;
      const authOk = Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0]);
      const keyData = Buffer.from([0x4b, 0, 0, 0, 12, 0, 0, 0, 42, 0, 0, 0, 7]);
      const ready = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);
      socket.write(Buffer.concat([authOk, keyData, ready]));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `postgres://nobody@127.0.0.1:${port}/nothing`,
    get accepted() {
      return accepted;
    },
    /** Chunks received after the startup: statements sent and never answered. */
    get statements() {
      return statements;
    },
    get open() {
      return sockets.size;
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A proxy to the test server that holds each new connection until open() (a server slow to
 * accept sessions), then pipes it through. Undefined when the server's URL is not host:port.
 */
async function gatedProxy() {
  const target = new URL(databaseUrl!);
  if (target.hostname === '' || target.searchParams.has('host')) return undefined;
  const held: Array<() => void> = [];
  const clients = new Set<net.Socket>();
  let gateOpen = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted++;
    clients.add(client);
    client.on('close', () => clients.delete(client));
    client.on('error', () => {});
    // Held, it reads what comes into `early`, so that it sees the client close.
    const early: Buffer[] = [];
    const keep = (chunk: Buffer) => early.push(chunk);
    const pipe = () => {
      if (client.destroyed) return;
      client.off('data', keep);
      const upstream = net.connect(Number(target.port || 5432), target.hostname);
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      for (const chunk of early.splice(0)) upstream.write(chunk);
      client.pipe(upstream).pipe(client);
    };
    if (gateOpen) pipe();
    else {
      client.on('data', keep);
      held.push(pipe);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(databaseUrl!);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as net.AddressInfo).port);
  return {
    url: url.href,
    get accepted() {
      return accepted;
    },
    /** Client connections not closed yet, held at the gate or piped. */
    get unclosed() {
      return clients.size;
    },
    close() {
      gateOpen = false;
    },
    open() {
      gateOpen = true;
      for (const pipe of held.splice(0)) pipe();
    },
    async stop() {
      for (const client of clients) client.destroy();
      server.close();
    },
  };
}

/** The rejection of `promise`; a failure if it resolves, or is still pending after 10 s. */
async function rejection(promise: Promise<unknown>): Promise<LockError> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise((resolve) => (timer = setTimeout(() => resolve('hung'), 10_000)));
  const outcome = await Promise.race([
    promise.then(
      () => 'resolved',
      (error: unknown) => error,
    ),
    hung,
  ]);
  clearTimeout(timer);
  assert.ok(outcome instanceof Error, `expected a rejection, got ${String(outcome)}`);
  return outcome as LockError;
}

describe('a request against a server that does not answer', () => {
  const stops: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const stop of stops) await stop();
  });

  test('fails ERR_LOCK_CONNECTION at connectionTimeoutMillis, while pg’s own default still waits', async () => {
    const server = await silentServer();
    const table = new PgLockTable({
      connectionString: server.url,
      namespace: freshNamespace(),
      connectionTimeoutMillis: 300,
    });
    stops.push(
      () => table.close(),
      () => server.stop(),
    );
    // The control: pg's own connect to the same server, with its default options, is still
    // waiting after the request has failed.
    const raw = new pg.Client({ connectionString: server.url });
    raw.on('error', () => {});
    let rawSettled = false;
    const rawConnect = raw.connect().then(
      () => (rawSettled = true),
      () => (rawSettled = true),
    );
    const start = performance.now();
    // A waitTimeout shorter than the bound: opening a session is not a wait for the lock.
    const error = await rejection(table.acquire('k', { waitTimeout: 50 }));
    const waited = performance.now() - start;
    assert.equal(error.code, 'ERR_LOCK_CONNECTION', error.message);
    assert.ok(waited >= 299, `failed after ${waited.toFixed(1)} ms, before the connect bound`);
    assert.equal(rawSettled, false, 'pg’s own connect gave up too: the control proves nothing');
    // pg's own connect above is one of them.
    assert.ok(server.accepted >= 2, 'the request did reach the server');
    (raw as unknown as { connection: { stream: net.Socket } }).connection.stream.destroy();
    await rawConnect;
  });

  test('fails ERR_LOCK_CONNECTION at connectionTimeoutMillis when the server answers the startup and then nothing', async () => {
    const server = await startupOnlyServer();
    const table = new PgLockTable({
      connectionString: server.url,
      namespace: freshNamespace(),
      connectionTimeoutMillis: 300,
    });
    stops.push(
      () => table.close(),
      () => server.stop(),
    );
    // The control: pg's own connect to the same server succeeds (the startup is answered), so
    // pg's connectionTimeoutMillis is over before the session's first statement.
    const raw = new pg.Client({ connectionString: server.url, connectionTimeoutMillis: 300 });
    raw.on('error', () => {});
    await raw.connect();
    const start = performance.now();
    const error = await rejection(table.acquire('k', { waitTimeout: 50 }));
    const waited = performance.now() - start;
    assert.equal(error.code, 'ERR_LOCK_CONNECTION', error.message);
    assert.match(error.message, /did not open a session within 300 ms/);
    assert.ok(waited >= 299, `failed after ${waited.toFixed(1)} ms, before the connect bound`);
    assert.ok(server.statements >= 1, 'the session did send its first statement');
    (raw as unknown as { connection: { stream: net.Socket } }).connection.stream.destroy();
    await eventually(() => server.open === 0, 4000, `every socket closed (${server.open} open)`);
  });

  test('a lock session opening against it fails at connectionTimeoutMillis too', async () => {
    const server = await startupOnlyServer();
    stops.push(() => server.stop());
    // Session.open as Sessions calls it for a lock session (with a lease).
    const config = resolvePgOptions({
      connectionString: server.url,
      connectionTimeoutMillis: 300,
    }).client;
    const start = performance.now();
    const error = await rejection(Session.open(config, 1000));
    const waited = performance.now() - start;
    assert.match(error.message, /did not open a session within 300 ms/);
    assert.ok(waited >= 299, `failed after ${waited.toFixed(1)} ms, before the connect bound`);
    assert.ok(server.statements >= 1, 'the session did send its first statement');
    await eventually(() => server.open === 0, 4000, `every socket closed (${server.open} open)`);
  });

  test('connectionTimeoutMillis: 10 s unless given; 0 and Infinity are no bound; bad values refused', () => {
    const bound = (options: Record<string, unknown>) =>
      resolvePgOptions(options as PgLockTableOptions).client.connectionTimeoutMillis;
    assert.equal(bound({}), DEFAULT_CONNECT_TIMEOUT);
    assert.equal(DEFAULT_CONNECT_TIMEOUT, 10_000);
    assert.equal(bound({ connectionTimeoutMillis: 250 }), 250);
    assert.equal(bound({ connectionTimeoutMillis: 0 }), 0);
    assert.equal(bound({ connectionTimeoutMillis: Infinity }), 0);
    assert.equal(bound({ connectionTimeoutMillis: 2 ** 35 }), 2 ** 31 - 1);
    for (const bad of [-1, NaN, '100']) {
      assert.throws(() => bound({ connectionTimeoutMillis: bad }), {
        code: /^ERR_(INVALID_ARG_TYPE|OUT_OF_RANGE)$/,
        message: /options\.connectionTimeoutMillis/,
      });
    }
  });

  test('its signal aborts the wait', async () => {
    const server = await silentServer();
    const table = new PgLockTable({ connectionString: server.url, namespace: freshNamespace() });
    stops.push(
      () => table.close(),
      () => server.stop(),
    );
    const controller = new AbortController();
    const request = rejection(table.acquire('k', { signal: controller.signal }));
    await eventually(() => server.accepted > 0, 4000, 'the control session connecting');
    controller.abort();
    const error = await request;
    assert.equal(error.name, 'AbortError', error.message);
  });

  test('close() cancels every session still opening: the requests fail ERR_LOCK_CLOSED, no socket is left', async () => {
    const server = await silentServer();
    const table = new PgLockTable({ connectionString: server.url, namespace: freshNamespace() });
    stops.push(() => server.stop());
    const requests = [
      rejection(table.acquire('a')),
      rejection(table.acquire('b', { waitTimeout: 60_000 })),
      rejection(table.inspect('c')),
    ];
    await eventually(() => server.accepted > 0, 4000, 'a session connecting');
    const start = performance.now();
    await table.close();
    const took = performance.now() - start;
    // The control session gets END_GRACE_MS to open (it may be needed to end a waiting
    // session's server process), then it is cancelled too.
    assert.ok(took < END_GRACE_MS + 1500, `close() took ${took.toFixed(0)} ms`);
    // They waited for the control session that close() cancelled: closed, not a connection error.
    for (const error of await Promise.all(requests)) {
      assert.equal(error.code, 'ERR_LOCK_CLOSED', `${error.code}: ${error.message}`);
    }
    await eventually(
      () => server.open === 0,
      4000,
      `every socket closed (open ${server.open} of ${server.accepted}, close() took ${took.toFixed(0)} ms)`,
    );
  });
});

describe('a new table', { skip: skipWithoutPostgres }, () => {
  test('takes a free key with a short waitTimeout: opening its sessions is not a wait for the lock', async () => {
    // A race review of a first version that bounded the opening by waitTimeout: 8 of 8 new tables
    // failed ERR_LOCK_TIMEOUT on a free key at waitTimeout 5-50 ms.
    for (let i = 0; i < 3; i++) {
      const table = new PgLockTable({ connectionString: databaseUrl, namespace: freshNamespace() });
      try {
        const lease = await table.acquire('k', { waitTimeout: 1 });
        await lease.release();
        await table.close();
      } finally {
        await table.close();
      }
    }
  });
});

describe('a session that opens after its request gave up', { skip: skipWithoutPostgres }, () => {
  test('is lent to the next request', async (t) => {
    const proxy = await gatedProxy();
    if (proxy === undefined) return t.skip('DATABASE_URL is not host:port');
    // One session: the next request waits for the one opening rather than open its own.
    const table = new PgLockTable({
      connectionString: proxy.url,
      namespace: freshNamespace(),
      poolSize: 1,
    });
    const admin = await rawClient();
    try {
      // The schema check and the control session first, through an open gate.
      proxy.open();
      await table.inspect('k');
      const controlOnly = proxy.accepted;
      proxy.close();
      const controller = new AbortController();
      const aborted = rejection(table.acquire('k', { signal: controller.signal }));
      await eventually(() => proxy.accepted === controlOnly + 1, 4000, 'one session opening');
      controller.abort();
      const error = await aborted;
      assert.equal(error.name, 'AbortError', error.message);
      proxy.open();
      // The next request gets that session once it opens; no other connection is made.
      const lease = await table.acquire('k', { waitTimeout: 10_000 });
      assert.equal(proxy.accepted, controlOnly + 1, 'the next request opened a session of its own');
      assert.equal((await serverLocks(admin, table.namespace)).filter((l) => l.granted).length, 1);
      await lease.release();
    } finally {
      await table.close();
      await admin.end();
      await proxy.stop();
    }
  });
});

describe('lock sessions still opening when the table closes', { skip: skipWithoutPostgres }, () => {
  test('close() cancels them: their requests fail ERR_LOCK_CLOSED, their sockets close', async (t) => {
    const proxy = await gatedProxy();
    if (proxy === undefined) return t.skip('DATABASE_URL is not host:port');
    const table = new PgLockTable({
      connectionString: proxy.url,
      namespace: freshNamespace(),
      poolSize: 3,
    });
    try {
      // The control session and the schema first, so that the requests below open lock sessions.
      proxy.open();
      await table.inspect('k');
      const controlOnly = proxy.accepted;
      proxy.close();
      const requests = ['a', 'b', 'c'].map((k) =>
        rejection(table.acquire(k, { waitTimeout: 60_000 })),
      );
      await eventually(() => proxy.accepted === controlOnly + 3, 4000, 'three sessions opening');
      const start = performance.now();
      await table.close();
      const took = performance.now() - start;
      assert.ok(took < END_GRACE_MS + 1500, `close() took ${took.toFixed(0)} ms`);
      // rejection() fails a request still pending 10 s on: cancelled openings fail at once.
      for (const error of await Promise.all(requests)) {
        assert.equal(error.code, 'ERR_LOCK_CLOSED', `${error.code}: ${error.message}`);
      }
      // Only the held connections were open (the control session ended with close()).
      await eventually(
        () => proxy.unclosed === 0,
        4000,
        `every socket closed (${proxy.unclosed} open)`,
      );
    } finally {
      await table.close();
      await proxy.stop();
    }
  });

  test('more than ten of them at once draw no MaxListenersExceededWarning', async (t) => {
    const proxy = await gatedProxy();
    if (proxy === undefined) return t.skip('DATABASE_URL is not host:port');
    const poolSize = 11;
    const table = new PgLockTable({
      connectionString: proxy.url,
      namespace: freshNamespace(),
      poolSize,
    });
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      proxy.open();
      await table.inspect('k');
      const controlOnly = proxy.accepted;
      proxy.close();
      const requests = Array.from({ length: poolSize }, (_, i) =>
        rejection(table.acquire(`k${i}`, { waitTimeout: 60_000 })),
      );
      await eventually(
        () => proxy.accepted === controlOnly + poolSize,
        4000,
        `${poolSize} sessions opening`,
      );
      await table.close();
      await Promise.all(requests);
      // process.emitWarning emits on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(
        warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message),
        [],
      );
    } finally {
      process.off('warning', onWarning);
      await table.close();
      await proxy.stop();
    }
  });
});
