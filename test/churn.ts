/**
 * The churn that slot-cache.test.ts and key-handle.test.ts share: 4 workers, 48 keys through a
 * table of 8 slots (so slots are rebound under the threads' remembered bindings all the time),
 * 10,000 sections each, every section a non-atomic increment under its key. Each worker counts
 * the leases that did not hold their own key's lock (`confused`) and the sections that overlapped.
 */
import { LockTable } from '../src/index.js';
import { control, CTRL_GO, CTRL_READY, seedFor, signal, spawn, waitFor } from './harness.js';

export async function churn(scenario: string, label: string, flags: Record<string, unknown>) {
  const keys = Array.from({ length: 48 }, (_, i) => `${scenario}:${i}`);
  const table = new LockTable({ capacity: 8 });
  const counters = new SharedArrayBuffer(keys.length * 4);
  const inside = new SharedArrayBuffer(keys.length * 4);
  const ctrl = control();
  const seed = seedFor(label);
  const per = 10_000;
  const workers = Array.from({ length: 4 }, (_, i) =>
    spawn<{ overlaps: number; confused: number }>(scenario, {
      buffer: table.buffer,
      ctrl: ctrl.buffer,
      counters,
      inside,
      keys,
      iterations: per,
      seed: seed + i,
      ...flags,
    }),
  );
  await waitFor(ctrl, CTRL_READY, (v) => v === 4);
  signal(ctrl, CTRL_GO);
  const results = await Promise.all(workers.map((w) => w.result));
  const overlaps = results.reduce((sum, r) => sum + r.overlaps, 0);
  const confused = results.reduce((sum, r) => sum + r.confused, 0);
  const counted = new Int32Array(counters).reduce((a, b) => a + b, 0);
  return { overlaps, confused, counted, expected: per * 4, table };
}
