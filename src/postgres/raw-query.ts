/**
 * RawQuery: the hot statements' way to pg (a known key's grant, a release, a heartbeat), and
 * BoundStatements: each session's cache of their serialized Bind, Execute and Sync messages.
 *
 * A RawQuery is a named prepared statement sent through pg's Submittable interface (the one
 * pg-cursor and pg-query-stream use) instead of as a pg Query: Parse once per session, then Bind,
 * Execute and Sync, as pg's Query sends them, but without a Describe, so the server sends no
 * RowDescription and the client builds no field parsers, no result object and no copy of the
 * config per statement (pg's Query does all three), and reads each row as the server's text,
 * whatever type parsers or `binary` option the application set on pg. The caller knows its
 * statement's columns by position.
 *
 * Its Bind, Execute and Sync go to the socket as one buffer, made by `encodeBind` (the same bytes
 * as pg-protocol's serializer: test/postgres/raw-query.test.ts compares them) and kept per
 * session and statement for the statement's last parameters: a session that grants and releases
 * the same key again writes the same bytes, with no serializing at all. The replies go through
 * pg's own machinery: its parser, its client (which hands each message to the active query, an
 * error included, and fails it when the connection ends), and the handlers below.
 */

/** One row of a statement sent by Session.rows: its columns as the server's text, in order. */
export type RawRow = ReadonlyArray<string | null>;

/** A named statement: its name (per session, prepared once) and its SQL. */
export type QueryConfig = { name: string; text: string };

/** What RawQuery uses of pg's Connection (pg/lib/connection.js). */
export interface PgConnection {
  stream: { cork(): void; uncork(): void; writable: boolean; write(bytes: Uint8Array): boolean };
  parsedStatements: Record<string, string | undefined>;
  submittedNamedStatements: Record<string, string | undefined>;
  parse(query: { text: string; name: string; types: unknown[] }): void;
  sendCopyFail(message: string): void;
}

const NO_TYPES: unknown[] = [];

/** A statement's parameter as text (our values are strings, numbers, booleans and null). */
export function toText(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}

/** Execute of the unnamed portal, all rows; then Sync. (pg-protocol: emptyExecute, sync.) */
const EXECUTE_SYNC = Buffer.from([
  // 'E', length 9, the unnamed portal, no row limit
  0x45, 0, 0, 0, 9, 0, 0, 0, 0, 0,
  // 'S', length 4
  0x53, 0, 0, 0, 4,
]);

/**
 * Bind (the unnamed portal to `statement`, every parameter as text, every result column as
 * text), Execute and Sync, in one buffer: the bytes pg's Query writes for them (pg-protocol's
 * serialize.bind with `valueMapper: toText`, execute({ portal: '' }), sync()).
 */
export function encodeBind(statement: string, values: readonly unknown[]): Buffer {
  const n = values.length;
  const texts: Array<string | null> = new Array<string | null>(n);
  const nameBytes = Buffer.byteLength(statement);
  // code, length, portal "" \0, name \0, format count, formats, value count, values, result
  // format count and code
  let size = 1 + 4 + 1 + nameBytes + 1 + 2 + 2 * n + 2 + 4;
  for (let i = 0; i < n; i++) {
    const text = toText(values[i]);
    texts[i] = text;
    size += 4 + (text === null ? 0 : Buffer.byteLength(text));
  }
  const bytes = Buffer.allocUnsafe(size + EXECUTE_SYNC.length);
  let at = 0;
  bytes[at++] = 0x42; // 'B'
  bytes.writeInt32BE(size - 1, at);
  at += 4;
  bytes[at++] = 0; // the unnamed portal
  at += bytes.write(statement, at, 'utf8');
  bytes[at++] = 0;
  bytes.writeInt16BE(n, at);
  at += 2;
  bytes.fill(0, at, at + 2 * n); // each parameter's format: text
  at += 2 * n;
  bytes.writeInt16BE(n, at);
  at += 2;
  for (let i = 0; i < n; i++) {
    const text = texts[i]!;
    if (text === null) {
      bytes.writeInt32BE(-1, at);
      at += 4;
      continue;
    }
    const length = bytes.write(text, at + 4, 'utf8');
    bytes.writeInt32BE(length, at);
    at += 4 + length;
  }
  bytes.writeInt16BE(1, at); // one result format code, for every column:
  at += 2;
  bytes.writeInt16BE(0, at); // text
  at += 2;
  EXECUTE_SYNC.copy(bytes, at);
  return bytes;
}

