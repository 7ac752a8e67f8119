"""Fair scheduling per key (issue 24, item 5): ``@app.task(fair_key=...)``.

A job may carry a fair key (``job_queue.fair_key``); workers of 0021 claim
jobs with keys round-robin across keys (``job_claim_fair``), each key
``weight`` jobs a round (``fair_weights``, ``set_fair_weight()``), so one
key's backlog of a million jobs does not hold up another key's job. The
``fair_keys`` view shows waiting jobs per key. ``spawn()`` (canvas steps) and
``retry_jobs()`` keep a job's key (from its options, as the worker's retry,
rescue and release statements do).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06

Old workers: workers, beats and producers of 0020 may keep running while
this is applied and during the rollout. The new column is nullable (added
without a rewrite) and no statement of theirs names it: they claim jobs with
keys in plain claim order (correct, not fair), and a job they retry or
rescue loses its key (it is then claimed in order). Building
``job_queue_fair_idx`` holds a SHARE lock on ``job_queue`` while it reads
the table: enqueues and claims wait for it (the whole upgrade took 0.36 s
with a million waiting jobs, on 2 cores).
"""

from alembic import context, op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# Locked before any step of an upgrade runs (jobqueue.migrate.upgrade): the
# ALTER below needs job_queue to itself, and waiting for it after an earlier
# step locked `jobs` deadlocked with claims of older releases.
LOCK_FIRST = ("job_queue",)

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
ALTER TABLE {schema}.job_queue ADD COLUMN fair_key text COLLATE "C";

CREATE INDEX job_queue_fair_idx
    ON {schema}.job_queue (queue, fair_key, priority DESC, run_at, job_id)
    WHERE fair_key IS NOT NULL;

CREATE TABLE {schema}.fair_weights (
    fair_key text PRIMARY KEY,
    weight   integer NOT NULL,
    set_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fair_weights_weight_check CHECK (weight BETWEEN 2 AND 1000)
);

