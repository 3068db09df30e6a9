/**
 * The Web Locks API's errors: DOMExceptions with the specification's names (and so their legacy
 * `code`s: NotSupportedError 9, AbortError 20), and TypeErrors for arguments that WebIDL would
 * not convert. They take precedence over locktable's own errors at this boundary; locktable's
 * extensions (waitTimeout, hold) keep locktable's (ERR_LOCK_TIMEOUT, RangeError with a code).
 */

export function notSupported(message: string): DOMException {
  return new DOMException(message, 'NotSupportedError');
}

export function abortError(message: string): DOMException {
  return new DOMException(message, 'AbortError');
}

/** A TypeError with Node's code for a wrong argument type, naming the argument. */
export function typeError(message: string): TypeError {
  const error = new TypeError(message);
  Object.defineProperty(error, 'code', { value: 'ERR_INVALID_ARG_TYPE', enumerable: true });
  return error;
}
