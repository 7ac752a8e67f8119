"""Batches: jobs that belong together, with callbacks once every one settled
(``app.batch(on_complete=..., on_success=..., on_failure=...)``, SQL's
batch_open(), batch_add(), batch_close(); issue 24, item 3). A batch is a row
in batches (OPEN, CLOSED, DONE) with counters by outcome; batch_members holds
one row per member still to count, deleted when it is counted, as chords and
dependencies count theirs. advance() and revoke_waiting() count members where
jobs finish, and the completion statement does for every batch while any
member waits (see jobqueue/sql/schema.sql, "Batches"). The state moves to
DONE once, under the batch's row lock: the callbacks are spawned once.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06

Old workers: workers, beats and producers of 0018 may keep running while
this is applied and during the rollout. Nothing they run changes: new tables
and functions, and advance() and revoke_waiting() keep their signatures
(their bodies also count batch members). A worker of 0018 does not count
batch members in its completion statement; jobs it finishes are counted by
the batches_sweep() of a worker of this release (the maintenance leader's
round), so only batches need a worker of this release.

Roles: no new grant to run. Every role that may run advance() (producers
and workers of jobqueue db grant) is granted SELECT on batch_members (the
completion and advance() look whether any member waits) and EXECUTE on
batches_settle, batch_open, batch_add and batch_close; every role that reads
all_jobs, SELECT on batch_progress; workers, EXECUTE on batches_sweep and
SELECT, DELETE on batches (retention deletes completed batches).
"""

from alembic import context, op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- ===========================================================================
-- Batches: jobs that belong together, with callbacks once all of them
-- settled (app.batch(on_complete=..., on_success=..., on_failure=...))
--
-- A batch is a row in batches, OPEN while jobs join it (batch_add), CLOSED
-- once batch_close() says no more will, DONE once every member settled
-- (SUCCESS, FAILURE, REVOKED, or deleted): then, once (the state moves
-- under the row lock), on_complete is spawned with the counts, and
-- on_success or on_failure. Members are counted as chords count theirs: one
-- row per member still to count in batch_members, deleted when it is counted
-- (once), and counters by outcome in batches. The work is done where jobs
-- finish: the completion, the rescue and revocations (through advance()),
-- and the operations (revoke_waiting). A job that joins (FOR KEY SHARE on
-- the batch row) never waits for a completion, and a completion never waits
-- for an open transaction that adds jobs; batch_close() (FOR UPDATE) waits
-- for those. A member that finishes while the transaction adding it is open
-- (a job enqueued earlier), one finished by a worker of an earlier release,
-- and a deleted one are counted by the maintenance leader's batches_sweep().
-- ===========================================================================

-- A batch and its counters; the members still to count are in batch_members
-- (total = succeeded + failed + revoked + those). Callbacks: frozen
-- signatures (spawn()), given the counts as their first argument.
CREATE TABLE {schema}.batches (
    id          uuid PRIMARY KEY,
    state       text NOT NULL DEFAULT 'OPEN',
    succeeded   integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,
    revoked     integer NOT NULL DEFAULT 0,
    on_complete jsonb,
    on_success  jsonb,
    on_failure  jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    finished_at timestamptz,
    CONSTRAINT batches_state_check CHECK (state IN ('OPEN', 'CLOSED', 'DONE'))
);

-- A member still to be counted; deleting the row counts it. A job belongs to
-- one batch at most.
CREATE TABLE {schema}.batch_members (
    job_id   uuid PRIMARY KEY,
    batch_id uuid NOT NULL
);
CREATE INDEX batch_members_batch_idx ON {schema}.batch_members (batch_id);

