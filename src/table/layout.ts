/**
 * The byte map of a lock table's SharedArrayBuffer. Every index into shared memory is named here;
 * no other file computes an offset.
 *
 *   offset 0            header: HEADER_WORDS Int32 words, then HEADER_F64 Float64 words
 *   slotWordsOffset     capacity x SLOT_WORDS Int32 words       (hot: one 32-byte line per slot)
 *   slotCellsOffset     capacity x SLOT_CELLS BigInt64 words    (exclusive deadlines)
 *   slotF64Offset       capacity x SLOT_F64 Float64 words       (hand-off reservations, announcement stamps)
 *   recordWordsOffset   records x RECORD_WORDS Int32 words      (who holds a key in shared mode)
 *   recordF64Offset     records x RECORD_F64 Float64 words      (each shared holder's deadline)
 *   keysOffset          capacity x maxKeyLength Uint16 code units (the key bound to each slot)
 *   entryWordsOffset    capacity x ENTRY_WORDS Int32 words       (request entries: see entries.ts)
 *   entryF64Offset      capacity x ENTRY_F64 Float64 words      (each entry's liveness stamp)
 *   entryNamesOffset    capacity x maxKeyLength Uint16 code units (each entry's key)
 *   entryBucketsOffset  ENTRY_BUCKETS BigInt64 words              (the waiting hint per bucket of names)
 *   statsOffset         STATS_WORDS BigInt64 counters           (table.stats(): stats.ts)
 *
 * The header stores the geometry, so `LockTable.attach(buffer)` can rebuild every view from the
 * buffer alone and refuse a buffer that is not a lock table of this version.
 */

export const MAGIC = 0x4c4b5442; // 'LKTB'
/**
 * 8: SF_ANNOUNCED_AT, a second Float64 per slot (slot-state.ts, "Stale announcements"): when the
 * slot's announcements were last asserted. Everything after the slots' Float64 words moves; code
 * of version 7 would neither stamp nor read it.
 * 7: H_REVOKED_AT (directory.ts): the time of the latest sweep of BINDING marks, from which every
 * thread counts a REVOKED slot's quarantine (code of version 6 counted it per thread, from its own
 * first look, and would not raise it). The header grows by one BigInt64; everything after it moves.
 * 6: H_ENTRY_WAITING, its buckets (entryBucketsOffset, before the stats, which move up),
 * H_ENTRY_HIGH and E_COUNTED (entries.ts): the hint that a LockManager request for a name waits, so that a request
 * finds its place in the cross-thread request order (code of version 5 would neither count its
 * waiters nor look, and would misplace the stats).
 * 5: the deadline cell has a pending bit (CELL_PENDING_SHIFT; the deadline moves up one bit), and
 * a shared record taken over by another thread is TAKEN, not RELEASING (records.ts). Code of
 * version 4 would misread both.
 * 4: request entries after the keys (entries.ts: the pending requests that `locktable/web-locks`
 * lists in query(), and each thread's doorbell), and H_ENTRY_SEQ; each slot's binding carries a
 * permit limit (S_LIMIT, in the word that was spare); the buffer ends with the stats counters
 * (H_STATS, statsOffset). Additive: every offset before the entries is as in version 3; the
 * version moves because code of version 3 would ignore a semaphore's limit.
 * 3: a table default that was not set is NaN in the header (defaults.ts), and each slot has a
 * hand-off reservation (SF_HANDOFF_UNTIL); 2 stored the library's defaults and had none.
 */
export const VERSION = 8;

