/**
 * The Web Locks conformance suite (test/web-locks/conformance.ts) against locktable's LockManager,
 * on every Node; and, where Node has its own (`worker_threads.locks`, Node >= 24.5), against Node's
 * too, in the same run (`npm run test:web-locks:node24` runs this file under Node 24). Then what
 * only locktable's has: the fencing token, waitTimeout, hold, and the lease of a stolen lock.
 */
import assert from 'node:assert/strict';
import * as workerThreads from 'node:worker_threads';
import { describe, test } from 'node:test';
import { LockTable } from '../src/index.js';
import { LockManager } from '../src/web-locks/index.js';
import { webLocksConformance, type WebLocks } from './web-locks/conformance.js';

const table = new LockTable();
webLocksConformance('locktable LockManager', () => ({
  locks: new LockManager(table) as unknown as WebLocks,
}));

const builtin = (workerThreads as { locks?: WebLocks }).locks;
if (builtin !== undefined) {
  webLocksConformance(`Node ${process.version} worker_threads.locks`, () => ({
    locks: builtin,
    // Measured on Node 24.21.0; README, "Web Locks", lists them with locktable's behaviour.
    differs: {
      'the callback gets a lock with the name and mode, never inside request()':
        'Node calls the callback synchronously, inside request(), when the lock is free',
      'a callback that throws rejects the request and releases the lock':
        'Node rejects the request but never releases the lock of a callback that throws synchronously',
      "aborting while waiting rejects with the signal's reason and leaves the queue":
        'Node still lists an aborted request in query().pending after its rejection',
      "lists each name's pending requests in request order, and held locks in grant order":
        'Node lists held locks in another order than grant order',
    },
  }));
} else {
  test(`Node's own worker_threads.locks`, { skip: `absent on Node ${process.version}` }, () => {});
}

