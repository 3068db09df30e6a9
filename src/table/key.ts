/**
 * Keys are JavaScript strings compared by UTF-16 code units: '\uD800' and '\uFFFD' are different
 * keys, and no normalisation or encoding step can merge two of them. A slot stores its key's code
 * units verbatim in a Uint16Array, with its length and hash.
 */

/** FNV-1a over UTF-16 code units, then a murmur3 finaliser so that low and high bits both mix. */
export function hashKey(key: string): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < key.length; i++) {
    h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

/** The first slot of the key's probe sequence: a multiply-shift range reduction, no modulo bias. */
export function homeSlot(hash: number, capacity: number): number {
  return Math.floor(((hash >>> 0) * capacity) / 4294967296);
}

/** True when `units[offset .. offset + key.length)` holds exactly the code units of `key`. */
export function keyEquals(units: Uint16Array, offset: number, key: string): boolean {
  for (let i = 0; i < key.length; i++) {
    if (units[offset + i] !== key.charCodeAt(i)) return false;
  }
  return true;
}

export function readKey(units: Uint16Array, offset: number, length: number): string {
  // Chunked so that very long keys do not overflow the argument limit of fromCharCode.
  let out = '';
  for (let i = 0; i < length; i += 4096) {
    out += String.fromCharCode(...units.subarray(offset + i, offset + Math.min(length, i + 4096)));
  }
  return out;
}
