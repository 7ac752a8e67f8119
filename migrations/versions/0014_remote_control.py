"""Remote control and inspect in SQL; limits an operator sets at run time (issue 21).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08

Old workers: workers and producers of 0013 may keep running while this is
applied and during the rollout. The new tables and functions are new objects;
``workers`` and ``task_limits`` gain nullable columns (no rewrite). A 0013
worker does not answer remote control (it ignores the control channel's new
messages: ``inspect`` simply does not list it), and while it runs:
- its starting sync of task limits (its own statement) overwrites a limit an
  operator set, and deletes the row of a task that declares none;
- its claim applies an operator's rate limit only to tasks that declare a
  rate limit in code (a 0014 claim applies it to any task).
So set limits at run time after the rollout. ``admit()`` is replaced in place;
a 0013 claim calling it gets the new one, which behaves the same for it.

No row of jobs is read or written: the upgrade takes milliseconds
(``task_limits`` is small; its declared limits are copied from the current ones).

Remote control (``app.control.inspect()``, ``jobqueue inspect|control``):
``control_send`` writes a request and NOTIFYs the control channel with its id
only; a worker reads its pending requests with ``control_pending`` (a
NOTIFY is a hint: the row is the request, and who may write it is a grant),
answers with ``control_reply``, which NOTIFYs the reply channel; the caller
reads ``control_answers``. Requests and replies are UNLOGGED (lost in a crash
of the server, as a control message would be) and expire: each send deletes
those whose deadline passed a minute ago.
"""

from alembic import context, op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- How a worker runs its jobs (threads, processes): inspect and dashboards.
ALTER TABLE {schema}.workers ADD COLUMN pool text;

-- A limit set by an operator (set_rate_limit, set_concurrency_limit) stands
-- until reset_task_limit, whatever the starting workers declare: they write
-- their declared limits beside it (declared_*), and the effective columns
-- only where no operator set them (*_set_by IS NULL).
ALTER TABLE {schema}.task_limits
    ADD COLUMN declared_rate float8,
    ADD COLUMN declared_burst float8,
    ADD COLUMN declared_concurrency integer,
    ADD COLUMN rate_set_by text,
    ADD COLUMN concurrency_set_by text;
UPDATE {schema}.task_limits
SET declared_rate = rate_per_second, declared_burst = burst,
    declared_concurrency = concurrency_limit;
-- Every claim reads the tasks an operator gave a rate: through this index,
-- empty unless someone did (a scan of task_limits per claim would read every
-- limited task's row).
CREATE INDEX task_limits_operator_rate_idx ON {schema}.task_limits (task)
    WHERE rate_set_by IS NOT NULL;

-- Rate limits apply to the jobs that carry a rate key (tasks that declare a
-- rate limit) and, by their task's name, to jobs of a task an operator gave
-- a rate limit (the claim marks those limited too).
CREATE OR REPLACE FUNCTION {schema}.admit(ids uuid[]) RETURNS SETOF uuid LANGUAGE plpgsql ROWS 1
AS $$
DECLARE
    k        record;
    lim      record;
    st       record;
    running  integer;
    allowed  integer;
    spare    float8;
    deferred uuid[];
    rejected uuid[] := '{}';
BEGIN
    -- Concurrency first: tokens are not spent on jobs that could not start.
    FOR k IN
        SELECT q.concurrency_key AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {schema}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND q.concurrency_key IS NOT NULL
        GROUP BY q.concurrency_key, q.task ORDER BY q.concurrency_key
    LOOP
        SELECT * INTO lim FROM {schema}.task_limits WHERE task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.concurrency_limit IS NULL;
        LOOP
            INSERT INTO {schema}.limit_state (key, tokens) VALUES ('c:' || k.key, 0)
            ON CONFLICT (key) DO NOTHING;
            SELECT * INTO st FROM {schema}.limit_state WHERE key = 'c:' || k.key FOR UPDATE;
            EXIT WHEN FOUND;
        END LOOP;
        SELECT count(*) INTO running FROM {schema}.job_lease WHERE concurrency_key = k.key;
        allowed := greatest(lim.concurrency_limit - running, 0);
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- Woken when a running job of this key finishes (job_complete_many),
        -- or after a second at the latest.
        UPDATE {schema}.job_queue SET run_at = now() + interval '1 second'
        WHERE job_id = ANY(deferred);
    END LOOP;

    FOR k IN
        SELECT COALESCE(q.rate_key, q.task) AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {schema}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND NOT (q.job_id = ANY(rejected))
        GROUP BY COALESCE(q.rate_key, q.task), q.task ORDER BY 1
    LOOP
        SELECT * INTO lim FROM {schema}.task_limits WHERE task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.rate_per_second IS NULL;
        LOOP
            INSERT INTO {schema}.limit_state (key, tokens) VALUES ('r:' || k.key, lim.burst)
            ON CONFLICT (key) DO NOTHING;
            SELECT * INTO st FROM {schema}.limit_state WHERE key = 'r:' || k.key FOR UPDATE;
            EXIT WHEN FOUND;
        END LOOP;
        spare := least(lim.burst, st.tokens + lim.rate_per_second
                       * extract(epoch FROM clock_timestamp() - st.updated_at));
        allowed := least(floor(spare)::integer, cardinality(k.jobs));
        spare := spare - allowed;
        UPDATE {schema}.limit_state SET tokens = spare, updated_at = clock_timestamp(),
            full_at = clock_timestamp()
                      + make_interval(secs => (lim.burst - spare) / lim.rate_per_second)
        WHERE key = 'r:' || k.key;
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- The i-th deferred job is due when the i-th next token is.
        UPDATE {schema}.job_queue AS q
        SET run_at = clock_timestamp()
                     + make_interval(secs => (d.n - spare) / lim.rate_per_second)
        FROM unnest(deferred) WITH ORDINALITY AS d(job_id, n)
        WHERE q.job_id = d.job_id;
    END LOOP;

    RETURN QUERY SELECT x FROM unnest(ids) AS x WHERE NOT (x = ANY(rejected));
END
$$;

-- Celery's rate strings: '10/s', '100/m', '1000/h', or a bare number (per
-- second). NULL, '' and '0' mean no limit (NULL returned). JQ002 otherwise.
CREATE FUNCTION {schema}.parse_rate(rate text) RETURNS float8
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text[] := regexp_match(btrim(rate), '^([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*([smh]))?$');
    n float8;
