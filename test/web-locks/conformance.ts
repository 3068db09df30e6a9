/**
 * The W3C Web Locks API (https://w3c.github.io/web-locks/), as tests written from the
 * specification's text, one suite run against every implementation: locktable's LockManager, and
 * on Node >= 24.5 Node's own `worker_threads.locks` (test/web-locks.test.ts). Sections follow the
 * specification's: resource names, request (arguments, callback, settling), modes and grant order,
 * ifAvailable, steal, signal, query.
 *
 * A test that one implementation is known to fail for a stated reason is passed `differs` with that
 * reason: it still runs, as a `todo`, so the difference is listed in every run and a fix shows.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

/** The Web Locks surface that both implementations offer. */
export interface WebLocks {
  request(name: unknown, ...rest: unknown[]): Promise<unknown>;
  query(): Promise<{
    held?: { name?: string; mode?: string; clientId?: string }[];
    pending?: { name?: string; mode?: string; clientId?: string }[];
  }>;
}

export interface Suite {
  locks: WebLocks;
  /** Tests this implementation fails, by title, with the reason. */
  differs?: Record<string, string>;
}

let unique = 0;
/** A name of its own for every test: Node's built-in locks are per process and outlive a test. */
function nameOf(title: string): string {
  return `${title.slice(0, 20)}#${unique++}`;
}

