/**
 * The scenario catalogue, and its expansion into jobs: every configuration of every selected
 * scenario, for every selected peer that can run it (and every API the peer has), `runs` times.
 * Runs are interleaved (run 1 of everything, then run 2, ...), so slow drifts in the machine's
 * load spread over every peer instead of landing on one.
 */
import { PEERS, type PeerInfo } from './peers/catalogue.js';
import type { Api, PeerName } from './peers/types.js';
import type { JobSpec, Place, ScenarioId, Settings, Variant } from './spec.js';

export type Unit = 'ops/s' | 'us' | 'ms' | 'x' | 'bytes' | 'ratio';

export interface MetricDef {
  key: string;
  label: string;
  unit: Unit;
  /** Which way is better; null: neither (a description, not a score). */
  better: 'higher' | 'lower' | null;
}

/** One configuration of a scenario, before it is paired with a peer and an API. */
export interface Config {
  place?: Place;
  workers?: number;
  variant?: Variant;
}

export interface ScenarioDef {
  id: ScenarioId;
  title: string;
  /** What one critical section / measurement is, for the report. */
  description: string;
  apis: readonly Api[];
  metrics: readonly MetricDef[];
  /** The metric the ratios, the "best peer" goal and the charts use. */
  primary: string;
  configs(settings: Settings): Config[];
  /**
   * Variants of a config for one peer (recovery: locktable has two ways to recover; uncontended:
   * locktable is also measured paired with the baseline).
   */
  variants?(peer: PeerInfo): Variant[];
  /** true, or why this peer does not run it. */
  eligible(peer: PeerInfo): true | string;
  /** One run is enough (deterministic figures). */
  once?: boolean;
  /** Rough duration of one job (ms), for the estimate; process start-up is added. */
  estimateMs(settings: Settings, config: Config, peer: PeerInfo, variant?: Variant): number;
}

/** locktable also runs through key handles (table.key(k)); every other peer with its key string. */
const withHandles = (peer: PeerInfo): Variant[] =>
  peer.name === 'locktable' ? ['none', 'handle'] : ['none'];

const SINGLE_THREAD_ONLY =
  'single thread only: its Mutex lives in one thread and excludes async tasks of that thread';
const ONLY_LOCKTABLE = (what: string) => (peer: PeerInfo) =>
  peer.name === 'locktable' ? true : `has no ${what}`;
const multiThread = (peer: PeerInfo) => (peer.multiThread ? true : SINGLE_THREAD_ONLY);

const throughputMetrics: MetricDef[] = [
  { key: 'opsPerSecond', label: 'sections/s', unit: 'ops/s', better: 'higher' },
  { key: 'fairness', label: 'fairness', unit: 'ratio', better: 'higher' },
  { key: 'waitP50Us', label: 'wait p50', unit: 'us', better: 'lower' },
  { key: 'waitP99Us', label: 'wait p99', unit: 'us', better: 'lower' },
  { key: 'waitMaxUs', label: 'wait max', unit: 'us', better: 'lower' },
];

/** A paired row's own metrics: the baseline's rate beside locktable's, and their ratio. */
const pairedMetrics: MetricDef[] = [
  { key: 'baselineOpsPerSecond', label: 'paired: baseline ops/s', unit: 'ops/s', better: null },
  { key: 'pairedRatio', label: 'paired: locktable / baseline', unit: 'ratio', better: 'higher' },
  { key: 'pairedRatioLowest', label: 'paired: lowest pair', unit: 'ratio', better: null },
  { key: 'pairedRatioHighest', label: 'paired: highest pair', unit: 'ratio', better: null },
];

const micro = (s: Settings) => s.microTimeMs * 1.3 + 150;
const windowed = (s: Settings) => s.windowMs + 400;

