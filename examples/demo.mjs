// `npm run demo`: locktable doing its job, in well under a minute.
//   1. A ledger in a SharedArrayBuffer, transfers applied by 4 teller threads, with and without
//      locks: the total is checked at the end.
//   2. A task that hangs, run with withLock: stopped by its exec timeout; the next holder waits.
//   3. A worker that dies holding a lock: recovered through its deadline, and through watch().
import { availableParallelism } from 'node:os';
import process from 'node:process';
import { URL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { LockTable, withLock } from '../dist/index.js';

const ACCOUNTS = 100;
const OPENING_BALANCE = 1000;
const TELLERS = 4;
const RUN_MS = Number(process.env.DEMO_RUN_MS ?? 3000);
const tty = process.stdout.isTTY === true;
const fmt = (n) => Math.round(n).toLocaleString('en-US');
const ms = (n) => `${n.toFixed(1)} ms`;
const rows = [];

function progress(line) {
  if (tty) process.stdout.write(`\r  ${line}`.padEnd(78));
  else console.log(`  ${line}`);
}

function exited(worker) {
  return new Promise((resolve) => worker.once('exit', resolve));
}

async function ledgerRun(useLocks) {
  const table = new LockTable({ capacity: 256 });
  const balances = new SharedArrayBuffer(ACCOUNTS * 4);
  new Int32Array(balances).fill(OPENING_BALANCE);
  const control = new SharedArrayBuffer((1 + TELLERS) * 4);
  const ctrl = new Int32Array(control);
  const tellers = Array.from(
    { length: TELLERS },
    (_, index) =>
      new Worker(new URL('./ledger-worker.mjs', import.meta.url), {
        workerData: {
          buffer: table.buffer,
          balances,
          control,
          useLocks,
          index,
          accounts: ACCOUNTS,
          seed: 7 + index,
        },
      }),
  );
  const label = useLocks ? 'with locktable' : 'without locks ';
  const started = performance.now();
  const done = () => ctrl.slice(1).reduce((a, b) => a + b, 0);
  while (performance.now() - started < RUN_MS) {
    await new Promise((resolve) => setTimeout(resolve, tty ? 100 : 1000));
    const t = (performance.now() - started) / 1000;
    progress(`${label}: ${t.toFixed(1)} s, ${fmt(done())} transfers`);
  }
  Atomics.store(ctrl, 0, 1);
  await Promise.all(tellers.map(exited));
  const seconds = (performance.now() - started) / 1000;
  if (tty) process.stdout.write('\n');
  const total = new Int32Array(balances).reduce((a, b) => a + b, 0);
  return { transfers: done(), perSecond: done() / seconds, total };
}

console.log(`locktable demo: Node ${process.version}, ${availableParallelism()} cores\n`);

// 1. The ledger.
const expected = ACCOUNTS * OPENING_BALANCE;
console.log(
  `1. A ledger of ${ACCOUNTS} accounts (${fmt(expected)} in all) in a SharedArrayBuffer; ${TELLERS} ` +
    `teller threads move money between random accounts for ${RUN_MS / 1000} s.`,
);
const locked = await ledgerRun(true);
const unlocked = await ledgerRun(false);
for (const [name, r] of [
  ['with locktable', locked],
  ['without locks', unlocked],
]) {
  const verdict =
    r.total === expected
      ? 'ok: no money lost or made'
      : `WRONG: ${fmt(Math.abs(expected - r.total))} ${r.total < expected ? 'lost' : 'made'} by races`;
  console.log(
    `   ${name.padEnd(15)} ${fmt(r.transfers).padStart(11)} transfers (${fmt(r.perSecond)}/s), ` +
      `total ${fmt(r.total)}: ${verdict}`,
  );
}
rows.push(['ledger with locktable', locked.total === expected ? 'total intact' : 'TOTAL WRONG']);
rows.push([
  'ledger without locks',
  unlocked.total === expected
    ? 'total intact (races missed this time)'
    : 'total wrong, as expected',
]);

// 2. A task that hangs.
console.log(
  "\n2. withLock(table, 'account:42', () => { for (;;) {} }, { execTimeout: 500 }): a task that " +
    'never ends, and a second task queued for the same account.',
);
const table = new LockTable({ capacity: 64 });
await withLock(table, 'warm-up', () => 0); // the default pool starts its threads
const t0 = LockTable.now();
const hung = withLock(
  table,
  'account:42',
  () => {
    for (;;);
  },
  { execTimeout: 500 },
);
const next = withLock(
  table,
  'account:42',
  (_args, lock) => ({ token: lock.token, startedAt: lock.deadline - 5000 }),
  { waitTimeout: 10_000, execTimeout: 5000 },
);
let stoppedAfter = NaN;
try {
  await hung;
  console.log('   the hung task returned?!');
} catch (error) {
  stoppedAfter = LockTable.now() - t0;
  console.log(`   -> ${error.code} after ${ms(stoppedAfter)}: its worker thread was terminated`);
}
const nextResult = await next;
const handedOver = nextResult.startedAt - t0;
console.log(
  `   -> the queued task started ${ms(handedOver - 500)} after the exec time was up ` +
    `(fencing token ${nextResult.token})`,
);
rows.push(['hung task', `stopped at ${ms(stoppedAfter)} (execTimeout 500 ms)`]);

// 3. A worker that dies holding a lock.
console.log(
  '\n3. A worker takes account:7 with a 300 ms hold and exits without releasing it; the next ' +
    'caller waits with failTimeout 200 ms.',
);
const dying = new Worker(new URL('./holder-worker.mjs', import.meta.url), {
  workerData: { buffer: table.buffer, key: 'account:7', hold: 300 },
});
await exited(dying);
const dead = table.inspect('account:7').holders[0];
const patient = LockTable.attach(table.buffer, { failTimeout: 200 });
const lease = await patient.acquire('account:7', { waitTimeout: 10_000 });
const reclaimedAt = LockTable.now();
console.log(
  `   -> reclaimed ${ms(reclaimedAt - dead.deadline)} after the dead holder's deadline, ` +
    `recovered: ${lease.recovered}, token ${lease.token} > ${dead.token}`,
);
lease.release();
rows.push([
  'dead holder, deadline',
  `reclaimed ${ms(reclaimedAt - dead.deadline)} after its deadline`,
]);

const watched = new Worker(new URL('./holder-worker.mjs', import.meta.url), {
  workerData: { buffer: table.buffer, key: 'account:8', hold: 60_000 },
});
await new Promise((resolve) => watched.once('online', resolve));
table.watch(watched);
await exited(watched);
const exitAt = LockTable.now();
const freed = table.tryAcquire('account:8');
console.log(
  `   -> with table.watch(worker), a worker holding account:8 for 60 s: free ${ms(LockTable.now() - exitAt)} after it exited (${freed !== null ? 'ok' : 'STILL HELD'})`,
);
freed?.release();
rows.push(['dead holder, watch()', freed !== null ? 'freed at exit' : 'STILL HELD']);

console.log('\nSummary');
for (const [what, result] of rows) console.log(`  ${what.padEnd(24)} ${result}`);
const ok = locked.total === expected && freed !== null && lease.recovered && stoppedAfter < 1000;
process.exitCode = ok ? 0 : 1;
