/**
 * Every SQL statement of the PostgreSQL backend, in one place, with the round trips each costs.
 *
 * The schema is versioned like a migration: `locktable.schema_version` holds the version
 * installed, MIGRATIONS[i] takes a database from version i to i + 1, and install() applies what
 * is missing once per database, under a transaction advisory lock, so that concurrent first users
 * do not race (CREATE ... IF NOT EXISTS alone is not safe against a concurrent CREATE).
 *
 * Locks are session advisory locks in the two-int4 form, (namespace, key id): pg_locks shows them
 * with objsubid 2, where the one-bigint form that applications use (`pg_advisory_lock(1)`) has
 * objsubid 1, so the two never collide whatever the numbers.
 */

/** The schema version this build installs and understands. */
export const SCHEMA_VERSION = 3;

/** The default namespace: 'lock' in ASCII, as an int4. */
export const DEFAULT_NAMESPACE = 0x6c6f636b;

/**
 * The install lock: (DEFAULT_NAMESPACE, 0), as a transaction lock. Key ids start at 1, so it is
 * never the lock of a key.
 */
const INSTALL_LOCK = `${DEFAULT_NAMESPACE}, 0`;

/**
 * Version 1: the keys table and the acquire function.
 *
 * locktable.keys has one row per (namespace, key), never deleted: the row carries the key's
 * fencing counter, and a deleted row would let the tokens of its key start again at 1. `key` is
 * compared byte for byte (COLLATE "C"), so two keys are one lock only when they are equal.
 *
 * (Version 2 replaces this function by locktable.grant, below.)
 * locktable.acquire(namespace, key, exclusive, wait_ms, lease_ms) does a whole grant in ONE
 * statement (one round trip, one transaction):
 *   1. finds the key's id, or creates its row (INSERT ... ON CONFLICT DO NOTHING, then a re-read
 *      for the loser of a race: a new statement, so it sees the winner's commit);
 *   2. takes the session lock (ns, id), shared or exclusive: wait_ms < 0 = one try
 *      (pg_try_advisory_lock); wait_ms = 0 = wait forever; wait_ms > 0 = wait with a
 *      transaction-local lock_timeout of wait_ms, catching lock_not_available (55P03). Not granted:
 *      it returns no row;
 *   3. bumps the key's fence (UPDATE ... RETURNING) with synchronous_commit on for this transaction,
 *      so the commit, and the reply, waits for the WAL flush: a token handed out survives a server
 *      crash. (set_config(..., true) = SET LOCAL, in force at commit. A `SET synchronous_commit`
 *      clause on the function would NOT be: a function's SET clause is undone when it returns,
 *      before the commit);
 *   4. sets idle_session_timeout to lease_ms for the session (lease_ms > 0), so that a holder that
 *      stops talking to the server (hung, frozen, cut off) loses its session and its locks;
 *   5. returns (lock_id, token, backend_pid): the pid lets the client see a transaction-mode pooler
 *      (version 2 also checks the session marker first, see SESSION_START).
 * Its search_path is pinned (pg_catalog first), so a caller's search_path cannot replace the
 * functions it calls.
 *
 * A session lock is not transactional: it survives the rollback of the statement that took it.
 * So a statement that fails AFTER step 2 (cancelled during the UPDATE, say) leaves the lock held;
 * the client sends RESET_SESSION after every failed acquire, and this function never swallows an
 * error after step 2.
 */
const V1 = `
CREATE TABLE IF NOT EXISTS locktable.keys (
  namespace int4 NOT NULL,
  key text COLLATE "C" NOT NULL,
  id int4 GENERATED ALWAYS AS IDENTITY UNIQUE,
  fence int8 NOT NULL DEFAULT 0,
  PRIMARY KEY (namespace, key)
);

CREATE OR REPLACE FUNCTION locktable.acquire(
  p_namespace int4, p_key text, p_exclusive boolean, p_wait_ms int4, p_lease_ms int4
) RETURNS TABLE (lock_id int4, token int8, backend_pid int4)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  v_id int4;
  v_lock_timeout text;
BEGIN
  SELECT k.id INTO v_id FROM locktable.keys k WHERE k.namespace = p_namespace AND k.key = p_key;
  IF v_id IS NULL THEN
    INSERT INTO locktable.keys AS k (namespace, key) VALUES (p_namespace, p_key)
      ON CONFLICT (namespace, key) DO NOTHING RETURNING k.id INTO v_id;
    IF v_id IS NULL THEN
      SELECT k.id INTO v_id FROM locktable.keys k
        WHERE k.namespace = p_namespace AND k.key = p_key;
    END IF;
  END IF;

  IF p_wait_ms < 0 THEN
    IF p_exclusive THEN
      IF NOT pg_try_advisory_lock(p_namespace, v_id) THEN RETURN; END IF;
    ELSE
      IF NOT pg_try_advisory_lock_shared(p_namespace, v_id) THEN RETURN; END IF;
    END IF;
  ELSE
    v_lock_timeout := current_setting('lock_timeout');
    PERFORM set_config('lock_timeout', p_wait_ms::text, true);
    BEGIN
      IF p_exclusive THEN
        PERFORM pg_advisory_lock(p_namespace, v_id);
      ELSE
        PERFORM pg_advisory_lock_shared(p_namespace, v_id);
      END IF;
    EXCEPTION WHEN lock_not_available THEN
      RETURN;
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
  END IF;

  PERFORM set_config('synchronous_commit', 'on', true);
  IF p_lease_ms > 0 THEN
    PERFORM set_config('idle_session_timeout', p_lease_ms::text, false);
  END IF;
  UPDATE locktable.keys k SET fence = k.fence + 1 WHERE k.id = v_id RETURNING k.fence INTO token;
  lock_id := v_id;
  backend_pid := pg_backend_pid();
  RETURN NEXT;
END
$fn$;
`;

