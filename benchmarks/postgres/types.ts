/** What run.ts sends each benchmark process of `npm run bench:postgres`, and what comes back. */

/** `none`: the negative control, no lock at all (it must lose updates). */
/** `statements`: locktable's own statements sent by hand (its server side without its client). */
export type PeerName = 'raw' | 'statements' | 'locktable' | 'advisory-lock' | 'none';
/**
 * `paired`: the uncontended loop of raw, statements and locktable in ONE process, in alternating
 * chunks (run for the locktable peer only): the ratios of adjacent chunks cancel the speed mode a
 * process of this VM happens to land in, which separate processes do not. `handoff-paired`: the
 * handoff of raw, statements and locktable in ONE process, one handoff of each per round, in
 * rotating order (run for the locktable peer only), for the same reason.
 */
export type ScenarioName =
  'uncontended' | 'paired' | 'hot-key' | 'processes' | 'handoff' | 'handoff-paired';

/** One chunk of the paired scenario (ms): three per triple, in rotating order. */
export const PAIRED_CHUNK_MS = 50;

export interface WorkerTask {
  peer: PeerName;
  scenario: ScenarioName;
  url: string;
  /** The one key every client of this configuration locks (fresh per run). */
  key: string;
  /** locktable's namespace (fresh per run set). */
  namespace: number;
  /** The counter table of the cross-process scenario. */
  table: string;
  /** Lock clients in this process. */
  clients: number;
  warmupMs: number;
  /** The measured window. */
  ms: number;
  /** Handoff: ms the holder still holds once the server shows the waiter waiting. */
  handoffGapMs: number;
}

export interface WorkerResult {
  peer: PeerName;
  scenario: ScenarioName;
  /** Sections per client. */
  sections: number[];
  elapsedMs: number;
  /** The in-process counter after the window (= sections when nothing was lost). */
  counter: number;
  /** Acquire waits (ms) over the window. */
  waits?: { p50: number; p99: number; max: number } | undefined;
  /** Handoff samples (µs), sorted. */
  handoffUs?: number[];
  /** Handoff: grants seen before the holder's release was sent (must be 0). */
  unsafe?: number;
  /** locktable's front: server grants and in-process hand-overs. */
  stats?: { serverGrants: number; handoffs: number } | undefined;
  /**
   * locktable: its streaks over the window, the sections of one server grant, from the first
   * grant to the last release: how long this process kept the server lock from the others.
   */
  streaks?: { count: number; p99Ms: number; maxMs: number; maxSections: number } | undefined;
  /** paired: the medians over chunk triples of locktable / raw and statements / raw. */
  paired?: { locktable: number; statements: number; triples: number };
  /**
   * handoff-paired: each peer's handoff p50 (µs) over the run, and the medians over rounds (one
   * handoff per peer each) of locktable's and statements' handoff over raw's.
   */
  pairedHandoff?:
    | {
        rawUs: number;
        statementsUs: number;
        locktableUs: number;
        locktable: number;
        statements: number;
        rounds: number;
      }
    | undefined;
}