-- A key's weight, for every queue and worker at the next claim; 1 (the
-- default) removes the row. Bad input raises JQ002. SECURITY DEFINER:
-- EXECUTE is the privilege (jobqueue db grant: operators).
CREATE FUNCTION {schema}.set_fair_weight(fair_key text, weight integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF set_fair_weight.fair_key IS NULL OR set_fair_weight.fair_key = '' THEN
        RAISE EXCEPTION 'jobqueue.set_fair_weight: name a fair key' USING ERRCODE = 'JQ002';
    END IF;
    IF set_fair_weight.weight IS NULL OR set_fair_weight.weight NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'jobqueue.set_fair_weight: weight must be 1 to 1000, got %',
            COALESCE(set_fair_weight.weight::text, 'NULL') USING ERRCODE = 'JQ002';
    END IF;
    IF set_fair_weight.weight = 1 THEN
        DELETE FROM {schema}.fair_weights AS f WHERE f.fair_key = set_fair_weight.fair_key;
    ELSE
        INSERT INTO {schema}.fair_weights AS f (fair_key, weight)
        VALUES (set_fair_weight.fair_key, set_fair_weight.weight)
        ON CONFLICT ON CONSTRAINT fair_weights_pkey
        DO UPDATE SET weight = EXCLUDED.weight, set_at = now();
    END IF;
    RETURN set_fair_weight.weight;
END
$$;

REVOKE EXECUTE ON FUNCTION {schema}.set_fair_weight(text, integer) FROM PUBLIC;

-- Waiting jobs per queue and fair key: how many wait, how many are due, how
-- long the oldest due one has waited, and the key's weight. Reads job_queue
-- (waiting jobs only).
CREATE VIEW {schema}.fair_keys AS
SELECT q.queue, q.fair_key, count(*) AS waiting,
       count(*) FILTER (WHERE q.run_at <= now()) AS due,
       now() - min(q.run_at) FILTER (WHERE q.run_at <= now()) AS oldest_due_wait,
       COALESCE(max(f.weight), 1) AS weight
FROM {schema}.job_queue AS q
LEFT JOIN {schema}.fair_weights AS f ON f.fair_key = q.fair_key
WHERE q.fair_key IS NOT NULL
GROUP BY q.queue, q.fair_key;

CREATE OR REPLACE FUNCTION {schema}.spawn(sig jsonb, prepend jsonb, parent uuid, root uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kind     text := COALESCE(sig ->> 'type', 'task');
    member   jsonb;
    new_id   uuid;
    chord_id uuid;
    due      timestamptz;
    q        text;
BEGIN
    IF kind = 'group' THEN
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'tasks') LOOP
            PERFORM {schema}.spawn(member, prepend, parent, root);
        END LOOP;
        RETURN;
    ELSIF kind = 'chord' THEN
        INSERT INTO {schema}.chords (id, remaining, body, root_id)
        VALUES ((sig ->> 'id')::uuid, jsonb_array_length(sig -> 'header'), sig -> 'body', root)
        ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF jsonb_array_length(sig -> 'header') = 0 THEN
            UPDATE {schema}.chords SET state = 'DONE', finished_at = now()
            WHERE id = (sig ->> 'id')::uuid;
            PERFORM {schema}.spawn(sig -> 'body', '[[]]'::jsonb, parent, root);
            RETURN;
        END IF;
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'header') LOOP
            PERFORM {schema}.spawn(member, prepend, parent, root);
        END LOOP;
        RETURN;
    END IF;

    new_id := (sig ->> 'id')::uuid;
    chord_id := (sig -> 'options' ->> 'chord')::uuid;
    due := now() + make_interval(secs => COALESCE((sig ->> 'countdown')::float8, 0));
    q := COALESCE(sig ->> 'queue', 'default');
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options, run_at, expires_at,
                          root_id, parent_id, group_id, group_index)
    VALUES (new_id, sig ->> 'task', q, COALESCE((sig ->> 'priority')::int, 0),
            CASE WHEN prepend IS NULL OR COALESCE((sig ->> 'immutable')::boolean, false)
                 THEN COALESCE(sig -> 'args', '[]') ELSE prepend || COALESCE(sig -> 'args', '[]')
            END,
            COALESCE(sig -> 'kwargs', '{}'), COALESCE(sig -> 'options', '{}'), due,
            now() + make_interval(secs => (sig ->> 'expires_in')::float8),
            COALESCE(root, new_id), parent, (sig ->> 'group_id')::uuid,
            (sig ->> 'group_index')::int)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;  -- spawned before: spawning is idempotent
    END IF;
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                               concurrency_key, fair_key)
    VALUES (new_id, q, COALESCE((sig ->> 'priority')::int, 0), due, sig ->> 'task',
            sig -> 'options' ->> 'rate_key', sig -> 'options' ->> 'concurrency_key',
            sig -> 'options' ->> 'fair_key');
    IF chord_id IS NOT NULL THEN
        INSERT INTO {schema}.chord_members (job_id, chord_id) VALUES (new_id, chord_id);
    END IF;
    PERFORM pg_notify('{channel_jobs}', q);
END
$$;