/**
 * The SQLSTATE locktable.grant raises when it runs on a server process whose session marker
 * is not the caller's: a transaction-mode pooler (see SESSION_START).
 */
export const POOLER_SQLSTATE = 'LT001';

/**
 * The first step of locktable.grant (versions 2 and 3), in plpgsql: refuses a session whose
 * marker is not p_session (a pooler: LT001), then finds the key's id (v_id) or creates its row,
 * committed with a flush (its id must not be handed out twice).
 */
const GRANT_KEY_STEP = `  -- A session that is not the one this server process started with (SESSION_START set the
  -- marker): a transaction-mode pooler multiplexes sessions. Refused before any lock is taken.
  IF current_setting('locktable.session', true) IS DISTINCT FROM p_session THEN
    RAISE EXCEPTION USING ERRCODE = '${POOLER_SQLSTATE}',
      MESSAGE = 'locktable: this statement ran on a server process that another session set up';
  END IF;
  SELECT k.id INTO v_id FROM locktable.keys k WHERE k.namespace = p_namespace AND k.key = p_key;
  IF v_id IS NULL THEN
    -- A new key's row is flushed at commit: its id must not be handed out twice.
    PERFORM set_config('synchronous_commit', 'on', true);
    INSERT INTO locktable.keys AS k (namespace, key) VALUES (p_namespace, p_key)
      ON CONFLICT (namespace, key) DO NOTHING RETURNING k.id INTO v_id;
    IF v_id IS NULL THEN
      SELECT k.id INTO v_id FROM locktable.keys k
        WHERE k.namespace = p_namespace AND k.key = p_key;
    END IF;
  END IF;
`;

/**
 * The lock step of locktable.grant (versions 2 and 3), in plpgsql: takes (p_namespace, v_id) as
 * p_wait_ms says (< 0 one try, 0 forever, else a transaction-local lock_timeout), and RETURNs
 * (no row: not granted) when it is not had.
 */
const GRANT_LOCK_STEP = `  IF p_wait_ms < 0 THEN
    IF p_exclusive THEN
      IF NOT pg_try_advisory_lock(p_namespace, v_id) THEN RETURN; END IF;
    ELSE
      IF NOT pg_try_advisory_lock_shared(p_namespace, v_id) THEN RETURN; END IF;
    END IF;
  ELSIF p_wait_ms = 0 THEN
    -- Forever: the session's lock_timeout is 0 (SESSION_START).
    IF p_exclusive THEN
      PERFORM pg_advisory_lock(p_namespace, v_id);
    ELSE
      PERFORM pg_advisory_lock_shared(p_namespace, v_id);
    END IF;
  ELSE
    PERFORM set_config('lock_timeout', p_wait_ms::text, true);
    BEGIN
      IF p_exclusive THEN
        PERFORM pg_advisory_lock(p_namespace, v_id);
      ELSE
        PERFORM pg_advisory_lock_shared(p_namespace, v_id);
      END IF;
    EXCEPTION WHEN lock_not_available THEN
      -- RACE: a lock granted in the instant its lock_timeout fired is kept (a session lock
      -- outlives the subtransaction) although the wait raised 55P03. The session never holds
      -- this lock otherwise (no re-entry, by construction), so a hold now is that grant: keep it
      -- as one, rather than report "not granted" and leave it held.
      IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
          AND l.classid = p_namespace::oid AND l.objid = v_id::oid AND l.objsubid = 2
      ) THEN
        RETURN;
      END IF;
    END;
    PERFORM set_config('lock_timeout', '0', true);
  END IF;
`;

/**
 * Version 2's server token: epoch << V2_FENCE_BITS | fence, where fence counted the key's grants
 * within the epoch. (Version 3 replaces it; its migration starts above every version-2 token.)
 */
const V2_FENCE_BITS = 30;
const V2_MAX_EPOCH_BITS = 21;