// ---- header, Int32 words ----
export const H_MAGIC = 0;
export const H_VERSION = 1;
export const H_CAPACITY = 2;
export const H_MAX_KEY_LENGTH = 3;
export const H_RECORDS = 4;
/** Binding mutex: 0 when free, else 1 + the thread id of the thread binding a key to a slot. */
export const H_BIND_LOCK = 5;
/** Tokens issued for any key never go below this floor (raised when a slot is unbound). Lo/hi. */
export const H_TOKEN_FLOOR_LO = 6;
export const H_TOKEN_FLOOR_HI = 7;
export const H_BUFFER_BYTES = 8;
/** 1 + the thread id of the binding mutex's holder that stamped HF_BIND_LOCK_DEADLINE (0: none). */
export const H_BIND_DEADLINE_OWNER = 9;
/** The request-order counter of entries (entries.ts): incremented once per registered request. */
export const H_ENTRY_SEQ = 10;
/** 1 when the table collects stats (new LockTable({ stats: true })): every thread counts. */
export const H_STATS = 11;
/**
 * Words 12-13, one BigInt64 (`entryWaiting64`): the waiting hint of entries.ts (waitingHint): bits
 * 0-31 count the PENDING entries, bits 32-47 are its epoch, bits 48-63 a version that every change
 * moves on. A LockManager request that reads a count of 0 knows that no request waits anywhere and
 * skips the registry scan; the epoch lets a scan that found no entry reset a count left too high
 * by a thread that died between an entry's change and its count's, and the version makes that
 * reset's CAS fail if anything was counted or counted off since it read the word.
 */
export const H_ENTRY_WAITING = 12;
/**
 * One past the highest request entry index ever claimed (entries.ts): it only grows, claims take
 * the lowest free entry, and every scan of the registry stops there, so a scan costs the entries
 * in use (a few per thread), not `capacity` atomic loads.
 */
export const H_ENTRY_HIGH = 14;
/**
 * Words 16-17, one BigInt64 (`revokedAt64`): when (monotonic clock, in whole microseconds) the
 * latest sweep turned binders' BINDING marks into REVOKED ones (directory.ts). Only grows (a CAS
 * max). A REVOKED slot is taken back once REVOKED_STUCK_MS have passed since: its binder has then
 * been stopped inside its bind window for at least that long.
 */
export const H_REVOKED_AT = 16;
export const HEADER_WORDS = 18;

// ---- header, Float64 words (after the Int32 header) ----
/**
 * Monotonic time (ms) at which the binding mutex's holder must be done; past it, it may be stolen.
 * It is that holder's only while H_BIND_DEADLINE_OWNER names it.
 */
export const HF_BIND_LOCK_DEADLINE = 0;
/**
 * The table's defaults, stored so that every attached thread uses the same ones; NaN for a default
 * that was not set (each entry point then uses its own library default: see defaults.ts).
 */
export const HF_DEFAULT_HOLD = 1;
export const HF_DEFAULT_WAIT_TIMEOUT = 2;
export const HF_DEFAULT_SPIN_DELAY = 3;
export const HF_DEFAULT_FAIL_TIMEOUT = 4;
export const HEADER_F64 = 5;
export const HEADER_BYTES = HEADER_WORDS * 4 + HEADER_F64 * 8;

// ---- per slot, Int32 words ----
/** The lock word: see slot-state.ts for its bits and its state machine. Waiters sleep on it. */
export const S_STATE = 0;
/** How many threads are inside Atomics.wait / waitAsync on S_STATE (the releaser skips notify at 0). */
export const S_SLEEPERS = 1;
/** EMPTY, VACANT or BOUND (see directory.ts). Changed only under the binding mutex. */
export const S_BIND = 2;
/**
 * The slot's bind generation, 64 bits in two words (lo here, hi in S_BIND_GEN_HI): incremented by
 * the binder each time the slot is bound to a key, so a (slot, generation) pair never names two
 * bindings. A thread that holds the slot can trust it to name the key it verified (slot-cache.ts).
 */
export const S_BIND_GEN = 3;
export const S_HASH = 4;
export const S_KEY_LENGTH = 5;
/** The 64-bit fencing token of the latest grant on this slot, lo and hi halves. */
export const S_TOKEN_LO = 6;
export const S_TOKEN_HI = 7;
/**
 * The permit limit of the key's binding: 0 for a lock (exclusive or shared), n >= 1 for a
 * semaphore of n permits (semaphore.ts). Written by the binder inside its bind window, with the
 * key, so it is part of the binding: it changes only by an eviction and a new binding (a new
 * S_BIND_GEN), never while anyone holds the slot.
 */
