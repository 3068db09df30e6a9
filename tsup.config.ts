import { existsSync } from 'node:fs';
import { defineConfig } from 'tsup';

// src/worker-entry.ts is optional: only build it once it exists.
const entry = ['src/index.ts', 'src/worker-entry.ts'].filter((file) => existsSync(file));

export default defineConfig({
  entry,
  format: ['esm', 'cjs'],
  // tsup 8's DTS step passes `baseUrl` to the compiler, which TypeScript 6 reports as deprecated
  // (TS5101); silence that only for the DTS build.
  dts: { compilerOptions: { ignoreDeprecations: '6.0' } },
  clean: true,
  sourcemap: true,
  target: 'node20',
  outDir: 'dist',
});
