#!/usr/bin/env node
/**
 * withlock: runs a command only while holding a PostgreSQL lock (PgLockTable, its public API
 * only). Acquire, then spawn; forward signals; stop the command if the lock is lost; release when
 * it exits; exit with its code. Every failure ends in one line on stderr and a documented exit
 * code (src/cli/args.ts, EXIT), never in an unhandled error. See DESIGN.md, "withlock".
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { PgLockTable, type PgLease } from '../postgres/index.js';
import { EXIT, HELP, parse, UsageError, type Args } from './args.js';

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const;
type Forwarded = (typeof FORWARDED)[number];
/** Signals that stop the wait for the lock (the others are ignored until the command runs). */
const STOPS_WAIT: ReadonlySet<string> = new Set(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT']);
/** How long close() may take before withlock exits anyway (the server frees the locks). */
const CLOSE_TIMEOUT = 2000;

function say(message: string): void {
  process.stderr.write(`withlock: ${message}\n`);
}

function signalCode(signal: NodeJS.Signals | string): number {
  return 128 + ((constants.signals as Record<string, number>)[signal] ?? 0);
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    return String(pkg.version);
  } catch {
    return 'unknown';
  }
}

function oneLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!;
}

/** The exit code and message for an error of acquire(). */
function acquireFailure(error: unknown, args: Args): { code: number; message: string } {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_LOCK_TIMEOUT') {
    return {
      code: EXIT.TIMEOUT,
      message:
        args.waitTimeout === 0
          ? `${JSON.stringify(args.key)} is held by another holder (--wait-timeout 0)`
          : `timed out after ${args.waitTimeout} ms waiting for ${JSON.stringify(args.key)}`,
    };
  }
  if (
    code === 'ERR_INVALID_ARG_VALUE' ||
    code === 'ERR_INVALID_ARG_TYPE' ||
    code === 'ERR_OUT_OF_RANGE'
  ) {
    return {
      code: EXIT.USAGE,
      message: `invalid <key> ${JSON.stringify(args.key)}: ${oneLine(error)}`,
    };
  }
  // ERR_LOCK_CONNECTION, ERR_LOCK_POOLER, ERR_LOCK_SCHEMA, a server error (permissions, a bad
  // database name), a bad connection string: the database cannot give us the lock.
  return { code: EXIT.UNAVAILABLE, message: `cannot lock: ${oneLine(error)}` };
}

async function closeQuietly(table: PgLockTable): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    table.close().catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_TIMEOUT);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

/** The running command, stopped if withlock itself fails (it would run on without the lock). */
let running: ChildProcess | undefined;

function internalError(error: unknown): never {
  say(`internal error: ${oneLine(error)}`);
  if (running !== undefined && running.exitCode === null && running.signalCode === null)
    running.kill('SIGTERM');
  process.exit(EXIT.SOFTWARE);
}

async function run(args: Args): Promise<number> {
  // Signals: installed first, so that none has its default effect (SIGUSR1 would start the
  // inspector, the others would kill withlock and leave the command running).
  const wait = new AbortController();
  let stoppedBy: Forwarded | undefined;
  let child: ChildProcess | undefined;
  const onSignal = (signal: Forwarded) => {
    if (child !== undefined) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return;
    }
    if (STOPS_WAIT.has(signal) && stoppedBy === undefined) {
      stoppedBy = signal;
      wait.abort(new Error(`withlock got ${signal}`));
    }
  };
  for (const signal of FORWARDED) process.on(signal, onSignal);

  let table: PgLockTable;
  try {
    table = new PgLockTable({
      connectionString: args.db,
      poolSize: 1,
      ...(args.lease === undefined ? {} : { lease: args.lease }),
      ...(args.namespace === undefined ? {} : { namespace: args.namespace }),
    });
  } catch (error) {
    say(`cannot lock: ${oneLine(error)}`);
    return EXIT.UNAVAILABLE;
  }

  let lease: PgLease;
  try {
    lease = await table.acquire(args.key, {
      mode: args.shared ? 'shared' : 'exclusive',
      waitTimeout: args.waitTimeout,
      signal: wait.signal,
    });
  } catch (error) {
    await closeQuietly(table);
    if (stoppedBy !== undefined) return signalCode(stoppedBy);
    const failure = acquireFailure(error, args);
    if (failure.code !== EXIT.TIMEOUT || !args.quiet) say(failure.message);
    return failure.code;
  }
  if (stoppedBy !== undefined) {
    // The grant raced the signal: give it back without running the command.
    await lease.release().catch(() => {});
    await closeQuietly(table);
    return signalCode(stoppedBy);
  }

  const result = await runHolding(args, lease, (c) => (child = running = c));
  if (result.lost) {
    await closeQuietly(table);
    return EXIT.LOCK_LOST;
  }
  try {
    await lease.release();
  } catch (error) {
    // Lost after the command exited, or between its last heartbeat and its exit: the command may
    // have finished without the lock, so say so rather than report success.
    say(
      `the lock on ${JSON.stringify(args.key)} was lost before it was released: ${oneLine(error)}`,
    );
    await closeQuietly(table);
    return EXIT.LOCK_LOST;
  }
  await closeQuietly(table);
  return result.code;
}

/** Spawns the command under `lease`; resolves when it has exited (or could not start). */
function runHolding(
  args: Args,
  lease: PgLease,
  started: (child: ChildProcess) => void,
): Promise<{ code: number; lost: boolean }> {
  return new Promise((resolve) => {
    let lost = false;
    let killTimer: NodeJS.Timeout | undefined;
    let child: ChildProcess;
    try {
      child = spawn(args.command[0]!, args.command.slice(1), {
        stdio: 'inherit',
        env: {
          ...process.env,
          LOCKTABLE_KEY: args.key,
          LOCKTABLE_TOKEN: lease.token.toString(),
          LOCKTABLE_MODE: lease.mode,
        },
      });
    } catch (error) {
      say(`cannot run ${JSON.stringify(args.command[0])}: ${oneLine(error)}`);
      resolve({ code: EXIT.NOT_FOUND, lost: false });
      return;
    }
    started(child);
    const onLost = () => {
      if (lost) return;
      lost = true;
      say(
        `lost the lock on ${JSON.stringify(args.key)} (its database session ended): stopping ` +
          `the command (SIGTERM, SIGKILL after ${args.killAfter} ms)`,
      );
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), args.killAfter);
    };
    child.on('error', (error: NodeJS.ErrnoException) => {
      // The command could not be started (no exit event follows).
      lease.signal.removeEventListener('abort', onLost);
      const code = error.code === 'ENOENT' ? EXIT.NOT_FOUND : EXIT.NOT_EXECUTABLE;
      say(`cannot run ${JSON.stringify(args.command[0])}: ${oneLine(error)}`);
      resolve({ code, lost: false });
    });
    child.on('exit', (code, signal) => {
      lease.signal.removeEventListener('abort', onLost);
      clearTimeout(killTimer);
      resolve({ code: signal !== null ? signalCode(signal) : (code ?? EXIT.SOFTWARE), lost });
    });
    if (lease.signal.aborted) onLost();
    else lease.signal.addEventListener('abort', onLost, { once: true });
  });
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parse(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    say(`${error.message} (withlock --help for usage)`);
    return EXIT.USAGE;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  return run(parsed.args);
}

process.on('uncaughtException', internalError);
process.on('unhandledRejection', internalError);

main().then((code) => {
  process.exitCode = code;
  // Handles a closed table might leave behind must not keep withlock alive.
  setTimeout(() => process.exit(code), 100).unref();
  for (const signal of FORWARDED) process.removeAllListeners(signal);
}, internalError);
