import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { control, CTRL_HELD, spawn, waitFor } from './harness.js';

// Tests in a file run one after another: the second sees what the first left behind.
describe('the harness terminates the workers a test spawned when the test ends', () => {
  let exitCode: number | undefined;

  test('a test leaves a worker holding a key forever', async () => {
    const table = new LockTable({ capacity: 8 });
    const ctrl = control();
    const holder = spawn('holdForever', { buffer: table.buffer, ctrl: ctrl.buffer, key: 'k' });
    void holder.exited.then((code) => (exitCode = code));
    await waitFor(ctrl, CTRL_HELD, (v) => v === 1);
    assert.equal(exitCode, undefined);
  });

  test('by the next test that worker has exited', () => {
    assert.notEqual(exitCode, undefined, "the first test's worker is still running");
  });
});
