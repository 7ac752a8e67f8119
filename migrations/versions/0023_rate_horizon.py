"""Rate limits that reach their rate (issue 25, item 5): ``admit_at()``.

A claim used to admit only the tokens a rate bucket held at that moment. With
the default burst of 1 that is one job per claim, and a worker looks again at
most every 5 ms: a task limited to ``5000/s`` ran 161 jobs a second, and
one limited to ``1000000/s`` 92. ``admit_at(ids, horizon)`` also admits the
jobs whose tokens come within ``horizon`` seconds, each with ``start_at``
(its token's time); the worker starts it no earlier, and records it as the
job's ``started_at``. The bucket
owes those tokens (``limit_state.tokens`` below zero), so no later claim gets
them again: at most rate x T + burst jobs start in any T seconds, as before.
A job left waiting is due ``horizon`` before its token comes, when a claim
can first admit it.

``admit(ids)`` (the claim of releases before 0023) becomes
``admit_at(ids, 0)``: tokens there now only, its old behaviour.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07

Old workers: workers, beats and producers of 0022 may keep running while
this is applied and during the rollout. Their claim calls ``admit(uuid[])``,
whose signature stays: it admits as before, from the same buckets, and
reads a bucket's debt (tokens promised by a new worker's claim) as an empty
bucket, so old and new workers together keep the limit. The functions are
replaced in place; no table is touched.

Roles: every role that may run ``admit()`` (workers) may run ``admit_at()``,
granted here, so no grant has to run again. The downgrade gives up the debts
(tokens below zero become 0; at most ``horizon`` x rate jobs early, once).
"""

from alembic import context, op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- Admit limited claim candidates: per key (in key order, so claims never
-- deadlock) lock its state row, then admit what the concurrency limit (running
-- leases) and the token bucket allow. The others get a later run_at: they
-- wait without a worker slot and without blocking the head of the queue.
-- The row lock is taken in a loop: a row deleted by retention between its
-- insert (a no-op when the row exists) and its FOR UPDATE is created again,
-- instead of the claim going on without the lock (and overshooting a limit).
-- Rate limits look `horizon` seconds ahead (0023): a job whose token comes
-- within it is admitted now with start_at, its token's time, and the worker
-- starts it no earlier (jobqueue/worker/pools/local.py). The bucket then
-- owes those tokens (tokens below zero) and no later claim gets them again,
-- so the start_at of a budget's jobs hold at most rate x T + burst in any T
-- seconds, as before. A job whose token is there has start_at = the moment
-- the bucket was read (not the claim's now(): a claim that waited for the
-- lock may have found tokens that came meanwhile); a job admitted by its
-- concurrency limit alone has none. Admitting only the tokens there now started one job per claim:
-- with the default burst of 1, a task limited to 5000/s ran 161 jobs a
-- second. A job left waiting is due `horizon` before its token comes, when
-- a claim can first admit it.
-- ROWS 1: without it the planner expects 1000 rows from every claim and
-- switches the claim to sequential scans of job_queue and jobs.
CREATE FUNCTION {schema}.admit_at(ids uuid[], horizon float8)
RETURNS TABLE (id uuid, start_at timestamptz) LANGUAGE plpgsql ROWS 1
AS $$
DECLARE
    k        record;
    lim      record;
    st       record;
    running  integer;
    allowed  integer;
    ready    integer;
    spare    float8;
    at       timestamptz;
    ahead    float8 := greatest(COALESCE(horizon, 0), 0);
    deferred uuid[];
    rejected uuid[] := '{}';
    timed    uuid[] := '{}';
    times    timestamptz[] := '{}';