-- A closed batch whose members are all counted becomes DONE, once: its
-- callbacks are spawned. The caller counted its members first (deleted their
-- rows), so whoever takes the row lock last sees every count. Returns whether
-- it finished the batch now.
CREATE FUNCTION {schema}.batch_finish(batch uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    b      record;
    counts jsonb;
BEGIN
    SELECT * INTO b FROM {schema}.batches WHERE id = batch_finish.batch FOR NO KEY UPDATE;
    IF NOT FOUND OR b.state <> 'CLOSED' THEN
        RETURN false;
    END IF;
    -- A statement after the lock: it sees the counts of whoever held it before.
    IF EXISTS (SELECT 1 FROM {schema}.batch_members WHERE batch_id = b.id) THEN
        RETURN false;
    END IF;
    UPDATE {schema}.batches SET state = 'DONE', finished_at = now() WHERE id = b.id;
    counts := jsonb_build_object('batch', b.id, 'total', b.succeeded + b.failed + b.revoked,
                                 'succeeded', b.succeeded, 'failed', b.failed,
                                 'revoked', b.revoked);
    IF b.on_complete IS NOT NULL THEN
        PERFORM {schema}.spawn(b.on_complete, jsonb_build_array(counts), NULL, NULL);
    END IF;
    IF b.failed + b.revoked = 0 AND b.on_success IS NOT NULL THEN
        PERFORM {schema}.spawn(b.on_success, jsonb_build_array(counts), NULL, NULL);
    ELSIF b.failed + b.revoked > 0 AND b.on_failure IS NOT NULL THEN
        PERFORM {schema}.spawn(b.on_failure, jsonb_build_array(counts), NULL, NULL);
    END IF;
    RETURN true;
END
$$;

-- Jobs `ids` finished (or may have): the batches they belong to count them,
-- by outcome (a deleted member counts as revoked), and a closed batch with
-- none left to count is finished (batch_finish). Members are counted (their
-- rows deleted) before any batch row is locked, batch rows in id order, so
-- concurrent callers never deadlock. Returns how many members were counted.
CREATE FUNCTION {schema}.batches_settle(ids uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    b record;
    n integer := 0;
BEGIN
    FOR c IN
        WITH counted AS (
            DELETE FROM {schema}.batch_members AS m
            WHERE m.job_id = ANY(ids)
              AND (EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = m.job_id
                           AND j.state IN ('SUCCESS', 'FAILURE', 'REVOKED'))
                   OR NOT (EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = m.job_id)
                           OR EXISTS (SELECT 1 FROM {schema}.job_queue AS q
                                      WHERE q.job_id = m.job_id)))
            RETURNING m.job_id, m.batch_id
        )
        SELECT k.batch_id,
               count(*) FILTER (WHERE j.state = 'SUCCESS')::integer AS succeeded,
               count(*) FILTER (WHERE j.state = 'FAILURE')::integer AS failed,
               count(*) FILTER (WHERE j.state IS NULL OR j.state = 'REVOKED')::integer
                   AS revoked
        FROM counted AS k
        LEFT JOIN {schema}.jobs AS j ON j.id = k.job_id
        GROUP BY k.batch_id
        ORDER BY k.batch_id
    LOOP
        n := n + c.succeeded + c.failed + c.revoked;
        UPDATE {schema}.batches
        SET succeeded = succeeded + c.succeeded, failed = failed + c.failed,
            revoked = revoked + c.revoked
        WHERE id = c.batch_id
        RETURNING * INTO b;
        IF FOUND AND b.state = 'CLOSED' THEN
            PERFORM {schema}.batch_finish(b.id);
        END IF;
    END LOOP;
    RETURN n;
END
$$;