describe('LockManager extensions', () => {
  const locks = new LockManager(table);

  test('a lock carries a fencing token that grows with every grant, a steal included', async () => {
    const first = await locks.request('ext-token', (l) => l!.token);
    const second = await locks.request('ext-token', (l) => l!.token);
    assert.ok(second > first);
    let robbedToken = 0n;
    let release!: () => void;
    const robbed = locks
      .request('ext-token', (l) => {
        robbedToken = l!.token;
        return new Promise<void>((r) => (release = r));
      })
      .catch((e: unknown) => e);
    await new Promise((r) => setImmediate(r));
    const thief = await locks.request('ext-token', { steal: true }, (l) => ({
      token: l!.token,
    }));
    assert.ok(thief.token > robbedToken);
    assert.equal(((await robbed) as Error).name, 'AbortError');
    release();
  });

  test("a stolen lock's lease is stale: lock.held turns false", async () => {
    let lockSeen: { held: boolean } | undefined;
    let release!: () => void;
    const robbed = locks
      .request('ext-stale', (l) => {
        lockSeen = l!;
        return new Promise<void>((r) => (release = r));
      })
      .catch(() => {});
    await new Promise((r) => setImmediate(r));
    assert.equal(lockSeen!.held, true);
    await locks.request('ext-stale', { steal: true }, () => {});
    assert.equal(lockSeen!.held, false);
    release();
    await robbed;
  });

  test('waitTimeout rejects with ERR_LOCK_TIMEOUT and leaves no pending entry', async () => {
    let release!: () => void;
    const holder = locks.request('ext-wait', () => new Promise<void>((r) => (release = r)));
    await new Promise((r) => setImmediate(r));
    await assert.rejects(
      locks.request('ext-wait', { waitTimeout: 20 }, () => {}),
      {
        code: 'ERR_LOCK_TIMEOUT',
      },
    );
    const queued = locks.request('ext-wait', () => 'second');
    await assert.rejects(
      locks.request('ext-wait', { waitTimeout: 20 }, () => {}),
      {
        code: 'ERR_LOCK_TIMEOUT',
      },
    );
    const { pending } = await locks.query();
    assert.deepEqual(
      pending.filter((p) => p.name === 'ext-wait').map((p) => p.mode),
      ['exclusive'],
    );
    release();
    await holder;
    assert.equal(await queued, 'second');
    assert.deepEqual((await locks.query()).pending, []);
  });

  test('bad extension options are refused with a RangeError naming them', async () => {
    await assert.rejects(
      locks.request('ext-bad', { waitTimeout: -1 }, () => {}),
      {
        code: 'ERR_OUT_OF_RANGE',
      },
    );
    await assert.rejects(
      locks.request('ext-bad', { hold: Number.NaN }, () => {}),
      /options\.hold/,
    );
    assert.throws(() => new LockManager({} as LockTable), TypeError);
  });

  test('hold: Infinity is refused (every LockManager lock has a deadline) and leaves nothing', async () => {
    await assert.rejects(
      locks.request('ext-forever', { hold: Infinity }, () => {}),
      {
        name: 'RangeError',
        code: 'ERR_OUT_OF_RANGE',
        message: /"options\.hold".*Received Infinity/,
      },
    );
    assert.equal(table.inspect('ext-forever'), null);
    assert.deepEqual(await locks.query(), { held: [], pending: [] });
  });

  test("a steal that times out robs nobody: this thread's holder keeps its lock", async () => {
    // A shared holder without a deadline (the table API's), which no steal may take, beside a
    // LockManager shared holder of this thread.
    const forever = table.tryAcquire('ext-steal-fail', { mode: 'shared', hold: Infinity })!;
    let lockSeen: { held: boolean } | undefined;
    let release!: () => void;
    let outcome: unknown = 'pending';
    const holder = locks.request('ext-steal-fail', { mode: 'shared' }, (l) => {
      lockSeen = l!;
      return new Promise<string>((r) => (release = () => r('released')));
    });
    holder.then(
      (v) => (outcome = v),
      (e: unknown) => (outcome = e),
    );
    await new Promise((r) => setImmediate(r));
    assert.equal(lockSeen!.held, true);
    await assert.rejects(
      locks.request('ext-steal-fail', { steal: true, waitTimeout: 50 }, () => {}),
      { code: 'ERR_LOCK_TIMEOUT' },
    );
    await new Promise((r) => setImmediate(r));
    assert.equal(outcome, 'pending');
    assert.equal(lockSeen!.held, true);
    release();
    assert.equal(await holder, 'released');
    forever.release();
    assert.deepEqual(await locks.query(), { held: [], pending: [] });
  });

  test('requests beyond the registry wait unlisted and are granted in order', async () => {
    // capacity 8: 8 registry entries, one of them this thread's doorbell.
    const small = new LockManager(new LockTable({ capacity: 8 }));
    let release!: () => void;
    const order: number[] = [];
    const holder = small.request('full', () => new Promise<void>((r) => (release = r)));
    await new Promise((r) => setImmediate(r));
    const queued = Array.from({ length: 10 }, (_, i) =>
      small.request('full', () => {
        order.push(i);
      }),
    );
    const { pending } = await small.query();
    assert.ok(pending.length >= 1 && pending.length < 10, `${pending.length} listed`);
    release();
    await holder;
    await Promise.all(queued);
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(await small.query(), { held: [], pending: [] });
  });

  test('a name longer than the table maxKeyLength is refused with a RangeError', async () => {
    await assert.rejects(
      locks.request('x'.repeat(table.maxKeyLength + 1), () => {}),
      RangeError,
    );
  });

  test('a fixed hold that passes loses the lock to a waiter; the holder rejects with AbortError', async () => {
    const fast = LockTable.attach(table.buffer, { failTimeout: 10 });
    const short = new LockManager(fast);
    let release!: () => void;
    const holder = short
      .request('ext-hold', { hold: 30 }, () => new Promise<void>((r) => (release = r)))
      .catch((e: unknown) => e);
    await new Promise((r) => setImmediate(r));
    const t0 = LockTable.now();
    await short.request('ext-hold', () => {});
    assert.ok(LockTable.now() - t0 < 2000);
    // The holder learns at its thread's next heartbeat, which (like a pending Atomics.waitAsync)
    // does not keep the thread alive by itself: this test does.
    const alive = setInterval(() => {}, 1000);
    assert.equal(((await holder) as Error).name, 'AbortError');
    clearInterval(alive);
    release();
  });

  test('the table API and LockManager exclude each other on the same name', async () => {
    const lease = table.tryAcquire('ext-both')!;
    assert.equal(await locks.request('ext-both', { ifAvailable: true }, (l) => l), null);
    lease.release();
    assert.notEqual(await locks.request('ext-both', { ifAvailable: true }, (l) => l), null);
  });
});