export const S_LIMIT = 8;
/** High half of the bind generation (see S_BIND_GEN). */
export const S_BIND_GEN_HI = 9;
export const SLOT_WORDS = 10; // 40 bytes

// ---- per slot, BigInt64 words ----
/**
 * The deadline cell of the slot's exclusive holder: (deadline in whole monotonic ms, rounded up)
 * << CELL_DEADLINE_SHIFT | pending << CELL_PENDING_SHIFT | parity << CELL_PARITY_SHIFT | (holder
 * threadId + 1). One 64-bit word, so a reader never sees half of a deadline. It is the deadline of
 * the grant in S_STATE when it names that grant's holder and parity (FINITE, PARITY in
 * slot-state.ts). Written only by the holder, right after the CAS that made the grant or the
 * extend, twice: first with a plain store and the pending bit (a plain store cannot be cut short by
 * worker.terminate(), so a holder that dies at the next call still leaves a deadline that a waiter
 * reclaims by), then published with Atomics.store without it (a release: a reader that sees the
 * published cell also sees the grant's token, on weakly ordered hardware too). See Grants.
 */
export const SC_DEADLINE = 0;
export const SLOT_CELLS = 1;
export const CELL_PARITY_SHIFT = 21;
export const CELL_PENDING_SHIFT = 22;
export const CELL_DEADLINE_SHIFT = 23;

// ---- per slot, Float64 words ----
/**
 * Monotonic time (ms) until which the slot's HANDOFF is reserved for the waiters whose turn it is
 * (see HANDOFF_PATIENCE_MS in slot-state.ts). Written by the releaser before the CAS that makes
 * the HANDOFF, so a request that sees the HANDOFF reads this reservation or a later one.
 */
export const SF_HANDOFF_UNTIL = 0;
/**
 * Monotonic time (ms) at which the slot's announcements (WAITING and the bits beside it) were last
 * asserted: by a running waiter at each look where it has bits to announce (a plain store before
 * its announce CAS), and by a permit's release whose notify woke a sleeper that will look again.
 * Announcements not asserted for HANDOFF_PATIENCE_MS are stale (slot-state.ts, "Stale
 * announcements"). A hint: a stale reading costs a waiter one barge, never a grant's safety.
 */
export const SF_ANNOUNCED_AT = 1;
export const SLOT_F64 = 2;

// ---- shared-holder records, Int32 words: one per shared lease (see records.ts) ----
/** (generation << 3) | kind: RECORD_FREE, _CLAIMED, _JOINED, _ACTIVE, _EXTENDING, _RELEASING or _TAKEN. */
export const R_STATE = 0;
export const R_SLOT = 1;
export const R_OWNER = 2;
export const R_TOKEN_LO = 3;
export const R_TOKEN_HI = 4;
export const RECORD_WORDS = 6; // 5 used; even, so that record Float64 area stays aligned
/** The shared holder's deadline (monotonic ms), written before its grant CAS. */
export const RF_DEADLINE = 0;
export const RECORD_F64 = 1;

/** The kind bits of R_STATE; the generation is above them. */
export const RECORD_KIND = 7;
export const RECORD_FREE = 0;
export const RECORD_CLAIMED = 1;
export const RECORD_JOINED = 2;
export const RECORD_ACTIVE = 3;
export const RECORD_EXTENDING = 4;
export const RECORD_RELEASING = 5;
/**
 * RELEASING by a thread other than its holder (a takeover: Grants.#takeOver). R_OWNER still names
 * the holder, so releaseAllOwnedBy must not take it over again: the taker is running and takes the
 * count off itself (a taker that dies there leaves it stuck, as a RELEASING record).
 */
export const RECORD_TAKEN = 6;

// ---- request entries (entries.ts), as many as slots ----
/** (generation << 23) | (owner thread id << 3) | kind: ENTRY_FREE, _WRITING, _PENDING, _CLIENT. */
export const E_STATE = 0;
/** PENDING: the request's place in request order (H_ENTRY_SEQ), compared wrap-aware. */
export const E_SEQ = 1;
/**
 * PENDING: 0 exclusive, 1 shared. CLIENT: 1 while its owner sleeps synchronously on its doorbell
 * for a lock's release (E_RING_WAIT: Entries.ringWaiters' `onlySyncWaiters`), else 0.
 */