/**
 * Version 2: fencing tokens without a disk flush per grant.
 *
 * Version 1 bumped a fence column of locktable.keys and committed with synchronous_commit on: a
 * WAL flush per grant. On a server with fsync on, that flush is most of a grant's time. Version
 * 2 keeps the per-key counters in an UNLOGGED
 * table, which writes no WAL, and makes tokens survive a crash with an epoch instead:
 *
 *   locktable.epoch   (logged)    one row: the epoch, bumped with a flushed commit;
 *   locktable.alive   (UNLOGGED)  one row: the epoch in force since this server last started;
 *   locktable.fences  (UNLOGGED)  per key id: (epoch, fence), the key's grants in that epoch.
 *
 * PostgreSQL empties every unlogged table when it starts after a crash (an immediate shutdown, a
 * killed postmaster, or the reinitialisation after one of its processes died): "An unlogged table
 * is automatically truncated after a crash or unclean shutdown" (CREATE TABLE, UNLOGGED). After a
 * clean shutdown they are kept, with every commit on disk. So a grant that finds `alive` empty
 * knows that fences may have been lost, and, before it hands out any token, starts a new epoch:
 * it bumps locktable.epoch under a transaction lock and commits with synchronous_commit on, so
 * that no session sees the new epoch (in `alive`) before it is on disk. Every token of the new
 * epoch is then above every token of any earlier one, whatever the lost counters were. A key whose
 * fence would pass 2^V2_FENCE_BITS - 1 starts a new epoch the same way.
 *
 * A grant that finds `alive` set writes only unlogged rows (and a new key's logged row, committed
 * with a flush): nothing in its commit waits for the disk.
 *
 * The initial epoch is above every version-1 token: version-1 tokens were fence << 20 (front
 * bits), version-2 tokens are (epoch << V2_FENCE_BITS | fence) << 12.
 */
const V2 = `
CREATE TABLE IF NOT EXISTS locktable.epoch (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  epoch int8 NOT NULL
);
INSERT INTO locktable.epoch (epoch)
  SELECT ((coalesce(max(k.fence), 0) + 1) >> 22) + 1 FROM locktable.keys k
  ON CONFLICT DO NOTHING;
ALTER TABLE locktable.keys DROP COLUMN IF EXISTS fence;
CREATE UNLOGGED TABLE IF NOT EXISTS locktable.alive (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  epoch int8 NOT NULL
);
CREATE UNLOGGED TABLE IF NOT EXISTS locktable.fences (
  id int4 PRIMARY KEY,
  epoch int8 NOT NULL,
  fence int8 NOT NULL
);

-- Starts a new epoch (see above) unless one was started since the caller read 'alive' as
-- p_seen (null: empty). Returns the epoch in force. The caller's commit must be flushed.
CREATE OR REPLACE FUNCTION locktable.next_epoch(p_seen int8) RETURNS int8
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  v_epoch int8;
BEGIN
  PERFORM pg_advisory_xact_lock(${INSTALL_LOCK});
  SELECT a.epoch INTO v_epoch FROM locktable.alive a;
  IF v_epoch IS NOT NULL AND v_epoch IS DISTINCT FROM p_seen THEN
    RETURN v_epoch;
  END IF;
  UPDATE locktable.epoch e SET epoch = e.epoch + 1 RETURNING e.epoch INTO v_epoch;
  IF v_epoch >= (1::int8 << ${V2_MAX_EPOCH_BITS}) THEN
    RAISE EXCEPTION 'locktable: the fencing epoch reached 2^${V2_MAX_EPOCH_BITS}: tokens would not fit a bigint';
  END IF;
  INSERT INTO locktable.alive AS a (epoch) VALUES (v_epoch)
    ON CONFLICT (one) DO UPDATE SET epoch = excluded.epoch;
  PERFORM set_config('synchronous_commit', 'on', true);
  RETURN v_epoch;
END
$fn$;

-- Version 1's function goes, and version 2's has a new name: a version-1 process still running
-- after the upgrade fails (42883) instead of taking version-2 tokens on its own scale.
DROP FUNCTION IF EXISTS locktable.acquire(int4, text, boolean, int4, int4);
CREATE OR REPLACE FUNCTION locktable.grant(
  p_namespace int4, p_key text, p_exclusive boolean, p_wait_ms int4, p_lease_ms int4,
  p_session text
) RETURNS TABLE (lock_id int4, token int8, backend_pid int4)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  v_id int4;
  v_alive int8;
  v_epoch int8;
  v_fence int8;
BEGIN
${GRANT_KEY_STEP}
${GRANT_LOCK_STEP}
  IF p_lease_ms > 0 THEN
    PERFORM set_config('idle_session_timeout', p_lease_ms::text, false);
  END IF;

  -- The token, counted after the grant (a new snapshot: read committed). The common case is one
  -- statement: the key has a row and 'alive' has the epoch. Its commit writes no WAL (unlogged
  -- rows only), so it never waits for a flush, whatever synchronous_commit says.
  -- RACE: a concurrent holder of the key (shared mode) may have moved its row to a later epoch
  -- than 'alive' had for this statement; the row's epoch never goes back (greatest), and its
  -- fence counts on.
  UPDATE locktable.fences f
    SET fence = CASE WHEN f.epoch >= a.epoch THEN f.fence + 1 ELSE 1 END,
        epoch = greatest(f.epoch, a.epoch)
    FROM locktable.alive a
    WHERE f.id = v_id RETURNING f.epoch, f.fence INTO v_epoch, v_fence;
  IF v_epoch IS NOT NULL AND v_fence < (1::int8 << ${V2_FENCE_BITS}) THEN
    token := (v_epoch << ${V2_FENCE_BITS}) | v_fence;
    lock_id := v_id;
    backend_pid := pg_backend_pid();
    RETURN NEXT;
    RETURN;
  END IF;

  -- The key's first grant in this database, or 'alive' is empty (a crash emptied the unlogged
  -- tables), or the fence is full.
  SELECT a.epoch INTO v_alive FROM locktable.alive a;
  IF v_alive IS NULL THEN
    v_alive := locktable.next_epoch(NULL);
  ELSIF v_epoch IS NOT NULL THEN
    v_alive := locktable.next_epoch(v_epoch);
  END IF;
  LOOP
    -- RACE: a concurrent holder of the key (shared mode) may have moved its row to a later
    -- epoch than v_alive; the row's epoch never goes back (greatest), and its fence counts on.
    UPDATE locktable.fences f
      SET fence = CASE WHEN f.epoch >= v_alive THEN f.fence + 1 ELSE 1 END,
          epoch = greatest(f.epoch, v_alive)
      WHERE f.id = v_id RETURNING f.epoch, f.fence INTO v_epoch, v_fence;
    IF v_epoch IS NULL THEN
      INSERT INTO locktable.fences AS f (id, epoch, fence) VALUES (v_id, v_alive, 1)
        ON CONFLICT (id) DO UPDATE
          SET fence = CASE WHEN f.epoch >= v_alive THEN f.fence + 1 ELSE 1 END,
              epoch = greatest(f.epoch, v_alive)
        RETURNING f.epoch, f.fence INTO v_epoch, v_fence;
    END IF;
    EXIT WHEN v_fence < (1::int8 << ${V2_FENCE_BITS});
    -- The fence is full: a new epoch, then count again from 1.
    v_alive := locktable.next_epoch(v_epoch);
    v_epoch := NULL;
  END LOOP;
  token := (v_epoch << ${V2_FENCE_BITS}) | v_fence;
  lock_id := v_id;
  backend_pid := pg_backend_pid();
  RETURN NEXT;
END
$fn$;
`;

