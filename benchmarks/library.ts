/**
 * The library under test, loaded from the BUILT bundle (dist/, made by `npm run build`) through
 * the package's own name, so that the benchmarks measure what users install, from wherever the
 * compiled benchmark file sits. The types come from src/ (the bundle is built from it); the
 * specifier is a variable so that type-checking does not need dist/ to exist.
 */
type Library = typeof import('../src/index.js');

const specifier = 'locktable';

let library: Library;
try {
  library = (await import(specifier)) as Library;
} catch (error) {
  throw new Error('cannot load locktable from dist/: run `npm run build` first', { cause: error });
}

export const { LockTable } = library;
export type LockTable = import('../src/index.js').LockTable;

/**
 * withLock (issue 3), when the built package exports it: the benchmarks that need it are skipped,
 * with this reason, when it does not.
 */
export const withLock = (library as Record<string, unknown>).withLock as WithLock | undefined;

export interface WithLockOptions {
  args?: unknown;
  mode?: 'exclusive' | 'shared';
  waitTimeout?: number;
  execTimeout?: number;
  failTimeout?: number;
  signal?: AbortSignal;
  pool?: unknown;
}

/** The API issue 3 specifies (declared here so that these benchmarks compile before it lands). */
export type WithLock = (
  table: LockTable,
  key: string,
  task: string | { module: string; name: string } | ((args: never, lock: never) => unknown),
  options?: WithLockOptions,
) => Promise<unknown>;
