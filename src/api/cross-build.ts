/**
 * One process can load both builds of locktable: an ES module imports dist/index.js while a
 * CommonJS dependency requires dist/index.cjs. Each build then has its own copy of every class and
 * module variable, so a table made through one would fail `instanceof` in the other, and each
 * would start its own default withLock pool. What must be one across both builds is keyed here by
 * a registered symbol (Symbol.for): the registry is the thread's, shared by every module in it.
 */

const PREFIX = 'locktable.';

/** Function.prototype's own check (the prototype chain), for subclasses without a brand. */
const ordinaryHasInstance = Function.prototype[Symbol.hasInstance];

/**
 * Makes `value instanceof ctor` true for an instance of the class `name` of either build: the
 * class's prototype carries the brand `Symbol.for('locktable.<name>')`, and `ctor`'s
 * Symbol.hasInstance looks for it. A subclass's instances carry its parent's brand too (through
 * the prototype chain), so a WorkerExitError of one build is a LockError of the other.
 *
 * Set after the class, not as a static member inside it: a class body that names its own class
 * makes esbuild rename it (`class _LockTable`), and that name would show in messages.
 */
export function brand(ctor: abstract new (...args: never[]) => object, name: string): void {
  const key = Symbol.for(PREFIX + name);
  Object.defineProperty(ctor.prototype, key, { value: true });
  Object.defineProperty(ctor, Symbol.hasInstance, {
    configurable: true,
    value: function hasInstance(this: unknown, value: unknown): boolean {
      // Inherited by a subclass with no brand of its own (a user's `class E extends LockError`):
      // that one gets the ordinary check.
      if (this !== ctor) return ordinaryHasInstance.call(this, value);
      return (
        ((typeof value === 'object' && value !== null) || typeof value === 'function') &&
        (value as Record<symbol, unknown>)[key] === true
      );
    },
  });
}

/** One value per thread, shared by both builds: made by whichever asks first. */
export function perThread<T>(name: string, create: () => T): T {
  const key = Symbol.for(PREFIX + name);
  const registry = globalThis as unknown as Record<symbol, T | undefined>;
  let value = registry[key];
  if (value === undefined) {
    value = create();
    // Not enumerable: it stays out of a listing of the global object.
    Object.defineProperty(globalThis, key, { value, configurable: true });
  }
  return value;
}
