"""Metrics in SQL: monotonic outcome counters and wait/run-time histograms kept
by statement triggers on jobs, and ``metrics()``, every metric of the
Prometheus exporter as rows (issue 21; docs/operations.md, "Metrics").

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08

Old workers: workers and producers of 0014 may keep running while this is
applied and during the rollout. Their statements do not change; the new
triggers count what their statements do as well as what this release's do.
The only thing a 0014 worker does not do is fold the counters of closed
sessions (``job_metrics_fold``, run by the maintenance leader of this
release): until a worker of this release leads, ``job_metrics`` keeps one
row per (queue, task, bucket) for every session that wrote one, which only
makes ``metrics()`` read a few more rows.

Cost: no row of history is read or written. Creating the triggers takes a
SHARE ROW EXCLUSIVE lock on jobs (writers wait for it, for milliseconds),
taken with the retry loop of 0012 so that it never deadlocks with a claim.
The counters start at zero: jobs that finished before the upgrade are not
counted (Prometheus counters start somewhere; ``rate()`` does not care).
"""

from alembic import context, op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- Outcome counters and histograms per queue and task, only ever added to:
-- never decremented when history is pruned, deleted or retried, so they are
-- what Prometheus counters must be (monotonic). One row per (queue, task,
-- metric, le) and writing session (slot: its pid; 0 for folded rows), so
-- concurrent completions never wait on one row; job_metrics_fold moves the
-- rows of closed sessions into slot 0. metric: succeeded, failed, retried,
-- revoked (counters: le is 'Infinity'), wait or run (histograms: le is the
-- bucket's upper bound, n the observations that fell in it, not cumulative;
-- sum_us their sum in microseconds, an integer so sums never go down by a
-- rounding error when rows are folded).
CREATE TABLE {schema}.job_metrics (
    queue  text NOT NULL,
    task   text NOT NULL,
    metric text NOT NULL,
    le     float8 NOT NULL,
    slot   integer NOT NULL,
    n      bigint NOT NULL,
    sum_us bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, task, metric, le, slot),
    CONSTRAINT job_metrics_metric_check CHECK (
        metric IN ('succeeded', 'failed', 'retried', 'revoked', 'wait', 'run'))
);

-- The upper bounds (seconds) of the wait and run-time histograms' buckets,
-- +Inf aside: from a millisecond (a woken worker starts a job in 2-4 ms) to
-- an hour.
CREATE FUNCTION {schema}.metric_buckets() RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                 120, 300, 600, 1800, 3600]::float8[]
$$;