export const E_MODE = 2;
export const E_RING_WAIT = E_MODE;
export const E_KEY_LENGTH = 3;
/** CLIENT: the owner's doorbell, incremented (and notified) by whoever must wake it. */
export const E_DOORBELL = 4;
/**
 * PENDING (and WRITING on its way there): the H_ENTRY_WAITING epoch (16 bits) in which this entry was
 * counted, or ENTRY_UNCOUNTED; whoever takes the entry out of PENDING or WRITING by CAS takes its
 * count off (if the epoch is still current).
 */
export const E_COUNTED = 5;
export const ENTRY_UNCOUNTED = -1;
export const ENTRY_WORDS = 6; // all used; even, so that the Float64 area stays aligned
/** Monotonic ms until which the entry is live without a refresh from its owner. */
export const EF_LIVE_UNTIL = 0;
export const ENTRY_F64 = 1;
/**
 * The waiting hint's buckets (entries.ts, waitingHint): PENDING entries counted by a hash of their
 * key, each word as H_ENTRY_WAITING (count in bits 0-31, the epoch of H_ENTRY_WAITING it counts
 * in at bits 32-47), so that a request whose name's bucket is empty skips the scan while other
 * names have waiters. A power of two.
 */
export const ENTRY_BUCKETS = 64;

export const ENTRY_KIND = 7;
export const ENTRY_FREE = 0;
export const ENTRY_WRITING = 1;
export const ENTRY_PENDING = 2;
export const ENTRY_CLIENT = 3;
export const ENTRY_OWNER_SHIFT = 3;
export const ENTRY_OWNER_MASK = 0xfffff;
export const ENTRY_GEN_SHIFT = 23;

// ---- stats: BigInt64 counters, added to with Atomics.add by every thread (stats.ts) ----
export const ST_REQUESTS = 0;
export const ST_GRANTS = 1;
/** Grants whose request had to wait (spin or sleep) first. */
export const ST_CONTENDED = 2;
/** One-shot requests (tryAcquire, waitTimeout 0) that found the key busy. */
export const ST_MISSES = 3;
export const ST_TIMEOUTS = 4;
export const ST_ABORTS = 5;
/** Grants that reclaimed from a holder past its deadline + failTimeout, and leases forced off. */
export const ST_RECLAIMS = 6;
export const ST_RELEASES = 7;
/** Wait-time histogram of grants: bucket 0 under 1 us, bucket b in [2^(b-1), 2^b) us. */
export const ST_WAIT_BUCKETS = 8;
export const WAIT_BUCKETS = 40;
export const STATS_WORDS = ST_WAIT_BUCKETS + WAIT_BUCKETS;

export interface Geometry {
  capacity: number;
  maxKeyLength: number;
  records: number;
}

