// The command that test/cli/withlock.test.ts runs under withlock: `node command.mjs <mode> ...`.
//   env                      print {key, token, mode} from the environment as JSON
//   exit <n>                 exit with n
//   signal <SIG>             kill itself with SIG
//   mark <file> <id> <ms>    append "start <id>", wait ms, append "end <id>" to file
//   trap <file> [ignore]     on SIGTERM/SIGUSR1/SIGINT append "<SIG>" to file (and exit 42 on
//                            SIGTERM unless `ignore`); print "ready" once the handlers are in
//   meet <file> <me> <other> append "<me>" to file, then wait (polling) until <other> is there
import { appendFileSync, existsSync, readFileSync } from 'node:fs';

const [mode, ...rest] = process.argv.slice(2);
const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

if (mode === 'env') {
  const { LOCKTABLE_KEY: key, LOCKTABLE_TOKEN: token, LOCKTABLE_MODE: lockMode } = process.env;
  process.stdout.write(JSON.stringify({ key, token, mode: lockMode }) + '\n');
} else if (mode === 'exit') {
  process.exit(Number(rest[0]));
} else if (mode === 'signal') {
  process.kill(process.pid, rest[0]);
  await wait(10_000);
} else if (mode === 'mark') {
  const [file, id, ms] = rest;
  appendFileSync(file, `start ${id}\n`);
  await wait(Number(ms));
  appendFileSync(file, `end ${id}\n`);
} else if (mode === 'trap') {
  const [file, ignore] = rest;
  for (const signal of ['SIGTERM', 'SIGUSR1', 'SIGINT']) {
    process.on(signal, () => {
      appendFileSync(file, `${signal}\n`);
      if (signal === 'SIGTERM' && ignore !== 'ignore') process.exit(42);
    });
  }
  process.stdout.write('ready\n');
  setInterval(() => {}, 1000);
} else if (mode === 'meet') {
  const [file, me, other] = rest;
  appendFileSync(file, `${me}\n`);
  const deadline = Date.now() + 20_000;
  while (!(existsSync(file) && readFileSync(file, 'utf8').split('\n').includes(other))) {
    if (Date.now() > deadline) process.exit(1);
    await wait(5);
  }
} else {
  console.error(`command.mjs: unknown mode ${mode}`);
  process.exit(2);
}