export const SCENARIOS: readonly ScenarioDef[] = [
  {
    id: 'uncontended',
    title: 'Uncontended acquire + release of one key',
    description:
      'one thread, one key, nothing else competing; each operation is acquire, a non-atomic increment, release',
    apis: ['sync', 'async'],
    // The paired row (locktable only) fills the last four; the other rows only ops/s.
    metrics: [
      { key: 'opsPerSecond', label: 'ops/s', unit: 'ops/s', better: 'higher' },
      {
        key: 'baselineOpsPerSecond',
        label: 'paired: baseline ops/s',
        unit: 'ops/s',
        better: null,
      },
      {
        key: 'pairedRatio',
        label: 'paired: locktable / baseline',
        unit: 'ratio',
        better: 'higher',
      },
      { key: 'pairedRatioLowest', label: 'paired: lowest chunk', unit: 'ratio', better: null },
      { key: 'pairedRatioHighest', label: 'paired: highest chunk', unit: 'ratio', better: null },
    ],
    primary: 'opsPerSecond',
    configs: () => [{ place: 'worker' }, { place: 'main' }],
    variants: (peer) =>
      peer.name === 'locktable' ? ['none', 'paired', 'handle', 'paired-handle'] : ['none'],
    eligible: () => true,
    // Paired: calibration (4 x 30 ms), 5 warm-up pairs, the measured pairs, a worker's start.
    estimateMs: (s, c, _peer, variant) =>
      variant === 'paired' || variant === 'paired-handle'
        ? 120 + (5 + s.pairedChunks) * 2 * s.pairedChunkMs + (c.place === 'worker' ? 150 : 0)
        : s.uncontendedTimeMs * 1.3 + 150,
  },
  {
    id: 'round-robin',
    title: '1,000 distinct keys, round robin',
    description:
      "one worker locks 1,000 keys in turn (acquire, increment that key's counter, release)",
    apis: ['sync', 'async'],
    // The paired rows (locktable only): locktable and the baseline in one thread, in alternating
    // chunks over the same 1,000 keys (scenarios/paired.ts); they carry the goals.
    metrics: [
      { key: 'opsPerSecond', label: 'ops/s', unit: 'ops/s', better: 'higher' },
      ...pairedMetrics,
    ],
    primary: 'opsPerSecond',
    configs: () => [{ place: 'worker' }],
    variants: (peer) =>
      peer.name === 'locktable' ? ['none', 'handle', 'paired', 'paired-handle'] : ['none'],
    eligible: () => true,
    estimateMs: (s, _c, _peer, variant) =>
      variant === 'paired' || variant === 'paired-handle'
        ? 270 + (5 + s.pairedChunks) * 2 * s.pairedChunkMs
        : micro(s),
  },
  {
    id: 'hot-key',
    title: 'One hot key',
    description: 'N workers lock the same key as fast as they can, for the measured window',
    apis: ['sync', 'async'],
    metrics: throughputMetrics,
    primary: 'opsPerSecond',
    configs: (s) => (s.quick ? [1, 2, 8] : [1, 2, 4, 8]).map((workers) => ({ workers })),
    variants: withHandles,
    eligible: multiThread,
    estimateMs: (s, c) => windowed(s) + (c.workers ?? 1) * 60,
  },
  {
    id: 'random-keys',
    title: '64 keys chosen at random by 4 workers',
    description: 'each section locks one of 64 keys drawn at random (seeded), 4 workers',
    apis: ['sync', 'async'],
    primary: 'opsPerSecond',
    configs: () => [{ workers: 4 }],
    // The paired rows (locktable only): locktable and the baseline in the same 4 workers, in
    // alternating phases (scenarios/paired-contended.ts); they carry the goals.
    metrics: [...throughputMetrics, ...pairedMetrics],
    variants: (peer) =>
      peer.name === 'locktable' ? ['none', 'handle', 'paired', 'paired-handle'] : ['none'],
    eligible: multiThread,
    estimateMs: (s, _c, _peer, variant) =>
      variant === 'paired' || variant === 'paired-handle'
        ? 4 * s.pairedChunks * s.pairedChunkMs + 600
        : windowed(s) + 240,
  },
  {
    id: 'exclusion',
    title: 'Exclusion check',
    description:
      'a correctness check: 4 workers, 8 keys at random, each section holds its key 5 µs between its read and its write, so that overlapping holders lose updates',
    apis: ['sync', 'async'],
    metrics: [{ key: 'opsPerSecond', label: 'sections/s', unit: 'ops/s', better: 'higher' }],
    primary: 'opsPerSecond',
    configs: () => [{ workers: 4 }],
    eligible: multiThread,
    estimateMs: (s) => windowed(s) + 240,
  },
  {
    id: 'handoff',
    title: 'Handoff latency',
    description:
      'release by one worker -> acquire by the other, which announced its request 20 µs before the release',
    apis: ['sync', 'async'],
    metrics: [
      { key: 'handoffP50Us', label: 'p50', unit: 'us', better: 'lower' },
      { key: 'handoffP99Us', label: 'p99', unit: 'us', better: 'lower' },
      { key: 'handoffMaxUs', label: 'max', unit: 'us', better: 'lower' },
    ],
    primary: 'handoffP50Us',
    configs: () => [{ workers: 2 }],
    variants: withHandles,
    eligible: multiThread,
    estimateMs: windowed,
  },
  {
    id: 'recovery',
    title: "Recovery from a holder's termination",
    description:
      'a worker holding the key is terminated; time until the worker waiting for the key gets it',
    apis: ['sync', 'async'],
    metrics: [
      { key: 'recoveryMs', label: 'termination -> next holder', unit: 'ms', better: 'lower' },
      { key: 'pastDeadlineMs', label: 'past hold + failTimeout', unit: 'ms', better: 'lower' },
    ],
    primary: 'recoveryMs',
    configs: () => [{ workers: 2 }],
    variants: (peer) => (peer.name === 'locktable' ? ['watch', 'deadline'] : ['none']),
    eligible: (peer) =>
      peer.isBaseline
        ? "no recovery by design: a dead holder's word stays locked"
        : multiThread(peer),
    estimateMs: (s, c, peer) => 300 + (peer.name === 'locktable' ? 250 : s.recoveryCapMs),
  },
  {
    id: 'with-lock',
    title: 'withLock round trip vs a bare pool.run',
    description:
      'sequential calls of the same task (a non-atomic increment) on the same 1-thread piscina pool, uncontended key',
    apis: ['async'],
    metrics: [
      { key: 'bareRunUs', label: 'pool.run', unit: 'us', better: 'lower' },
      { key: 'withLockNameUs', label: 'withLock (task name)', unit: 'us', better: 'lower' },
      {
        key: 'withLockModuleUs',
        label: 'withLock ({ module, name })',
        unit: 'us',
        better: 'lower',
      },
      { key: 'nameOverBare', label: 'name / bare', unit: 'x', better: 'lower' },
      { key: 'moduleOverBare', label: 'module / bare', unit: 'x', better: 'lower' },
    ],
    primary: 'withLockNameUs',
    configs: () => [{}],
    eligible: ONLY_LOCKTABLE('withLock (running a task in a pool under a lock)'),
    estimateMs: (s) => 3 * s.microTimeMs * 1.3 + 400,
  },
  {
    id: 'exec-timeout',
    title: 'Exec timeout -> next holder',
    description:
      'a task that never ends runs under withLock with execTimeout 100 ms; the main thread waits for the key',
    apis: ['async'],
    metrics: [
      {
        key: 'afterExecTimeoutMs',
        label: 'exec deadline -> next holder',
        unit: 'ms',
        better: 'lower',
      },
    ],
    primary: 'afterExecTimeoutMs',
    configs: () => [{}],
    eligible: ONLY_LOCKTABLE('exec timeout'),
    estimateMs: () => 500,
  },
  {
    id: 'memory',
    title: 'Shared memory per key',
    description: 'bytes of SharedArrayBuffer per key the lock can hold',
    apis: ['sync'],
    metrics: [
      { key: 'bytesPerKey', label: 'default (1024 x 64)', unit: 'bytes', better: 'lower' },
      { key: 'bytesPerKeyShortKeys', label: 'keys <= 16', unit: 'bytes', better: 'lower' },
      { key: 'bytesPerKeyLongKeys', label: 'keys <= 256', unit: 'bytes', better: 'lower' },
      { key: 'bytesPerKeyBigTable', label: '131,072 slots', unit: 'bytes', better: 'lower' },
    ],
    primary: 'bytesPerKey',
    configs: () => [{}],
    once: true,
    eligible: (peer) => {
      switch (peer.name) {
        case 'locktable':
        case 'baseline':
          return true;
        case 'node-locks':
          return 'no shared memory: one native lock manager per process';
        case 'web-locks':
          return "a 4-byte SharedArrayBuffer per name, plus a Lock object per name in every thread's heap (from its source)";
        case 'mortice':
          return "no shared memory: every lock lives in the main thread's heap";
        case 'async-mutex':
          return "no shared memory: one thread's heap";
      }
    },
    estimateMs: () => 100,
  },
  {
    id: 'held-keys',
    title: 'Acquire with 10 vs 100,000 other keys held',
    description:
      'acquireSync + release of one key while 10 or 100,000 other keys are held (capacity 131,072)',
    apis: ['sync'],
    metrics: [
      { key: 'opsWith10Held', label: '10 held', unit: 'ops/s', better: 'higher' },
      { key: 'opsWith100kHeld', label: '100,000 held', unit: 'ops/s', better: 'higher' },
      { key: 'manyOverFew', label: '100,000 / 10', unit: 'x', better: 'higher' },
    ],
    primary: 'opsWith100kHeld',
    configs: () => [{}],
    eligible: ONLY_LOCKTABLE('key table to fill (locktable only)'),
    estimateMs: (s) => 2 * s.microTimeMs * 1.3 + 600,
  },
];