BEGIN
    -- Concurrency first: tokens are not spent on jobs that could not start.
    FOR k IN
        SELECT q.concurrency_key AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {schema}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND q.concurrency_key IS NOT NULL
        GROUP BY q.concurrency_key, q.task ORDER BY q.concurrency_key
    LOOP
        SELECT * INTO lim FROM {schema}.task_limits AS t WHERE t.task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.concurrency_limit IS NULL;
        LOOP
            INSERT INTO {schema}.limit_state (key, tokens) VALUES ('c:' || k.key, 0)
            ON CONFLICT (key) DO NOTHING;
            SELECT * INTO st FROM {schema}.limit_state AS s WHERE s.key = 'c:' || k.key
            FOR UPDATE;
            EXIT WHEN FOUND;
        END LOOP;
        SELECT count(*) INTO running FROM {schema}.job_lease AS l
        WHERE l.concurrency_key = k.key;
        allowed := greatest(lim.concurrency_limit - running, 0);
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- Woken when a running job of this key finishes (job_complete_many),
        -- or after a second at the latest.
        UPDATE {schema}.job_queue AS q SET run_at = now() + interval '1 second'
        WHERE q.job_id = ANY(deferred);
    END LOOP;

    FOR k IN
        SELECT COALESCE(q.rate_key, q.task) AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {schema}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND NOT (q.job_id = ANY(rejected))
        GROUP BY COALESCE(q.rate_key, q.task), q.task ORDER BY 1
    LOOP
        SELECT * INTO lim FROM {schema}.task_limits AS t WHERE t.task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.rate_per_second IS NULL;
        LOOP
            INSERT INTO {schema}.limit_state (key, tokens) VALUES ('r:' || k.key, lim.burst)
            ON CONFLICT (key) DO NOTHING;
            SELECT * INTO st FROM {schema}.limit_state AS s WHERE s.key = 'r:' || k.key
            FOR UPDATE;
            EXIT WHEN FOUND;
        END LOOP;
        at := clock_timestamp();
        spare := least(lim.burst, st.tokens + lim.rate_per_second
                       * extract(epoch FROM at - st.updated_at)::float8);
        -- The i-th job takes the i-th token: there now for i <= spare, else
        -- in (i - spare) / rate seconds.
        ready := least(greatest(floor(spare), 0)::integer, cardinality(k.jobs));
        allowed := least(greatest(floor(spare + lim.rate_per_second * ahead), 0)::integer,
                         cardinality(k.jobs));
        timed := timed || k.jobs[1 : allowed];
        times := times || ARRAY(
            SELECT CASE WHEN i <= ready THEN at
                        ELSE at + make_interval(secs => (i - spare) / lim.rate_per_second) END
            FROM generate_series(1, allowed) AS i);
        spare := spare - allowed;
        UPDATE {schema}.limit_state AS s SET tokens = spare, updated_at = at,
            full_at = at + make_interval(secs => (lim.burst - spare) / lim.rate_per_second)
        WHERE s.key = 'r:' || k.key;
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- The i-th job left waiting gets its token in (i - spare) / rate
        -- seconds, and a claim can admit it `horizon` before that.
        UPDATE {schema}.job_queue AS q
        SET run_at = at + make_interval(secs => (d.n - spare) / lim.rate_per_second - ahead)
        FROM unnest(deferred) WITH ORDINALITY AS d(job_id, n)
        WHERE q.job_id = d.job_id;
    END LOOP;

    RETURN QUERY
    SELECT x, t.due
    FROM unnest(ids) AS x LEFT JOIN unnest(timed, times) AS t(job, due) ON t.job = x
    WHERE NOT (x = ANY(rejected));
END
$$;

-- The claims of releases before 0023 admit through this: tokens there now
-- only (no horizon), so their workers never start a job early.
CREATE OR REPLACE FUNCTION {schema}.admit(ids uuid[]) RETURNS SETOF uuid LANGUAGE sql ROWS 1
AS $$ SELECT a.id FROM {schema}.admit_at(ids, 0) AS a $$;

-- Roles that may admit (workers) may admit with a horizon.
DO $do$
DECLARE
    g oid;
BEGIN
    FOR g IN SELECT a.grantee FROM pg_proc AS p, aclexplode(p.proacl) AS a
             WHERE p.oid = '{schema}.admit(uuid[])'::regprocedure
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION {schema}.admit_at(uuid[], float8) TO %s',
                       g::regrole);
    END LOOP;
END
$do$;
"""

DOWNGRADE = r"""
UPDATE {schema}.limit_state SET tokens = 0 WHERE tokens < 0;

-- Admit limited claim candidates: per key (in key order, so claims never
-- deadlock) lock its state row, then admit what the concurrency limit (running
-- leases) and the token bucket allow. The others get a later run_at: they
-- wait without a worker slot and without blocking the head of the queue.
-- The row lock is taken in a loop: a row deleted by retention between its
-- insert (a no-op when the row exists) and its FOR UPDATE is created again,
-- instead of the claim going on without the lock (and overshooting a limit).
-- ROWS 1: without it the planner expects 1000 rows from every claim and
-- switches the claim to sequential scans of job_queue and jobs.
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

DROP FUNCTION {schema}.admit_at(uuid[], float8);
"""


def _render(ddl: str) -> str:
    # Placeholders as in schema.sql (not str.format: the SQL holds JSON braces).
    schema = context.config.attributes["schema"]
    return ddl.replace("{schema}", f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