-- Keeps job_metrics from the transition tables of each statement that writes
-- jobs (one upsert per batch of completions, not per job). Counted: a job
-- entering SUCCESS, FAILURE or REVOKED from any state (a record written
-- failed or revoked included), and an attempt ending in RETRY. Observed, for
-- each attempt that ran and ended SUCCESS, FAILURE or RETRY (a completion or
-- a rescue): its wait, from due (enqueued, or its ETA, countdown or retry
-- delay) to started, and its run time, from started to finished. A job handed
-- back unrun (RELEASED: attempts go back down) counts nowhere. Observed when
-- the attempt ends, since the start is known then too: that needs no write at
-- the claim. SECURITY DEFINER: roles that write jobs need no privilege on
-- job_metrics.
CREATE FUNCTION {schema}.job_metrics_track() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bounds float8[] := {schema}.metric_buckets() || 'Infinity'::float8;
BEGIN
    -- Claims and enqueues write no finished job: leave before the upsert
    -- opens job_metrics (without this exit a claim of 50 jobs took 10 %
    -- longer; with it, as long as with no trigger: benchmarks/metrics.py).
    IF NOT EXISTS (SELECT 1 FROM new_jobs AS j
                   WHERE j.state IN ('SUCCESS', 'FAILURE', 'RETRY', 'REVOKED')) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {schema}.job_metrics AS m (queue, task, metric, le, slot, n)
        SELECT j.queue, j.task,
               CASE j.state WHEN 'SUCCESS' THEN 'succeeded' WHEN 'FAILURE' THEN 'failed'
                            ELSE 'revoked' END,
               'Infinity', pg_backend_pid(), count(*)
        FROM new_jobs AS j WHERE j.state IN ('SUCCESS', 'FAILURE', 'REVOKED')
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (queue, task, metric, le, slot) DO UPDATE SET n = m.n + EXCLUDED.n;
        RETURN NULL;
    END IF;
    -- The bucket of s seconds is the first bound >= s: width_bucket counts
    -- the bounds <= s (a C function, no subquery per row).
    INSERT INTO {schema}.job_metrics AS m (queue, task, metric, le, slot, n, sum_us)
    SELECT x.queue, x.task, x.metric,
           CASE WHEN x.seconds IS NULL THEN 'Infinity'::float8
                WHEN bounds[x.b] = x.seconds THEN x.seconds
                ELSE bounds[x.b + 1] END,
           pg_backend_pid(), count(*), COALESCE(sum(round(x.seconds * 1e6)), 0)::bigint
    FROM (SELECT c.queue, c.task, v.metric, v.seconds, width_bucket(v.seconds, bounds) AS b
          FROM (SELECT n.queue, n.task, n.state, n.finished_at, o.run_at, o.started_at,
                       o.state = 'STARTED' AND n.attempts = o.attempts
                       AND o.started_at IS NOT NULL AS ran
                FROM new_jobs AS n JOIN old_jobs AS o ON o.id = n.id
                WHERE n.state IN ('SUCCESS', 'FAILURE', 'RETRY', 'REVOKED')
                  AND n.state <> o.state) AS c
          CROSS JOIN LATERAL (VALUES
              (CASE c.state WHEN 'SUCCESS' THEN 'succeeded' WHEN 'FAILURE' THEN 'failed'
                            WHEN 'RETRY' THEN 'retried' ELSE 'revoked' END, NULL::float8),
              ('wait', greatest(extract(epoch FROM c.started_at - c.run_at)::float8, 0)),
              ('run', greatest(extract(epoch FROM COALESCE(c.finished_at, now())
                                                  - c.started_at)::float8, 0))
          ) AS v(metric, seconds)
          WHERE CASE WHEN v.metric IN ('wait', 'run') THEN c.ran AND c.state <> 'REVOKED'
                     WHEN v.metric = 'retried' THEN c.ran
                     ELSE true END) AS x
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (queue, task, metric, le, slot) DO UPDATE
    SET n = m.n + EXCLUDED.n, sum_us = m.sum_us + EXCLUDED.sum_us;
    RETURN NULL;
END
$$;

-- Run by the maintenance leader: the rows of sessions that have closed are
-- added into slot 0, in one statement (a reader sees them before or after,
-- never both or neither). Rows a live session may still add to stay; rows a
-- session is writing are skipped. Returns the rows folded.
CREATE FUNCTION {schema}.job_metrics_fold() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM {schema}.job_metrics AS m
        WHERE m.ctid = ANY(ARRAY(
            SELECT g.ctid FROM {schema}.job_metrics AS g
            WHERE g.slot <> 0
              AND g.slot NOT IN (SELECT a.pid FROM pg_stat_activity AS a
                                 WHERE a.pid IS NOT NULL)
            FOR UPDATE SKIP LOCKED))
        RETURNING m.queue, m.task, m.metric, m.le, m.n, m.sum_us
    ), folded AS (
        INSERT INTO {schema}.job_metrics AS m (queue, task, metric, le, slot, n, sum_us)
        SELECT g.queue, g.task, g.metric, g.le, 0, sum(g.n), sum(g.sum_us)
        FROM gone AS g GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (queue, task, metric, le, slot) DO UPDATE
        SET n = m.n + EXCLUDED.n, sum_us = m.sum_us + EXCLUDED.sum_us
    )
    SELECT count(*) FROM gone
$$;