export interface Job {
  spec: JobSpec;
  /** Names the configuration without the run: jobs of one configuration share it. */
  id: string;
  /** The table a job's row lands in, e.g. "hot-key x2". */
  group: string;
  estimateMs: number;
}

/** Process start-up of one job (node, the compiled benchmark, the peer library). */
const STARTUP_MS = 250;

export function groupName(scenario: ScenarioId, config: Config): string {
  if (config.place) return `${scenario} (${config.place === 'main' ? 'main thread' : 'worker'})`;
  if (
    config.workers &&
    (scenario === 'hot-key' || scenario === 'random-keys' || scenario === 'exclusion')
  ) {
    return `${scenario} x${config.workers}`;
  }
  return scenario;
}

export function rowName(peer: PeerName, api: Api, variant?: Variant): string {
  return `${peer} ${api}${variant && variant !== 'none' ? ` ${variant}` : ''}`;
}

export interface Selection {
  scenarios: ReadonlySet<ScenarioId>;
  peers: ReadonlySet<PeerName>;
  /** hot-key worker counts to run instead of the defaults (empty: the defaults). */
  workers: ReadonlySet<number>;
}

export interface NotRun {
  scenario: ScenarioId;
  peer: PeerName;
  reason: string;
}

export function expand(
  settings: Settings,
  selection: Selection,
): { jobs: Job[]; notRun: NotRun[] } {
  const notRun: NotRun[] = [];
  const items: {
    id: string;
    group: string;
    estimateMs: number;
    base: Omit<JobSpec, 'run'>;
    once: boolean;
  }[] = [];
  for (const scenario of SCENARIOS) {
    if (!selection.scenarios.has(scenario.id)) continue;
    for (const peer of PEERS) {
      if (!selection.peers.has(peer.name)) continue;
      const eligible = scenario.eligible(peer);
      if (eligible !== true) {
        notRun.push({ scenario: scenario.id, peer: peer.name, reason: eligible });
        continue;
      }
      // --workers replaces the hot-key worker counts (any count, e.g. 16).
      const configs =
        scenario.id === 'hot-key' && selection.workers.size > 0
          ? [...selection.workers].sort((a, b) => a - b).map((workers) => ({ workers }))
          : scenario.configs(settings);
      for (const config of configs) {
        for (const api of scenario.apis) {
          if (!peer.apis.includes(api)) continue;
          for (const variant of scenario.variants?.(peer) ?? [undefined]) {
            const base: Omit<JobSpec, 'run'> = {
              scenario: scenario.id,
              peer: peer.name,
              api,
              ...config,
              ...(variant ? { variant } : {}),
              settings,
            };
            items.push({
              id: `${groupName(scenario.id, config)} / ${rowName(peer.name, api, variant)}`,
              group: groupName(scenario.id, config),
              estimateMs: STARTUP_MS + scenario.estimateMs(settings, config, peer, variant),
              base,
              once: scenario.once === true,
            });
          }
        }
      }
    }
  }
  const jobs: Job[] = [];
  for (let run = 1; run <= settings.runs; run++) {
    for (const item of items) {
      if (item.once && run > 1) continue;
      jobs.push({
        id: item.id,
        group: item.group,
        estimateMs: item.estimateMs,
        spec: { ...item.base, run },
      });
    }
  }
  return { jobs, notRun };
}

export function scenarioDef(id: ScenarioId): ScenarioDef {
  return SCENARIOS.find((s) => s.id === id)!;
}
