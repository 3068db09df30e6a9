import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockError, LockTable } from '../src/index.js';
import { churn } from './churn.js';

function handleChurn(brokenHandle: boolean) {
  return churn('handleChurn', `key handle churn${brokenHandle ? ' (broken handle)' : ''}`, {
    brokenHandle,
  });
}

describe('key handles (table.key)', () => {
  test('a handle locks its key: the same lock, tokens and errors as the table with that key', async () => {
    const table = new LockTable();
    const k = table.key('account:42');
    assert.equal(k.constructor.name, 'KeyHandle');
    assert.equal(k.key, 'account:42');
    const first = k.acquireSync(); // learns the binding through the table's path
    assert.equal(table.tryAcquire('account:42'), null);
    assert.throws(() => k.acquireSync(), { code: 'ERR_LOCK_RECURSION' });
    assert.equal(k.tryAcquire(), null);
    first.release();
    const second = k.acquireSync(); // the fast path
    assert.ok(second.token > first.token);
    assert.equal(table.inspect('account:42')?.holders[0]?.token, second.token);
    second.release();
    const third = table.acquireSync('account:42');
    assert.ok(third.token > second.token);
    third.release();
    const fourth = await k.acquire();
    assert.ok(fourth.token > third.token);
    assert.equal(fourth.held, true);
    fourth.release();
    const shared = k.acquireSync({ mode: 'shared' });
    assert.equal(shared.mode, 'shared');
    shared.release();
    const finite = k.tryAcquire({ hold: 1000 });
    assert.ok(finite !== null && finite.deadline < Infinity);
    finite.release();
    assert.deepEqual(table.held(), []);
  });

  test('a handle made on a table with a default hold grants with that deadline on its fast path', () => {
    const table = new LockTable({ hold: 60_000 });
    const k = table.key('deadline');
    k.acquireSync().release(); // learn
    const before = LockTable.now();
    const lease = k.acquireSync();
    assert.ok(lease.deadline >= before + 60_000 - 1 && lease.deadline < Infinity);
    lease.release();
  });

  test('arguments are checked and named: the key at table.key, options at each call', async () => {
    const table = new LockTable({ maxKeyLength: 8 });
    assert.throws(() => table.key(42 as unknown as string), {
      code: 'ERR_INVALID_ARG_TYPE',
      message: /"key" argument/,
    });
    assert.throws(() => table.key('123456789'), { message: /"key\.length"/ });
    const k = table.key('ok');
    assert.throws(() => k.acquireSync({ mode: 'both' as 'shared' }), { message: /options\.mode/ });
    assert.throws(() => k.acquireSync({ waitTimeout: -1 }), { message: /options\.waitTimeout/ });
    await assert.rejects(k.acquire({ signal: 'no' as unknown as AbortSignal }), {
      message: /options\.signal/,
    });
  });

  test('a handle waits like the table: a held key times out with ERR_LOCK_TIMEOUT, then is granted', async () => {
    const table = new LockTable();
    const k = table.key('busy');
    const held = table.acquireSync('busy');
    await assert.rejects(k.acquire({ waitTimeout: 5 }), (e: unknown) => {
      return e instanceof LockError && e.code === 'ERR_LOCK_TIMEOUT';
    });
    const pending = k.acquire();
    held.release();
    const lease = await pending;
    assert.equal(lease.held, true);
    lease.release();
  });

  test('a key evicted and its slot rebound to another key: the handle looks its key up again', () => {
    const table = new LockTable({ capacity: 1 });
    const a = table.key('a');
    a.acquireSync().release(); // 'a' learned at slot 0
    table.acquireSync('b').release(); // 'b' evicts 'a' and takes slot 0
    const lease = a.acquireSync(); // must not take 'b''s binding
    assert.equal(table.inspect('a')?.holders[0]?.token, lease.token);
    assert.equal(table.inspect('b'), null);
    lease.release();
    a.acquireSync().release();
    assert.deepEqual(table.held(), []);
  });

  test('churn across 4 workers: 48 keys through 8 slots by handles, slots rebound under them, never confused', async () => {
    const { overlaps, confused, counted, expected, table } = await handleChurn(false);
    assert.equal(confused, 0, `${confused} leases did not hold their own key's lock`);
    assert.equal(overlaps, 0, `${overlaps} sections overlapped under one key`);
    assert.equal(counted, expected);
    assert.deepEqual(table.held(), []);
  });

  test('negative control: the same churn with handles that trust an unchecked binding is caught', async () => {
    const { overlaps, confused, counted, expected } = await handleChurn(true);
    console.log(
      `# broken handle: ${confused} leases on another key's lock, ${overlaps} overlaps, ${expected - counted} lost updates`,
    );
    assert.ok(confused > 0, 'the broken handle went unnoticed');
  });
});
