import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { control, CTRL_GO, CTRL_READY, CTRL_STOP, signal, spawn, waitFor } from './harness.js';

interface HotResult {
  sections: number;
  maxWait: number;
}

/** Workers loop on one hot key; stops once `total` sections are done (counted in shared memory). */
async function hotKey(modes: ('exclusive' | 'shared')[], windowMs: number, holdLoops = 0) {
  const table = new LockTable({ capacity: 8 });
  const ctrl = control();
  const workers = modes.map((mode) =>
    spawn<HotResult>('hotKey', {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      key: 'hot',
      mode,
      holdLoops,
    }),
  );
  await waitFor(ctrl, CTRL_READY, (v) => v === modes.length);
  signal(ctrl, CTRL_GO);
  // The window is a measurement length, not a synchronisation: every assertion below is about
  // counts and waits that the workers recorded themselves.
  await new Promise((r) => setTimeout(r, windowMs));
  signal(ctrl, CTRL_STOP);
  return Promise.all(workers.map((w) => w.result));
}

describe('fairness', () => {
  test('no thread starves on a hot key: 4 workers on 2 cores all progress, bounded wait', async () => {
    const results = await hotKey(['exclusive', 'exclusive', 'exclusive', 'exclusive'], 1000, 50);
    const counts = results.map((r) => r.sections);
    const maxWait = Math.max(...results.map((r) => r.maxWait));
    console.log(
      `# sections per worker ${counts.join(', ')}; longest wait ${maxWait.toFixed(1)} ms`,
    );
    assert.ok(Math.min(...counts) >= 0.25 * Math.max(...counts), `unfair: ${counts}`);
    assert.ok(maxWait < 200, `a worker waited ${maxWait} ms`);
  });

  test('a writer is not starved by a stream of overlapping readers', async () => {
    const results = await hotKey(['shared', 'shared', 'shared', 'exclusive'], 800, 200);
    const writer = results[3]!;
    console.log(
      `# readers ${results.slice(0, 3).map((r) => r.sections)}; writer ${writer.sections}, longest wait ${writer.maxWait.toFixed(1)} ms`,
    );
    assert.ok(writer.sections > 50, `writer got ${writer.sections} sections`);
    assert.ok(writer.maxWait < 200, `writer waited ${writer.maxWait} ms`);
  });

  test('readers are not starved by a stream of writers', async () => {
    const results = await hotKey(['exclusive', 'exclusive', 'exclusive', 'shared'], 800, 200);
    const reader = results[3]!;
    console.log(
      `# writers ${results.slice(0, 3).map((r) => r.sections)}; reader ${reader.sections}, longest wait ${reader.maxWait.toFixed(1)} ms`,
    );
    assert.ok(reader.sections > 50, `reader got ${reader.sections} sections`);
    assert.ok(reader.maxWait < 200, `reader waited ${reader.maxWait} ms`);
  });
});