/** One statement's bytes for its last parameters. */
interface Bound {
  values: readonly unknown[];
  bytes: Buffer;
}

/**
 * A session's cache of its hot statements' Bind + Execute + Sync bytes: per statement name, the
 * bytes for the last parameters it was sent with (a grant's and a release's are the session's
 * namespace, the key's id and the session's marker, so a session that takes the same key again
 * finds them). A few entries per session: one per statement name.
 */
export class BoundStatements {
  readonly #byName = new Map<string, Bound>();

  bytes(statement: string, values: readonly unknown[]): Buffer {
    const bound = this.#byName.get(statement);
    if (bound !== undefined && sameValues(bound.values, values)) return bound.bytes;
    const bytes = encodeBind(statement, values);
    // A copy: the caller's array is not ours to keep.
    this.#byName.set(statement, { values: values.slice(), bytes });
    return bytes;
  }
}

function sameValues(a: readonly unknown[], b: readonly unknown[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * One statement's way through pg. Its bytes are made before it is handed to pg (Session.rows:
 * BoundStatements.bytes), not in submit: pg marks a query active before it calls submit, and a
 * throw there (a parameter whose text cannot be made) would leave pg's client waiting for the
 * replies of a statement never sent. Made first, such a throw rejects the statement before pg
 * sees it.
 */
export class RawQuery {
  readonly name: string;
  readonly text: string;
  readonly rows: RawRow[] = [];
  /** Bind + Execute + Sync (BoundStatements.bytes). */
  readonly #bytes: Buffer;
  /** pg may wrap it (its query_timeout): always called through the property, once. */
  callback: ((error: Error | null, rows?: RawRow[]) => void) | undefined;

  constructor(
    statement: QueryConfig,
    bytes: Buffer,
    callback: (error: Error | null, rows?: RawRow[]) => void,
  ) {
    this.name = statement.name;
    this.text = statement.text;
    this.#bytes = bytes;
    this.callback = callback;
  }

  submit(connection: PgConnection): null {
    const bytes = this.#bytes;
    const stream = connection.stream;
    if (
      connection.parsedStatements[this.name] !== undefined ||
      connection.submittedNamedStatements[this.name] !== undefined
    ) {
      // As pg's Connection: nothing is written to a socket that can no longer take it (its
      // 'end' or 'error' then fails this query).
      if (stream.writable) stream.write(bytes);
      return null;
    }
    stream.cork();
    try {
      connection.parse({ text: this.text, name: this.name, types: NO_TYPES });
      // As pg's Query: the name counts as prepared once sent (ParseComplete confirms it, an
      // error forgets it: pg's client does both).
      connection.submittedNamedStatements[this.name] = this.text;
      if (stream.writable) stream.write(bytes);
    } finally {
      stream.uncork();
    }
    return null;
  }

  handleDataRow(message: { fields: RawRow }): void {
    this.rows.push(message.fields);
  }

  /** The statement failed (the server's error), or the connection did: no ReadyForQuery follows. */
  handleError(error: Error): void {
    this.#settle(error);
  }

  handleReadyForQuery(): void {
    this.#settle(null);
  }

  #settle(error: Error | null): void {
    const callback = this.callback;
    if (callback === undefined) return;
    this.callback = undefined;
    if (error === null) callback(null, this.rows);
    else callback(error);
  }

  // The rest of the messages pg's client hands to its active query: none comes for these
  // statements (no Describe, no COPY, no row limit), and none needs an answer but COPY's.
  handleRowDescription(): void {}
  handleCommandComplete(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyData(): void {}
  handleCopyInResponse(connection: PgConnection): void {
    connection.sendCopyFail('locktable: no COPY');
  }
}
