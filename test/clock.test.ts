// callAt: a deadline on the monotonic clock that never fires early. A bare setTimeout may: Node
// counts a timer from the event loop's time in whole (and, on Linux, coarse) milliseconds, so it
// fires up to about a millisecond before its delay has passed on this clock (the first test
// counts how often, as a diagnostic: 2 of 200 in one run here), and PgLockTable's contract test
// once read 49.52 ms for a 50 ms waitTimeout.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { callAt, monotonicNow } from '../src/api/clock.js';

const TRIES = 200;

test('callAt never fires before its deadline (200 timers at random phases of the ms)', async (t) => {
  let bareEarly = 0;
  for (let i = 0; i < TRIES; i++) {
    const deadline = monotonicNow() + 2;
    const fired = await new Promise<number>((resolve) =>
      callAt(deadline, () => resolve(monotonicNow())),
    );
    assert.ok(fired >= deadline, `try ${i}: fired ${(deadline - fired).toFixed(3)} ms early`);
    // The same with a bare setTimeout, for the record (how often Node fires one early here).
    const start = monotonicNow();
    const bare = await new Promise<number>((resolve) =>
      setTimeout(() => resolve(monotonicNow()), 2),
    );
    if (bare - start < 2) bareEarly++;
  }
  t.diagnostic(`a bare setTimeout(2) fired early ${bareEarly} times of ${TRIES}; callAt never`);
});

test('a cancelled callAt never fires', async () => {
  let calls = 0;
  const cancel = callAt(monotonicNow() + 5, () => calls++);
  cancel();
  await new Promise<void>((resolve) => callAt(monotonicNow() + 20, resolve));
  assert.equal(calls, 0);
});