/**
 * The bits of a server token in version 3: token = epoch << TOKEN_BITS | n, where n counts the
 * grants of every key within the epoch (one sequence). With the front's COHORT_BITS below them,
 * a token stays under 2^63 (a Postgres bigint) while epoch < 2^MAX_EPOCH_BITS.
 */
export const TOKEN_BITS = 40;
/** 63 bits less TOKEN_BITS less the front's 12 cohort bits. */
export const MAX_EPOCH_BITS = 11;

/**
 * Version 3: fencing tokens without a row write per grant.
 *
 * Version 2 counted each key's grants in an unlogged row: no flush, but still a row update per
 * grant (a transaction id, a heap write, a commit record), which cost about as much as the lock
 * itself. Version 3 draws every token from ONE sequence, `locktable.tokens`, after the lock is
 * granted: a global counter read after the grant is a per-key counter too (each grant of a key
 * comes after the previous grant of that key, so its nextval comes later and is larger). The
 * sequence writes WAL only once per 32 values and the grant's transaction commits with
 * synchronous_commit off, so no grant waits for the disk.
 *
 * The sequence itself is not trusted across a crash (a value handed out by a transaction whose
 * commit was not flushed may be handed out again after one). The epoch covers it, as in version
 * 2: the sequence's range is [epoch << TOKEN_BITS, (epoch + 1) << TOKEN_BITS), set by
 * start_epoch, which bumps the durable epoch, ALTERs the sequence to the new range and records
 * the epoch in the UNLOGGED table `alive`, in one transaction committed with a flush. After a
 * crash `alive` is empty, and no token is handed out before a new epoch has started:
 *   - locktable.grant calls next_token, which starts the epoch under the install lock when
 *     `alive` is empty, then takes nextval;
 *   - the common grant (fastGrant, below) is sent only on a session that has run
 *     locktable.grant once: that session saw the epoch started after the last crash, and a crash
 *     ends every session.
 * ALTER SEQUENCE is transactional (a new relfilenode) and blocks concurrent nextval until it
 * commits, so no grant sees the new range before the epoch is on disk; every token of the new
 * epoch is above every token of every earlier one.
 *
 * A full range (2^TOKEN_BITS grants in one epoch) makes nextval fail with 2200H
 * (sequence_generator_limit_exceeded) after the lock was taken. locktable.grant catches it, gives
 * the lock back and returns a row with a null token; a fastGrant fails with it, and the client
 * unlocks the key. Either way the client then sends RENEW_TOKENS (renew_tokens starts the next
 * epoch if the range is still full, under the install lock) and asks again. Not in the grant's
 * own transaction: nextval's lock on the sequence lasts until its transaction ends, and the next
 * epoch's ALTER SEQUENCE waits for it, so waiting there for the install lock could deadlock.
 *
 * The migration: version-2 tokens are below (epoch + 1) << 30; the next epoch here is
 * (epoch >> 10) + 1, whose first token (<< 40) is above them. Version 2's per-key rows go (the
 * server no longer knows a key's last token).
 */
