/**
 * Test-only stall points. Not exported from index.ts and not part of the API: tests import this
 * module directly and install `testHooks.stall` in a worker, so that the worker stops at one named
 * point of the core (for example between a grant CAS and the end of its window) until the test
 * lets it go through shared memory. That turns a race that needs a lucky interleaving into a
 * deterministic sequence of steps.
 *
 * In production `testHooks.stall` is undefined and each point costs a property load and a branch.
 * No point sits on the uncontended infinite-hold path (acquire + release without a deadline).
 */

export type StallPoint =
  /** Fast path of a cached key: its CAS found the key busy; the watch for it to look free not begun. */
  | 'fast:watching'
  /** Fast path of a cached key: the watch saw the key free; the CAS not yet tried again. */
  | 'fast:sawFree'
  /** Exclusive finite grant: inside the grant window (after the grant CAS). */
  | 'grant:window'
  /** Reclaim of an exclusive holder: judged expired, not yet taken. */
  | 'reclaim:judged'
  /** Reclaim of an exclusive holder: the word marked RECLAIMING, the cell not yet checked. */
  | 'reclaim:marked'
  /**
   * Exclusive grant or extend: the deadline cell written pending (plain), not yet published; the
   * entry of Grants.#publishCell, the first call after the CAS and its plain stores.
   */
  | 'cell:pending'
  /** Exclusive extend: the new deadline is published, the lease has not yet re-checked it holds. */
  | 'extend:published'
  /**
   * Shared grant: a free record claimed (its word CLAIMED), its fields (slot, owner, deadline) not
   * yet written: they still name its previous holder.
   */
  | 'record:claimed'
  /** Shared release: the lease's record was checked, nothing changed yet. */
  | 'releaseShared:checked'
  /** Shared extend: the lease's record was checked, nothing changed yet. */
  | 'extendShared:checked'
  /** Shared release: the record is given up, the count not yet taken off. */
  | 'releaseShared:releasing'
  /** A shared count's release or takeover: the count is off the word, the record not yet FREE. */
  | 'dropCount:dropped'
  /** Binding mutex: just taken, its deadline not yet stamped. */
  | 'bind:locked'
  /** Evicting a key: the slot is UNBOUND, the eviction not finished (token floor, VACANT). */
  | 'evict:unbound'
  /** Binding a key: the slot is marked BINDING, the key not yet written. */
  | 'bind:binding'
  /** Binding a key: the target slot chosen, not yet marked BINDING (review reproduction). */
  | 'bind:chosen'
  /** A sweep of BINDING marks: begun, no slot looked at yet (review reproduction). */
  | 'sweep:begun'
  /** Registry claim: a PENDING entry counted in the waiting hint, its name's bucket not yet. */
  | 'claim:counted'
  /** A waiting request is about to sleep (on the key's word, the binding mutex, or a back-off). */
  | 'wait:sleep';

export const testHooks: {
  stall: ((point: StallPoint) => void) | undefined;
  /**
   * Added to a semaphore's limit when a permit is counted (0 in production): the negative control
   * of test/semaphore.test.ts sets 1 in its workers, and must see more holders than the limit.
   */
  permitSlack: number;
  /**
   * true: LockManager ignores the cross-thread request order (the registry's), as before it kept
   * one: a request tries the table whenever its thread has no earlier request for the name. The
   * negative control of test/web-locks-fifo.test.ts sets it in its workers, and must see a grant
   * out of request order. false in production.
   */
  unordered: boolean;
} = {
  stall: undefined,
  permitSlack: 0,
  unordered: false,
};