CREATE OR REPLACE FUNCTION {schema}.retry_jobs(ids uuid[] DEFAULT NULL, queue text DEFAULT NULL,
                                    task text DEFAULT NULL, state text DEFAULT NULL,
                                    exception text DEFAULT NULL,
                                    enqueued_after timestamptz DEFAULT NULL,
                                    enqueued_before timestamptz DEFAULT NULL,
                                    finished_after timestamptz DEFAULT NULL,
                                    finished_before timestamptz DEFAULT NULL,
                                    max_jobs integer DEFAULT 10000,
                                    reset_retries boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    picked uuid[];
    canvas uuid[];
    n      bigint;
    woken  bigint;
    c      record;
    sig    jsonb;
BEGIN
    EXECUTE 'SELECT ARRAY(SELECT j.id FROM {schema}.jobs AS j'
            || ' WHERE j.state IN (''FAILURE'', ''REVOKED'')'
            || ' AND NOT (j.state = ''FAILURE'' AND j.attempts = 0)'
            || {schema}.job_filter('jobs', ARRAY['FAILURE', 'REVOKED'], ids, queue, task, state,
                                   exception, enqueued_after, enqueued_before, finished_after,
                                   finished_before, max_jobs)
            || ' LIMIT $10 FOR UPDATE OF j SKIP LOCKED)'
    INTO picked
    USING ids, queue, task, state, exception, enqueued_after, enqueued_before, finished_after,
          finished_before, max_jobs;
    -- The attempt that ended it stays in the history (completion and rescue
    -- wrote it; this covers a record finished by hand).
    INSERT INTO {schema}.job_attempts (job_id, attempt, worker_id, started_at, finished_at,
                                       state, error)
    SELECT j.id, j.attempts, j.worker_id, j.started_at, COALESCE(j.finished_at, now()), j.state,
           j.error
    FROM {schema}.jobs AS j
    WHERE j.id = ANY(picked) AND j.attempts > 0
    ON CONFLICT (job_id, attempt) DO NOTHING;
    WITH retried AS (
        UPDATE {schema}.jobs AS j
        SET state = CASE WHEN j.attempts > 0 THEN 'RETRY' ELSE 'PENDING' END,
            error = NULL, result = NULL, finished_at = NULL, run_at = now(),
            revoked_at = NULL, revoke_terminate = false,
            progress_state = NULL, progress = NULL,
            expires_at = CASE WHEN j.expires_at <= now() THEN NULL ELSE j.expires_at END,
            options = CASE WHEN retry_jobs.reset_retries
                           THEN j.options || jsonb_build_object('retries_base', j.attempts)
                           ELSE j.options END
        WHERE j.id = ANY(picked) AND j.state IN ('FAILURE', 'REVOKED')
        RETURNING j.id, j.queue, j.priority, j.run_at, j.task, j.options
    ), queued AS (
        INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                        concurrency_key, fair_key)
        SELECT r.id, r.queue, r.priority, r.run_at, r.task, r.options ->> 'rate_key',
               r.options ->> 'concurrency_key', r.options ->> 'fair_key'
        FROM retried AS r
        RETURNING job_id
    )
    SELECT count(*),
           array_agg(r.id) FILTER (WHERE r.options ?| ARRAY['chord', 'link']),
           (SELECT count(pg_notify('{channel_jobs}', d.queue))
            FROM (SELECT DISTINCT x.queue FROM retried AS x) AS d)
    INTO n, canvas, woken
    FROM retried AS r;

    -- A retried chord member counts again only if its chord can still run
    -- its body: open, or failed with a body that never ran (then reopened:
    -- every member not SUCCESS is outstanding again). A chord whose body ran
    -- is not touched: the member runs, and its success spawns nothing.
    FOR c IN
        SELECT ch.* FROM {schema}.chords AS ch
        WHERE ch.id IN (SELECT (j.options ->> 'chord')::uuid FROM {schema}.jobs AS j
                        WHERE j.id = ANY(canvas) AND j.options ? 'chord')
        ORDER BY ch.id
        FOR UPDATE
    LOOP
        IF c.state = 'FAILED' AND {schema}.canvas_unfail(c.body) THEN
            UPDATE {schema}.chords AS ch
            SET state = 'PENDING', finished_at = NULL,
                remaining = (SELECT count(*) FROM {schema}.jobs AS j
                             WHERE j.group_id = c.id AND j.state <> 'SUCCESS')
            WHERE ch.id = c.id;
            c.state := 'PENDING';
        END IF;
        IF c.state = 'PENDING' THEN
            INSERT INTO {schema}.chord_members (job_id, chord_id)
            SELECT j.id, c.id FROM {schema}.jobs AS j
            WHERE j.id = ANY(canvas) AND (j.options ->> 'chord')::uuid = c.id
            ON CONFLICT (job_id) DO NOTHING;
        END IF;
    END LOOP;
    -- Its callbacks, failed with it, may run after it this time.
    FOR sig IN
        SELECT l.value FROM {schema}.jobs AS j, jsonb_array_elements(j.options -> 'link') AS l
        WHERE j.id = ANY(canvas) AND j.options ? 'link'
    LOOP
        PERFORM {schema}.canvas_unfail(sig);
    END LOOP;
    RETURN n;
END
$$;
-- Roles granted before this release keep working without a new grant:
-- workers (those that may delete leases) read the weights at every fair
-- claim; roles that may pause queues (operators) set weights; roles that
-- read the reporting views (readers) read the fair_keys view. Not taken back by the
-- downgrade (it drops the objects).
DO $do$
DECLARE
    g oid;
BEGIN
    FOR g IN SELECT DISTINCT a.grantee FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE c.oid = '{schema}.job_lease'::regclass AND a.privilege_type = 'DELETE'
               AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT SELECT ON {schema}.fair_weights TO %s', g::regrole);
    END LOOP;
    FOR g IN SELECT DISTINCT a.grantee FROM pg_proc AS p, aclexplode(p.proacl) AS a
             WHERE p.oid = '{schema}.pause_queue(text, text)'::regprocedure
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION {schema}.set_fair_weight(text, integer) TO %s',
                       g::regrole);
    END LOOP;
    FOR g IN SELECT DISTINCT a.grantee FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE c.oid = '{schema}.queue_stats'::regclass AND a.privilege_type = 'SELECT'
               AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT SELECT ON {schema}.fair_keys TO %s', g::regrole);
    END LOOP;
