import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import {
  control,
  countUnder,
  CTRL_GO,
  CTRL_READY,
  CTRL_STOP,
  seedFor,
  signal,
  spawn,
  waitFor,
} from './harness.js';

describe('mutual exclusion across worker threads', () => {
  test('no lost update: 4 workers, 10^6 non-atomic increments under one key', async () => {
    const { expected, counted, table } = await countUnder(
      'locktable',
      ['ledger'],
      1_000_000,
      seedFor('one key'),
    );
    assert.equal(counted, expected);
    assert.deepEqual(table.held(), []);
  });

  test('negative control: the same harness without the lock loses updates', async () => {
    const { expected, counted } = await countUnder(
      'none',
      ['ledger'],
      1_000_000,
      seedFor('no lock'),
    );
    assert.ok(
      counted < expected,
      `expected lost updates without a lock, counted ${counted} of ${expected}`,
    );
  });

  test('no lost update: 4 workers, 10^6 increments spread over 64 keys', async () => {
    const keys = Array.from({ length: 64 }, (_, i) => `account:${i}`);
    const { expected, counted } = await countUnder(
      'locktable',
      keys,
      1_000_000,
      seedFor('64 keys'),
    );
    assert.equal(counted, expected);
  });

  test('no lost update through the async path in workers', async () => {
    const keys = ['a', 'b', 'c'];
    const { expected, counted } = await countUnder(
      'locktable',
      keys,
      200_000,
      seedFor('async'),
      true,
    );
    assert.equal(counted, expected);
  });

  async function overlapRun(broken: boolean) {
    const table = new LockTable({ capacity: 8 });
    const cells = new Int32Array(new SharedArrayBuffer(64));
    const ctrl = control();
    const modes = ['shared', 'shared', 'shared', 'exclusive', 'exclusive'] as const;
    const workers = modes.map((mode, index) =>
      spawn<{ sections: number }>('overlap', {
        buffer: table.buffer,
        ctrl: ctrl.buffer,
        cells: cells.buffer,
        key: 'doc',
        mode,
        index,
        ...(broken ? { acquireMode: 'shared' } : {}),
      }),
    );
    await waitFor(ctrl, CTRL_READY, (v) => v === modes.length);
    signal(ctrl, CTRL_GO);
    // Run until readers were seen together and every worker has had 100 sections.
    const everyone = () =>
      Atomics.load(cells, 1) >= 2 && modes.every((_, i) => Atomics.load(cells, 4 + i) >= 100);
    await waitFor(ctrl, CTRL_READY, everyone, 20_000);
    signal(ctrl, CTRL_STOP);
    const results = await Promise.all(workers.map((w) => w.result));
    return { violations: Atomics.load(cells, 2), maxInside: Atomics.load(cells, 1), results };
  }

  test('shared holders overlap; an exclusive holder never overlaps with anyone', async () => {
    const { violations, maxInside, results } = await overlapRun(false);
    assert.equal(violations, 0, 'an exclusive holder overlapped another holder');
    assert.ok(maxInside >= 2, 'shared holders never overlapped');
    for (const r of results) assert.ok(r.sections > 0, 'a worker never got the lock');
  });

  test('negative control: "exclusive" holders that really take shared locks are caught', async () => {
    const { violations } = await overlapRun(true);
    assert.ok(violations > 0, 'the overlap check did not see exclusive holders overlapping');
  });
});