-- A new batch, OPEN; `id` chosen by the caller or made here. Callbacks are
-- frozen signatures (what spawn() reads), each given the counts
-- {"batch", "total", "succeeded", "failed", "revoked"} as first argument.
CREATE FUNCTION {schema}.batch_open(id uuid DEFAULT NULL, on_complete jsonb DEFAULT NULL,
                                    on_success jsonb DEFAULT NULL,
                                    on_failure jsonb DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id uuid := COALESCE(batch_open.id, {schema}.uuid7());
BEGIN
    INSERT INTO {schema}.batches (id, on_complete, on_success, on_failure)
    VALUES (new_id, batch_open.on_complete, batch_open.on_success, batch_open.on_failure);
    RETURN new_id;
END
$$;

-- Jobs `jobs` join batch `batch`, which must be OPEN (JQ005 otherwise); each
-- must exist (written in this transaction, or committed) and belong to no
-- batch yet. Those already finished are counted at once. The batch row is
-- held FOR KEY SHARE until the transaction ends: batch_close() waits for it,
-- completions do not. Returns how many jobs joined.
CREATE FUNCTION {schema}.batch_add(batch uuid, jobs uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s       text;
    members uuid[] := ARRAY(SELECT DISTINCT x FROM unnest(jobs) AS x WHERE x IS NOT NULL);
    x       uuid;
BEGIN
    SELECT b.state INTO s FROM {schema}.batches AS b WHERE b.id = batch_add.batch FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue: there is no batch %', batch USING ERRCODE = 'JQ002';
    END IF;
    IF s <> 'OPEN' THEN
        RAISE EXCEPTION 'jobqueue: batch % is closed: no job may join it', batch
            USING ERRCODE = 'JQ005';
    END IF;
    FOREACH x IN ARRAY members LOOP
        PERFORM 1 FROM {schema}.jobs AS j WHERE j.id = x
        UNION ALL
        SELECT 1 FROM {schema}.job_queue AS q WHERE q.job_id = x;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'jobqueue: job % cannot join batch %: it does not exist', x, batch
                USING ERRCODE = 'JQ002';
        END IF;
    END LOOP;
    SELECT m.job_id INTO x FROM {schema}.batch_members AS m WHERE m.job_id = ANY(members) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'jobqueue: job % belongs to a batch already', x USING ERRCODE = '22023';
    END IF;
    INSERT INTO {schema}.batch_members (job_id, batch_id)
    SELECT m, batch_add.batch FROM unnest(members) AS m;
    PERFORM {schema}.batches_settle(ARRAY(
        SELECT j.id FROM {schema}.jobs AS j
        WHERE j.id = ANY(members) AND j.state IN ('SUCCESS', 'FAILURE', 'REVOKED')));
    RETURN cardinality(members);
END
$$;

-- No job may join batch `batch` any more. Waits for open transactions adding
-- jobs to it (FOR UPDATE), and finishes the batch if no member is left to
-- count (a closed empty batch completes at once). It counts no member itself:
-- deleting member rows while holding the batch row would deadlock with a
-- completion that deleted one and waits for the row; batches_sweep() counts
-- what the completions missed. Closing a closed batch changes nothing.
-- Returns the batch's state: CLOSED, or DONE.
CREATE FUNCTION {schema}.batch_close(batch uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s text;
BEGIN
    SELECT b.state INTO s FROM {schema}.batches AS b WHERE b.id = batch_close.batch FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue: there is no batch %', batch USING ERRCODE = 'JQ002';
    END IF;
    IF s = 'OPEN' THEN
        UPDATE {schema}.batches SET state = 'CLOSED', closed_at = now()
        WHERE id = batch_close.batch;
    END IF;
    PERFORM {schema}.batch_finish(batch_close.batch);
    RETURN (SELECT b.state FROM {schema}.batches AS b WHERE b.id = batch_close.batch);
END
$$;

-- The maintenance leader's round: members that finished (or were deleted)
-- but are still to be counted: one that finished while the transaction
-- adding it was open, one finished by a worker of an earlier release, one
-- deleted. Returns how many were counted.
CREATE FUNCTION {schema}.batches_sweep(from_id uuid DEFAULT NULL,
                                       max_rows integer DEFAULT 10000)
RETURNS TABLE (counted integer, next_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seen uuid[];
BEGIN
    -- Up to max_rows members after from_id, in key order (as
    -- dependencies_sweep): bounded per round; next_id NULL: from the start.
    seen := ARRAY(SELECT m.job_id FROM {schema}.batch_members AS m
                  WHERE from_id IS NULL OR m.job_id > from_id
                  ORDER BY 1 LIMIT greatest(max_rows, 1));
    counted := {schema}.batches_settle(ARRAY(
        SELECT x FROM unnest(seen) AS x
        WHERE EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = x
                      AND j.state IN ('SUCCESS', 'FAILURE', 'REVOKED'))
           OR NOT (EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = x)
                   OR EXISTS (SELECT 1 FROM {schema}.job_queue AS q WHERE q.job_id = x))));
    next_id := CASE WHEN cardinality(seen) < greatest(max_rows, 1) THEN NULL
                    ELSE seen[cardinality(seen)] END;
    RETURN NEXT;
END
$$;

-- Each batch's progress: pending is what is still to be counted; the ids
-- of the jobs its callbacks will be (or are).
CREATE VIEW {schema}.batch_progress AS
SELECT b.id, b.state, b.succeeded + b.failed + b.revoked + COALESCE(m.pending, 0) AS total,
       COALESCE(m.pending, 0) AS pending, b.succeeded, b.failed, b.revoked,
       b.state <> 'OPEN' AS closed, b.state = 'DONE' AS completed,
       b.created_at, b.closed_at, b.finished_at,
       (b.on_complete ->> 'id')::uuid AS on_complete_job,
       (b.on_success ->> 'id')::uuid AS on_success_job,
       (b.on_failure ->> 'id')::uuid AS on_failure_job
FROM {schema}.batches AS b
LEFT JOIN LATERAL (SELECT count(*)::integer AS pending FROM {schema}.batch_members AS x
                   WHERE x.batch_id = b.id) AS m ON true;


-- Run in the transaction that finished `ids`: what follows them in a canvas
-- (advance_canvas), then the jobs that wait on them (dependencies_settle),
-- then the batches they belong to (batches_settle; each one probe of an empty
-- table while nothing waits). Jobs not finished, or already advanced, change
-- nothing.
CREATE OR REPLACE FUNCTION {schema}.advance(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer := {schema}.advance_canvas(ids);
BEGIN
    IF EXISTS (SELECT 1 FROM {schema}.job_dependencies) THEN
        PERFORM {schema}.dependencies_settle(ids);
    END IF;
    IF EXISTS (SELECT 1 FROM {schema}.batch_members) THEN
        PERFORM {schema}.batches_settle(ids);
    END IF;
    RETURN n;
END
$$;

-- Waiting jobs whose job_queue rows the caller locked end REVOKED, as
-- job_revoke ends a waiting job: out of the queue, a record written for one
-- that had none, waiters told, what follows them in a canvas advanced, the
-- jobs that wait on them and the batches they belong to counted.
CREATE OR REPLACE FUNCTION {schema}.revoke_waiting(ids uuid[], terminate boolean, message text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n      bigint;
    canvas uuid[];
    ended  uuid[];
BEGIN
    WITH unqueued AS (
        DELETE FROM {schema}.job_queue AS q
        WHERE q.job_id = ANY(revoke_waiting.ids)
        RETURNING q.job_id, q.task, q.queue, q.priority, q.run_at, q.args, q.kwargs, q.options,
                  q.expires_at, q.created_at
    ), recorded AS (
        INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options, run_at,
                                   expires_at, created_at, state, revoked_at, revoke_terminate,
                                   finished_at, error)
        SELECT u.job_id, u.task, u.queue, u.priority, u.args, u.kwargs, u.options, u.run_at,
               u.expires_at, u.created_at, 'REVOKED', now(), revoke_waiting.terminate, now(),
               {schema}.error_json('TaskRevokedError', revoke_waiting.message)
        FROM unqueued AS u
        WHERE u.args IS NOT NULL
        ON CONFLICT (id) DO NOTHING
        RETURNING id, options
    ), updated AS (
        UPDATE {schema}.jobs AS j
        SET revoked_at = COALESCE(j.revoked_at, now()),
            revoke_terminate = j.revoke_terminate OR revoke_waiting.terminate,
            state = 'REVOKED', finished_at = now(),
            error = {schema}.error_json('TaskRevokedError', revoke_waiting.message)
        WHERE j.id = ANY(ARRAY(SELECT u.job_id FROM unqueued AS u WHERE u.args IS NULL))
          AND j.state IN ('PENDING', 'RETRY')
        RETURNING j.id, j.options
    ), target AS (
        SELECT * FROM recorded UNION ALL SELECT * FROM updated
    ), told AS (
        SELECT count(pg_notify('{channel_done}', c.ids)) AS n
        FROM (SELECT string_agg(t.id::text, ',') AS ids
              FROM (SELECT id, (row_number() OVER ()) / 200 AS chunk FROM target) AS t
              GROUP BY t.chunk) AS c
    )
    SELECT count(*),
           array_agg(t.id) FILTER (WHERE t.options ?| ARRAY['link', 'link_error', 'chord']),
           array_agg(t.id)
    INTO n, canvas, ended
    FROM target AS t, told;
    IF canvas IS NOT NULL THEN
        PERFORM {schema}.advance_canvas(canvas);
    END IF;
    IF ended IS NOT NULL AND EXISTS (SELECT 1 FROM {schema}.job_dependencies) THEN
        PERFORM {schema}.dependencies_settle(ended);
    END IF;
    IF ended IS NOT NULL AND EXISTS (SELECT 1 FROM {schema}.batch_members) THEN
        PERFORM {schema}.batches_settle(ended);
    END IF;
    RETURN n;
END
$$;

-- SECURITY DEFINER: EXECUTE is the privilege (jobqueue db grant).
REVOKE EXECUTE ON FUNCTION {schema}.batches_settle(uuid[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.batch_open(uuid, jsonb, jsonb, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.batch_add(uuid, uuid[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.batch_close(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.batches_sweep(uuid, integer) FROM PUBLIC;

-- Roles granted before this release keep working without a new grant: the
-- completion statement and advance() read batch_members (as their caller)
-- and call batches_settle(). Every role that may run advance() (jobqueue db
-- grant's producers and workers) gets what batches need; every role that
-- reads all_jobs (readers too) the progress view; workers (those that may
-- delete leases) the sweep and retention's delete of completed batches. Not
-- taken back by the downgrade (it drops them).
DO $do$
DECLARE
    g oid;
BEGIN
    FOR g IN SELECT DISTINCT a.grantee FROM pg_proc AS p, aclexplode(p.proacl) AS a
             WHERE p.oid = '{schema}.advance(uuid[])'::regprocedure
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT SELECT ON {schema}.batch_members TO %s', g::regrole);
        EXECUTE format('GRANT EXECUTE ON FUNCTION {schema}.batches_settle(uuid[]), '
                       '{schema}.batch_open(uuid, jsonb, jsonb, jsonb), '
                       '{schema}.batch_add(uuid, uuid[]), {schema}.batch_close(uuid) TO %s',
                       g::regrole);
    END LOOP;
    FOR g IN SELECT DISTINCT a.grantee FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE c.oid = '{schema}.all_jobs'::regclass AND a.privilege_type = 'SELECT'
               AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT SELECT ON {schema}.batch_progress TO %s', g::regrole);
    END LOOP;
    FOR g IN SELECT DISTINCT a.grantee FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE c.oid = '{schema}.job_lease'::regclass AND a.privilege_type = 'DELETE'
               AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION {schema}.batches_sweep(uuid, integer) TO %s',
                       g::regrole);
        EXECUTE format('GRANT SELECT, DELETE ON {schema}.batches TO %s', g::regrole);
    END LOOP;
END
$do$;
"""

DOWNGRADE = r"""
-- Run in the transaction that finished `ids`: what follows them in a canvas
-- (advance_canvas), then the jobs that wait on them (dependencies_settle;
-- one probe of an empty table when no job waits on any). Jobs not finished,
-- or already advanced, change nothing.
CREATE OR REPLACE FUNCTION {schema}.advance(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer := {schema}.advance_canvas(ids);
BEGIN
    IF EXISTS (SELECT 1 FROM {schema}.job_dependencies) THEN
        PERFORM {schema}.dependencies_settle(ids);
    END IF;
    RETURN n;
END
$$;

-- Waiting jobs whose job_queue rows the caller locked end REVOKED, as
-- job_revoke ends a waiting job: out of the queue, a record written for one
-- that had none, waiters told, what follows them in a canvas advanced, and
-- the jobs that wait on them counted.
CREATE OR REPLACE FUNCTION {schema}.revoke_waiting(ids uuid[], terminate boolean, message text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n      bigint;
    canvas uuid[];
    ended  uuid[];
BEGIN
    WITH unqueued AS (
        DELETE FROM {schema}.job_queue AS q
        WHERE q.job_id = ANY(revoke_waiting.ids)
        RETURNING q.job_id, q.task, q.queue, q.priority, q.run_at, q.args, q.kwargs, q.options,
                  q.expires_at, q.created_at
    ), recorded AS (
        INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options, run_at,
                                   expires_at, created_at, state, revoked_at, revoke_terminate,
                                   finished_at, error)
        SELECT u.job_id, u.task, u.queue, u.priority, u.args, u.kwargs, u.options, u.run_at,
               u.expires_at, u.created_at, 'REVOKED', now(), revoke_waiting.terminate, now(),
               {schema}.error_json('TaskRevokedError', revoke_waiting.message)
        FROM unqueued AS u
        WHERE u.args IS NOT NULL
        ON CONFLICT (id) DO NOTHING
        RETURNING id, options
    ), updated AS (
        UPDATE {schema}.jobs AS j
        SET revoked_at = COALESCE(j.revoked_at, now()),
            revoke_terminate = j.revoke_terminate OR revoke_waiting.terminate,
            state = 'REVOKED', finished_at = now(),
            error = {schema}.error_json('TaskRevokedError', revoke_waiting.message)
        WHERE j.id = ANY(ARRAY(SELECT u.job_id FROM unqueued AS u WHERE u.args IS NULL))
          AND j.state IN ('PENDING', 'RETRY')
        RETURNING j.id, j.options
    ), target AS (
        SELECT * FROM recorded UNION ALL SELECT * FROM updated
    ), told AS (
        SELECT count(pg_notify('{channel_done}', c.ids)) AS n
        FROM (SELECT string_agg(t.id::text, ',') AS ids
              FROM (SELECT id, (row_number() OVER ()) / 200 AS chunk FROM target) AS t
              GROUP BY t.chunk) AS c
    )
    SELECT count(*),
           array_agg(t.id) FILTER (WHERE t.options ?| ARRAY['link', 'link_error', 'chord']),
           array_agg(t.id)
    INTO n, canvas, ended
    FROM target AS t, told;
    IF canvas IS NOT NULL THEN
        PERFORM {schema}.advance_canvas(canvas);
    END IF;
    IF ended IS NOT NULL AND EXISTS (SELECT 1 FROM {schema}.job_dependencies) THEN
        PERFORM {schema}.dependencies_settle(ended);
    END IF;
    RETURN n;
END
$$;

DROP VIEW {schema}.batch_progress;
DROP FUNCTION {schema}.batches_sweep(uuid, integer);
DROP FUNCTION {schema}.batch_close(uuid);
DROP FUNCTION {schema}.batch_add(uuid, uuid[]);
DROP FUNCTION {schema}.batch_open(uuid, jsonb, jsonb, jsonb);
DROP FUNCTION {schema}.batches_settle(uuid[]);
DROP FUNCTION {schema}.batch_finish(uuid);
DROP TABLE {schema}.batch_members;
DROP TABLE {schema}.batches;
"""


def _render(ddl: str) -> str:
    # Placeholders as in schema.sql (not str.format: the SQL holds JSON braces).
    schema = context.config.attributes["schema"]
    return (
        ddl.replace("{schema}", f'"{schema}"')
        .replace("{channel_jobs}", f"{schema}_jobs")
        .replace("{channel_done}", f"{schema}_done")
    )


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