const V3 = `
UPDATE locktable.epoch SET epoch = epoch >> (${TOKEN_BITS} - ${V2_FENCE_BITS});
DELETE FROM locktable.alive;
DROP TABLE IF EXISTS locktable.fences;
DROP FUNCTION IF EXISTS locktable.next_epoch(int8);
CREATE SEQUENCE IF NOT EXISTS locktable.tokens AS int8 NO CYCLE;

-- Starts a new epoch. The caller holds the install lock (a transaction lock) and its commit is
-- flushed (set here). SECURITY DEFINER: ALTER SEQUENCE needs the sequence's owner.
CREATE OR REPLACE FUNCTION locktable.start_epoch() RETURNS int8
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  v_epoch int8;
BEGIN
  UPDATE locktable.epoch e SET epoch = e.epoch + 1 RETURNING e.epoch INTO v_epoch;
  IF v_epoch >= (1::int8 << ${MAX_EPOCH_BITS}) THEN
    RAISE EXCEPTION 'locktable: the fencing epoch reached 2^${MAX_EPOCH_BITS}: tokens would not fit a bigint';
  END IF;
  EXECUTE format(
    'ALTER SEQUENCE locktable.tokens INCREMENT BY 1 CACHE 1 NO CYCLE '
      'MINVALUE %s MAXVALUE %s START WITH %s RESTART WITH %s',
    v_epoch << ${TOKEN_BITS}, ((v_epoch + 1) << ${TOKEN_BITS}) - 1,
    v_epoch << ${TOKEN_BITS}, v_epoch << ${TOKEN_BITS});
  INSERT INTO locktable.alive AS a (epoch) VALUES (v_epoch)
    ON CONFLICT (one) DO UPDATE SET epoch = excluded.epoch;
  PERFORM set_config('synchronous_commit', 'on', true);
  RETURN v_epoch;
END
$fn$;

-- The token of a grant, taken after the lock: starts the epoch first if a crash emptied 'alive'
-- (re-read under the install lock: another grant may have started it meanwhile). A used-up range
-- raises 2200H here; it is NOT caught here: nextval's lock on the sequence is held until the
-- transaction ends (subtransaction or not), and start_epoch's ALTER SEQUENCE waits for it, so a
-- handler that waited for the install lock could deadlock with the session starting the next
-- epoch. locktable.grant turns it into a "renew" row and the client calls renew_tokens in a
-- statement of its own. SECURITY DEFINER: start_epoch is the owner's alone.
CREATE OR REPLACE FUNCTION locktable.next_token() RETURNS int8
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM locktable.alive) THEN
    PERFORM pg_advisory_xact_lock(${INSTALL_LOCK});
    IF NOT EXISTS (SELECT 1 FROM locktable.alive) THEN
      PERFORM locktable.start_epoch();
    END IF;
  END IF;
  RETURN nextval('locktable.tokens');
END
$fn$;

-- The epoch's range is used up (a grant failed with 2200H): starts the next epoch, unless another
-- session did since. Sent by the client as a statement of its own (its transaction holds no lock
-- on the sequence). SECURITY DEFINER: pg_sequences shows last_value to the owner.
CREATE OR REPLACE FUNCTION locktable.renew_tokens() RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  PERFORM pg_advisory_xact_lock(${INSTALL_LOCK});
  IF EXISTS (
    SELECT 1 FROM pg_sequences s
    WHERE s.schemaname = 'locktable' AND s.sequencename = 'tokens' AND s.last_value = s.max_value
  ) OR NOT EXISTS (SELECT 1 FROM locktable.alive) THEN
    PERFORM locktable.start_epoch();
  END IF;
END
$fn$;
-- Only through next_token and renew_tokens, which take the install lock first.
REVOKE EXECUTE ON FUNCTION locktable.start_epoch() FROM PUBLIC;

CREATE OR REPLACE FUNCTION locktable.grant(
  p_namespace int4, p_key text, p_exclusive boolean, p_wait_ms int4, p_lease_ms int4,
  p_session text
) RETURNS TABLE (lock_id int4, token int8, backend_pid int4)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  v_id int4;
BEGIN
  -- Nothing of this transaction needs the disk (the sequence's WAL is covered by the epoch),
  -- unless the key is new (the key step sets it on again).
  PERFORM set_config('synchronous_commit', 'off', true);
${GRANT_KEY_STEP}
${GRANT_LOCK_STEP}
  IF p_lease_ms > 0 THEN
    PERFORM set_config('idle_session_timeout', p_lease_ms::text, false);
  END IF;
  -- After the lock (see next_token). A used-up range: the lock goes back, and the row's null
  -- token tells the client to renew the range (RENEW_TOKENS) and ask again.
  BEGIN
    token := locktable.next_token();
  EXCEPTION WHEN sequence_generator_limit_exceeded THEN
    IF p_exclusive THEN
      PERFORM pg_advisory_unlock(p_namespace, v_id);
    ELSE
      PERFORM pg_advisory_unlock_shared(p_namespace, v_id);
    END IF;
    token := NULL;
  END;
  lock_id := v_id;
  backend_pid := pg_backend_pid();
  RETURN NEXT;
END
$fn$;
`;

