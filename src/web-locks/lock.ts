/**
 * The `lock` a granted callback receives: the specification's `name` and `mode`, and locktable's
 * extensions: the fencing `token` of the grant, and `held`.
 */
import type { Lease } from '../table/lease.js';

export type LockMode = 'exclusive' | 'shared';

export class Lock {
  /** The name the lock was requested for. */
  readonly name: string;
  /** 'exclusive' or 'shared'. */
  readonly mode: LockMode;
  readonly #lease: Lease;

  /** @internal Locks are made by LockManager.request. */
  constructor(name: string, mode: LockMode, lease: Lease) {
    this.name = name;
    this.mode = mode;
    this.#lease = lease;
  }

  /**
   * Extension: the grant's fencing token, strictly increasing per name across every grant (and
   * steal). Pass it with every write the lock protects: after a steal, the robbed holder's writes
   * carry a smaller token than the thief's and a store that checks tokens refuses them.
   */
  get token(): bigint {
    return this.#lease.token;
  }

  /** Extension: true while the lock is held (false once released, stolen or reclaimed). */
  get held(): boolean {
    return this.#lease.held;
  }

  get [Symbol.toStringTag](): string {
    return 'Lock';
  }
}
