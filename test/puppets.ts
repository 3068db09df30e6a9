/**
 * Test side of fixtures/puppet.ts: start a puppet thread, send it commands, and stop it at a stall
 * point and let it go, all through shared memory and messages (never by sleeping).
 */
import { Worker } from 'node:worker_threads';
import type { StallPoint } from '../src/table/test-hooks.js';
import {
  type Command,
  PUPPET_BLOCKED,
  PUPPET_RESUME,
  PUPPET_STALLED,
  PUPPET_UNBLOCK,
  type Reply,
} from './fixtures/puppet-protocol.js';
import { waitFor } from './harness.js';

const BOOT = new URL('./fixtures/boot.mjs', import.meta.url);
const FIXTURE = new URL('./fixtures/puppet.ts', import.meta.url).href;

export class Puppet {
  readonly worker: Worker;
  readonly #ctrl = new Int32Array(new SharedArrayBuffer(16));
  readonly #pending = new Map<number, (reply: Reply) => void>();
  #nextId = 0;
  #stallsSeen = 0;
  #resumes = 0;
  #reply: Promise<Reply> | undefined;

  constructor(buffer: SharedArrayBuffer) {
    this.worker = new Worker(BOOT, {
      workerData: { fixture: FIXTURE, buffer, ctrl: this.#ctrl.buffer },
    });
    this.worker.on('message', (reply: Reply) => {
      this.#pending.get(reply.id)?.(reply);
      this.#pending.delete(reply.id);
    });
  }

  get threadId(): number {
    return this.worker.threadId;
  }

  /** Sends one command; resolves with its reply (which comes after any stall is resumed). */
  do(cmd: Omit<Command, 'id'>): Promise<Reply> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, resolve);
      this.worker.once('error', reject);
      this.worker.postMessage({ ...cmd, id });
    });
  }

  /**
   * Sends a command that stops at each of `points` in turn; resolves once the puppet is stopped at
   * the first, with the command's reply still to come (in an object: an async function cannot
   * resolve to a promise). After resume(), nextStall() waits for the next point.
   */
  async stallAt(
    points: StallPoint | StallPoint[],
    cmd: Omit<Command, 'id' | 'stallAt'>,
  ): Promise<{ reply: Promise<Reply> }> {
    const stallAt = Array.isArray(points) ? points : [points];
    const reply = this.do({ ...cmd, stallAt });
    this.#reply = reply;
    await this.nextStall(stallAt[0]!);
    return { reply };
  }

  /** Waits until the puppet stops at its next armed point (it must not finish its command first). */
  async nextStall(point: StallPoint): Promise<void> {
    const want = ++this.#stallsSeen;
    const reply = this.#reply;
    await Promise.race([
      waitFor(this.#ctrl, PUPPET_STALLED, (v) => v >= want),
      reply?.then((r) => {
        throw new Error(`puppet finished without reaching ${point}: ${JSON.stringify(r)}`);
      }),
    ]);
  }

  /** Lets the puppet go on from its current stall. */
  resume(): void {
    Atomics.store(this.#ctrl, PUPPET_RESUME, ++this.#resumes);
    Atomics.notify(this.#ctrl, PUPPET_RESUME);
  }

  /**
   * Blocks the puppet's event loop (its async requests cannot run) until unblock(); resolves once
   * it is blocked. The 'block' command's reply comes after unblock().
   */
  async block(): Promise<{ reply: Promise<Reply> }> {
    const want = Atomics.load(this.#ctrl, PUPPET_BLOCKED) + 1;
    const reply = this.do({ op: 'block' });
    await waitFor(this.#ctrl, PUPPET_BLOCKED, (v) => v >= want);
    return { reply };
  }

  unblock(): void {
    Atomics.add(this.#ctrl, PUPPET_UNBLOCK, 1);
    Atomics.notify(this.#ctrl, PUPPET_UNBLOCK);
  }

  async stop(): Promise<void> {
    await this.worker.terminate();
  }
}
