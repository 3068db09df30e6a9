/**
 * One benchmark process: `node job.js '<JobSpec as JSON>'`. Runs one configuration of one
 * scenario for one peer and prints one line, OUTPUT_PREFIX + JSON (a JobOutput), on stdout. It
 * exits by itself afterwards: some peers keep handles open (mortice's BroadcastChannel) that would
 * otherwise keep the process alive.
 */
import { HangError } from './scenarios/contended.js';
import { OUTPUT_PREFIX, type JobOutput, type JobSpec } from './spec.js';

async function runJob(spec: JobSpec): Promise<JobOutput> {
  switch (spec.scenario) {
    case 'uncontended':
    case 'round-robin': {
      const { singleThread } = await import('./scenarios/single-thread.js');
      return { kind: 'result', result: await singleThread(spec) };
    }
    case 'hot-key':
    case 'random-keys':
    case 'exclusion': {
      const { contended } = await import('./scenarios/contended.js');
      return { kind: 'result', result: await contended(spec) };
    }
    case 'handoff': {
      const { handoff } = await import('./scenarios/handoff.js');
      return { kind: 'result', result: await handoff(spec) };
    }
    case 'recovery': {
      const { recovery } = await import('./scenarios/recovery.js');
      return { kind: 'result', result: await recovery(spec) };
    }
    case 'with-lock': {
      const { withLockRoundTrip } = await import('./scenarios/with-lock.js');
      return withLockRoundTrip(spec);
    }
    case 'exec-timeout': {
      const { execTimeout } = await import('./scenarios/with-lock.js');
      return execTimeout(spec);
    }
    case 'memory': {
      const { memory } = await import('./scenarios/memory.js');
      return { kind: 'result', result: await memory(spec) };
    }
    case 'held-keys': {
      const { heldKeys } = await import('./scenarios/memory.js');
      return { kind: 'result', result: await heldKeys(spec) };
    }
  }
}

function errorOutput(error: unknown): JobOutput {
  const message = error instanceof Error ? error.message : String(error);
  const details = error instanceof HangError ? error.details : undefined;
  const cause =
    error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return { kind: 'error', message: message + cause, details };
}

const spec = JSON.parse(process.argv[2]!) as JobSpec;
let output: JobOutput;
try {
  output = await runJob(spec);
} catch (error) {
  output = errorOutput(error);
}
process.stdout.write(`\n${OUTPUT_PREFIX}${JSON.stringify(output)}\n`, () => process.exit(0));
