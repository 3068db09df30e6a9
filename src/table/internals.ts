/**
 * The keys of a LockTable's internals: its directory, state machine and shared-memory views, and
 * the defaults it was given. They are symbols, so the internals stay out of the public API, the
 * published types and `Object.keys(table)`, and still reach the modules that need them (waiting.ts,
 * lease.ts, withLock). Registered symbols (Symbol.for), like the brands of cross-build.ts: withLock
 * of one build reads a table of the other.
 */
export const DIRECTORY: unique symbol = Symbol.for('locktable.internal.directory');
export const GRANTS: unique symbol = Symbol.for('locktable.internal.grants');
export const SLOTS: unique symbol = Symbol.for('locktable.internal.slots');
export const HEADER: unique symbol = Symbol.for('locktable.internal.header');
export const EXPLICIT_DEFAULTS: unique symbol = Symbol.for('locktable.internal.explicitDefaults');
/** Lease's method that writes a fast path's grant into a lease made before the CAS (lease.ts). */
export const STAMP: unique symbol = Symbol.for('locktable.internal.stamp');
