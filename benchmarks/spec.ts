/**
 * What the runner hands one benchmark process (a job), and what the process hands back. A job is
 * one configuration of one scenario for one peer; each job runs in a fresh process, so no peer's
 * JIT state, heap or threads leak into another's figures.
 */
import type { Api, PeerName } from './peers/types.js';

export type ScenarioId =
  | 'uncontended'
  | 'round-robin'
  | 'hot-key'
  | 'random-keys'
  | 'exclusion'
  | 'handoff'
  | 'recovery'
  | 'with-lock'
  | 'exec-timeout'
  | 'memory'
  | 'held-keys';

/** Where a single-thread scenario runs. */
export type Place = 'worker' | 'main';

/** How the recovery scenario frees a dead holder's lock. */
export type RecoveryVariant = 'watch' | 'deadline' | 'none';

/**
 * A variant of a configuration for one peer. `paired` (uncontended, locktable only): locktable and
 * the raw baseline measured in the same thread, in alternating chunks (scenarios/paired.ts).
 */
export type Variant = RecoveryVariant | 'paired' | 'handle' | 'paired-handle';

/**
 * `handle` (locktable only): each key is prepared once (`table.key(k)`, a KeyHandle) and every
 * section locks through it, skipping the key's lookup; `paired-handle` is `paired` with handles.
 * The baseline always hashes its key on every call.
 */
export function usesHandles(variant: Variant | undefined): boolean {
  return variant === 'handle' || variant === 'paired-handle';
}

export interface Settings {
  quick: boolean;
  /** Measured window of the multi-worker scenarios (ms). */
  windowMs: number;
  /** tinybench time per task in the single-thread scenarios (ms). */
  microTimeMs: number;
  /**
   * tinybench time of the unpaired uncontended rows (ms): shorter than microTimeMs, to pay for the
   * paired jobs, which carry the uncontended goals.
   */
  uncontendedTimeMs: number;
  /** Paired uncontended jobs: chunk pairs measured, and the length of one chunk (ms). */
  pairedChunks: number;
  pairedChunkMs: number;
  /** Runs of every configuration. */
  runs: number;
  /** How long the recovery scenario waits for the next holder before it says "never" (ms). */
  recoveryCapMs: number;
  /** Seed of the random key choices (printed, so a run can be repeated). */
  seed: number;
}

export interface JobSpec {
  scenario: ScenarioId;
  peer: PeerName;
  api: Api;
  place?: Place;
  workers?: number;
  variant?: Variant;
  settings: Settings;
  /** Which run of this configuration (1-based); seeds differ per run. */
  run: number;
}

export interface JobResult {
  /** Metric name -> value; null when not observed (e.g. no next holder within the cap). */
  metrics: Record<string, number | null>;
  /** Critical sections the workers counted minus what the shared counter(s) read. */
  lostUpdates: number;
  /** Set when the peer did something unsafe other than losing updates. */
  unsafe?: string;
  notes?: string[];
}

/** What a job process prints on its last line of stdout. */
export type JobOutput =
  | { kind: 'result'; result: JobResult }
  | { kind: 'skip'; reason: string }
  | { kind: 'error'; message: string; details?: unknown };

export const OUTPUT_PREFIX = 'BENCH-JOB ';
