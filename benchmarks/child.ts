/** Runs one job in a fresh process and reads its one line of output. */
import { spawn } from 'node:child_process';
import { PHASE_PREFIX } from './control.js';
import { OUTPUT_PREFIX, type JobOutput, type JobSpec } from './spec.js';

const JOB_SCRIPT = new URL('./job.js', import.meta.url);

export interface ChildOutcome {
  output: JobOutput;
  durationMs: number;
}

export function runChild(node: string, spec: JobSpec, timeoutMs: number): Promise<ChildOutcome> {
  const t0 = performance.now();
  const child = spawn(node, [JOB_SCRIPT.pathname, JSON.stringify(spec)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  return new Promise((resolve) => {
    child.on('close', (code, signalName) => {
      clearTimeout(timer);
      const durationMs = performance.now() - t0;
      const line = stdout.split('\n').find((l) => l.startsWith(OUTPUT_PREFIX));
      if (line !== undefined) {
        resolve({ output: JSON.parse(line.slice(OUTPUT_PREFIX.length)) as JobOutput, durationMs });
        return;
      }
      const lines = stderr.trim().split('\n');
      const phases = lines.filter((l) => l.startsWith(PHASE_PREFIX));
      const last = phases.length
        ? `; last phase: ${phases[phases.length - 1]!.slice(PHASE_PREFIX.length)}`
        : '';
      const tail = lines
        .filter((l) => !l.startsWith(PHASE_PREFIX))
        .slice(-5)
        .join(' | ');
      const message = timedOut
        ? `no result within ${Math.round(timeoutMs / 1000)} s, killed${last}`
        : `the process exited (${signalName ?? `code ${code}`}) without a result${tail ? `: ${tail}` : ''}`;
      resolve({ output: { kind: 'error', message }, durationMs });
    });
  });
}
