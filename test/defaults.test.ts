/**
 * The precedence of defaults (src/table/defaults.ts, README "Defaults"): the call's option, then the
 * handle's (attach), then the table's (new LockTable, from the buffer's header), then the library's
 * for that entry point. Each row of the README table, resolved without waiting; with-lock.test.ts
 * checks the same rows through real waits and reclaims.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { handleFor, withLockSettings } from '../src/with-lock/with-lock.js';

const settings = (table: LockTable, options = {}) => {
  const { waitTimeout, execTimeout, failTimeout, spinDelay } = withLockSettings(table, options);
  return { waitTimeout, execTimeout, failTimeout, spinDelay };
};

describe('defaults', () => {
  test('unset everywhere: each entry point has its own library default', () => {
    const table = new LockTable({ capacity: 4 });
    assert.deepEqual(table.defaults, {
      waitTimeout: Infinity,
      hold: Infinity,
      failTimeout: 1000,
      spinDelay: 0.05,
    });
    assert.deepEqual(settings(table), {
      waitTimeout: 5000,
      execTimeout: 5000,
      failTimeout: 1000,
      spinDelay: 0.05,
    });
    // An attached handle reads "not set" from the header, not the table API's values.
    assert.deepEqual(settings(LockTable.attach(table.buffer)), settings(table));
  });

  test("the table's defaults apply to every entry point and every attached handle", () => {
    const table = new LockTable({ capacity: 4, waitTimeout: 100, failTimeout: 7, spinDelay: 0.2 });
    const expected = { waitTimeout: 100, failTimeout: 7, spinDelay: 0.2 };
    assert.deepEqual(table.defaults, { ...expected, hold: Infinity });
    assert.deepEqual(settings(table), { ...expected, execTimeout: 5000 });
    const attached = LockTable.attach(table.buffer);
    assert.deepEqual(attached.defaults, table.defaults);
    assert.deepEqual(settings(attached), settings(table));
  });

  test('a table default set to the library value of one entry point is still set for the other', () => {
    const table = new LockTable({ capacity: 4, waitTimeout: Infinity });
    assert.equal(settings(table).waitTimeout, Infinity);
    assert.equal(settings(LockTable.attach(table.buffer)).waitTimeout, Infinity);
  });

  test("a table's hold is the table API's; withLock holds for its execTimeout", () => {
    const table = new LockTable({ capacity: 4, hold: 50 });
    assert.equal(table.defaults.hold, 50);
    assert.equal(settings(table).execTimeout, 5000);
  });

  test("the handle's defaults override the table's, for this handle only", () => {
    const table = new LockTable({ capacity: 4, waitTimeout: 100, failTimeout: 7, hold: 50 });
    const handle = LockTable.attach(table.buffer, { waitTimeout: 30, spinDelay: 0.3 });
    assert.deepEqual(handle.defaults, {
      waitTimeout: 30,
      hold: 50,
      failTimeout: 7,
      spinDelay: 0.3,
    });
    assert.deepEqual(settings(handle), {
      waitTimeout: 30,
      execTimeout: 5000,
      failTimeout: 7,
      spinDelay: 0.3,
    });
    assert.equal(table.defaults.waitTimeout, 100);
    assert.equal(LockTable.attach(table.buffer).defaults.waitTimeout, 100);
  });

  test("the call's options override the handle's and the table's", () => {
    const table = new LockTable({ capacity: 4, waitTimeout: 100, failTimeout: 7 });
    const handle = LockTable.attach(table.buffer, { waitTimeout: 30, failTimeout: 8 });
    const options = { waitTimeout: 10, failTimeout: 9, spinDelay: 0, execTimeout: 20 };
    const expected = { waitTimeout: 10, execTimeout: 20, failTimeout: 9, spinDelay: 0 };
    assert.deepEqual(settings(handle, options), expected);
    assert.deepEqual(settings(table, options), expected);
  });

  test("withLock's handle for another failTimeout keeps the caller handle's other defaults", () => {
    const table = new LockTable({ capacity: 4, waitTimeout: 100, hold: 50 });
    const handle = LockTable.attach(table.buffer, { spinDelay: 0.3, waitTimeout: 30 });
    assert.equal(handleFor(handle, 1000), handle, 'same failTimeout: the caller handle itself');
    const other = handleFor(handle, 9);
    assert.notEqual(other, handle);
    assert.deepEqual(other.defaults, { waitTimeout: 30, hold: 50, failTimeout: 9, spinDelay: 0.3 });
    assert.equal(handleFor(handle, 9), other, 'one handle per failTimeout');
  });

  test('defaults are validated, naming the field of the argument they came in', () => {
    const table = new LockTable({ capacity: 4 });
    assert.throws(() => LockTable.attach(table.buffer, { waitTimeout: -1 }), {
      code: 'ERR_OUT_OF_RANGE',
      message: /"defaults\.waitTimeout"/,
    });
    assert.throws(() => new LockTable({ spinDelay: NaN }), {
      code: 'ERR_OUT_OF_RANGE',
      message: /"options\.spinDelay"/,
    });
    assert.throws(() => withLockSettings(table, { failTimeout: NaN }), {
      code: 'ERR_OUT_OF_RANGE',
      message: /"options\.failTimeout"/,
    });
  });
});
