import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, test } from 'node:test';
import { AbortError, LockError, LockTable } from '../src/index.js';
import { control, CTRL_HELD, spawn, waitFor } from './harness.js';

function isCode(code: string, type: ErrorConstructor = TypeError) {
  return (e: Error & { code?: string }) => {
    assert.ok(e instanceof type, `expected a ${type.name}, got ${e.name}: ${e.message}`);
    assert.equal(e.code, code);
    return true;
  };
}

describe('lock errors', () => {
  test('every LockError carries a code, the key and a message saying what to do', () => {
    const table = new LockTable({ capacity: 1 });
    const lease = table.acquireSync('a');
    const errors: LockError[] = [];
    const capture = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        errors.push(e as LockError);
      }
    };
    capture(() => table.acquireSync('a')); // recursion
    capture(() => table.acquireSync('b', { waitTimeout: 0 })); // full (capacity 1)
    lease.release();
    capture(() => lease.release()); // released
    assert.deepEqual(
      errors.map((e) => [e instanceof LockError, e.code, e.key]),
      [
        [true, 'ERR_LOCK_RECURSION', 'a'],
        [true, 'ERR_LOCK_TABLE_FULL', 'b'],
        [true, 'ERR_LOCK_RELEASED', 'a'],
      ],
    );
    for (const e of errors) assert.match(e.message, /"[ab]"/);
    lease[Symbol.dispose](); // after a release: a no-op
  });

  test('ERR_LOCK_RECURSION for blocking calls on a key this thread holds, in either mode', () => {
    const table = new LockTable({ capacity: 8 });
    const s = table.acquireSync('s', { mode: 'shared' });
    assert.throws(() => table.acquireSync('s'), { code: 'ERR_LOCK_RECURSION' });
    const e = table.acquireSync('e');
    assert.throws(() => table.acquireAllSync(['a', 'e'], { waitTimeout: 1000 }), {
      code: 'ERR_LOCK_RECURSION',
    });
    assert.equal(table.inspect('a'), null, 'acquireAllSync left a key held');
    s.release();
    e.release();
  });

  test('using releases at the end of the block', () => {
    const table = new LockTable({ capacity: 8 });
    {
      using lease = table.acquireSync('u');
      assert.ok(lease.held);
      assert.equal(table.tryAcquire('u'), null);
    }
    assert.equal(table.inspect('u'), null);
  });

  test('bad arguments throw Node-style TypeError / RangeError before touching shared memory', () => {
    const table = new LockTable({ capacity: 8 });
    const t = table as unknown as Record<string, (...a: unknown[]) => unknown>;
    assert.throws(() => t.acquireSync!(42), isCode('ERR_INVALID_ARG_TYPE'));
    assert.throws(() => t.tryAcquire!(undefined), isCode('ERR_INVALID_ARG_TYPE'));
    assert.throws(
      () => table.acquireSync('k', { waitTimeout: NaN }),
      isCode('ERR_OUT_OF_RANGE', RangeError),
    );
    assert.throws(
      () => table.acquireSync('k', { waitTimeout: -1 }),
      isCode('ERR_OUT_OF_RANGE', RangeError),
    );
    assert.throws(() => t.acquireSync!('k', { waitTimeout: '5' }), isCode('ERR_INVALID_ARG_TYPE'));
    assert.throws(
      () => table.acquireSync('k', { hold: 0 }),
      isCode('ERR_OUT_OF_RANGE', RangeError),
    );
    assert.throws(() => t.acquireSync!('k', { mode: 'write' }), isCode('ERR_INVALID_ARG_VALUE'));
    assert.throws(() => t.acquireSync!('k', null), isCode('ERR_INVALID_ARG_TYPE'));
    assert.throws(
      () => table.acquireSync('k', { spinDelay: -1 }),
      isCode('ERR_OUT_OF_RANGE', RangeError),
    );
    assert.throws(() => new LockTable({ capacity: 0 }), isCode('ERR_OUT_OF_RANGE', RangeError));
    assert.throws(() => new LockTable({ capacity: 1.5 }), isCode('ERR_OUT_OF_RANGE', RangeError));
    assert.throws(() => new LockTable({ failTimeout: -5 }), isCode('ERR_OUT_OF_RANGE', RangeError));
    assert.throws(() => table.acquireAllSync(['a', 'b', 'a']), isCode('ERR_INVALID_ARG_VALUE'));
    assert.throws(() => t.acquireAllSync!('ab'), isCode('ERR_INVALID_ARG_TYPE'));
    assert.throws(() => table.releaseAllOwnedBy(-1), isCode('ERR_OUT_OF_RANGE', RangeError));
    assert.throws(() => t.watch!({}), isCode('ERR_INVALID_ARG_TYPE'));
    const lease = table.acquireSync('x');
    assert.throws(() => lease.extend(NaN), isCode('ERR_OUT_OF_RANGE', RangeError));
    lease.release();
    assert.deepEqual(table.held(), []);
  });

  test('attach refuses a buffer that is not a locktable buffer, or of the wrong version or size', () => {
    const a = LockTable as unknown as { attach(b: unknown): unknown };
    assert.throws(() => a.attach(new ArrayBuffer(1024)), isCode('ERR_INVALID_ARG_TYPE'));
    assert.throws(() => a.attach(new SharedArrayBuffer(8)), isCode('ERR_INVALID_ARG_VALUE'));
    assert.throws(() => a.attach(new SharedArrayBuffer(4096)), isCode('ERR_INVALID_ARG_VALUE'));
    const table = new LockTable({ capacity: 4 });
    const copy = new SharedArrayBuffer(table.buffer.byteLength);
    new Uint8Array(copy).set(new Uint8Array(table.buffer));
    new Int32Array(copy)[1] = 99; // version word
    assert.throws(() => a.attach(copy), /version 99/);
    const short = new SharedArrayBuffer(table.buffer.byteLength - 8);
    new Uint8Array(short).set(new Uint8Array(table.buffer, 0, short.byteLength));
    assert.throws(() => a.attach(short), /header describes/);
    assert.ok(LockTable.attach(table.buffer) instanceof LockTable);
  });
});

