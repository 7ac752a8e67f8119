"""Operations in SQL: pause and resume queues, purge, and retry, cancel, delete,
move and find jobs by filter (issue 21).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

Old workers: workers and producers of 0012 may keep running while this is
applied and during the rollout. Nothing they use changes: the new table and
functions are new objects, and queue_stats gains a last column (``paused``)
with ``CREATE OR REPLACE VIEW``, which keeps its columns, grants and readers.
But **a 0012 worker does not skip paused queues**: its claim statement is its
own, so a queue paused while 0012 workers still run is paused only for the
workers of this release. Pause after the rollout. Every other operation works
whatever release the workers run (a 0012 worker ignores the ``retries_base``
that ``retry_jobs(reset_retries => true)`` writes: a job it runs has the
retries of its whole history, not fresh ones).

No row is read or written: the upgrade takes milliseconds (the view swap
waits for readers of queue_stats).

Every operation is one function of the schema (docs/sql.md, "Operations"),
called by Python (``Store``), the CLI and plain SQL alike. The bulk ones take
the same filters, change at most ``max_jobs`` rows per call (one short
transaction that locks only those rows, ``FOR UPDATE SKIP LOCKED``) and
return how many: callers loop until a call returns 0.
"""

from alembic import context, op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- Queues no worker of this release claims from (pause_queue), until resumed.
-- Jobs keep arriving; queue_stats shows the pause.
CREATE TABLE {schema}.queue_pauses (
    queue     text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    reason    text,
    CONSTRAINT queue_pauses_queue_check CHECK (queue <> '')
);

