// Locking around a callback in the calling thread: run, runSync, runAll, runAllSync, and the group
// that acquireAll returns.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LeaseGroup, LockTable, compareKeys } from '../src/index.js';
import {
  control,
  countUnder,
  CTRL_GO,
  CTRL_HELD,
  CTRL_READY,
  CTRL_STOP,
  seedFor,
  signal,
  spawn,
  waitFor,
} from './harness.js';

describe('locking around a callback, across worker threads', () => {
  test('runSync: 4 workers, non-atomic increments under one key lose no update', async () => {
    const { expected, counted, table } = await countUnder(
      'runSync',
      ['k'],
      80_000,
      seedFor('runSync'),
    );
    assert.equal(counted, expected);
    assert.deepEqual(table.held(), []);
  });

  test('run: 4 workers awaiting run() lose no update', async () => {
    const { expected, counted, table } = await countUnder('run', ['k'], 20_000, seedFor('run'));
    assert.equal(counted, expected);
    assert.deepEqual(table.held(), []);
  });

  test('runAllSync: 4 workers naming 3 keys in their own orders never deadlock, lose no update', async () => {
    const keys = ['acct:2', 'acct:10', 'acct:1'];
    const { expected, counted, table } = await countUnder(
      'runAllSync',
      keys,
      8_000,
      seedFor('all'),
    );
    assert.equal(counted, expected);
    assert.deepEqual(table.held(), []);
  });

  test('negative control: the same workers without the lock lose updates', async () => {
    const { expected, counted } = await countUnder('none', ['k'], 80_000, seedFor('runSync'));
    assert.ok(counted < expected, `expected lost updates, counted ${counted} of ${expected}`);
  });
});

describe('runSync', () => {
  test('returns fn’s value and releases; releases when fn throws', () => {
    const table = new LockTable();
    assert.equal(
      table.runSync('k', (lease) => {
        assert.equal(lease.held, true);
        assert.equal(table.tryAcquire('k'), null);
        return 7;
      }),
      7,
    );
    assert.equal(table.inspect('k'), null);
    const boom = new Error('boom');
    assert.throws(
      () =>
        table.runSync('k', () => {
          throw boom;
        }),
      (e) => e === boom,
    );
    assert.equal(table.inspect('k'), null);
  });

  test('refuses an fn that returns a promise, after releasing the lock', () => {
    const table = new LockTable();
    assert.throws(
      () => table.runSync('k', async () => 1),
      (e: Error & { code?: string }) =>
        e instanceof TypeError &&
        e.code === 'ERR_INVALID_RETURN_VALUE' &&
        /table\.run/.test(e.message),
    );
    assert.equal(table.inspect('k'), null);
  });

  test('takes the same options as acquireSync: waitTimeout against a holder in another thread', async () => {
    const table = new LockTable();
    const ctrl = control();
    const holder = spawn('acquireOnce', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      key: 'k',
      keep: true,
    });
    await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
    let ran = false;
    assert.throws(
      () =>
        table.runSync(
          'k',
          () => {
            ran = true;
          },
          { waitTimeout: 20 },
        ),
      { code: 'ERR_LOCK_TIMEOUT' },
    );
    assert.equal(ran, false);
    signal(ctrl, CTRL_STOP);
    await holder.result;
  });

  test('a lease lost while fn ran throws ERR_LOCK_STALE, with fn’s value as its cause', async () => {
    const table = new LockTable({ failTimeout: 0 });
    const ctrl = control();
    const reclaimer = spawn('acquireOnce', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      key: 'k',
      keep: true,
      waitGo: true,
    });
    await waitFor(ctrl, CTRL_READY, (v) => v === 1);
    assert.throws(
      () =>
        table.runSync(
          'k',
          () => {
            signal(ctrl, CTRL_GO);
            // The hold passes; the other thread reclaims the key while fn still runs.
            while (Atomics.load(ctrl, CTRL_HELD) === 0) Atomics.wait(ctrl, CTRL_HELD, 0);
            return 'done';
          },
          { hold: 10 },
        ),
      (e: Error & { code?: string }) => e.code === 'ERR_LOCK_STALE' && e.cause === 'done',
    );
    signal(ctrl, CTRL_STOP);
    assert.equal(((await reclaimer.result) as { recovered: boolean }).recovered, true);
  });

  test('bad input: typed errors before anything is taken', () => {
    const table = new LockTable();
    assert.throws(() => table.runSync('k', 1 as never), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => table.runAllSync(['k'], null as never), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.equal(table.inspect('k'), null);
  });
});

describe('the group acquireAll returns', () => {
  test('is an array in canonical order with release() and Symbol.dispose', async () => {
    const table = new LockTable();
    const group = table.acquireAllSync(['acct:2', 'acct:10']);
    assert.ok(group instanceof LeaseGroup);
    assert.deepEqual(
      group.map((l) => l.key),
      ['acct:10', 'acct:2'],
    );
    {
      using held = await table.acquireAll(['x', 'y']);
      assert.equal(held.length, 2);
      assert.equal(table.tryAcquire('x'), null);
    }
    assert.equal(table.inspect('x'), null);
    group[Symbol.dispose]();
    assert.deepEqual(table.held(), []);
    // Disposing of a released group does nothing; releasing it again throws.
    group[Symbol.dispose]();
    assert.throws(() => group.release(), { code: 'ERR_LOCK_RELEASED' });
  });

  test('compareKeys is code-unit order: "acct:10" sorts before "acct:2"', () => {
    assert.ok(compareKeys('acct:10', 'acct:2') < 0);
    assert.deepEqual(['acct:2', 'acct:10', 'acct:1'].sort(compareKeys), [
      'acct:1',
      'acct:10',
      'acct:2',
    ]);
  });
});
