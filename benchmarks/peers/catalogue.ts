/**
 * Every peer the benchmarks know, with what each one can do. Importing this loads no lock library:
 * the runner uses it to plan, and load.ts imports an adapter only in the process that runs it.
 */
import type { Api, PeerName, Runtime } from './types.js';

export interface PeerInfo {
  name: PeerName;
  /** How the report names it. */
  label: string;
  runtime: Runtime;
  apis: readonly Api[];
  /** False: it locks between async tasks of one thread only (async-mutex). */
  multiThread: boolean;
  /** Dead-holder recovery by design: false means the recovery scenario expects it never to. */
  recovers: boolean;
  /** The npm package and exact version, when it is one. */
  package?: string;
  /** The reference the ratios are taken against, not a competitor. */
  isBaseline?: boolean;
}

export const PEERS: readonly PeerInfo[] = [
  {
    name: 'baseline',
    label: 'raw Atomics baseline',
    runtime: 'default',
    apis: ['sync', 'async'],
    multiThread: true,
    recovers: false,
    isBaseline: true,
  },
  {
    name: 'locktable',
    label: 'locktable',
    runtime: 'default',
    apis: ['sync', 'async'],
    multiThread: true,
    recovers: true,
  },
  {
    name: 'node-locks',
    label: 'worker_threads.locks',
    runtime: 'node24',
    apis: ['async'],
    multiThread: true,
    recovers: true,
  },
  {
    name: 'web-locks',
    label: 'web-locks (metarhia)',
    runtime: 'default',
    apis: ['async'],
    multiThread: true,
    recovers: false,
    package: 'web-locks@0.0.9',
  },
  {
    name: 'mortice',
    label: 'mortice',
    runtime: 'node24',
    apis: ['async'],
    multiThread: true,
    recovers: false,
    package: 'mortice@3.3.1',
  },
  {
    name: 'async-mutex',
    label: 'async-mutex',
    runtime: 'default',
    apis: ['async'],
    multiThread: false,
    recovers: false,
    package: 'async-mutex@0.5.0',
  },
];

export function peerInfo(name: PeerName): PeerInfo {
  const info = PEERS.find((peer) => peer.name === name);
  if (info === undefined) throw new Error(`unknown peer ${JSON.stringify(name)}`);
  return info;
}
