/**
 * A stand-in for a PostgreSQL server on an in-process stream, for `npm run bench:postgres:client`:
 * `pg` writes to it as to a socket, and it answers every message at once, in the next turn of the
 * event loop (as a socket's reply would arrive), with constant rows. So a client's time against
 * it is the client's own work (JavaScript, `pg`'s parser and serializer), with no server, no
 * network and no wait, the same for every client it serves.
 *
 * It speaks just enough of the protocol (version 3.0) for `pg` and PgLockTable: the startup
 * (trust: no password), Parse, Bind, Describe, Execute, Sync and simple Query. Its rows are those
 * of PgLockTable's statements (sql.ts), recognised by name, and an empty text column for anything
 * else. Every fencing token is the same number: PgLockTable does not check that tokens increase.
 * An answer to a whole write is kept by the write's bytes and sent again for the same bytes (by
 * connection), so that the stub's own cost stays small and the same for every client.
 */
import { Duplex } from 'node:stream';

/** The server process id every stub session reports. */
const PID = 4242;
const TOKEN = String(1n << 40n);

function message(type: string, body: Buffer): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.write(type, 0, 'latin1');
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const int16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const cString = (s: string): Buffer => Buffer.concat([Buffer.from(s), Buffer.from([0])]);

const READY = message('Z', Buffer.from('I'));
const PARSE_COMPLETE = message('1', Buffer.alloc(0));
const BIND_COMPLETE = message('2', Buffer.alloc(0));
const NO_DATA = message('n', Buffer.alloc(0));
const SELECT_1 = message('C', cString('SELECT 1'));
/** Authentication ok, the session's process id and key, ready. */
const STARTED = Buffer.concat([
  message('R', int32(0)),
  message('K', Buffer.concat([int32(PID), int32(1)])),
  READY,
]);

/** Columns of type text, in order. */
function rowDescription(columns: readonly string[]): Buffer {
  const fields = columns.map((name) =>
    Buffer.concat([cString(name), int32(0), int16(0), int32(25), int16(-1), int32(-1), int16(0)]),
  );
  return message('T', Buffer.concat([int16(columns.length), ...fields]));
}

function dataRow(values: ReadonlyArray<string | null>): Buffer {
  const fields = values.map((v) =>
    v === null ? int32(-1) : Buffer.concat([int32(Buffer.byteLength(v)), Buffer.from(v)]),
  );
  return message('D', Buffer.concat([int16(values.length), ...fields]));
}

/** A statement's columns and its one row ($1 and on: the Bind's parameters, as text). */
interface Answer {
  columns: readonly string[];
  row(params: ReadonlyArray<string | null>): ReadonlyArray<string | null>;
}

/** `session`: what a stub session remembers (the marker SESSION_START set). */
function answerFor(name: string, text: string, session: { marker: string | null }): Answer {
  if (name === 'locktable_session_start') {
    return {
      columns: ['previous', 'marker', 'pid', 'started', 'server_start'],
      row: (p) => {
        session.marker = p[0] ?? null;
        return [null, session.marker, String(PID), 'stub', 'stub'];
      },
    };
  }
  if (text.startsWith('SELECT max(version)')) return { columns: ['version'], row: () => ['3'] };
  if (name === 'locktable_grant') {
    return { columns: ['lock_id', 'token', 'backend_pid'], row: () => ['1', TOKEN, String(PID)] };
  }
  if (name.startsWith('locktable_fast_')) {
    return { columns: ['token', 'backend_pid'], row: () => [TOKEN, String(PID)] };
  }
  if (name.startsWith('locktable_release_')) return { columns: ['released'], row: () => ['t'] };
  if (name === 'locktable_heartbeat') {
    return { columns: ['pid', 'marker'], row: () => [String(PID), session.marker] };
  }
  return { columns: ['result'], row: () => [''] };
}

