"""Dependencies on any job: ``apply_async(depends_on=[ids or results])`` and
``enqueue(..., depends_on => uuid[])`` (issue 24, item 2). A dependent waits
in job_queue, due at the end of time, until the jobs it depends on are
counted: job_dependencies (one row per dependency still to count) and
job_waits (the counter), as chords count their members; advance() and
revoke_waiting() count them where jobs finish, and the completion statement
does for every batch while any job waits (see jobqueue/sql/schema.sql,
"Dependencies"). advance()'s canvas work moves to advance_canvas().

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06

Old workers: workers, beats and producers of 0017 may keep running while
this is applied and during the rollout. Their statements are unchanged and
still valid: enqueue() keeps its parameters (two are added at the end, with
defaults), advance() and revoke_waiting() keep their signatures. A worker of
0017 does not count dependencies in its completion statement; jobs it
finishes are counted by advance() for workflow steps, and otherwise by the
dependencies_sweep() of a worker of this release (the maintenance leader's
round), so only dependents need a worker of this release.

Roles: roles granted before it get what this release needs, so no grant has
to run again: every role that may run advance() (producers, workers) reads
job_dependencies and counts dependencies; every role that may delete leases
(workers) gets UPDATE on job_lease (the row locks of atomic tasks and of the
rescue, FOR UPDATE) and the sweep.
"""

from alembic import context, op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- ===========================================================================
-- Dependencies: a job that waits for other jobs (apply_async(depends_on=...),
-- enqueue(..., depends_on => ...))
--
-- A dependent has its record in jobs (PENDING) and its row in job_queue from
-- the start, due at the end of time (dependency_wait()), so every operation
-- on waiting jobs (cancel, purge, move, filters) applies to it unchanged. It
-- counts its dependencies as chords count their members: one row per
-- dependency in job_dependencies, deleted when that dependency is counted
-- (once), and a counter in job_waits; at 0 its row becomes due. The work is
-- done where jobs finish: the completion, the rescue and revocations (through
-- advance()), and the operations (revoke_waiting). A dependency that
-- finishes while the transaction adding the dependent is still open is not
-- seen by either side; the maintenance leader's dependencies_sweep() counts
-- it on its next round.
-- ===========================================================================

-- A dependent's counter. on_failure: what a dependency that ends FAILURE or
-- REVOKED (or is deleted) does to it: 'fail' (FAILURE, DependencyFailed),
-- 'cancel' (REVOKED) or 'run' (it runs once every dependency is settled).
CREATE TABLE {schema}.job_waits (
    job_id     uuid PRIMARY KEY,
    remaining  integer NOT NULL,
    on_failure text NOT NULL DEFAULT 'fail',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_waits_on_failure_check CHECK (on_failure IN ('fail', 'cancel', 'run'))
);

-- A dependency still to be counted for a dependent; deleting the row counts it.
CREATE TABLE {schema}.job_dependencies (
    dependency uuid NOT NULL,
    dependent  uuid NOT NULL,
    PRIMARY KEY (dependency, dependent)
);
CREATE INDEX job_dependencies_dependent_idx ON {schema}.job_dependencies (dependent);

-- When a dependent is due while it waits: the end of time, as a timestamp
-- every client can read ('infinity' is not one in Python).
CREATE FUNCTION {schema}.dependency_wait() RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$ SELECT timestamptz '9999-12-31 00:00:00+00' $$;

