// Worker entry point. Node 20 does not apply `--import tsx` to a worker's own TypeScript entry
// file (ERR_UNKNOWN_FILE_EXTENSION, even with execArgv set), so every worker starts here, plain
// JavaScript: it registers tsx's loader in this thread, then imports the TypeScript worker named
// in workerData.script. tsx only transpiles at load time; the measured loops run as plain JS.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.script);