describe('LockManager callbacks', () => {
  const locks = new LockManager(table);

  test("the callback runs once, with this undefined (never the facade's own object)", async () => {
    let calls = 0;
    let seen = 'unset';
    const result = await locks.request('cb-this', function (this: unknown) {
      calls++;
      seen = this === undefined ? 'undefined' : Object.prototype.toString.call(this);
      return 'done';
    });
    assert.deepEqual([calls, seen, result], [1, 'undefined', 'done']);
  });

  test("a callback's promise whose then or constructor throws rejects the request and releases", async () => {
    const thenThrows = Promise.resolve(1);
    Object.defineProperty(thenThrows, 'then', {
      value: () => {
        throw new Error('then throws');
      },
    });
    const constructorThrows = Promise.resolve(2);
    Object.defineProperty(constructorThrows, 'constructor', {
      get: () => {
        throw new Error('constructor throws');
      },
    });
    await assert.rejects(
      locks.request('cb-throws', () => thenThrows),
      /then throws/,
    );
    assert.equal(await locks.request('cb-throws', { ifAvailable: true }, (l) => l !== null), true);
    await assert.rejects(
      locks.request('cb-throws', () => constructorThrows),
      /constructor throws/,
    );
    assert.equal(await locks.request('cb-throws', { ifAvailable: true }, (l) => l !== null), true);
  });

  test('a global Promise that adopts a thenable at once (bluebird, zone.js) runs no callback inside request()', async () => {
    const Native = Promise;
    let thens = 0;
    // What bluebird's and zone.js's Promise.resolve do with a foreign thenable: call its `then`
    // at once. This one calls it a second time too, which must be ignored.
    class AtOnce<T> extends Native<T> {
      static override resolve<U>(x?: U): Promise<Awaited<U>> {
        const thenable = x as { then?: (f: (v: unknown) => void, r: (e: unknown) => void) => void };
        if (
          thenable === null ||
          typeof thenable !== 'object' ||
          typeof thenable.then !== 'function'
        )
          return super.resolve(x as Awaited<U>);
        return new AtOnce((resolve, reject) => {
          thenable.then!((value) => resolve(value as Awaited<U>), reject);
          thenable.then!(
            () => thens++,
            () => thens++,
          );
        });
      }
    }
    let inside = false;
    let calls = 0;
    let ranInside = false;
    let request!: Promise<unknown>;
    globalThis.Promise = AtOnce as PromiseConstructor;
    try {
      inside = true;
      request = locks.request('cb-at-once', () => {
        calls++;
        ranInside = inside;
        return 'done';
      });
      inside = false;
    } finally {
      globalThis.Promise = Native;
    }
    assert.ok(request instanceof AtOnce);
    assert.equal(await request, 'done');
    assert.deepEqual([calls, ranInside, thens], [1, false, 0]);
  });

  test('a table whose facade has no tryAcquire and no request order (an older build) grants through its own', async () => {
    const FACADE = Symbol.for('locktable.facade');
    const older = new LockTable();
    const facade = (older as unknown as Record<symbol, () => object>)[FACADE]!;
    // Its entries lack what the cross-thread order uses; the rest works on the real ones.
    const absent = new Set<PropertyKey>(['waitingHint', 'blocked', 'ringWaiters']);
    const olderEntries = (entries: object): object =>
      new Proxy(entries, {
        get(target, key) {
          if (absent.has(key)) return undefined;
          const value: unknown = Reflect.get(target, key, target);
          return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
        },
      });
    Object.defineProperty(older, FACADE, {
      value(this: LockTable) {
        const core = { ...facade.call(this) } as { tryAcquire?: unknown; entries: object };
        delete core.tryAcquire;
        core.entries = olderEntries(core.entries);
        return core;
      },
    });
    const olderLocks = new LockManager(older);
    assert.equal(await olderLocks.request('cb-older', (l) => l!.name), 'cb-older');
    assert.equal(
      await olderLocks.request('cb-older', { mode: 'shared' }, (l) => l!.mode),
      'shared',
    );
    // A request that waits (registered, granted in its turn) and one behind it.
    let release!: () => void;
    const holding = olderLocks.request('cb-older', () => new Promise<void>((r) => (release = r)));
    await new Promise((r) => setImmediate(r));
    const waiting = [
      olderLocks.request('cb-older', () => 1),
      olderLocks.request('cb-older', () => 2),
    ];
    release();
    await holding;
    assert.deepEqual(await Promise.all(waiting), [1, 2]);
    const lease = older.tryAcquire('cb-older'); // each request released its lock
    assert.notEqual(lease, null);
    lease!.release();
  });
});