-- A dependent may run: its row becomes due at its own time (countdown, eta).
CREATE FUNCTION {schema}.dependency_release(dependent uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    q text;
BEGIN
    DELETE FROM {schema}.job_waits WHERE job_id = dependent;
    UPDATE {schema}.job_queue AS w
    SET run_at = greatest(j.run_at, now())
    FROM {schema}.jobs AS j
    WHERE w.job_id = dependent AND j.id = dependent AND w.run_at = {schema}.dependency_wait()
    RETURNING w.queue INTO q;
    IF FOUND THEN
        PERFORM pg_notify('{channel_jobs}', q);
    END IF;
END
$$;

-- Jobs `ids` finished (or may have): each dependent waiting on one of them
-- counts it. A dependency that ended FAILURE or REVOKED, or is gone (deleted),
-- fails or cancels a dependent whose on_failure says so, and what waits on
-- that dependent in turn (a loop, not recursion: chains of any length).
-- Dependents are locked in id order, so concurrent callers never deadlock.
-- Returns how many dependencies were counted.
CREATE FUNCTION {schema}.dependencies_settle(ids uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e      record;
    w      record;
    ended  uuid[];
    n      integer := 0;
    failed jsonb;
BEGIN
    WHILE cardinality(ids) > 0 LOOP
        ended := '{}';
        FOR e IN
            WITH counted AS (
                DELETE FROM {schema}.job_dependencies AS d
                WHERE d.dependency = ANY(ids)
                  AND (EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = d.dependency
                               AND j.state IN ('SUCCESS', 'FAILURE', 'REVOKED'))
                       OR NOT (EXISTS (SELECT 1 FROM {schema}.jobs AS j
                                       WHERE j.id = d.dependency)
                               OR EXISTS (SELECT 1 FROM {schema}.job_queue AS q
                                          WHERE q.job_id = d.dependency)))
                RETURNING d.dependency, d.dependent
            )
            SELECT c.dependency, c.dependent, COALESCE(j.state, 'DELETED') AS state, j.error
            FROM counted AS c
            LEFT JOIN {schema}.jobs AS j ON j.id = c.dependency
            ORDER BY c.dependent
        LOOP
            n := n + 1;
            SELECT * INTO w FROM {schema}.job_waits WHERE job_id = e.dependent FOR UPDATE;
            CONTINUE WHEN NOT FOUND;  -- it ended already (a dependency failed it, cancelled)
            IF e.state = 'SUCCESS' OR w.on_failure = 'run' THEN
                UPDATE {schema}.job_waits SET remaining = remaining - 1
                WHERE job_id = w.job_id RETURNING * INTO w;
                IF w.remaining <= 0 THEN
                    PERFORM {schema}.dependency_release(w.job_id);
                END IF;
                CONTINUE;
            END IF;
            -- A dependency that did not succeed: the dependent ends unrun.
            DELETE FROM {schema}.job_waits WHERE job_id = w.job_id;
            DELETE FROM {schema}.job_dependencies WHERE dependent = w.job_id;
            DELETE FROM {schema}.job_queue WHERE job_id = w.job_id;
            CONTINUE WHEN NOT FOUND;  -- not waiting any more (cancelled, purged)
            failed := jsonb_build_object(
                'type', CASE w.on_failure WHEN 'cancel' THEN 'TaskRevokedError'
                                          ELSE 'DependencyFailed' END,
                'module', 'jobqueue.exceptions', 'traceback', NULL, 'failed_job', e.dependency,
                'message', format('job %s it depends on ended %s%s', e.dependency, e.state,
                                  COALESCE(': ' || (e.error ->> 'type') || ': '
                                           || (e.error ->> 'message'), '')));
            UPDATE {schema}.jobs
            SET state = CASE w.on_failure WHEN 'cancel' THEN 'REVOKED' ELSE 'FAILURE' END,
                revoked_at = CASE w.on_failure WHEN 'cancel' THEN now() END,
                finished_at = now(), error = failed
            WHERE id = w.job_id AND state = 'PENDING';
            IF FOUND THEN
                PERFORM pg_notify('{channel_done}', w.job_id::text);
                ended := ended || w.job_id;
            END IF;
        END LOOP;
        EXIT WHEN cardinality(ended) = 0;
        PERFORM {schema}.advance_canvas(ended);  -- their error callbacks, their chords
        ids := ended;  -- and what waits on them
    END LOOP;
    RETURN n;
END
$$;

-- `dependent` (its record and its row in job_queue just written, due at
-- dependency_wait()) waits for `dependencies`: each must be a job that exists
-- (waiting, running or finished; written in this transaction, or committed).
-- Those already finished are counted at once; with none left to wait for,
-- the dependent is due now.
CREATE FUNCTION {schema}.depend(dependent uuid, dependencies uuid[],
                                on_failure text DEFAULT 'fail') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deps    uuid[] := ARRAY(SELECT DISTINCT d FROM unnest(dependencies) AS d
                            WHERE d IS NOT NULL ORDER BY d);
    d       uuid;
BEGIN
    IF on_failure IS NULL OR on_failure NOT IN ('fail', 'cancel', 'run') THEN
        RAISE EXCEPTION 'jobqueue: on_dependency_failure must be fail, cancel or run, got %',
            quote_nullable(on_failure) USING ERRCODE = '22023';
    END IF;
    IF dependent = ANY(deps) THEN
        RAISE EXCEPTION 'jobqueue: job % cannot depend on itself', dependent
            USING ERRCODE = '22023';
    END IF;
    FOREACH d IN ARRAY deps LOOP
        -- Three statements, three snapshots: a waiting job whose claim commits
        -- between the first two has its record by the third.
        PERFORM 1 FROM {schema}.jobs AS j WHERE j.id = d;
        CONTINUE WHEN FOUND;
        PERFORM 1 FROM {schema}.job_queue AS q WHERE q.job_id = d;
        CONTINUE WHEN FOUND;
        PERFORM 1 FROM {schema}.jobs AS j WHERE j.id = d;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'jobqueue: job % depends on job %, which does not exist '
                            '(enqueue it first, or in the same transaction)', dependent, d
                USING ERRCODE = 'JQ002';
        END IF;
    END LOOP;
    INSERT INTO {schema}.job_waits (job_id, remaining, on_failure)
    VALUES (dependent, cardinality(deps), depend.on_failure);
    INSERT INTO {schema}.job_dependencies (dependency, dependent)
    SELECT x, dependent FROM unnest(deps) AS x;
    IF cardinality(deps) = 0 THEN
        PERFORM {schema}.dependency_release(dependent);
    ELSE
        PERFORM {schema}.dependencies_settle(ARRAY(
            SELECT j.id FROM {schema}.jobs AS j
            WHERE j.id = ANY(deps) AND j.state IN ('SUCCESS', 'FAILURE', 'REVOKED')));
    END IF;
END
$$;

-- The maintenance leader's round: dependencies that finished (or were
-- deleted) but are still to be counted: a dependency that finished while the
-- transaction adding its dependent was open, or one finished by a worker of
-- an earlier release. Returns how many were counted.
CREATE FUNCTION {schema}.dependencies_sweep(from_id uuid DEFAULT NULL,
                                            max_rows integer DEFAULT 10000)
