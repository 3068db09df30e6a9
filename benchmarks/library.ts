/**
 * The library under test, loaded from the BUILT bundle (dist/index.js, made by `npm run build`),
 * so that the benchmarks measure what users install. The types come from src/ (the bundle is built
 * from it); the import path is computed so that type-checking does not need dist/ to exist.
 */
type Library = typeof import('../src/index.js');

const bundle = new URL('../dist/index.js', import.meta.url).href;

let library: Library;
try {
  library = (await import(bundle)) as Library;
} catch (error) {
  throw new Error(`cannot load ${bundle}: run \`npm run build\` first`, { cause: error });
}

export const { LockTable } = library;
export type LockTable = import('../src/index.js').LockTable;
