/**
 * benchmarks/, found from this file whether it runs compiled (benchmarks/.cache/build/) or not.
 */
const here = new URL('.', import.meta.url).href;

export const BENCHMARKS_DIR = new URL(here.replace(/\.cache\/build\/$/, ''));
