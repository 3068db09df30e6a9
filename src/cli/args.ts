/**
 * withlock's command line: `withlock <key> [options] -- <command...>`, parsed and checked at once,
 * so that every bad argument is reported (with its name and value) before anything connects.
 */
import { parseArgs } from 'node:util';

/** The exit codes of withlock itself (sysexits.h where one fits). */
export const EXIT = {
  /** Bad arguments: the command was not run. */
  USAGE: 64,
  /** The database could not be reached or refused the request: the command was not run. */
  UNAVAILABLE: 69,
  /** A bug in withlock (an error it did not expect). */
  SOFTWARE: 70,
  /** The lock could not be had within --wait-timeout: the command was not run. */
  TIMEOUT: 75,
  /** The lock was lost while the command ran: the command was stopped. */
  LOCK_LOST: 76,
  /** The command could not be run: not executable (126), not found (127), as a shell does. */
  NOT_EXECUTABLE: 126,
  NOT_FOUND: 127,
} as const;

export const DEFAULT_KILL_AFTER = 2000;
const MIN_LEASE = 100;
const MAX_LEASE = 2 ** 31 - 1;

export interface Args {
  key: string;
  command: string[];
  db: string;
  shared: boolean;
  waitTimeout: number;
  lease: number | undefined;
  namespace: number | undefined;
  killAfter: number;
  quiet: boolean;
}

export type Parsed = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; args: Args };

export class UsageError extends Error {}

export const HELP = `Usage: withlock <key> [options] -- <command> [args...]

Runs <command> only while holding the PostgreSQL lock <key> (locktable/postgres), and releases
it when the command exits. The command is spawned directly (no shell: use -- sh -c '...' for one),
with stdin, stdout and stderr inherited, and LOCKTABLE_KEY, LOCKTABLE_TOKEN (the fencing token,
a decimal integer that increases with every grant of the key) and LOCKTABLE_MODE in its
environment.

Options:
  --db <url>            PostgreSQL connection string (default: $DATABASE_URL, then
                        $PG_CONNECTION_STRING)
  --shared              take the lock in shared mode (shared holders run together; an
                        exclusive holder runs alone). Default: exclusive
  --wait-timeout <ms>   give up after <ms> waiting for the lock (0 = one try). Default: wait
                        forever
  --lease <ms>          ms withlock may go silent (hung, cut off) before the server frees the
                        lock (>= ${MIN_LEASE}; default 5000); a heartbeat keeps a live one
  --namespace <n>       int4 namespace of the lock (programs that must not share locks use
                        different ones). Default: locktable's
  --kill-after <ms>     if the lock is lost, SIGKILL the command <ms> after SIGTERM.
                        Default ${DEFAULT_KILL_AFTER}
  -q, --quiet           no message on stderr when the lock cannot be had in time
  -h, --help            this help
  -v, --version         the version

Signals: SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to the command.
While waiting for the lock, SIGINT, SIGTERM, SIGHUP and SIGQUIT stop the wait: withlock exits
with 128 + the signal's number without running the command.

Lock lost: if the lock's session ends while the command runs (the server ended it, the
network, pg_terminate_backend), the command gets SIGTERM, then SIGKILL after --kill-after ms.

Exit codes:
  <command's>  the command's exit code; 128 + n when it died of signal n
  ${EXIT.USAGE}           usage error (bad arguments, no connection string): not run
  ${EXIT.UNAVAILABLE}           the database could not be reached or refused: not run
  ${EXIT.SOFTWARE}           internal error in withlock
  ${EXIT.TIMEOUT}           the lock could not be had within --wait-timeout: not run
  ${EXIT.LOCK_LOST}           the lock was lost while the command ran: the command was stopped
  ${EXIT.NOT_EXECUTABLE}, ${EXIT.NOT_FOUND}      the command is not executable, or not found
  128 + n      withlock got signal n while waiting for the lock: not run

Examples:
  withlock nightly-report -- node report.js
  withlock --wait-timeout 0 billing:run -- ./bill.sh      # skip if another run is going on
  withlock --shared schema -- node server.js              # many of these, or one migration
  withlock schema -- npm run migrate                      # ... that runs alone
`;

