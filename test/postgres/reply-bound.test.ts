// A lock session's reply bound (Session.rowsWithin, rowsHolding) is checked on the session's tick
// (its heartbeat interval, lease / 4), not by a timer per statement: a statement whose reply has
// not come by its bound cuts the session at the first tick after it. Each test makes a reply that
// never comes in time (a statement blocked on the server, a server process frozen with SIGSTOP)
// and checks the cut comes after the bound and no later than one tick past it (plus slack for a
// loaded machine).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { END_GRACE_MS, Session } from '../../src/postgres/session.js';
import { HEARTBEAT } from '../../src/postgres/sql.js';
import { databaseUrl, skipWithoutPostgres } from './db.js';

/** Event-loop and scheduling lateness allowed on top of a bound and its tick. */
const SLACK = 400;

const SLEEP = { name: 'test_reply_bound_sleep', text: 'SELECT pg_sleep(5)' };

const settle = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => error as Error,
  );

describe('a lock session’s reply bound, on its tick', { skip: skipWithoutPostgres }, () => {
  const sessions: Session[] = [];
  const frozen: number[] = [];
  after(async () => {
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone already
      }
    }
    await Promise.all(sessions.map((s) => s.end()));
  });

  async function lockSession(lease: number): Promise<Session> {
    const session = await Session.open({ connectionString: databaseUrl }, lease);
    sessions.push(session);
    session.startHeartbeat(lease / 4);
    return session;
  }

  /**
   * When the session hands its heartbeat to pg (its tick's time), latest last: the time this
   * thread sees it busy can be later (a poll that runs late, this thread descheduled), which
   * would shorten a wait measured from it.
   */
  function heartbeatsSent(session: Session): number[] {
    const sent: number[] = [];
    const client = session.client;
    const query = client.query;
    client.query = function (this: unknown, ...args: unknown[]) {
      if ((args[0] as { name?: string } | undefined)?.name === HEARTBEAT.name) {
        sent.push(performance.now());
      }
      return Reflect.apply(query, this, args) as unknown;
    } as typeof client.query;
    return sent;
  }

  function freeze(pid: number): boolean {
    try {
      process.kill(pid, 'SIGSTOP');
    } catch {
      return false; // a server on another machine, or another user's: the test needs a local one
    }
    frozen.push(pid);
    return true;
  }

  test('a statement blocked on the server is cut after its bound, within one tick of it', async () => {
    const lease = 400; // a tick every 100 ms
    const session = await lockSession(lease);
    // The control: the same statement with no bound, on a session with the same tick, is not cut.
    const unbounded = await lockSession(lease);
    const control = settle(unbounded.rowsWithin(SLEEP, [], Infinity));
    const bound = 600;
    const start = performance.now();
    const error = await settle(session.rowsWithin(SLEEP, [], bound));
    const took = performance.now() - start;
    await new Promise((resolve) => setTimeout(resolve, lease / 2));
    assert.equal(unbounded.alive, true, 'the session whose statement has no bound was cut');
    unbounded.cut('the test is over');
    await control;
    assert.ok(error instanceof Error, 'the statement failed');
    assert.equal(session.alive, false, 'the session was cut');
    assert.match(String(session.endReason), /no reply from the server/);
    assert.ok(took >= bound - 5, `cut after ${took.toFixed(0)} ms, before its bound ${bound}`);
    assert.ok(
      took < bound + lease / 4 + SLACK,
      `cut after ${took.toFixed(0)} ms: more than a tick past its bound ${bound}`,
    );
  });

  test('a session whose server process is frozen ends at the fourth tick after its heartbeat: the lease, never a tick more', async (t) => {
    const lease = 2000; // a tick every 500 ms, more than SLACK: a tick too many fails the test
    const session = await lockSession(lease);
    const heartbeats = heartbeatsSent(session);
    const ended = new Promise<number>((resolve) => session.onEnd(() => resolve(performance.now())));
    const start = performance.now();
    if (!freeze(session.pid)) return t.skip('the server process is not ours to stop');
    // The next tick sends the heartbeat, which the frozen process never answers.
    while (!session.busy) await new Promise((resolve) => setTimeout(resolve, 2));
    const sent = heartbeats.at(-1)!;
    const took = (await ended) - start;
    const afterHeartbeat = (await ended) - sent;
    // Its bound is four ticks, counted: the fourth tick after the one that sent it cuts it,
    // whether that tick ran a little early or late on the clock (compared with times, a tick
    // a few microseconds early left it for the next one, a tick later).
    assert.ok(
      afterHeartbeat >= lease - 5,
      `ended ${afterHeartbeat.toFixed(0)} ms after the heartbeat, before the lease`,
    );
    assert.ok(
      afterHeartbeat < lease + SLACK,
      `ended ${afterHeartbeat.toFixed(0)} ms after the heartbeat: a tick past the lease`,
    );
    // From the freeze: the heartbeat goes out at the next tick (at most lease / 4).
    assert.ok(
      took < lease + lease / 4 + SLACK,
      `ended ${took.toFixed(0)} ms after the freeze, not within the lease and a tick`,
    );
    assert.match(String(session.endReason), /no reply from the server/);
  });

  test('a statement queued behind a frozen heartbeat is bounded from when it was queued, not by the heartbeat’s bound', async (t) => {
    const lease = 2000; // a tick every 500 ms; the heartbeat's own bound is 2000 ms
    const session = await lockSession(lease);
    if (!freeze(session.pid)) return t.skip('the server process is not ours to stop');
    // The next tick sends the heartbeat, which the frozen process never answers.
    while (!session.busy) await new Promise((resolve) => setTimeout(resolve, 5));
    const bound = 300;
    const start = performance.now();
    const error = await settle(session.rowsWithin(HEARTBEAT, [], bound));
    const took = performance.now() - start;
    assert.ok(error instanceof Error, 'the queued statement failed');
    assert.equal(session.alive, false, 'the session was cut');
    assert.ok(took >= bound - 5, `cut after ${took.toFixed(0)} ms, before its bound ${bound}`);
    assert.ok(
      took < bound + lease / 4 + SLACK,
      `cut after ${took.toFixed(0)} ms: the queued statement's bound was not checked`,
    );
  });

  test('end() of an idle session whose server process is frozen stops its tick at once, and returns after END_GRACE_MS', async (t) => {
    const lease = 60_000; // no tick comes during the test: nothing is in flight
    const session = await lockSession(lease);
    assert.equal(session.ticking, true);
    if (!freeze(session.pid)) return t.skip('the server process is not ours to stop');
    // pg's end() waits for the server to close the connection, which a frozen process never does:
    // after END_GRACE_MS the session destroys the socket itself.
    const started = performance.now();
    const ending = session.end();
    assert.equal(session.ticking, false, 'the tick of a session being ended goes on firing');
    assert.equal(session.alive, true, 'the frozen server has not closed the connection yet');
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<'hung'>((resolve) => {
      timer = setTimeout(() => resolve('hung'), 4 * END_GRACE_MS);
    });
    const outcome = await Promise.race([ending.then(() => 'ended' as const), gaveUp]);
    clearTimeout(timer);
    const took = performance.now() - started;
    assert.equal(
      outcome,
      'ended',
      `end() still waiting ${Math.round(took)} ms after it was called`,
    );
    assert.ok(took >= END_GRACE_MS - 5, `ended after ${took} ms: before the grace was over`);
    assert.equal(session.alive, false);
  });

  test('stopHeartbeat() with a heartbeat in flight that a frozen server never answers: the tick stays until it cuts it at its bound', async (t) => {
    const lease = 800; // a tick every 200 ms
    const session = await lockSession(lease);
    const heartbeats = heartbeatsSent(session);
    const ended = new Promise<number>((resolve) => session.onEnd(() => resolve(performance.now())));
    if (!freeze(session.pid)) return t.skip('the server process is not ours to stop');
    while (!session.busy) await new Promise((resolve) => setTimeout(resolve, 2));
    const sent = heartbeats.at(-1)!;
    session.stopHeartbeat();
    assert.equal(session.ticking, true, 'the heartbeat in flight lost its bound');
    const took = (await ended) - sent;
    assert.equal(session.ticking, false);
    assert.match(String(session.endReason), /no reply from the server/);
    assert.ok(took >= lease - 5, `cut ${took.toFixed(0)} ms after the heartbeat, before the lease`);
    assert.ok(took < lease + SLACK, `cut ${took.toFixed(0)} ms after the heartbeat`);
    // (end() itself does not wait for it: pg destroys the socket of a client with a query in
    // flight.)
  });

  test('a statement answered in time is not cut, and the session goes on beating', async () => {
    const lease = 400;
    const session = await lockSession(lease);
    for (let i = 0; i < 20; i++) {
      const rows = await session.rowsWithin(HEARTBEAT, [], 300);
      assert.equal(Number(rows[0]![0]), session.pid);
    }
    // Ticks pass the answered statements' bounds with nothing in flight: nothing is overdue (a
    // bound left behind by an answered statement would cut the session here).
    await new Promise((resolve) => setTimeout(resolve, 300 + lease));
    assert.equal(session.alive, true);
  });
});