BEGIN
    IF rate IS NULL OR btrim(rate) IN ('', '0') THEN
        RETURN NULL;
    END IF;
    IF m IS NULL THEN
        RAISE EXCEPTION 'jobqueue: bad rate %', quote_literal(rate)
            USING ERRCODE = 'JQ002', HINT = 'like 10/s, 100/m or 1000/h; 0 or NULL for none';
    END IF;
    n := m[1]::float8 / CASE COALESCE(m[2], 's') WHEN 's' THEN 1 WHEN 'm' THEN 60 ELSE 3600 END;
    RETURN NULLIF(n, 0);
END
$$;

-- set_rate_limit('tasks.add', '10/s'): durable, for every worker at once
-- (the claim reads it), until changed again or reset_task_limit. NULL/'0'
-- lifts the task's rate limit. burst: tokens a full bucket holds (default:
-- the one in force, else 1). Returns the rate per second now in force.
CREATE FUNCTION {schema}.set_rate_limit(task text, rate text, burst float8 DEFAULT NULL,
                                        set_by text DEFAULT session_user)
RETURNS float8
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    per_second float8 := {schema}.parse_rate(rate);
BEGIN
    IF set_rate_limit.task IS NULL OR set_rate_limit.task = '' THEN
        RAISE EXCEPTION 'jobqueue.set_rate_limit: name a task' USING ERRCODE = 'JQ002';
    END IF;
    IF set_rate_limit.burst IS NOT NULL AND NOT set_rate_limit.burst >= 1 THEN
        RAISE EXCEPTION 'jobqueue.set_rate_limit: burst must be 1 or more, got %',
            set_rate_limit.burst USING ERRCODE = 'JQ002';
    END IF;
    INSERT INTO {schema}.task_limits AS t (task, rate_per_second, burst, rate_set_by)
    VALUES (set_rate_limit.task, per_second, COALESCE(set_rate_limit.burst, 1),
            COALESCE(set_rate_limit.set_by, session_user))
    ON CONFLICT ON CONSTRAINT task_limits_pkey DO UPDATE
    SET rate_per_second = EXCLUDED.rate_per_second,
        burst = COALESCE(set_rate_limit.burst, t.burst),
        rate_set_by = EXCLUDED.rate_set_by, updated_at = now();
    RETURN per_second;
END
$$;