/** MIGRATIONS[i] takes the schema from version i to i + 1. */
const MIGRATIONS: readonly string[] = [V1, V2, V3];

/**
 * Reads the installed version. 1 round trip. Fails with 42P01 / 3F000 when nothing is installed.
 */
export const READ_VERSION = 'SELECT max(version) AS version FROM locktable.schema_version';

/**
 * Installs or upgrades the schema (to `target`, the tests' way to make an older one): one DO block, so one round trip and one transaction, which
 * holds the install lock until it commits; a concurrent installer waits for it, then finds the
 * version current and does nothing.
 */
export function installStatement(target = SCHEMA_VERSION): string {
  const steps = MIGRATIONS.slice(0, target)
    .map(
      (sql, i) => `
  IF v_version < ${i + 1} THEN
    EXECUTE ${dollarQuote(sql)};
    INSERT INTO locktable.schema_version (version) VALUES (${i + 1});
    v_version := ${i + 1};
  END IF;`,
    )
    .join('');
  return `DO $install$
DECLARE
  v_version int4;
BEGIN
  PERFORM pg_advisory_xact_lock(${INSTALL_LOCK});
  CREATE SCHEMA IF NOT EXISTS locktable;
  CREATE TABLE IF NOT EXISTS locktable.schema_version (
    version int4 PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT now()
  );
  SELECT coalesce(max(version), 0) INTO v_version FROM locktable.schema_version;${steps}
END
$install$`;
}

function dollarQuote(sql: string): string {
  if (sql.includes('$migration$')) throw new Error('locktable: a migration contains $migration$');
  return `$migration$${sql}$migration$`;
}

/**
 * When a server process started (pg_stat_activity.backend_start, of the row `a`), as text in UTC
 * to the microsecond, whatever the session's DateStyle and TimeZone: with its pid, the identity of
 * a server process (a pid is reused once its process has ended). Read by SESSION_START, matched
 * by TERMINATE.
 */
const PROCESS_START = "to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')";

/**
 * Run once per new session: sets the session's marker (`locktable.session`, $1: a random id of
 * this session), returning the marker the server process had before, and its server process id.
 * A real new session has no marker; one that has a marker already is a server process another
 * session set up: a pooler (refused). locktable.grant checks the marker before it locks, and the
 * heartbeat reads it back, so two sessions multiplexed on one server process never both lock
 * through it (DESIGN.md, "Poolers"). 1 round trip (per connection, on top of the connection's own
 * handshake). It also pins the session's default_transaction_isolation to read committed (the
 * session is the backend's own): locktable.grant needs a new snapshot per statement, both for the
 * re-read of a key row another session just created and for the token drawn after a lock wait.
 * And it turns statement_timeout and lock_timeout off: a lock wait is bounded by waitTimeout (a
 * transaction-local lock_timeout that locktable.grant sets only for a finite wait), and a role's
 * or server's timeout would cut it short with a bare 57014 or 55P03.
 *
 * For a lock session ($2 not null: the table's lease in ms), it sets, once for the session's
 * whole life, what a grant used to set and a release restore, statement by statement:
 * - idle_session_timeout = the lease: the server ends the session (and frees its locks) once it
 *   has been silent for the lease, whether it holds locks or not. A live session is never silent
 *   that long: it sends a heartbeat every lease / 4 from the moment it opens (Session.startHeartbeat),
 *   idle in the set or holding. So a hung or cut-off holder still loses its locks within the lease,
 *   and the grant and the release carry no set_config, whose cost (a GUC set in the statement and
 *   its bookkeeping at commit) was most of what separated them from a bare pg_advisory_lock;
 * - synchronous_commit = off: nextval WAL-logs once per 32 values, and the statement that does
 *   gets a transaction id, whose commit would then wait for a flush; the sequence's WAL is covered
 *   by the epoch (version 3). What must be durable sets it on for its own transaction
 *   (set_config(..., true) in locktable.grant for a new key, and in start_epoch), which a
 *   session's value does not override.
 * Neither is set on a process that already carries a locktable marker (another session's, behind
 * a pooler: this session is refused), nor on the control session ($2 null).
 */
export const SESSION_START = {
  name: 'locktable_session_start',
  text:
    // The subquery (OFFSET 0: never pulled up) reads the marker before set_config writes it.
    'SELECT previous.marker AS previous, ' +
    // A process that already carries a locktable marker keeps it (its owner's locks are there);
    // anything else there (a role's default, say) is not ours and is overwritten.
    "set_config('locktable.session', CASE WHEN previous.marker LIKE 'locktable:%' " +
    'THEN previous.marker ELSE $1::text END, false) AS marker, ' +
    'pg_backend_pid() AS pid, ' +
    `(SELECT ${PROCESS_START} FROM pg_stat_get_activity(pg_backend_pid()) AS a) AS started, ` +
    'pg_postmaster_start_time()::text AS server_start, ' +
    "set_config('default_transaction_isolation', 'read committed', false) AS isolation, " +
    "set_config('statement_timeout', '0', false) AS statement_timeout, " +
    "set_config('lock_timeout', '0', false) AS lock_timeout, " +
    "CASE WHEN $2::text IS NULL OR previous.marker LIKE 'locktable:%' THEN NULL " +
    "ELSE set_config('idle_session_timeout', $2::text, false) || " +
    "set_config('synchronous_commit', 'off', false) END AS lock_session " +
    "FROM (SELECT current_setting('locktable.session', true) AS marker OFFSET 0) AS previous",
};

