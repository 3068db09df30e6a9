/**
 * Compiles benchmarks/ to plain JavaScript in benchmarks/.cache/build/ (one .js per .ts, nothing
 * bundled), so that every benchmark process and worker starts from built JavaScript: no loader in
 * each worker (tsx took 2-3 s to start 8 workers on 2 cores), and the same files run under Node 20
 * and under the Node 24 binary that some peers need. Peers and locktable stay external imports.
 */
import { defineConfig, type Options } from 'tsup';

/** One .js per .ts, nothing bundled (see above). */
const unbundled: Options = {
  format: ['esm'],
  bundle: false,
  clean: true,
  dts: false,
  sourcemap: false,
  target: 'node20',
  silent: true,
};

export default defineConfig([
  {
    ...unbundled,
    entry: ['benchmarks/**/*.ts', '!benchmarks/tsup.config.ts', '!benchmarks/**/*.d.ts'],
    outDir: 'benchmarks/.cache/build',
  },
  {
    ...unbundled,
    // The PostgreSQL statements, which the `statements` peer sends by hand (not a public export):
    // where build/postgres/worker.js's import of '../../src/postgres/sql.js' finds them.
    entry: ['src/postgres/sql.ts'],
    outDir: 'benchmarks/.cache/src/postgres',
  },
]);
