// Review regression for the front (no server needed): a contended take must not leave anything
// behind on the front's long-lived closing signal.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Front } from '../../src/postgres/front.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

test('contended front takes do not grow memory (AbortSignal.any on a long-lived signal leaks on Node 20)', async () => {
  const front = new Front(undefined, 1, 32, 2);
  const fk = front.frontKey('hot');
  const held = front.table.tryAcquire(fk, { hold: Infinity })!;
  const round = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const start = performance.now();
      await assert.rejects(front.take([fk], 'hot', 'exclusive', 0, start, undefined, false), {
        code: 'ERR_LOCK_TIMEOUT',
      });
    }
  };
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      gc();
    }
    return process.memoryUsage().heapUsed;
  };
  await round(5_000);
  const before = await settle();
  await round(60_000);
  const after = await settle();
  held.release();
  const grown = (after - before) / 60_000;
  assert.ok(grown < 16, `the heap grew by ${grown.toFixed(1)} bytes per contended take`);
});
