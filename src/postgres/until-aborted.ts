/**
 * A request's wait for something it does not own (the schema check that the first requests of a
 * table share): the request gives up when its signal aborts, and the thing goes on without it.
 */
import { AbortError } from '../api/errors.js';

/**
 * `promise`'s outcome, or an AbortError for `key` when `signal` aborts first. `promise` runs on
 * either way, its rejection then handled here.
 */
export function untilAborted<T>(
  promise: Promise<T>,
  key: string,
  signal: AbortSignal | undefined,
): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(new AbortError(key, signal.reason));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => {});
      reject(new AbortError(key, signal.reason));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