export class StubServer extends Duplex {
  /** Answers kept by the bytes of the write they answer (see above). */
  readonly #answered = new Map<string, Buffer>();
  readonly #session: { marker: string | null } = { marker: null };
  #pending: Buffer = Buffer.alloc(0);
  #started = false;
  readonly #statements = new Map<string, Answer>();
  #portal: { answer: Answer; params: Array<string | null> } | undefined;

  /** What `pg` calls on a socket. */
  connect(): this {
    process.nextTick(() => this.emit('connect'));
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }

  override _read(): void {}

  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.#receive(chunk);
    done();
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, done: () => void): void {
    this.#receive(
      chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)),
    );
    done();
  }

  override _final(done: () => void): void {
    done();
    process.nextTick(() => {
      this.push(null);
      this.emit('close');
    });
  }

  #receive(chunk: Buffer): void {
    const whole = this.#started && this.#pending.length === 0;
    const key = whole ? chunk.toString('latin1') : undefined;
    const kept = key === undefined ? undefined : this.#answered.get(key);
    if (kept !== undefined) {
      setImmediate(() => this.push(kept));
      return;
    }
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const out: Buffer[] = [];
    let parsed = false;
    for (;;) {
      const buf = this.#pending;
      if (!this.#started) {
        if (buf.length < 4 || buf.length < buf.readInt32BE(0)) break;
        this.#pending = buf.subarray(buf.readInt32BE(0));
        this.#started = true;
        out.push(STARTED);
        continue;
      }
      if (buf.length < 5 || buf.length < 1 + buf.readInt32BE(1)) break;
      const type = String.fromCharCode(buf[0]!);
      const body = buf.subarray(5, 1 + buf.readInt32BE(1));
      this.#pending = buf.subarray(1 + buf.readInt32BE(1));
      if (type === 'P') {
        const nameEnd = body.indexOf(0);
        const name = body.toString('utf8', 0, nameEnd);
        const text = body.toString('utf8', nameEnd + 1, body.indexOf(0, nameEnd + 1));
        this.#statements.set(name, answerFor(name, text, this.#session));
        out.push(PARSE_COMPLETE);
        parsed = true;
      } else if (type === 'B') {
        this.#portal = this.#bind(body);
        out.push(BIND_COMPLETE);
      } else if (type === 'D') {
        // 'P': a portal, whose columns follow; a statement is described only by pg's prepare().
        out.push(body[0] === 0x50 ? rowDescription(this.#portal!.answer.columns) : NO_DATA);
      } else if (type === 'E') {
        const portal = this.#portal!;
        out.push(dataRow(portal.answer.row(portal.params)), SELECT_1);
      } else if (type === 'S') {
        out.push(READY);
      } else if (type === 'Q') {
        const answer = answerFor('', body.toString('utf8', 0, body.length - 1), this.#session);
        out.push(rowDescription(answer.columns), dataRow(answer.row([])), SELECT_1, READY);
      }
    }
    if (out.length === 0) return;
    const reply = Buffer.concat(out);
    // A write that prepared a statement is answered once (its session's next one has no Parse).
    if (key !== undefined && !parsed && this.#pending.length === 0) this.#answered.set(key, reply);
    setImmediate(() => this.push(reply));
  }

  /** A Bind: its statement's answer, and its parameters as text. */
  #bind(body: Buffer): { answer: Answer; params: Array<string | null> } {
    let at = body.indexOf(0) + 1; // after the portal's name
    const nameEnd = body.indexOf(0, at);
    const answer = this.#statements.get(body.toString('utf8', at, nameEnd))!;
    at = nameEnd + 1;
    at += 2 + 2 * body.readInt16BE(at); // parameter formats
    const count = body.readInt16BE(at);
    at += 2;
    const params: Array<string | null> = [];
    for (let i = 0; i < count; i++) {
      const length = body.readInt32BE(at);
      at += 4;
      if (length < 0) {
        params.push(null);
      } else {
        params.push(body.toString('utf8', at, at + length));
        at += length;
      }
    }
    return { answer, params };
  }
}