/** A promise and its resolver, to hold a lock until the test says so. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Lets queued callbacks and grants run (a few turns of the event loop, never a timed guess). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

async function rejectsWith(p: Promise<unknown>, name: string, code?: number): Promise<unknown> {
  let caught: unknown;
  await p.then(
    () => assert.fail(`expected a rejection with ${name}`),
    (e: unknown) => (caught = e),
  );
  assert.equal((caught as Error).name, name);
  if (code !== undefined) {
    assert.ok(caught instanceof DOMException, 'a DOMException');
    assert.equal(caught.code, code);
  }
  return caught;
}

export function webLocksConformance(label: string, make: () => Suite): void {
  describe(`Web Locks conformance: ${label}`, () => {
    const { locks, differs = {} } = make();
    const it = (title: string, fn: () => Promise<void>): void => {
      const reason = differs[title];
      test(title, reason === undefined ? {} : { todo: reason }, fn);
    };

    describe('resource names', () => {
      it('any string is a name, compared by code units without normalisation', async () => {
        const base = nameOf('names');
        const composed = `${base}\u00c5`;
        const decomposed = `${base}A\u030a`;
        const release = deferred();
        const first = locks.request(composed, () => release.promise);
        await settle();
        // Held under the composed form, the decomposed form is another lock.
        const got = await locks.request(decomposed, { ifAvailable: true }, (l: unknown) => l);
        assert.notEqual(got, null);
        const blocked = await locks.request(composed, { ifAvailable: true }, (l: unknown) => l);
        assert.equal(blocked, null);
        release.resolve();
        await first;
        assert.equal(await locks.request('', (l: { name: string }) => l.name), '');
      });

      it('a name is converted to a string', async () => {
        const n = unique++;
        assert.equal(await locks.request(n, (l: { name: string }) => l.name), String(n));
      });

      it('a name starting with "-" is refused with NotSupportedError', async () => {
        let called = false;
        await rejectsWith(
          locks.request('-reserved', () => (called = true)),
          'NotSupportedError',
          9,
        );
        assert.equal(called, false);
        // Only a leading '-'.
        assert.equal(await locks.request(`a-${nameOf('dash')}`, () => 'ok'), 'ok');
      });
    });

    describe('request: arguments', () => {
      it('bad arguments reject (never throw) with TypeError', async () => {
        const name = nameOf('args');
        const cases: (() => Promise<unknown>)[] = [
          () => locks.request(name),
          () => locks.request(name, {}),
          () => locks.request(name, {}, 'not a function'),
          () => locks.request(name, { mode: 'invalid' }, () => {}),
          () => locks.request(name, 42, () => {}),
          () => locks.request(name, { signal: {} }, () => {}),
          () => locks.request(Symbol('s'), () => {}),
        ];
        for (const make of cases) {
          let p: Promise<unknown> | undefined;
          assert.doesNotThrow(() => (p = make()));
          await rejectsWith(p!, 'TypeError');
        }
      });

      it('steal with ifAvailable, steal with shared, signal with steal or ifAvailable: NotSupportedError', async () => {
        const name = nameOf('combos');
        const signal = new AbortController().signal;
        const cases = [
          { steal: true, ifAvailable: true },
          { steal: true, mode: 'shared' },
          { steal: true, signal },
          { ifAvailable: true, signal },
        ];
        for (const options of cases) {
          let called = false;
          await rejectsWith(
            locks.request(name, options, () => (called = true)),
            'NotSupportedError',
            9,
          );
          assert.equal(called, false);
        }
      });
    });

    describe('request: the callback and the promise', () => {
      it('the callback gets a lock with the name and mode, never inside request()', async () => {
        const name = nameOf('callback');
        let inside = true;
        const p = locks.request(name, (lock: { name: string; mode: string }) => {
          assert.equal(inside, false);
          return { name: lock.name, mode: lock.mode };
        });
        inside = false;
        assert.deepEqual(await p, { name, mode: 'exclusive' });
        const shared = await locks.request(
          name,
          { mode: 'shared' },
          (l: { mode: string }) => l.mode,
        );
        assert.equal(shared, 'shared');
      });

      it("the request's promise settles with the callback's result", async () => {
        const name = nameOf('result');
        assert.equal(await locks.request(name, () => 7), 7);
        assert.equal(await locks.request(name, () => Promise.resolve(8)), 8);
        const error = new Error('inside');
        await assert.rejects(
          locks.request(name, () => Promise.reject(error)),
          (e) => e === error,
        );
        assert.notEqual(await locks.request(name, { ifAvailable: true }, (l: unknown) => l), null);
      });

      it('a callback that throws rejects the request and releases the lock', async () => {
        const name = nameOf('throws');
        const error = new Error('inside');
        await assert.rejects(
          locks.request(name, () => {
            throw error;
          }),
          (e) => e === error,
        );
        // Nothing is left held (ifAvailable: a test that fails here never hangs).
        assert.notEqual(await locks.request(name, { ifAvailable: true }, (l: unknown) => l), null);
      });

      it("the lock is held until the callback's promise settles, and released before the request settles", async () => {
        const name = nameOf('held-until');
        const release = deferred<string>();
        const events: string[] = [];
        const first = locks
          .request(name, async () => {
            events.push('first granted');
            return release.promise;
          })
          .then((v) => {
            events.push(`first settled ${String(v)}`);
          });
        const second = locks.request(name, () => events.push('second granted'));
        await settle();
        assert.deepEqual(events, ['first granted']);
        release.resolve('x');
        await Promise.all([first, second]);
        assert.deepEqual(events.slice(0, 1), ['first granted']);
        assert.ok(events.includes('second granted'));
      });

      it('a settled request leaves the lock free at once', async () => {
        const name = nameOf('free-after');
        await locks.request(name, () => {});
        const snapshot = await locks.query();
        assert.equal(
          snapshot.held?.some((l) => l.name === name),
          false,
        );
        assert.notEqual(await locks.request(name, { ifAvailable: true }, (l: unknown) => l), null);
      });
    });

    describe('modes and grant order', () => {
      it('shared locks are held together; exclusive excludes both', async () => {
        const name = nameOf('modes');
        const release = deferred();
        let sharedHolders = 0;
        const a = locks.request(name, { mode: 'shared' }, async () => {
          sharedHolders++;
          await release.promise;
        });
        const b = locks.request(name, { mode: 'shared' }, async () => {
          sharedHolders++;
          await release.promise;
        });
        await settle();
        assert.equal(sharedHolders, 2);
        assert.equal(await locks.request(name, { ifAvailable: true }, (l: unknown) => l), null);
        release.resolve();
        await Promise.all([a, b]);
        const held = deferred();
        const x = locks.request(name, () => held.promise);
        await settle();
        assert.equal(
          await locks.request(name, { mode: 'shared', ifAvailable: true }, (l: unknown) => l),
          null,
        );
        held.resolve();
        await x;
      });

      it('requests are granted in request order: a shared request does not pass a queued exclusive one', async () => {
        const name = nameOf('order');
        const release = deferred();
        const order: string[] = [];
        const first = locks.request(name, async () => {
          order.push('exclusive 1');
          await release.promise;
        });
        const waiters = [
          locks.request(name, { mode: 'shared' }, () => order.push('shared 2')),
          locks.request(name, () => order.push('exclusive 3')),
          locks.request(name, { mode: 'shared' }, () => order.push('shared 4')),
          locks.request(name, () => order.push('exclusive 5')),
        ];
        await settle();
        release.resolve();
        await Promise.all([first, ...waiters]);
        assert.deepEqual(order, [
          'exclusive 1',
          'shared 2',
          'exclusive 3',
          'shared 4',
          'exclusive 5',
        ]);
      });
    });

    describe('ifAvailable', () => {
      it('grants a free lock', async () => {
        const name = nameOf('ifa-free');
        assert.deepEqual(
          await locks.request(name, { ifAvailable: true }, (l: { name: string } | null) => l?.name),
          name,
        );
      });

      it('calls back with null when the lock is held, and the request resolves with its result', async () => {
        const name = nameOf('ifa-held');
        const release = deferred();
        const holder = locks.request(name, () => release.promise);
        await settle();
        assert.equal(
          await locks.request(name, { ifAvailable: true }, (l: unknown) =>
            l === null ? 'none' : 'got',
          ),
          'none',
        );
        release.resolve();
        await holder;
      });

      it('calls back with null when requests are queued, even if the mode is compatible', async () => {
        const name = nameOf('ifa-queued');
        const release = deferred();
        const holder = locks.request(name, { mode: 'shared' }, () => release.promise);
        const writer = locks.request(name, () => {});
        await settle();
        assert.equal(
          await locks.request(name, { mode: 'shared', ifAvailable: true }, (l: unknown) => l),
          null,
        );
        release.resolve();
        await Promise.all([holder, writer]);
      });
    });

    describe('steal', () => {
      it('takes a held lock at once; the robbed request rejects with AbortError while its callback runs on', async () => {
        const name = nameOf('steal');
        const release = deferred();
        let robbedCallbackEnded = false;
        const robbed = locks.request(name, async () => {
          await release.promise;
          robbedCallbackEnded = true;
        });
        await settle();
        const stole = await locks.request(name, { steal: true }, (l: { mode: string }) => l.mode);
        assert.equal(stole, 'exclusive');
        await rejectsWith(robbed, 'AbortError', 20);
        assert.equal(robbedCallbackEnded, false);
        release.resolve();
      });

      it('goes ahead of queued requests', async () => {
        const name = nameOf('steal-order');
        const release = deferred();
        const order: string[] = [];
        const robbed = locks.request(name, () => release.promise).catch(() => order.push('robbed'));
        const queued = locks.request(name, () => order.push('queued'));
        await settle();
        const thief = locks.request(name, { steal: true }, () => order.push('thief'));
        await Promise.all([robbed, queued, thief]);
        assert.ok(order.indexOf('thief') < order.indexOf('queued'), order.join(', '));
        release.resolve();
      });

      it('grants a free lock like a plain request', async () => {
        assert.equal(await locks.request(nameOf('steal-free'), { steal: true }, () => 'ok'), 'ok');
      });
    });

    describe('signal', () => {
      it('an aborted signal rejects with its reason, and the callback never runs', async () => {
        const controller = new AbortController();
        const reason = new Error('my reason');
        controller.abort(reason);
        let called = false;
        await assert.rejects(
          locks.request(nameOf('aborted'), { signal: controller.signal }, () => (called = true)),
          (e) => e === reason,
        );
        assert.equal(called, false);
      });

      it("aborting while waiting rejects with the signal's reason and leaves the queue", async () => {
        const name = nameOf('abort-waiting');
        const release = deferred();
        const holder = locks.request(name, () => release.promise);
        const controller = new AbortController();
        let called = false;
        const waiter = locks.request(name, { signal: controller.signal }, () => (called = true));
        await settle();
        controller.abort();
        await rejectsWith(waiter, 'AbortError', 20);
        const snapshot = await locks.query();
        assert.equal(
          snapshot.pending?.some((r) => r.name === name),
          false,
        );
        release.resolve();
        await holder;
        assert.equal(called, false);
      });

      it('aborting after the grant changes nothing', async () => {
        const controller = new AbortController();
        const result = await locks.request(
          nameOf('abort-late'),
          { signal: controller.signal },
          async () => {
            controller.abort();
            await settle();
            return 'kept';
          },
        );
        assert.equal(result, 'kept');
      });
    });

    describe('query', () => {
      it('lists held locks and pending requests with name, mode and clientId', async () => {
        const name = nameOf('query');
        const release = deferred();
        const holder = locks.request(name, () => release.promise);
        const waiter = locks.request(name, { mode: 'shared' }, () => {});
        await settle();
        const { held = [], pending = [] } = await locks.query();
        const h = held.filter((l) => l.name === name);
        const p = pending.filter((l) => l.name === name);
        assert.equal(h.length, 1);
        assert.equal(h[0]!.mode, 'exclusive');
        assert.equal(typeof h[0]!.clientId, 'string');
        assert.equal(p.length, 1);
        assert.equal(p[0]!.mode, 'shared');
        assert.equal(p[0]!.clientId, h[0]!.clientId);
        release.resolve();
        await Promise.all([holder, waiter]);
        const after = await locks.query();
        assert.equal(
          after.held?.some((l) => l.name === name),
          false,
        );
        assert.equal(
          after.pending?.some((l) => l.name === name),
          false,
        );
      });

      // The specification lists pending requests queue by queue (one per name, in the order the
      // names were first requested), each in request order; held locks in grant order.
      it("lists each name's pending requests in request order, and held locks in grant order", async () => {
        const a = nameOf('qa');
        const b = nameOf('qb');
        const release = deferred();
        const holders = [
          locks.request(b, () => release.promise),
          locks.request(a, () => release.promise),
        ];
        const waiters = [
          locks.request(a, () => {}),
          locks.request(b, { mode: 'shared' }, () => {}),
          locks.request(a, { mode: 'shared' }, () => {}),
        ];
        await settle();
        const { held = [], pending = [] } = await locks.query();
        assert.deepEqual(
          held.filter((l) => l.name === a || l.name === b).map((l) => l.name),
          [b, a],
        );
        assert.deepEqual(
          pending.filter((l) => l.name === a).map((l) => l.mode),
          ['exclusive', 'shared'],
        );
        assert.deepEqual(
          pending.filter((l) => l.name === b).map((l) => l.mode),
          ['shared'],
        );
        release.resolve();
        await Promise.all([...holders, ...waiters]);
      });
    });
  });
}
