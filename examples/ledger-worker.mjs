// One teller thread of the ledger demo: moves money between random accounts until told to stop.
// Each transfer is a deliberately non-atomic read-modify-write of two balances; with locks it
// holds both accounts (acquireAllSync takes them in one canonical order: no deadlock).
import { workerData } from 'node:worker_threads';
import { LockTable } from '../dist/index.js';

const { buffer, balances, control, useLocks, index, accounts, seed } = workerData;
const table = LockTable.attach(buffer);
const balance = new Int32Array(balances);
const ctrl = new Int32Array(control); // [0] stop, [1 + index] transfers done by this teller

let state = seed >>> 0;
function random(n) {
  state = (state * 1664525 + 1013904223) >>> 0;
  return state % n;
}

function transfer(from, to, amount) {
  const a = balance[from];
  const b = balance[to];
  if (a < amount) return;
  for (let i = 0; i < 50; i++) Atomics.load(ctrl, 0); // the time a real transfer takes to check
  balance[from] = a - amount;
  balance[to] = b + amount;
}

let done = 0;
while (Atomics.load(ctrl, 0) === 0) {
  const from = random(accounts);
  const to = (from + 1 + random(accounts - 1)) % accounts;
  const amount = 1 + random(10);
  if (useLocks) {
    const leases = table.acquireAllSync([`account:${from}`, `account:${to}`]);
    transfer(from, to, amount);
    for (const lease of leases) lease.release();
  } else {
    transfer(from, to, amount);
  }
  if (++done % 256 === 0) Atomics.store(ctrl, 1 + index, done);
}
Atomics.store(ctrl, 1 + index, done);