/** A non-negative integer of ms (digits only), or a UsageError naming the option. */
function ms(name: string, value: string, min: number, max: number): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(
      `${name} must be an integer of milliseconds from ${min} to ${max}, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

const STRING_OPTIONS = new Set([
  '--db',
  '--wait-timeout',
  '--lease',
  '--namespace',
  '--kill-after',
]);

export function parse(argv: readonly string[], env: NodeJS.ProcessEnv): Parsed {
  const dashes = argv.indexOf('--');
  const own = dashes === -1 ? argv : argv.slice(0, dashes);
  const command = dashes === -1 ? [] : argv.slice(dashes + 1);
  // `--namespace -5`: a value that starts with a dash is still the option's value.
  const joined: string[] = [];
  for (let i = 0; i < own.length; i++) {
    const arg = own[i]!;
    if (STRING_OPTIONS.has(arg) && i + 1 < own.length) joined.push(`${arg}=${own[++i]}`);
    else joined.push(arg);
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: joined,
      allowPositionals: true,
      strict: true,
      options: {
        db: { type: 'string' },
        shared: { type: 'boolean' },
        'wait-timeout': { type: 'string' },
        lease: { type: 'string' },
        namespace: { type: 'string' },
        'kill-after': { type: 'string' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    // parseArgs names the option; keep its first sentence.
    throw new UsageError(
      (error as Error).message.replace(/\. To specify a positional.*$/s, '').replace(/\n/g, ' '),
    );
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };
  if (positionals.length === 0) throw new UsageError('missing <key>');
  if (positionals.length > 1) {
    throw new UsageError(
      dashes === -1
        ? `expected -- before the command, got ${JSON.stringify(positionals[1])} after the key`
        : `expected one <key> before --, got ${positionals.map((p) => JSON.stringify(p)).join(' ')}`,
    );
  }
  const key = positionals[0]!;
  if (key === '') throw new UsageError('<key> must not be empty');
  if (dashes === -1 || command.length === 0)
    throw new UsageError('missing the command: withlock <key> [options] -- <command...>');
  if (command[0] === '') throw new UsageError('the command must not be empty');
  const db = values.db ?? (env.DATABASE_URL || env.PG_CONNECTION_STRING || undefined);
  if (db === undefined || db === '') {
    throw new UsageError(
      'no database: pass --db <url>, or set DATABASE_URL or PG_CONNECTION_STRING',
    );
  }
  let namespace: number | undefined;
  if (values.namespace !== undefined) {
    const n = /^-?\d+$/.test(values.namespace) ? Number(values.namespace) : NaN;
    if (!Number.isSafeInteger(n) || n < -(2 ** 31) || n > 2 ** 31 - 1) {
      throw new UsageError(
        `--namespace must be an integer from ${-(2 ** 31)} to ${2 ** 31 - 1}, got ${JSON.stringify(values.namespace)}`,
      );
    }
    namespace = n;
  }
  return {
    kind: 'run',
    args: {
      key,
      command,
      db,
      shared: values.shared ?? false,
      waitTimeout:
        values['wait-timeout'] === undefined
          ? Infinity
          : ms('--wait-timeout', values['wait-timeout'], 0, Number.MAX_SAFE_INTEGER),
      lease:
        values.lease === undefined ? undefined : ms('--lease', values.lease, MIN_LEASE, MAX_LEASE),
      namespace,
      killAfter:
        values['kill-after'] === undefined
          ? DEFAULT_KILL_AFTER
          : ms('--kill-after', values['kill-after'], 0, MAX_LEASE),
      quiet: values.quiet ?? false,
    },
  };
}