RETURNS TABLE (counted integer, next_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seen uuid[];
BEGIN
    -- Up to max_rows dependencies after from_id, in key order: a backlog of
    -- millions of waiting edges costs each round a bounded amount; next_id
    -- is where the next round goes on (NULL: from the start again).
    seen := ARRAY(SELECT DISTINCT d.dependency FROM {schema}.job_dependencies AS d
                  WHERE from_id IS NULL OR d.dependency > from_id
                  ORDER BY 1 LIMIT greatest(max_rows, 1));
    counted := {schema}.dependencies_settle(ARRAY(
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

-- What follows finished jobs in a canvas (advance() runs it): callbacks,
-- error callbacks, chord counting. Jobs not finished, or already advanced,
-- change nothing.
CREATE FUNCTION {schema}.advance_canvas(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    j       record;
    c       record;
    sig     jsonb;
    err     jsonb;
    results jsonb;
    n       integer := 0;
BEGIN
    -- Chord rows are locked in one order everywhere, so batches never deadlock.
    FOR j IN
        SELECT id, state, result, error, options, root_id FROM {schema}.jobs
        WHERE id = ANY(ids) AND state IN ('SUCCESS', 'FAILURE', 'REVOKED')
        ORDER BY options ->> 'chord', id
    LOOP
        n := n + 1;
        IF j.state = 'SUCCESS' THEN
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link') LOOP
                PERFORM {schema}.spawn(sig, jsonb_build_array(j.result), j.id, j.root_id);
            END LOOP;
        ELSE
            err := COALESCE(j.error, '{}') || jsonb_build_object('failed_job', j.id);
            -- Error callbacks first: one shared by later steps fires with this id.
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link_error') LOOP
                PERFORM {schema}.spawn(sig, jsonb_build_array(j.id::text), j.id, j.root_id);
            END LOOP;
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link') LOOP
                PERFORM {schema}.fail_tree(sig, err, j.id, j.root_id);
            END LOOP;
        END IF;
        CONTINUE WHEN NOT (j.options ? 'chord');
        DELETE FROM {schema}.chord_members WHERE job_id = j.id;
        CONTINUE WHEN NOT FOUND;  -- counted already
        IF j.state = 'SUCCESS' THEN
            UPDATE {schema}.chords SET remaining = remaining - 1
            WHERE id = (j.options ->> 'chord')::uuid AND state = 'PENDING'
            RETURNING * INTO c;
            IF FOUND AND c.remaining = 0 THEN
                UPDATE {schema}.chords SET state = 'DONE', finished_at = now() WHERE id = c.id;
                SELECT COALESCE(jsonb_agg(result ORDER BY group_index), '[]') INTO results
                FROM {schema}.jobs WHERE group_id = c.id;
                PERFORM {schema}.spawn(c.body, jsonb_build_array(results), j.id, c.root_id);
            END IF;
        ELSE
            PERFORM {schema}.fail_chord((j.options ->> 'chord')::uuid, j.id,
                                   COALESCE(j.error, jsonb_build_object('type', j.state)));
        END IF;
    END LOOP;
    RETURN n;
END
$$;

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

-- enqueue() gains parameters: dropped and made again, with the EXECUTE
-- grants it had (jobqueue db grant's producers and workers).
CREATE TEMPORARY TABLE jobqueue_enqueue_acl AS
SELECT a.grantee FROM pg_proc AS p, aclexplode(p.proacl) AS a
WHERE p.pronamespace = '{schema}'::regnamespace AND p.proname = 'enqueue'
  AND a.privilege_type = 'EXECUTE';
DROP FUNCTION {schema}.enqueue;  -- the only one of that name
-- Writes the job's record at once (jobs and job_queue), and always notifies.
-- With depends_on, the job waits for those jobs (depend()): it is due once
-- they are all counted, and notified then.
-- Refuses arguments nested more than 200 levels deep: what the producer also
-- refuses (jobqueue.serialization.MAX_NESTING). A worker decodes JSON
-- recursively, in a thread whose stack already holds the worker's own frames;
-- 3,000 levels written by SQL made the decode fail there.
CREATE FUNCTION {schema}.enqueue(
    task       text,
    args       jsonb DEFAULT '[]',
    kwargs     jsonb DEFAULT '{}',
    queue      text DEFAULT 'default',
    priority   integer DEFAULT 0,
    run_at     timestamptz DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    id         uuid DEFAULT NULL,
    depends_on uuid[] DEFAULT NULL,
    on_dependency_failure text DEFAULT 'fail'
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := COALESCE(enqueue.id, {schema}.uuid7());
    due    timestamptz := COALESCE(enqueue.run_at, now());
BEGIN
    IF jsonb_typeof(enqueue.args) <> 'array' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: args must be a JSON array, got %',
            jsonb_typeof(enqueue.args) USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(enqueue.kwargs) <> 'object' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: kwargs must be a JSON object, got %',
            jsonb_typeof(enqueue.kwargs) USING ERRCODE = '22023';
    END IF;
    IF {schema}.json_depth(enqueue.args) > 200
       OR {schema}.json_depth(enqueue.kwargs) > 200 THEN
        RAISE EXCEPTION 'jobqueue.enqueue: the arguments of task % nest arrays and objects '
                        '% levels deep; at most 200 are allowed',
            enqueue.task,
            greatest({schema}.json_depth(enqueue.args), {schema}.json_depth(enqueue.kwargs))
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, run_at, expires_at)
    VALUES (new_id, enqueue.task, enqueue.queue, enqueue.priority, enqueue.args,
            enqueue.kwargs, due, enqueue.expires_at);
    IF enqueue.depends_on IS NOT NULL THEN
        INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task)
        VALUES (new_id, enqueue.queue, enqueue.priority, {schema}.dependency_wait(),
                enqueue.task);
        PERFORM {schema}.depend(new_id, enqueue.depends_on, enqueue.on_dependency_failure);
        RETURN new_id;
    END IF;
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task)
    VALUES (new_id, enqueue.queue, enqueue.priority, due, enqueue.task);
    PERFORM pg_notify('{channel_jobs}', enqueue.queue);
    RETURN new_id;
END
$$;

DO $do$
DECLARE
    g oid;
BEGIN
    FOR g IN SELECT grantee FROM jobqueue_enqueue_acl WHERE grantee <> 0 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION {schema}.enqueue TO %s', g::regrole);
    END LOOP;
    IF EXISTS (SELECT 1 FROM jobqueue_enqueue_acl)
       AND NOT EXISTS (SELECT 1 FROM jobqueue_enqueue_acl WHERE grantee = 0) THEN
        EXECUTE 'REVOKE EXECUTE ON FUNCTION {schema}.enqueue FROM PUBLIC';
    END IF;
END
$do$;
DROP TABLE jobqueue_enqueue_acl;

-- SECURITY DEFINER: EXECUTE is the privilege (jobqueue db grant).
REVOKE EXECUTE ON FUNCTION {schema}.dependencies_settle(uuid[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.depend(uuid, uuid[], text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.dependencies_sweep(uuid, integer) FROM PUBLIC;

-- Roles granted before this revision (jobqueue db grant) get what this
-- release needs, so a deployment need not grant again. Every role that may
-- run advance() (producers and workers): the completion statement and
-- advance() read job_dependencies (as their caller) and count dependencies.
-- Workers (those that may delete leases) also lock leases (an atomic task's
-- transaction holds its lease; the rescue skips held ones: UPDATE on
-- job_lease) and sweep. Not taken back by the downgrade (it drops the objects).
DO $do$
DECLARE
    g oid;
BEGIN
    FOR g IN SELECT DISTINCT a.grantee FROM pg_proc AS p, aclexplode(p.proacl) AS a
             WHERE p.oid = '{schema}.advance(uuid[])'::regprocedure
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT SELECT ON {schema}.job_dependencies TO %s', g::regrole);
        EXECUTE format('GRANT EXECUTE ON FUNCTION {schema}.dependencies_settle(uuid[]), '
                       '{schema}.depend(uuid, uuid[], text), {schema}.dependency_wait(), '
                       '{schema}.advance_canvas(uuid[]) TO %s', g::regrole);
    END LOOP;
    FOR g IN SELECT DISTINCT a.grantee FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE c.oid = '{schema}.job_lease'::regclass AND a.privilege_type = 'DELETE'
               AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT UPDATE ON {schema}.job_lease TO %s', g::regrole);
        EXECUTE format('GRANT EXECUTE ON FUNCTION {schema}.dependencies_sweep(uuid, integer) TO %s',
                       g::regrole);
    END LOOP;
END
$do$;
"""

DOWNGRADE = r"""
-- enqueue() gains parameters: dropped and made again, with the EXECUTE
-- grants it had (jobqueue db grant's producers and workers).
CREATE TEMPORARY TABLE jobqueue_enqueue_acl AS
SELECT a.grantee FROM pg_proc AS p, aclexplode(p.proacl) AS a
WHERE p.pronamespace = '{schema}'::regnamespace AND p.proname = 'enqueue'
  AND a.privilege_type = 'EXECUTE';
DROP FUNCTION {schema}.enqueue;  -- the only one of that name
-- Writes the job's record at once (jobs and job_queue), and always notifies.
-- Refuses arguments nested more than 200 levels deep: what the producer also
-- refuses (jobqueue.serialization.MAX_NESTING). A worker decodes JSON
-- recursively, in a thread whose stack already holds the worker's own frames;
-- 3,000 levels written by SQL made the decode fail there.
CREATE FUNCTION {schema}.enqueue(
    task       text,
    args       jsonb DEFAULT '[]',
    kwargs     jsonb DEFAULT '{}',
    queue      text DEFAULT 'default',
    priority   integer DEFAULT 0,
    run_at     timestamptz DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    id         uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := COALESCE(enqueue.id, {schema}.uuid7());
    due    timestamptz := COALESCE(enqueue.run_at, now());
BEGIN
    IF jsonb_typeof(enqueue.args) <> 'array' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: args must be a JSON array, got %',
            jsonb_typeof(enqueue.args) USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(enqueue.kwargs) <> 'object' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: kwargs must be a JSON object, got %',
            jsonb_typeof(enqueue.kwargs) USING ERRCODE = '22023';
    END IF;
    IF {schema}.json_depth(enqueue.args) > 200
       OR {schema}.json_depth(enqueue.kwargs) > 200 THEN
        RAISE EXCEPTION 'jobqueue.enqueue: the arguments of task % nest arrays and objects '
                        '% levels deep; at most 200 are allowed',
            enqueue.task,
            greatest({schema}.json_depth(enqueue.args), {schema}.json_depth(enqueue.kwargs))
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, run_at, expires_at)
    VALUES (new_id, enqueue.task, enqueue.queue, enqueue.priority, enqueue.args,
            enqueue.kwargs, due, enqueue.expires_at);
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task)
    VALUES (new_id, enqueue.queue, enqueue.priority, due, enqueue.task);
    PERFORM pg_notify('{channel_jobs}', enqueue.queue);
    RETURN new_id;
END
$$;

DO $do$
DECLARE
    g oid;
BEGIN
    FOR g IN SELECT grantee FROM jobqueue_enqueue_acl WHERE grantee <> 0 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION {schema}.enqueue TO %s', g::regrole);
    END LOOP;
    IF EXISTS (SELECT 1 FROM jobqueue_enqueue_acl)
       AND NOT EXISTS (SELECT 1 FROM jobqueue_enqueue_acl WHERE grantee = 0) THEN
        EXECUTE 'REVOKE EXECUTE ON FUNCTION {schema}.enqueue FROM PUBLIC';
    END IF;
END
$do$;
DROP TABLE jobqueue_enqueue_acl;

-- Waiting jobs whose job_queue rows the caller locked end REVOKED, as
-- job_revoke ends a waiting job: out of the queue, a record written for one
-- that had none, waiters told, what follows them in a canvas advanced.
CREATE OR REPLACE FUNCTION {schema}.revoke_waiting(ids uuid[], terminate boolean, message text)
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

-- Run in the transaction that finished `ids`: callbacks, error callbacks,
-- chord counting. Jobs not finished, or already advanced, change nothing.
CREATE OR REPLACE FUNCTION {schema}.advance(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    j       record;
    c       record;
    sig     jsonb;
    err     jsonb;
    results jsonb;
    n       integer := 0;
BEGIN
    -- Chord rows are locked in one order everywhere, so batches never deadlock.
    FOR j IN
        SELECT id, state, result, error, options, root_id FROM {schema}.jobs
        WHERE id = ANY(ids) AND state IN ('SUCCESS', 'FAILURE', 'REVOKED')
        ORDER BY options ->> 'chord', id
    LOOP
        n := n + 1;
        IF j.state = 'SUCCESS' THEN
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link') LOOP
                PERFORM {schema}.spawn(sig, jsonb_build_array(j.result), j.id, j.root_id);
            END LOOP;
        ELSE
            err := COALESCE(j.error, '{}') || jsonb_build_object('failed_job', j.id);
            -- Error callbacks first: one shared by later steps fires with this id.
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link_error') LOOP
                PERFORM {schema}.spawn(sig, jsonb_build_array(j.id::text), j.id, j.root_id);
            END LOOP;
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link') LOOP
                PERFORM {schema}.fail_tree(sig, err, j.id, j.root_id);
            END LOOP;
        END IF;
        CONTINUE WHEN NOT (j.options ? 'chord');
        DELETE FROM {schema}.chord_members WHERE job_id = j.id;
        CONTINUE WHEN NOT FOUND;  -- counted already
        IF j.state = 'SUCCESS' THEN
            UPDATE {schema}.chords SET remaining = remaining - 1
            WHERE id = (j.options ->> 'chord')::uuid AND state = 'PENDING'
            RETURNING * INTO c;
            IF FOUND AND c.remaining = 0 THEN
                UPDATE {schema}.chords SET state = 'DONE', finished_at = now() WHERE id = c.id;
                SELECT COALESCE(jsonb_agg(result ORDER BY group_index), '[]') INTO results
                FROM {schema}.jobs WHERE group_id = c.id;
                PERFORM {schema}.spawn(c.body, jsonb_build_array(results), j.id, c.root_id);
            END IF;
        ELSE
            PERFORM {schema}.fail_chord((j.options ->> 'chord')::uuid, j.id,
                                   COALESCE(j.error, jsonb_build_object('type', j.state)));
        END IF;
    END LOOP;
    RETURN n;
END
$$;

DROP FUNCTION {schema}.advance_canvas(uuid[]);
DROP FUNCTION {schema}.dependencies_sweep(uuid, integer);
DROP FUNCTION {schema}.depend(uuid, uuid[], text);
DROP FUNCTION {schema}.dependencies_settle(uuid[]);
DROP FUNCTION {schema}.dependency_release(uuid);
DROP FUNCTION {schema}.dependency_wait();
DROP TABLE {schema}.job_dependencies;
DROP TABLE {schema}.job_waits;
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
