/**
 * `memory`: bytes of shared memory per key. locktable: its buffer / capacity, for a few
 * geometries (the default is capacity 1024, maxKeyLength 64). The raw baseline: one Int32 word per
 * key, padded to a 64-byte cache line. `held-keys`: does acquiring get slower with many keys held?
 */
import { LINE } from '../control.js';
import { LockTable } from '../library.js';
import type { JobResult, JobSpec } from '../spec.js';
import { Bench } from 'tinybench';

export async function memory(spec: JobSpec): Promise<JobResult> {
  if (spec.peer === 'baseline') {
    return { metrics: { bytesPerKey: LINE * 4 }, lostUpdates: 0, notes: ['4 bytes unpadded'] };
  }
  const perKey = (capacity: number, maxKeyLength: number) =>
    new LockTable({ capacity, maxKeyLength }).buffer.byteLength / capacity;
  return {
    metrics: {
      bytesPerKey: perKey(1024, 64),
      bytesPerKeyShortKeys: perKey(1024, 16),
      bytesPerKeyLongKeys: perKey(1024, 256),
      bytesPerKeyBigTable: perKey(131_072, 64),
    },
    lostUpdates: 0,
  };
}

/** Room for 100,000 held keys at a load factor of about 0.76. */
const HELD_CAPACITY = 131_072;
const HELD_COUNTS = [10, 100_000];
const OPS_PER_CALL = 1000;
/** Untimed calls on every table first, so the first table measured does not pay the JIT alone. */
const WARMUP_OPS = 200_000;

export async function heldKeys(spec: JobSpec): Promise<JobResult> {
  const probe = 'probe:key';
  const tables = HELD_COUNTS.map((held) => {
    const table = new LockTable({ capacity: HELD_CAPACITY });
    for (let i = 0; i < held; i++) table.acquireSync(`held:${i}`); // held until the table is dropped
    return { held, table };
  });
  for (const { table } of tables) {
    for (let i = 0; i < WARMUP_OPS; i++) table.acquireSync(probe).release();
  }
  const bench = new Bench({
    time: spec.settings.microTimeMs,
    warmupTime: spec.settings.microTimeMs / 4,
  });
  for (const { held, table } of tables) {
    bench.add(`${held}`, () => {
      for (let i = 0; i < OPS_PER_CALL; i++) table.acquireSync(probe).release();
    });
  }
  await bench.run();
  const rate = (held: number) => {
    const result = bench.getTask(`${held}`)!.result;
    if (result.state !== 'completed') throw new Error(`tinybench: ${result.state}`);
    return (OPS_PER_CALL * 1000) / result.period;
  };
  const few = rate(HELD_COUNTS[0]!);
  const many = rate(HELD_COUNTS[1]!);
  return {
    metrics: { opsWith10Held: few, opsWith100kHeld: many, manyOverFew: many / few },
    lostUpdates: 0,
  };
}
