import { defineConfig } from 'tsup';

export default defineConfig({
  // task-runner is the piscina worker file of withLock: it must sit next to index.js in dist/.
  // postgres is the PostgreSQL backend, the only entry that imports `pg` (an optional peer).
  // withlock is the `withlock` command (package.json "bin"): its source starts with a
  // `#!/usr/bin/env node` line, which esbuild keeps and which makes tsup mark the file executable.
  entry: {
    index: 'src/index.ts',
    'task-runner': 'src/with-lock/task-runner.ts',
    postgres: 'src/postgres/index.ts',
    // web-locks is the W3C Web Locks facade (LockManager): its own entry, loaded only by its users.
    'web-locks': 'src/web-locks/index.ts',
    withlock: 'src/cli/withlock.ts',
  },
  external: ['pg'],
  format: ['esm', 'cjs'],
  // import.meta.url (to find task-runner.js) in the CommonJS build.
  shims: true,
  // tsup 8's DTS step passes `baseUrl` to the compiler, which TypeScript 6 reports as deprecated
  // (TS5101); silence that only for the DTS build. stripInternal: a member marked @internal (the
  // table's internals, the Lease class's constructor) is left out of the published types.
  dts: { compilerOptions: { ignoreDeprecations: '6.0', stripInternal: true } },
  clean: true,
  sourcemap: true,
  target: 'node20',
  outDir: 'dist',
});