-- set_concurrency_limit('tasks.report', 4): at most that many running at
-- once across all workers. Only tasks that declare a concurrency limit in
-- code carry the key it counts by (JQ003 for others); NULL lifts it.
CREATE FUNCTION {schema}.set_concurrency_limit(task text, max_running integer,
                                               set_by text DEFAULT session_user)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF set_concurrency_limit.task IS NULL OR set_concurrency_limit.task = '' THEN
        RAISE EXCEPTION 'jobqueue.set_concurrency_limit: name a task' USING ERRCODE = 'JQ002';
    END IF;
    IF max_running IS NOT NULL AND max_running < 1 THEN
        RAISE EXCEPTION 'jobqueue.set_concurrency_limit: max_running must be 1 or more, got %',
            max_running USING ERRCODE = 'JQ002', HINT = 'NULL lifts the limit';
    END IF;
    UPDATE {schema}.task_limits AS t
    SET concurrency_limit = max_running,
        concurrency_set_by = COALESCE(set_concurrency_limit.set_by, session_user),
        updated_at = now()
    WHERE t.task = set_concurrency_limit.task AND t.declared_concurrency IS NOT NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue.set_concurrency_limit: task % declares no concurrency limit',
            quote_literal(set_concurrency_limit.task)
            USING ERRCODE = 'JQ003',
                  HINT = 'its jobs carry no concurrency key: declare concurrency_limit= on '
                         'the task (any value), deploy, then change it here';
    END IF;
    RETURN max_running;
END
$$;

-- Back to the limits the task declares in code (as its workers last wrote
-- them). Returns false if the task had no row.
CREATE FUNCTION {schema}.reset_task_limit(task text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE {schema}.task_limits AS t
    SET rate_per_second = t.declared_rate, burst = COALESCE(t.declared_burst, 1),
        concurrency_limit = t.declared_concurrency,
        rate_set_by = NULL, concurrency_set_by = NULL, updated_at = now()
    WHERE t.task = reset_task_limit.task;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM {schema}.task_limits AS t
    WHERE t.task = reset_task_limit.task
      AND t.rate_per_second IS NULL AND t.concurrency_limit IS NULL;
    RETURN true;
END
$$;

-- Remote control: one row per request (control_send), one per worker's
-- answer (control_reply). UNLOGGED: nothing here outlives its deadline.
CREATE UNLOGGED TABLE {schema}.control_requests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command     text NOT NULL,
    arguments   jsonb NOT NULL DEFAULT '{}',
    destination text[],  -- worker hostnames; NULL: every worker
    sent_by     text NOT NULL DEFAULT session_user,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE UNLOGGED TABLE {schema}.control_replies (
    request_id bigint NOT NULL REFERENCES {schema}.control_requests ON DELETE CASCADE,
    worker_id  uuid NOT NULL,
    hostname   text NOT NULL,
    reply      jsonb NOT NULL,
    replied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, worker_id)
);

-- The commands workers answer, and the arguments each takes (checked here,
-- so a bad request fails its sender, not every worker).
CREATE FUNCTION {schema}.control_send(command text, arguments jsonb DEFAULT '{}',
                                      destination text[] DEFAULT NULL,
                                      timeout float8 DEFAULT 10)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    request bigint;
    args    jsonb := COALESCE(control_send.arguments, '{}');