/**
 * A grant: see locktable.grant above (version 3). 1 round trip; waits on the server (not in the client)
 * while the key is held. $1 namespace, $2 key, $3 exclusive, $4 wait ms (-1 try, 0 forever),
 * $5 lease ms (0: leave the session's idle_session_timeout alone; the client always sends 0, since
 * SESSION_START set the lease for the session's life), $6 the session's marker. The client sends
 * it for a key whose id it does not know yet, and when fastGrant returns no row.
 */
export const ACQUIRE = {
  name: 'locktable_grant',
  text: 'SELECT lock_id, token::text AS token, backend_pid FROM locktable.grant($1, $2, $3, $4, $5, $6)',
};

/** After a grant found the epoch's token range used up (see version 3). 1 round trip. */
export const RENEW_TOKENS = {
  name: 'locktable_renew',
  // $1: this transaction's lock_timeout (what is left of the request's wait; '0' for a wait
  // forever): renew_tokens waits for the install lock and its ALTER SEQUENCE for the sequence.
  text: "SELECT set_config('lock_timeout', $1::text, true) AS timeout, locktable.renew_tokens()",
};

/** How a grant waits: one try, forever, or up to a number of ms (the server's lock_timeout). */
export type GrantWait = 'try' | 'forever' | 'timed';

/**
 * The common grant, for a key whose id the client knows (ids are never reused: a key's row is
 * never deleted), on a session that has run ACQUIRE once (Session.epochSeen): locktable.grant's
 * work as one plain statement, which costs the server little more than a bare pg_advisory_lock
 * (no plpgsql call, no key lookup, no set_config: SESSION_START set the session's lease and
 * synchronous_commit once). 1 round trip. $1 namespace, $2 the key's id, $3 the session's marker,
 * and for a timed wait $4 its ms. Returns one row (token, backend_pid), token null when a try
 * found the key held; no row when the marker is not the caller's. The order of evaluation is the
 * statement's own, and it is what makes it safe:
 *   1. the WHERE clause compares the session's marker with the caller's: the select list is
 *      evaluated only for a row that passes it (the SQL semantics of SELECT; the plan is one
 *      Result node whose One-Time Filter is that comparison), so on another session's server
 *      process (a pooler) nothing is evaluated, and there is no row;
 *   2. the token's CASE takes the lock, and only when it was granted draws the token (a CASE
 *      evaluates its conditions in order and only the branch it picks: PostgreSQL's documented
 *      way to force an order of evaluation); a timed wait's CASE first sets the transaction's
 *      lock_timeout, then waits, then sets it back to 0, then draws.
 * One plan node, where a version of this statement with nested OFFSET 0 subqueries had three: a
 * waiter's reply, after its grant, is that much sooner.
 * No `alive` check: the session saw the epoch started after the server's last crash (it ran
 * ACQUIRE), and a crash would have ended it. No row: the marker is another session's (a pooler),
 * nothing was taken; the client sends ACQUIRE, which raises the pooler's error. A timed wait that
 * runs out fails with 55P03, and a used-up token range with 2200H after the lock was taken: the
 * client then resets or unlocks, as after any statement that may have taken a lock and failed.
 * The transaction commits with the session's synchronous_commit, off: the sequence's WAL (once per
 * 32 values) is covered by the epoch, and a flush per 32 grants would cost more than the lock.
 * The client reads the row as the server's text (Session.rows), so no type parser of the
 * application's can round the token.
 */
export function fastGrant(wait: GrantWait, exclusive: boolean): { name: string; text: string } {
  return FAST_GRANTS[WAITS.indexOf(wait) * 2 + (exclusive ? 0 : 1)]!;
}

const WAITS: readonly GrantWait[] = ['try', 'forever', 'timed'];

/**
 * The six fastGrant statements, built once (pg compares a named statement's text on every use),
 * indexed by wait and mode: no key string made per grant.
 */
const FAST_GRANTS = WAITS.flatMap((wait) => [
  buildFastGrant(wait, true),
  buildFastGrant(wait, false),
]);