-- Every metric of the exporter (docs/operations.md, "Metrics") as rows:
-- Prometheus's name, its labels and its value; histograms as their _bucket
-- (cumulative), _sum and _count series. Reads only live work (job_queue,
-- job_lease: what waits and runs now), workers, schedules, pauses and
-- job_metrics, never the history: its cost does not grow with finished jobs.
-- `jobqueue metrics` and the ASGI/WSGI apps print these rows.
CREATE FUNCTION {schema}.metrics() RETURNS TABLE (metric text, labels jsonb, value float8)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH waiting AS (
        SELECT q.queue, count(*) FILTER (WHERE q.run_at <= now()) AS due,
               count(*) FILTER (WHERE q.run_at > now()) AS scheduled,
               min(q.run_at) FILTER (WHERE q.run_at <= now()) AS oldest
        FROM {schema}.job_queue AS q GROUP BY q.queue
    ), running AS (
        SELECT l.queue, count(*) AS n FROM {schema}.job_lease AS l GROUP BY l.queue
    ), live AS (
        SELECT w.hostname, w.version, w.queues FROM {schema}.workers AS w
        WHERE w.lease_expires_at > now()
    ), served AS (
        SELECT q.name AS queue, count(*) AS n FROM live AS w, unnest(w.queues) AS q(name)
        GROUP BY q.name
    ), totals AS (
        SELECT m.queue, m.task, m.metric, m.le, sum(m.n) AS n, sum(m.sum_us) AS sum_us
        FROM {schema}.job_metrics AS m GROUP BY 1, 2, 3, 4
    ), queues AS (
        SELECT w.queue FROM waiting AS w UNION SELECT r.queue FROM running AS r
        UNION SELECT s.queue FROM served AS s UNION SELECT p.queue FROM {schema}.queue_pauses AS p
        UNION SELECT t.queue FROM totals AS t
    ), per_queue AS (
        SELECT q.queue, COALESCE(w.due, 0) AS due, COALESCE(w.scheduled, 0) AS scheduled,
               COALESCE(extract(epoch FROM now() - w.oldest)::float8, 0) AS oldest,
               COALESCE(r.n, 0) AS running, COALESCE(s.n, 0) AS served,
               EXISTS (SELECT 1 FROM {schema}.queue_pauses AS p WHERE p.queue = q.queue) AS paused
        FROM queues AS q
        LEFT JOIN waiting AS w ON w.queue = q.queue
        LEFT JOIN running AS r ON r.queue = q.queue
        LEFT JOIN served AS s ON s.queue = q.queue
    ), cumulative AS (
        -- Every bucket of every histogram that has an observation, summed up
        -- to its bound (Prometheus buckets are cumulative): the buckets
        -- observed plus an empty one at every bound, grouped, then a running
        -- sum (no join of the two: planned from a CTE's guesses, that join
        -- read 88,000 rows for 4,200 buckets).
        SELECT h.queue, h.task, h.metric, h.le,
               sum(sum(h.n)) OVER w AS n, sum(sum(h.sum_us)) OVER w AS sum_us
        FROM (SELECT t.queue, t.task, t.metric, t.le, t.n, t.sum_us FROM totals AS t
              WHERE t.metric IN ('wait', 'run')
              UNION ALL
              SELECT t.queue, t.task, t.metric, b.le, 0, 0
              FROM (SELECT DISTINCT t.queue, t.task, t.metric FROM totals AS t
                    WHERE t.metric IN ('wait', 'run')) AS t
              CROSS JOIN unnest({schema}.metric_buckets() || 'Infinity'::float8) AS b(le)) AS h
        GROUP BY h.queue, h.task, h.metric, h.le
        WINDOW w AS (PARTITION BY h.queue, h.task, h.metric ORDER BY h.le)
    )
    SELECT 'jobqueue_queue_due_jobs', jsonb_build_object('queue', p.queue), p.due::float8
    FROM per_queue AS p
    UNION ALL
    SELECT 'jobqueue_queue_scheduled_jobs', jsonb_build_object('queue', p.queue),
           p.scheduled::float8
    FROM per_queue AS p
    UNION ALL
    SELECT 'jobqueue_queue_oldest_due_age_seconds', jsonb_build_object('queue', p.queue), p.oldest
    FROM per_queue AS p
    UNION ALL
    SELECT 'jobqueue_queue_running_jobs', jsonb_build_object('queue', p.queue), p.running::float8
    FROM per_queue AS p
    UNION ALL
    SELECT 'jobqueue_queue_paused', jsonb_build_object('queue', p.queue),
           CASE WHEN p.paused THEN 1 ELSE 0 END
    FROM per_queue AS p
    UNION ALL
    SELECT 'jobqueue_queue_workers', jsonb_build_object('queue', p.queue), p.served::float8
    FROM per_queue AS p
    UNION ALL
    SELECT 'jobqueue_jobs_' || t.metric || '_total',
           jsonb_build_object('queue', t.queue, 'task', t.task), t.n::float8
    FROM totals AS t WHERE t.metric IN ('succeeded', 'failed', 'retried', 'revoked')
    UNION ALL
    SELECT 'jobqueue_job_' || c.metric || '_seconds_bucket',
           jsonb_build_object('queue', c.queue, 'task', c.task, 'le',
                              CASE WHEN c.le = 'Infinity' THEN '+Inf' ELSE c.le::text END),
           c.n::float8
    FROM cumulative AS c
    UNION ALL
    SELECT 'jobqueue_job_' || c.metric || '_seconds_count',
           jsonb_build_object('queue', c.queue, 'task', c.task), c.n::float8
    FROM cumulative AS c WHERE c.le = 'Infinity'
    UNION ALL
    SELECT 'jobqueue_job_' || c.metric || '_seconds_sum',
           jsonb_build_object('queue', c.queue, 'task', c.task), (c.sum_us / 1e6)::float8
    FROM cumulative AS c WHERE c.le = 'Infinity'
    UNION ALL
    SELECT 'jobqueue_workers', jsonb_build_object('hostname', w.hostname, 'version', w.version),
           count(*)::float8
    FROM live AS w GROUP BY w.hostname, w.version
    UNION ALL
    SELECT 'jobqueue_schedule_lag_seconds', jsonb_build_object('schedule', s.name),
           greatest(COALESCE(extract(epoch FROM now() - s.next_run_at)::float8, 0), 0)
    FROM {schema}.schedules AS s WHERE s.enabled