END
$do$;
"""

DOWNGRADE = r"""
DROP VIEW {schema}.fair_keys;
DROP FUNCTION {schema}.set_fair_weight(text, integer);
DROP TABLE {schema}.fair_weights;

CREATE OR REPLACE FUNCTION {schema}.spawn(sig jsonb, prepend jsonb, parent uuid, root uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kind     text := COALESCE(sig ->> 'type', 'task');
    member   jsonb;
    new_id   uuid;
    chord_id uuid;
    due      timestamptz;
    q        text;
BEGIN
    IF kind = 'group' THEN
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'tasks') LOOP
            PERFORM {schema}.spawn(member, prepend, parent, root);
        END LOOP;
        RETURN;
    ELSIF kind = 'chord' THEN
        INSERT INTO {schema}.chords (id, remaining, body, root_id)
        VALUES ((sig ->> 'id')::uuid, jsonb_array_length(sig -> 'header'), sig -> 'body', root)
        ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF jsonb_array_length(sig -> 'header') = 0 THEN
            UPDATE {schema}.chords SET state = 'DONE', finished_at = now()
            WHERE id = (sig ->> 'id')::uuid;
            PERFORM {schema}.spawn(sig -> 'body', '[[]]'::jsonb, parent, root);
            RETURN;
        END IF;
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'header') LOOP
            PERFORM {schema}.spawn(member, prepend, parent, root);
        END LOOP;
        RETURN;
    END IF;

    new_id := (sig ->> 'id')::uuid;
    chord_id := (sig -> 'options' ->> 'chord')::uuid;
    due := now() + make_interval(secs => COALESCE((sig ->> 'countdown')::float8, 0));
    q := COALESCE(sig ->> 'queue', 'default');
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options, run_at, expires_at,
                          root_id, parent_id, group_id, group_index)
    VALUES (new_id, sig ->> 'task', q, COALESCE((sig ->> 'priority')::int, 0),
            CASE WHEN prepend IS NULL OR COALESCE((sig ->> 'immutable')::boolean, false)
                 THEN COALESCE(sig -> 'args', '[]') ELSE prepend || COALESCE(sig -> 'args', '[]')
            END,
            COALESCE(sig -> 'kwargs', '{}'), COALESCE(sig -> 'options', '{}'), due,
            now() + make_interval(secs => (sig ->> 'expires_in')::float8),
            COALESCE(root, new_id), parent, (sig ->> 'group_id')::uuid,
            (sig ->> 'group_index')::int)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;  -- spawned before: spawning is idempotent
    END IF;
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                               concurrency_key)
    VALUES (new_id, q, COALESCE((sig ->> 'priority')::int, 0), due, sig ->> 'task',
            sig -> 'options' ->> 'rate_key', sig -> 'options' ->> 'concurrency_key');
    IF chord_id IS NOT NULL THEN
        INSERT INTO {schema}.chord_members (job_id, chord_id) VALUES (new_id, chord_id);
    END IF;
    PERFORM pg_notify('{channel_jobs}', q);
END
$$;