BEGIN
    IF command IS NULL OR NOT command = ANY(ARRAY[
            'ping', 'active', 'reserved', 'scheduled', 'registered', 'stats', 'active_queues',
            'shutdown', 'pool_grow', 'pool_shrink', 'add_consumer', 'cancel_consumer']) THEN
        RAISE EXCEPTION 'jobqueue.control_send: unknown command %', quote_literal(command)
            USING ERRCODE = 'JQ002',
                  HINT = 'one of ping, active, reserved, scheduled, registered, stats, '
                         'active_queues, shutdown, pool_grow, pool_shrink, add_consumer, '
                         'cancel_consumer';
    END IF;
    IF jsonb_typeof(args) <> 'object' THEN
        RAISE EXCEPTION 'jobqueue.control_send: arguments must be a JSON object'
            USING ERRCODE = 'JQ002';
    END IF;
    IF command IN ('pool_grow', 'pool_shrink') AND NOT COALESCE(
            jsonb_typeof(args -> 'n') = 'number' AND (args ->> 'n') ~ '^[0-9]+$'
            AND (args ->> 'n')::numeric BETWEEN 1 AND 10000, false) THEN
        RAISE EXCEPTION 'jobqueue.control_send: % takes {"n": a whole number from 1 to 10000}',
            command USING ERRCODE = 'JQ002';
    END IF;
    IF command IN ('add_consumer', 'cancel_consumer') AND NOT COALESCE(
            jsonb_typeof(args -> 'queue') = 'string' AND args ->> 'queue' <> '', false) THEN
        RAISE EXCEPTION 'jobqueue.control_send: % takes {"queue": a queue name}', command
            USING ERRCODE = 'JQ002';
    END IF;
    IF timeout IS NULL OR NOT timeout BETWEEN 0 AND 3600 THEN
        RAISE EXCEPTION 'jobqueue.control_send: timeout must be 0 to 3600 seconds'
            USING ERRCODE = 'JQ002';
    END IF;
    IF destination IS NOT NULL AND array_position(destination, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'jobqueue.control_send: destination holds a NULL hostname'
            USING ERRCODE = 'JQ002';
    END IF;
    DELETE FROM {schema}.control_requests WHERE expires_at < now() - interval '1 minute';
    INSERT INTO {schema}.control_requests (command, arguments, destination, expires_at)
    VALUES (command, args, destination, now() + make_interval(secs => timeout))
    RETURNING id INTO request;
    PERFORM pg_notify('{channel_control}', json_build_object('control', request)::text);
    RETURN request;
END
$$;

-- A worker's pending requests: unexpired, sent since it started, for it,
-- not answered yet. Nothing if its row is gone (presumed dead).
CREATE FUNCTION {schema}.control_pending(worker uuid)
RETURNS TABLE (id bigint, command text, arguments jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.id, r.command, r.arguments
    FROM {schema}.control_requests AS r
    JOIN {schema}.workers AS w ON w.id = control_pending.worker
    WHERE r.expires_at > now() AND r.sent_at >= w.started_at
      AND (r.destination IS NULL OR w.hostname = ANY(r.destination))
      AND NOT EXISTS (SELECT 1 FROM {schema}.control_replies AS a
                      WHERE a.request_id = r.id AND a.worker_id = control_pending.worker)
    ORDER BY r.id
$$;

CREATE FUNCTION {schema}.control_reply(request bigint, worker uuid, reply jsonb)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO {schema}.control_replies (request_id, worker_id, hostname, reply)
    SELECT r.id, w.id, w.hostname, COALESCE(control_reply.reply, 'null')
    FROM {schema}.control_requests AS r, {schema}.workers AS w
    WHERE r.id = control_reply.request AND w.id = control_reply.worker
    ON CONFLICT (request_id, worker_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('{channel_reply}', control_reply.request::text);
    RETURN true;
END
$$;

CREATE FUNCTION {schema}.control_answers(request bigint)
RETURNS TABLE (worker_id uuid, hostname text, reply jsonb, replied_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.worker_id, a.hostname, a.reply, a.replied_at
    FROM {schema}.control_replies AS a
    WHERE a.request_id = control_answers.request
    ORDER BY a.replied_at, a.hostname
$$;

-- The workers a request to `destination` waits for: those whose lease holds.
CREATE FUNCTION {schema}.control_expected(destination text[] DEFAULT NULL)
RETURNS TABLE (worker_id uuid, hostname text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT w.id, w.hostname FROM {schema}.workers AS w
    WHERE w.lease_expires_at > now()
      AND (control_expected.destination IS NULL
           OR w.hostname = ANY(control_expected.destination))
    ORDER BY w.hostname
$$;

REVOKE EXECUTE ON FUNCTION {schema}.set_rate_limit, {schema}.set_concurrency_limit,
    {schema}.reset_task_limit, {schema}.control_send, {schema}.control_pending,
    {schema}.control_reply, {schema}.control_answers, {schema}.control_expected FROM PUBLIC;
"""

DOWNGRADE = r"""
DROP FUNCTION {schema}.control_expected;
DROP FUNCTION {schema}.control_answers;
DROP FUNCTION {schema}.control_reply;
DROP FUNCTION {schema}.control_pending;
DROP FUNCTION {schema}.control_send;
DROP TABLE {schema}.control_replies;
DROP TABLE {schema}.control_requests;
DROP FUNCTION {schema}.reset_task_limit;
DROP FUNCTION {schema}.set_concurrency_limit;
DROP FUNCTION {schema}.set_rate_limit;
DROP FUNCTION {schema}.parse_rate;
CREATE OR REPLACE FUNCTION {schema}.admit(ids uuid[]) RETURNS SETOF uuid LANGUAGE plpgsql ROWS 1
AS $$
DECLARE
    k        record;
    lim      record;
    st       record;
    running  integer;
    allowed  integer;
    spare    float8;
    deferred uuid[];
    rejected uuid[] := '{}';
BEGIN
    -- Concurrency first: tokens are not spent on jobs that could not start.
    FOR k IN
        SELECT q.concurrency_key AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {schema}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND q.concurrency_key IS NOT NULL
        GROUP BY q.concurrency_key, q.task ORDER BY q.concurrency_key
    LOOP
        SELECT * INTO lim FROM {schema}.task_limits WHERE task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.concurrency_limit IS NULL;
        LOOP
            INSERT INTO {schema}.limit_state (key, tokens) VALUES ('c:' || k.key, 0)
            ON CONFLICT (key) DO NOTHING;
            SELECT * INTO st FROM {schema}.limit_state WHERE key = 'c:' || k.key FOR UPDATE;
            EXIT WHEN FOUND;
        END LOOP;
        SELECT count(*) INTO running FROM {schema}.job_lease WHERE concurrency_key = k.key;
        allowed := greatest(lim.concurrency_limit - running, 0);
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- Woken when a running job of this key finishes (job_complete_many),
        -- or after a second at the latest.
        UPDATE {schema}.job_queue SET run_at = now() + interval '1 second'
        WHERE job_id = ANY(deferred);
    END LOOP;

    FOR k IN
        SELECT q.rate_key AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {schema}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND NOT (q.job_id = ANY(rejected)) AND q.rate_key IS NOT NULL
        GROUP BY q.rate_key, q.task ORDER BY q.rate_key
    LOOP
        SELECT * INTO lim FROM {schema}.task_limits WHERE task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.rate_per_second IS NULL;
        LOOP
            INSERT INTO {schema}.limit_state (key, tokens) VALUES ('r:' || k.key, lim.burst)
            ON CONFLICT (key) DO NOTHING;
            SELECT * INTO st FROM {schema}.limit_state WHERE key = 'r:' || k.key FOR UPDATE;
            EXIT WHEN FOUND;
        END LOOP;
        spare := least(lim.burst, st.tokens + lim.rate_per_second
                       * extract(epoch FROM clock_timestamp() - st.updated_at));
        allowed := least(floor(spare)::integer, cardinality(k.jobs));
        spare := spare - allowed;
        UPDATE {schema}.limit_state SET tokens = spare, updated_at = clock_timestamp(),
            full_at = clock_timestamp()
                      + make_interval(secs => (lim.burst - spare) / lim.rate_per_second)
        WHERE key = 'r:' || k.key;
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- The i-th deferred job is due when the i-th next token is.
        UPDATE {schema}.job_queue AS q
        SET run_at = clock_timestamp()
                     + make_interval(secs => (d.n - spare) / lim.rate_per_second)
        FROM unnest(deferred) WITH ORDINALITY AS d(job_id, n)
        WHERE q.job_id = d.job_id;
    END LOOP;

    RETURN QUERY SELECT x FROM unnest(ids) AS x WHERE NOT (x = ANY(rejected));
END
$$;
DELETE FROM {schema}.task_limits WHERE declared_rate IS NULL AND declared_concurrency IS NULL;
UPDATE {schema}.task_limits
SET rate_per_second = declared_rate, burst = COALESCE(declared_burst, 1),
    concurrency_limit = declared_concurrency;
DROP INDEX {schema}.task_limits_operator_rate_idx;
ALTER TABLE {schema}.task_limits
    DROP COLUMN concurrency_set_by,
    DROP COLUMN rate_set_by,
    DROP COLUMN declared_concurrency,
    DROP COLUMN declared_burst,
    DROP COLUMN declared_rate;
ALTER TABLE {schema}.workers DROP COLUMN pool;
"""


def _render(ddl: str) -> str:
    # Placeholders as in schema.sql (not str.format: the SQL holds JSON braces).
    schema = context.config.attributes["schema"]
    return (
        ddl.replace("{schema}", f'"{schema}"')
        .replace("{channel_jobs}", f"{schema}_jobs")
        .replace("{channel_done}", f"{schema}_done")
        .replace("{channel_control}", f"{schema}_control")
        .replace("{channel_reply}", f"{schema}_reply")
    )


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