-- The filters every bulk operation takes, checked (SQLSTATE JQ002: bad input;
-- JQ003: a state this operation does not apply to, `allowed`), as a WHERE
-- clause over $1..$9 (the filters, in order) for EXECUTE ... USING. `source`:
-- 'jobs' (alias j: records), 'waiting' (alias q: job_queue, and j: its record,
-- which the clause needs only when it filters by state, error or times: see
-- job_filter_joins) or 'all' (alias j: all_jobs).
CREATE FUNCTION {schema}.job_filter(source text, allowed text[], ids uuid[], queue text,
                                    task text, state text, exception text,
                                    enqueued_after timestamptz, enqueued_before timestamptz,
                                    finished_after timestamptz, finished_before timestamptz,
                                    max_jobs integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    w      boolean := source = 'waiting';
    clause text := '';
BEGIN
    IF max_jobs IS NULL OR max_jobs < 0 THEN
        RAISE EXCEPTION 'jobqueue: max_jobs must be 0 or more, got %',
            COALESCE(max_jobs::text, 'NULL') USING ERRCODE = 'JQ002';
    END IF;
    IF queue = '' OR task = '' OR exception = '' THEN
        RAISE EXCEPTION 'jobqueue: an empty queue, task or exception name matches no job'
            USING ERRCODE = 'JQ002', HINT = 'pass NULL not to filter by it';
    END IF;
    IF state IS NOT NULL AND NOT state = ANY(ARRAY['PENDING', 'STARTED', 'RETRY', 'SUCCESS',
                                                   'FAILURE', 'REVOKED']) THEN
        RAISE EXCEPTION 'jobqueue: unknown state %', quote_literal(state)
            USING ERRCODE = 'JQ002',
                  HINT = 'one of PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED';
    END IF;
    IF state IS NOT NULL AND NOT state = ANY(allowed) THEN
        RAISE EXCEPTION 'jobqueue: this operation does not apply to % jobs (only to %)',
            state, array_to_string(allowed, ', ')
            USING ERRCODE = 'JQ003';
    END IF;
    IF ids IS NOT NULL THEN
        clause := clause || CASE WHEN w THEN ' AND q.job_id = ANY($1)'
                                 ELSE ' AND j.id = ANY($1)' END;
    END IF;
    IF queue IS NOT NULL THEN
        clause := clause || CASE WHEN w THEN ' AND q.queue = $2' ELSE ' AND j.queue = $2' END;
    END IF;
    IF task IS NOT NULL THEN
        clause := clause || CASE WHEN w THEN ' AND q.task = $3' ELSE ' AND j.task = $3' END;
    END IF;
    IF state IS NOT NULL THEN
        clause := clause || CASE WHEN w THEN ' AND COALESCE(j.state, ''PENDING'') = $4'
                                 ELSE ' AND j.state = $4' END;
    END IF;
    IF exception IS NOT NULL THEN
        clause := clause || ' AND j.error ->> ''type'' = $5';
    END IF;
    IF enqueued_after IS NOT NULL THEN
        clause := clause || CASE WHEN w THEN ' AND COALESCE(q.created_at, j.created_at) >= $6'
                                 ELSE ' AND j.created_at >= $6' END;
    END IF;
    IF enqueued_before IS NOT NULL THEN
        clause := clause || CASE WHEN w THEN ' AND COALESCE(q.created_at, j.created_at) < $7'
                                 ELSE ' AND j.created_at < $7' END;
    END IF;
    IF finished_after IS NOT NULL THEN
        clause := clause || ' AND j.finished_at >= $8';  -- a waiting job has none
    END IF;
    IF finished_before IS NOT NULL THEN
        clause := clause || ' AND j.finished_at < $9';
    END IF;
    RETURN clause;
END
$$;

-- Whether a clause of job_filter('waiting', ...) reads the job's record.
CREATE FUNCTION {schema}.job_filter_joins(clause text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT clause LIKE '%j.%'
$$;

-- Up to max_jobs waiting jobs (job_queue rows) matching the filters, locked
-- (FOR UPDATE SKIP LOCKED: rows a claim holds are left to it).
CREATE FUNCTION {schema}.waiting_lock(clause text, ids uuid[], queue text, task text, state text,
                                      exception text, enqueued_after timestamptz,
                                      enqueued_before timestamptz, finished_after timestamptz,
                                      finished_before timestamptz, max_jobs integer)
RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    found uuid[];
BEGIN
    EXECUTE 'SELECT ARRAY(SELECT q.job_id FROM {schema}.job_queue AS q'
            || CASE WHEN {schema}.job_filter_joins(clause)
                    THEN ' LEFT JOIN {schema}.jobs AS j ON j.id = q.job_id' ELSE '' END
            || ' WHERE true' || clause || ' LIMIT $10 FOR UPDATE OF q SKIP LOCKED)'
    INTO found
    USING ids, queue, task, state, exception, enqueued_after, enqueued_before, finished_after,
          finished_before, max_jobs;
    RETURN found;
END
$$;

-- Waiting jobs whose job_queue rows the caller locked end REVOKED, as
-- job_revoke ends a waiting job: out of the queue, a record written for one
-- that had none, waiters told, what follows them in a canvas advanced.
CREATE FUNCTION {schema}.revoke_waiting(ids uuid[], terminate boolean, message text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n      bigint;
    canvas uuid[];
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
           array_agg(t.id) FILTER (WHERE t.options ?| ARRAY['link', 'link_error', 'chord'])
    INTO n, canvas
    FROM target AS t, told;
    IF canvas IS NOT NULL THEN
        PERFORM {schema}.advance(canvas);
    END IF;
    RETURN n;
END
$$;

-- Running jobs (locked by the caller) are marked revoked, as job_revoke marks
-- them, and their workers told on the control channel.
CREATE FUNCTION {schema}.revoke_running(ids uuid[], terminate boolean) RETURNS bigint
LANGUAGE sql AS $$
    WITH marked AS (
        UPDATE {schema}.jobs AS j
        SET revoked_at = COALESCE(j.revoked_at, now()),
            revoke_terminate = j.revoke_terminate OR revoke_running.terminate
        WHERE j.id = ANY(revoke_running.ids) AND j.state = 'STARTED'
        RETURNING j.id, j.worker_id
    )
    SELECT count(pg_notify('{channel_control}',
                           json_build_object('revoke', m.id, 'worker', m.worker_id)::text))
    FROM marked AS m
$$;

-- Every job and chord id of a signature, with its link callbacks (what
-- fail_tree() writes when it can no longer run); not its error callbacks.
CREATE FUNCTION {schema}.canvas_ids(sig jsonb) RETURNS TABLE (kind text, id uuid)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k      text := COALESCE(sig ->> 'type', 'task');
    member jsonb;
BEGIN
    IF k = 'group' THEN
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'tasks') LOOP
            RETURN QUERY SELECT * FROM {schema}.canvas_ids(member);
        END LOOP;
        RETURN;
    END IF;
    kind := CASE WHEN k = 'chord' THEN 'chord' ELSE 'job' END;
    id := (sig ->> 'id')::uuid;
    RETURN NEXT;
    IF k = 'chord' THEN
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'header') LOOP
            RETURN QUERY SELECT * FROM {schema}.canvas_ids(member);
        END LOOP;
        RETURN QUERY SELECT * FROM {schema}.canvas_ids(sig -> 'body');
        RETURN;
    END IF;
    FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'options' -> 'link') LOOP
        RETURN QUERY SELECT * FROM {schema}.canvas_ids(member);
    END LOOP;