function buildFastGrant(wait: GrantWait, exclusive: boolean): { name: string; text: string } {
  const shared = exclusive ? '' : '_shared';
  const lock = `pg_${wait === 'try' ? 'try_' : ''}advisory_lock${shared}($1::int4, $2::int4)`;
  const token = "nextval('locktable.tokens')";
  const grant =
    wait === 'try'
      ? `CASE WHEN ${lock} THEN ${token} END`
      : wait === 'forever'
        ? // pg_advisory_lock returns void, never null: the CASE only orders the lock first.
          `CASE WHEN ${lock} IS NOT NULL THEN ${token} END`
        : // A timed wait's lock_timeout ends with the lock: drawing the token may wait behind an
          // epoch's ALTER SEQUENCE, and must not fail for it (locktable.grant resets it the same
          // way). Each WHEN is never true (set_config and the void lock are never null): they
          // run in this order, and the ELSE draws the token.
          "CASE WHEN set_config('lock_timeout', $4::text, true) IS NULL THEN NULL " +
          `WHEN ${lock} IS NULL THEN NULL ` +
          "WHEN set_config('lock_timeout', '0', true) IS NULL THEN NULL " +
          `ELSE ${token} END`;
  return {
    name: `locktable_fast_${wait}_${exclusive ? 'x' : 's'}`,
    text:
      `SELECT ${grant} AS token, pg_backend_pid() AS backend_pid ` +
      "WHERE current_setting('locktable.session', true) = $3::text",
  };
}

/**
 * A release: unlocks one key on the lease's own session. 1 round trip. The unlock is the
 * statement's only work (the session's idle_session_timeout stays at the lease, see
 * SESSION_START), so a waiter on the server is granted as early in the statement as with a bare
 * pg_advisory_unlock. `released` is false when the session did not hold the lock; no row at all
 * when the statement ran on another session's server process (a pooler). $1 namespace, $2 the
 * key's id, $3 the session's marker. releaseStatement(exclusive) picks the mode's statement.
 */
export function releaseStatement(exclusive: boolean): { name: string; text: string } {
  return exclusive ? RELEASE_EXCLUSIVE : RELEASE_SHARED;
}

function buildRelease(exclusive: boolean): { name: string; text: string } {
  return {
    name: `locktable_release_${exclusive ? 'x' : 's'}`,
    // Only on the session's own server process ($3, its marker), as RESET_SESSION: the unlock is
    // evaluated only for a row that passes the WHERE (see fastGrant).
    text:
      `SELECT pg_advisory_unlock${exclusive ? '' : '_shared'}($1::int4, $2::int4) AS released ` +
      "WHERE current_setting('locktable.session', true) = $3::text",
  };
}

const RELEASE_EXCLUSIVE = buildRelease(true);
const RELEASE_SHARED = buildRelease(false);

/**
 * After a failed or abandoned acquire (an error, an abort, a grant that raced a cancel, a failed
 * acquireAll): releases every session lock of the session. 1 round trip. The session is one of
 * the backend's own and holds nothing else when this runs.
 */
export const RESET_SESSION = {
  name: 'locktable_reset',
  // Only on the session's own server process ($1, its marker): through a pooler, another
  // session's process would lose its locks. No row: a pooler (the caller terminates the process).
  text:
    'SELECT pg_advisory_unlock_all() ' +
    "WHERE current_setting('locktable.session', true) = $1::text",
};

/**
 * The heartbeat of a lock session, every lease / 4 from its opening to its end, whether it holds
 * leases or waits in the set: resets the server's idle_session_timeout clock (the lease, see
 * SESSION_START), and returns the server process id and session marker (either changed means a
 * pooler). 1 round trip per beat.
 */
export const HEARTBEAT = {
  name: 'locktable_heartbeat',
  text: "SELECT pg_backend_pid() AS pid, current_setting('locktable.session', true) AS marker",
};

/**
 * Cancels a waiting acquire, sent from the control session: SIGINT to the waiting server process.
 * 1 round trip on the control session. It returns once the signal is sent, so the waiting session
 * may send its next statement only after this has answered (a cancel that arrives while the
 * target session is idle is ignored by the server; one that arrives during the next statement
 * would cancel that).
 */
export const CANCEL = { name: 'locktable_cancel', text: 'SELECT pg_cancel_backend($1)' };

/**
 * Ends the given server processes of the backend's own sessions (close(): sessions still waiting;
 * a session's own process found behind a pooler): $1 their pids, $2 when each started (the
 * session's `started`, read by SESSION_START). Only a process with that pid that started then:
 * one that has ended since may have left its pid to another session, maybe another
 * application's, which must not be ended. 1 round trip.
 */
export const TERMINATE = {
  name: 'locktable_terminate',
  text:
    'SELECT pg_terminate_backend(a.pid) ' +
    'FROM unnest($1::int4[], $2::text[]) AS t(pid, started), ' +
    'LATERAL pg_stat_get_activity(t.pid) AS a ' +
    `WHERE ${PROCESS_START} = t.started`,
};

/**
 * Who holds and waits for keys of a namespace: pg_locks joined with locktable.keys on
 * (classid, objid, objsubid) = (namespace, id, 2). $2 = one key, or null for all keys.
 * 1 round trip; reads only.
 */
export const INSPECT = {
  name: 'locktable_inspect',
  text: `SELECT k.key, l.pid, l.mode, l.granted
FROM locktable.keys k
JOIN pg_locks l ON l.locktype = 'advisory'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = k.namespace::oid AND l.objid = k.id::oid AND l.objsubid = 2
WHERE k.namespace = $1 AND ($2::text IS NULL OR k.key = $2::text)
ORDER BY k.key, l.granted DESC, l.pid`,
};