describe('aborts', () => {
  test('an already-aborted signal rejects at once with an AbortError carrying the reason', async () => {
    const table = new LockTable({ capacity: 8 });
    const reason = new Error('stop');
    await assert.rejects(
      table.acquire('a', { signal: AbortSignal.abort(reason) }),
      (e: AbortError) => {
        return e.name === 'AbortError' && e.cause === reason;
      },
    );
    assert.equal(table.inspect('a'), null);
  });

  test('an abort during the wait rejects, holds nothing, and leaves no listener or sleeper behind', async () => {
    const table = new LockTable({ capacity: 8, spinDelay: 0 });
    const ctrl = control();
    const holder = spawn('holdForever', { buffer: table.buffer, ctrl: ctrl.buffer, key: 'a' });
    await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
    const controller = new AbortController();
    const pending = table.acquire('a', { signal: controller.signal });
    // Wait until the request is asleep on the slot (seen in shared memory), then abort.
    for (let i = 0; table.inspect('a')!.sleepers === 0; i++)
      await new Promise((r) => setImmediate(r));
    controller.abort('enough');
    await assert.rejects(
      pending,
      (e: AbortError) => e.name === 'AbortError' && e.cause === 'enough',
    );
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
    assert.equal(table.inspect('a')!.sleepers, 0);
    assert.equal(table.inspect('a')!.holders[0]!.threadId, holder.worker.threadId);
    await holder.worker.terminate();
  });

  test('acquireAll that times out part-way releases what it took', async () => {
    const table = new LockTable({ capacity: 8 });
    const ctrl = control();
    const holder = spawn('holdForever', { buffer: table.buffer, ctrl: ctrl.buffer, key: 'b' });
    await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
    await assert.rejects(table.acquireAll(['c', 'a', 'b'], { waitTimeout: 30 }), {
      code: 'ERR_LOCK_TIMEOUT',
      key: 'b',
    });
    assert.equal(table.inspect('a'), null);
    assert.throws(() => table.acquireAllSync(['b', 'a'], { waitTimeout: 30 }), {
      code: 'ERR_LOCK_TIMEOUT',
    });
    assert.equal(table.inspect('a'), null);
    await holder.worker.terminate();
    const all = await table.acquireAll(['b', 'a'], { waitTimeout: 0 }).catch(() => null);
    assert.equal(all, null, 'the dead holder was not watched: b stays held');
  });
});