END
$$;

-- Work a failure made impossible, made possible again: if no job of `sig`
-- ever ran (each is absent or FAILURE with no attempt: written by
-- fail_tree()), their records and chords are deleted, so spawn() creates them
-- afresh when their turn comes; true. Otherwise nothing changes; false.
CREATE FUNCTION {schema}.canvas_unfail(sig jsonb) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    jobs   uuid[];
    chords uuid[];
BEGIN
    SELECT array_agg(c.id) FILTER (WHERE c.kind = 'job'),
           array_agg(c.id) FILTER (WHERE c.kind = 'chord')
    INTO jobs, chords
    FROM {schema}.canvas_ids(sig) AS c;
    IF EXISTS (SELECT 1 FROM {schema}.jobs AS j
               WHERE j.id = ANY(jobs) AND NOT (j.state = 'FAILURE' AND j.attempts = 0))
       OR EXISTS (SELECT 1 FROM {schema}.job_queue AS q WHERE q.job_id = ANY(jobs)) THEN
        RETURN false;
    END IF;
    DELETE FROM {schema}.jobs AS j WHERE j.id = ANY(jobs);
    DELETE FROM {schema}.chords AS c WHERE c.id = ANY(chords);
    RETURN true;
END
$$;

CREATE FUNCTION {schema}.pause_queue(queue text, reason text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pause_queue.queue IS NULL OR pause_queue.queue = '' THEN
        RAISE EXCEPTION 'jobqueue.pause_queue: name a queue' USING ERRCODE = 'JQ002';
    END IF;
    INSERT INTO {schema}.queue_pauses (queue, reason)
    VALUES (pause_queue.queue, pause_queue.reason)
    ON CONFLICT ON CONSTRAINT queue_pauses_pkey DO NOTHING;
    RETURN FOUND;
END
$$;

CREATE FUNCTION {schema}.resume_queue(queue text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF resume_queue.queue IS NULL OR resume_queue.queue = '' THEN
        RAISE EXCEPTION 'jobqueue.resume_queue: name a queue' USING ERRCODE = 'JQ002';
    END IF;
    DELETE FROM {schema}.queue_pauses AS p WHERE p.queue = resume_queue.queue;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('{channel_jobs}', resume_queue.queue);  -- idle workers claim at once
    RETURN true;
END
$$;

CREATE FUNCTION {schema}.purge_queue(queue text DEFAULT NULL, max_jobs integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    clause text := {schema}.job_filter('waiting', ARRAY['PENDING', 'RETRY'], NULL,
                                       purge_queue.queue, NULL, NULL, NULL, NULL, NULL, NULL,
                                       NULL, purge_queue.max_jobs);
BEGIN
    RETURN {schema}.revoke_waiting(
        {schema}.waiting_lock(clause, NULL, purge_queue.queue, NULL, NULL, NULL, NULL, NULL,
                              NULL, NULL, purge_queue.max_jobs),
        false, 'purged from queue ' || COALESCE(purge_queue.queue, '(every queue)'));
END
$$;

CREATE FUNCTION {schema}.cancel_jobs(ids uuid[] DEFAULT NULL, queue text DEFAULT NULL,
                                     task text DEFAULT NULL, state text DEFAULT NULL,
                                     exception text DEFAULT NULL,
                                     enqueued_after timestamptz DEFAULT NULL,
                                     enqueued_before timestamptz DEFAULT NULL,
                                     finished_after timestamptz DEFAULT NULL,
                                     finished_before timestamptz DEFAULT NULL,
                                     max_jobs integer DEFAULT 10000,
                                     terminate boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    waiting uuid[] := '{}';
    running uuid[];
    n       bigint := 0;
BEGIN
    IF cancel_jobs.state IS DISTINCT FROM 'STARTED' THEN
        waiting := {schema}.waiting_lock(
            {schema}.job_filter('waiting', ARRAY['PENDING', 'RETRY', 'STARTED'], ids, queue, task,
                                state, exception, enqueued_after, enqueued_before,
                                finished_after, finished_before, max_jobs),
            ids, queue, task, state, exception, enqueued_after, enqueued_before,
            finished_after, finished_before, max_jobs);
        n := {schema}.revoke_waiting(waiting, cancel_jobs.terminate, 'revoked');
    END IF;
    IF cancel_jobs.state IS NULL OR cancel_jobs.state = 'STARTED' THEN
        -- Running jobs not revoked yet (or not with terminate, when asked): a
        -- caller looping until 0 is not held up by jobs whose workers have yet
        -- to act on their revocation.
        EXECUTE 'SELECT ARRAY(SELECT j.id FROM {schema}.jobs AS j'
                || ' WHERE j.id = ANY(ARRAY(SELECT l.job_id FROM {schema}.job_lease AS l))'
                || ' AND j.state = ''STARTED'''
                || ' AND (j.revoked_at IS NULL OR ($11 AND NOT j.revoke_terminate))'
                || {schema}.job_filter('jobs', ARRAY['PENDING', 'RETRY', 'STARTED'], ids, queue,
                                       task, state, exception, enqueued_after, enqueued_before,
                                       finished_after, finished_before, max_jobs)
                || ' LIMIT $10 FOR UPDATE OF j SKIP LOCKED)'
        INTO running
        USING ids, queue, task, state, exception, enqueued_after, enqueued_before,
              finished_after, finished_before, max_jobs - cardinality(waiting),
              cancel_jobs.terminate;
        n := n + {schema}.revoke_running(running, cancel_jobs.terminate);
    END IF;
    RETURN n;
END
$$;

-- Finished unsuccessful jobs go back to their queue as a new attempt. Not a
-- FAILURE that never ran (attempts 0: failed because what it waited for
-- failed, or its record was lost): retry what it depended on instead.
CREATE FUNCTION {schema}.retry_jobs(ids uuid[] DEFAULT NULL, queue text DEFAULT NULL,
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

-- Finished jobs and their attempts are deleted. Unfinished ones are skipped
-- (asking for an unfinished state raises JQ003).
CREATE FUNCTION {schema}.delete_jobs(ids uuid[] DEFAULT NULL, queue text DEFAULT NULL,
                                     task text DEFAULT NULL, state text DEFAULT NULL,
                                     exception text DEFAULT NULL,
                                     enqueued_after timestamptz DEFAULT NULL,
                                     enqueued_before timestamptz DEFAULT NULL,
                                     finished_after timestamptz DEFAULT NULL,
                                     finished_before timestamptz DEFAULT NULL,
                                     max_jobs integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    picked uuid[];
    n      bigint;
BEGIN
    EXECUTE 'SELECT ARRAY(SELECT j.id FROM {schema}.jobs AS j'
            || ' WHERE j.state IN (''SUCCESS'', ''FAILURE'', ''REVOKED'')'
            || {schema}.job_filter('jobs', ARRAY['SUCCESS', 'FAILURE', 'REVOKED'], ids, queue,
                                   task, state, exception, enqueued_after, enqueued_before,
                                   finished_after, finished_before, max_jobs)
            || ' LIMIT $10 FOR UPDATE OF j SKIP LOCKED)'
    INTO picked
    USING ids, queue, task, state, exception, enqueued_after, enqueued_before, finished_after,
          finished_before, max_jobs;
    DELETE FROM {schema}.job_attempts AS a WHERE a.job_id = ANY(picked);
    DELETE FROM {schema}.jobs AS j WHERE j.id = ANY(picked);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Waiting jobs get a new queue, priority or due time (NULL: unchanged).
CREATE FUNCTION {schema}.move_jobs(ids uuid[] DEFAULT NULL, queue text DEFAULT NULL,
                                   task text DEFAULT NULL, state text DEFAULT NULL,
                                   exception text DEFAULT NULL,
                                   enqueued_after timestamptz DEFAULT NULL,
                                   enqueued_before timestamptz DEFAULT NULL,
                                   finished_after timestamptz DEFAULT NULL,
                                   finished_before timestamptz DEFAULT NULL,
                                   max_jobs integer DEFAULT 10000, to_queue text DEFAULT NULL,
                                   to_priority integer DEFAULT NULL,
                                   to_eta timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    picked uuid[];
    n      bigint;
    woken  bigint;
BEGIN
    IF to_queue IS NULL AND to_priority IS NULL AND to_eta IS NULL THEN
        RAISE EXCEPTION 'jobqueue.move_jobs: give to_queue, to_priority or to_eta'
            USING ERRCODE = 'JQ002';
    END IF;
    IF to_queue = '' THEN
        RAISE EXCEPTION 'jobqueue.move_jobs: to_queue is empty' USING ERRCODE = 'JQ002';
    END IF;
    picked := {schema}.waiting_lock(
        {schema}.job_filter('waiting', ARRAY['PENDING', 'RETRY'], ids, queue, task, state,
                            exception, enqueued_after, enqueued_before, finished_after,
                            finished_before, max_jobs),
        ids, queue, task, state, exception, enqueued_after, enqueued_before, finished_after,
        finished_before, max_jobs);
    WITH moved AS (
        UPDATE {schema}.job_queue AS q
        SET queue = COALESCE(to_queue, q.queue), priority = COALESCE(to_priority, q.priority),
            run_at = COALESCE(to_eta, q.run_at)
        WHERE q.job_id = ANY(picked)
        RETURNING q.job_id, q.queue, q.args
    ), recorded AS (
        UPDATE {schema}.jobs AS j
        SET queue = COALESCE(to_queue, j.queue), priority = COALESCE(to_priority, j.priority),
            run_at = COALESCE(to_eta, j.run_at)
        WHERE j.id = ANY(ARRAY(SELECT m.job_id FROM moved AS m WHERE m.args IS NULL))
          AND j.state IN ('PENDING', 'RETRY')
    )
    SELECT count(*), (SELECT count(pg_notify('{channel_jobs}', d.queue))
                      FROM (SELECT DISTINCT x.queue FROM moved AS x) AS d)
    INTO n, woken
    FROM moved AS m;
    RETURN n;
END
$$;

-- Jobs (all_jobs: waiting ones too) matching the filters, by id, max_jobs at
-- most, after the id `after` (keyset pagination: pass the last id returned).
CREATE FUNCTION {schema}.find_jobs(ids uuid[] DEFAULT NULL, queue text DEFAULT NULL,
                                   task text DEFAULT NULL, state text DEFAULT NULL,
                                   exception text DEFAULT NULL,
                                   enqueued_after timestamptz DEFAULT NULL,
                                   enqueued_before timestamptz DEFAULT NULL,
                                   finished_after timestamptz DEFAULT NULL,
                                   finished_before timestamptz DEFAULT NULL,
                                   max_jobs integer DEFAULT 10000, after uuid DEFAULT NULL)
RETURNS SETOF {schema}.all_jobs
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE
        'SELECT j.* FROM {schema}.all_jobs AS j WHERE true'
        || CASE WHEN after IS NULL THEN '' ELSE ' AND j.id > $11' END
        || {schema}.job_filter('all', ARRAY['PENDING', 'STARTED', 'RETRY', 'SUCCESS',
                                             'FAILURE', 'REVOKED'], ids, queue, task, state,
                               exception, enqueued_after, enqueued_before, finished_after,
                               finished_before, max_jobs)
        || ' ORDER BY j.id LIMIT $10'
    USING ids, queue, task, state, exception, enqueued_after, enqueued_before, finished_after,
          finished_before, max_jobs, after;
END
$$;

-- Operations change jobs as their owner (SECURITY DEFINER): EXECUTE is the
-- privilege, granted by jobqueue db grant (producers: all; readers:
-- find_jobs). The helpers are theirs alone.
REVOKE EXECUTE ON FUNCTION {schema}.pause_queue FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.resume_queue FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.purge_queue FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.cancel_jobs FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.retry_jobs FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.delete_jobs FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.move_jobs FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.find_jobs FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.waiting_lock FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.revoke_waiting FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.revoke_running FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.canvas_unfail FROM PUBLIC;

-- queue_stats gains `paused` (last, so readers by position keep working);
-- a paused queue with no job shows too.
CREATE OR REPLACE VIEW {schema}.queue_stats AS
WITH waiting AS (
    SELECT queue,
           count(*) FILTER (WHERE run_at <= now()) AS due,
           count(*) FILTER (WHERE run_at > now()) AS scheduled,
           now() - min(run_at) FILTER (WHERE run_at <= now()) AS oldest_waiting
    FROM {schema}.job_queue GROUP BY queue
), running AS (
    SELECT queue, count(*) AS started FROM {schema}.job_lease GROUP BY queue
), finished AS (
    SELECT queue,
           sum(n) FILTER (WHERE state = 'SUCCESS')::bigint AS success,
           sum(n) FILTER (WHERE state = 'FAILURE')::bigint AS failure,
           sum(n) FILTER (WHERE state = 'REVOKED')::bigint AS revoked,
           sum(n) FILTER (WHERE state = 'RETRY')::bigint AS retry
    FROM {schema}.job_counts GROUP BY queue HAVING sum(n) <> 0
)
SELECT q.queue,
       COALESCE(w.due, 0) + COALESCE(w.scheduled, 0) AS pending,
       COALESCE(w.due, 0) AS due,
       COALESCE(w.scheduled, 0) AS scheduled,
       COALESCE(r.started, 0) AS started,
       COALESCE(f.retry, 0) AS retry,
       COALESCE(f.success, 0) AS success,
       COALESCE(f.failure, 0) AS failure,
       COALESCE(f.revoked, 0) AS revoked,
       COALESCE(w.oldest_waiting, interval '0') AS oldest_waiting,
       p.queue IS NOT NULL AS paused
FROM (SELECT queue FROM waiting UNION SELECT queue FROM running
      UNION SELECT queue FROM finished UNION SELECT queue FROM {schema}.queue_pauses) AS q
LEFT JOIN waiting AS w USING (queue)
LEFT JOIN running AS r USING (queue)
LEFT JOIN finished AS f USING (queue)
LEFT JOIN {schema}.queue_pauses AS p USING (queue);
"""

DOWNGRADE = r"""
DROP VIEW {schema}.queue_stats;
CREATE VIEW {schema}.queue_stats AS
WITH waiting AS (
    SELECT queue,
           count(*) FILTER (WHERE run_at <= now()) AS due,
           count(*) FILTER (WHERE run_at > now()) AS scheduled,
           now() - min(run_at) FILTER (WHERE run_at <= now()) AS oldest_waiting
    FROM {schema}.job_queue GROUP BY queue
), running AS (
    SELECT queue, count(*) AS started FROM {schema}.job_lease GROUP BY queue
), finished AS (
    SELECT queue,
           sum(n) FILTER (WHERE state = 'SUCCESS')::bigint AS success,
           sum(n) FILTER (WHERE state = 'FAILURE')::bigint AS failure,
           sum(n) FILTER (WHERE state = 'REVOKED')::bigint AS revoked,
           sum(n) FILTER (WHERE state = 'RETRY')::bigint AS retry
    FROM {schema}.job_counts GROUP BY queue HAVING sum(n) <> 0
)
SELECT q.queue,
       COALESCE(w.due, 0) + COALESCE(w.scheduled, 0) AS pending,
       COALESCE(w.due, 0) AS due,
       COALESCE(w.scheduled, 0) AS scheduled,
       COALESCE(r.started, 0) AS started,
       COALESCE(f.retry, 0) AS retry,
       COALESCE(f.success, 0) AS success,
       COALESCE(f.failure, 0) AS failure,
       COALESCE(f.revoked, 0) AS revoked,
       COALESCE(w.oldest_waiting, interval '0') AS oldest_waiting
FROM (SELECT queue FROM waiting UNION SELECT queue FROM running
      UNION SELECT queue FROM finished) AS q
LEFT JOIN waiting AS w USING (queue)
LEFT JOIN running AS r USING (queue)
LEFT JOIN finished AS f USING (queue);
DROP FUNCTION {schema}.find_jobs;
DROP FUNCTION {schema}.move_jobs;
DROP FUNCTION {schema}.delete_jobs;
DROP FUNCTION {schema}.retry_jobs;
DROP FUNCTION {schema}.cancel_jobs;
DROP FUNCTION {schema}.purge_queue;
DROP FUNCTION {schema}.resume_queue;
DROP FUNCTION {schema}.pause_queue;
DROP FUNCTION {schema}.canvas_unfail;
DROP FUNCTION {schema}.canvas_ids;
DROP FUNCTION {schema}.revoke_running;
DROP FUNCTION {schema}.revoke_waiting;
DROP FUNCTION {schema}.waiting_lock;
DROP FUNCTION {schema}.job_filter_joins;
DROP FUNCTION {schema}.job_filter;
DROP TABLE {schema}.queue_pauses;
"""


def _render(ddl: str) -> str:
    # Placeholders as in schema.sql (not str.format: the SQL holds JSON braces).
    schema = context.config.attributes["schema"]
    return (
        ddl.replace("{schema}", f'"{schema}"')
        .replace("{channel_jobs}", f"{schema}_jobs")
        .replace("{channel_done}", f"{schema}_done")
        .replace("{channel_control}", f"{schema}_control")
    )


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
