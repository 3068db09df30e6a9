/**
 * A request's wait for something it does not own (a session opening, the schema check that the
 * first request of a table runs): the request gives up at its deadline or when its signal
 * aborts, and the thing goes on without it.
 */
import { AbortError } from '../api/errors.js';
import { callAt } from '../api/clock.js';

/**
 * `promise`'s outcome, or a rejection when the request stops waiting first: `timedOut()` at
 * `deadline` (monotonicNow() ms; Infinity: none), an AbortError for `key` when `signal` aborts.
 * `promise` runs on either way, its rejection then handled here.
 */
export function within<T>(
  promise: Promise<T>,
  key: string,
  deadline: number,
  signal: AbortSignal | undefined,
  timedOut: () => Error,
): Promise<T> {
  if (deadline === Infinity && signal === undefined) return promise;
  if (signal?.aborted === true) {
    promise.catch(() => {});
    return Promise.reject(new AbortError(key, signal.reason));
  }
  return new Promise<T>((resolve, reject) => {
    let cancelTimer = (): void => {};
    const onAbort = () => settle(() => reject(new AbortError(key, signal!.reason)));
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      cancelTimer();
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    if (deadline !== Infinity)
      cancelTimer = callAt(deadline, () => settle(() => reject(timedOut())));
    signal?.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => settle(() => resolve(value)),
      (error: unknown) => settle(() => reject(error)),
    );
  });
}