export interface Views {
  readonly geometry: Geometry;
  readonly header: Int32Array;
  readonly headerF64: Float64Array;
  /** H_TOKEN_FLOOR_LO/HI as one 64-bit word (8-byte aligned), for the CAS-max in directory.ts. */
  readonly tokenFloor64: BigInt64Array;
  /** Header words H_ENTRY_WAITING and the next: the waiting hint (entries.ts). */
  readonly entryWaiting64: BigInt64Array;
  /** H_REVOKED_AT as one 64-bit word. */
  readonly revokedAt64: BigInt64Array;
  /** The waiting hint per bucket of names (ENTRY_BUCKETS words; entries.ts). */
  readonly entryBuckets64: BigInt64Array;
  readonly slots: Int32Array;
  /** Deadline cells (SC_DEADLINE), one BigInt64 per slot. */
  readonly slotCells: BigInt64Array;
  /** Hand-off reservations (SF_HANDOFF_UNTIL), one Float64 per slot. */
  readonly slotF64: Float64Array;
  /** The same bytes as `slots`, for 64-bit token updates by concurrent shared grants. */
  readonly slots64: BigInt64Array;
  readonly records: Int32Array;
  readonly recordsF64: Float64Array;
  readonly keys: Uint16Array;
  /** Request entries (entries.ts): as many as slots. */
  readonly entries: Int32Array;
  readonly entriesF64: Float64Array;
  readonly entryKeys: Uint16Array;
  readonly stats: BigInt64Array;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

export function offsets(g: Geometry) {
  const slotWordsOffset = HEADER_BYTES;
  const slotCellsOffset = align8(slotWordsOffset + g.capacity * SLOT_WORDS * 4);
  const slotF64Offset = align8(slotCellsOffset + g.capacity * SLOT_CELLS * 8);
  const recordWordsOffset = align8(slotF64Offset + g.capacity * SLOT_F64 * 8);
  const recordF64Offset = align8(recordWordsOffset + g.records * RECORD_WORDS * 4);
  const keysOffset = align8(recordF64Offset + g.records * RECORD_F64 * 8);
  const entryWordsOffset = align8(keysOffset + g.capacity * g.maxKeyLength * 2);
  const entryF64Offset = align8(entryWordsOffset + g.capacity * ENTRY_WORDS * 4);
  const entryNamesOffset = align8(entryF64Offset + g.capacity * ENTRY_F64 * 8);
  const entryBucketsOffset = align8(entryNamesOffset + g.capacity * g.maxKeyLength * 2);
  const statsOffset = entryBucketsOffset + ENTRY_BUCKETS * 8;
  const totalBytes = statsOffset + STATS_WORDS * 8;
  return {
    entryWordsOffset,
    entryF64Offset,
    entryNamesOffset,
    entryBucketsOffset,
    statsOffset,
    slotWordsOffset,
    slotCellsOffset,
    slotF64Offset,
    recordWordsOffset,
    recordF64Offset,
    keysOffset,
    totalBytes,
  };
}

export function bufferBytes(g: Geometry): number {
  return offsets(g).totalBytes;
}

export function createViews(buffer: SharedArrayBuffer, g: Geometry): Views {
  const o = offsets(g);
  return {
    geometry: g,
    header: new Int32Array(buffer, 0, HEADER_WORDS),
    headerF64: new Float64Array(buffer, HEADER_WORDS * 4, HEADER_F64),
    tokenFloor64: new BigInt64Array(buffer, H_TOKEN_FLOOR_LO * 4, 1),
    entryWaiting64: new BigInt64Array(buffer, H_ENTRY_WAITING * 4, 1),
    revokedAt64: new BigInt64Array(buffer, H_REVOKED_AT * 4, 1),
    slots: new Int32Array(buffer, o.slotWordsOffset, g.capacity * SLOT_WORDS),
    slotCells: new BigInt64Array(buffer, o.slotCellsOffset, g.capacity * SLOT_CELLS),
    slotF64: new Float64Array(buffer, o.slotF64Offset, g.capacity * SLOT_F64),
    slots64: new BigInt64Array(buffer, o.slotWordsOffset, (g.capacity * SLOT_WORDS) / 2),
    records: new Int32Array(buffer, o.recordWordsOffset, g.records * RECORD_WORDS),
    recordsF64: new Float64Array(buffer, o.recordF64Offset, g.records * RECORD_F64),
    keys: new Uint16Array(buffer, o.keysOffset, g.capacity * g.maxKeyLength),
    entries: new Int32Array(buffer, o.entryWordsOffset, g.capacity * ENTRY_WORDS),
    entriesF64: new Float64Array(buffer, o.entryF64Offset, g.capacity * ENTRY_F64),
    entryKeys: new Uint16Array(buffer, o.entryNamesOffset, g.capacity * g.maxKeyLength),
    entryBuckets64: new BigInt64Array(buffer, o.entryBucketsOffset, ENTRY_BUCKETS),
    stats: new BigInt64Array(buffer, o.statsOffset, STATS_WORDS),
  };
}