CREATE OR REPLACE FUNCTION {schema}.retry_jobs(ids uuid[] DEFAULT NULL, queue text DEFAULT NULL,
                                    task text DEFAULT NULL, state text DEFAULT NULL,
                                    exception text DEFAULT NULL,
                                    enqueued_after timestamptz DEFAULT NULL,
                                    enqueued_before timestamptz DEFAULT NULL,
                                    finished_after timestamptz DEFAULT NULL,
                                    finished_before timestamptz DEFAULT NULL,
                                    max_jobs integer DEFAULT 10000,
                                    reset_retries boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    picked uuid[];
    canvas uuid[];
    n      bigint;
    woken  bigint;
    c      record;
    sig    jsonb;
BEGIN
    EXECUTE 'SELECT ARRAY(SELECT j.id FROM {schema}.jobs AS j'
            || ' WHERE j.state IN (''FAILURE'', ''REVOKED'')'
            || ' AND NOT (j.state = ''FAILURE'' AND j.attempts = 0)'
            || {schema}.job_filter('jobs', ARRAY['FAILURE', 'REVOKED'], ids, queue, task, state,
                                   exception, enqueued_after, enqueued_before, finished_after,
                                   finished_before, max_jobs)
            || ' LIMIT $10 FOR UPDATE OF j SKIP LOCKED)'
    INTO picked
    USING ids, queue, task, state, exception, enqueued_after, enqueued_before, finished_after,
          finished_before, max_jobs;
    -- The attempt that ended it stays in the history (completion and rescue
    -- wrote it; this covers a record finished by hand).
    INSERT INTO {schema}.job_attempts (job_id, attempt, worker_id, started_at, finished_at,
                                       state, error)
    SELECT j.id, j.attempts, j.worker_id, j.started_at, COALESCE(j.finished_at, now()), j.state,
           j.error
    FROM {schema}.jobs AS j
    WHERE j.id = ANY(picked) AND j.attempts > 0
    ON CONFLICT (job_id, attempt) DO NOTHING;
    WITH retried AS (
        UPDATE {schema}.jobs AS j
        SET state = CASE WHEN j.attempts > 0 THEN 'RETRY' ELSE 'PENDING' END,
            error = NULL, result = NULL, finished_at = NULL, run_at = now(),
            revoked_at = NULL, revoke_terminate = false,
            progress_state = NULL, progress = NULL,
            expires_at = CASE WHEN j.expires_at <= now() THEN NULL ELSE j.expires_at END,
            options = CASE WHEN retry_jobs.reset_retries
                           THEN j.options || jsonb_build_object('retries_base', j.attempts)
                           ELSE j.options END
        WHERE j.id = ANY(picked) AND j.state IN ('FAILURE', 'REVOKED')
        RETURNING j.id, j.queue, j.priority, j.run_at, j.task, j.options
    ), queued AS (
        INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                        concurrency_key)
        SELECT r.id, r.queue, r.priority, r.run_at, r.task, r.options ->> 'rate_key',
               r.options ->> 'concurrency_key'
        FROM retried AS r
        RETURNING job_id
    )
    SELECT count(*),
           array_agg(r.id) FILTER (WHERE r.options ?| ARRAY['chord', 'link']),
           (SELECT count(pg_notify('{channel_jobs}', d.queue))
            FROM (SELECT DISTINCT x.queue FROM retried AS x) AS d)
    INTO n, canvas, woken
    FROM retried AS r;

    -- A retried chord member counts again only if its chord can still run
    -- its body: open, or failed with a body that never ran (then reopened:
    -- every member not SUCCESS is outstanding again). A chord whose body ran
    -- is not touched: the member runs, and its success spawns nothing.
    FOR c IN
        SELECT ch.* FROM {schema}.chords AS ch
        WHERE ch.id IN (SELECT (j.options ->> 'chord')::uuid FROM {schema}.jobs AS j
                        WHERE j.id = ANY(canvas) AND j.options ? 'chord')
        ORDER BY ch.id
        FOR UPDATE
    LOOP
        IF c.state = 'FAILED' AND {schema}.canvas_unfail(c.body) THEN
            UPDATE {schema}.chords AS ch
            SET state = 'PENDING', finished_at = NULL,
                remaining = (SELECT count(*) FROM {schema}.jobs AS j
                             WHERE j.group_id = c.id AND j.state <> 'SUCCESS')
            WHERE ch.id = c.id;
            c.state := 'PENDING';
        END IF;
        IF c.state = 'PENDING' THEN
            INSERT INTO {schema}.chord_members (job_id, chord_id)
            SELECT j.id, c.id FROM {schema}.jobs AS j
            WHERE j.id = ANY(canvas) AND (j.options ->> 'chord')::uuid = c.id
            ON CONFLICT (job_id) DO NOTHING;
        END IF;
    END LOOP;
    -- Its callbacks, failed with it, may run after it this time.
    FOR sig IN
        SELECT l.value FROM {schema}.jobs AS j, jsonb_array_elements(j.options -> 'link') AS l
        WHERE j.id = ANY(canvas) AND j.options ? 'link'
    LOOP
        PERFORM {schema}.canvas_unfail(sig);
    END LOOP;
    RETURN n;
END
$$;

DROP INDEX {schema}.job_queue_fair_idx;
ALTER TABLE {schema}.job_queue DROP COLUMN fair_key;
"""


def _render(ddl: str) -> str:
    # Placeholders as in schema.sql (not str.format: the SQL holds JSON braces).
    schema = context.config.attributes["schema"]
    return ddl.replace("{schema}", f'"{schema}"').replace("{channel_jobs}", f"{schema}_jobs")


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