$$;

-- metrics() reads as the schema's owner: EXECUTE is the privilege (jobqueue
-- db grant: readers and producers). The fold is the maintenance leader's.
REVOKE EXECUTE ON FUNCTION {schema}.metrics() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.job_metrics_fold() FROM PUBLIC;
"""

# Triggers after the lock: creating them takes SHARE ROW EXCLUSIVE on jobs and
# each of its partitions. All at once or not at all, and tried again, as in
# 0012: a lock that waits while holding part of what claims and completions
# lock could deadlock with them.
TRIGGERS = r"""
DO $$
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            LOCK TABLE {schema}.jobs IN SHARE ROW EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- everything this try locked is released: try again
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', '0', true);
END
$$;
CREATE TRIGGER jobs_metered_insert AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.job_metrics_track();
CREATE TRIGGER jobs_metered_update AFTER UPDATE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.job_metrics_track();
"""

DOWNGRADE = r"""
DROP TRIGGER jobs_metered_insert ON {schema}.jobs;
DROP TRIGGER jobs_metered_update ON {schema}.jobs;
DROP FUNCTION {schema}.metrics();
DROP FUNCTION {schema}.job_metrics_fold();
DROP FUNCTION {schema}.job_metrics_track();
DROP FUNCTION {schema}.metric_buckets();
DROP TABLE {schema}.job_metrics;
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.replace("{schema}", f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))
    op.execute(_render(TRIGGERS))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
