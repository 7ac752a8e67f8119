"""Foundation: jobs, the waiting and running tables, workers, enqueue(), views.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Layout (see docs/states.md):
- ``jobs`` is the record of every job: arguments, state, result, error. It
  carries only its primary key index, so state changes are HOT updates.
- ``job_queue`` holds exactly the jobs waiting to run. The claim deletes from
  it, so finished history never sits on the path the claim scans.
- ``job_lease`` holds exactly the jobs running now, with the worker and attempt
  that own them; completion is guarded by it.
- ``workers`` is one row per live worker, refreshed by its heartbeat.
"""

from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
-- Time-ordered ids (UUIDv7: 48-bit Unix ms, then random), like the Python side,
-- so new rows land at the right edge of the primary key and retention can walk
-- it oldest first. Setting bits 52-53 turns gen_random_uuid()'s v4 into v7.
CREATE FUNCTION {s}.uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
        substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                  FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

CREATE TABLE {s}.jobs (
    id          uuid PRIMARY KEY,
    task        text NOT NULL,
    queue       text NOT NULL DEFAULT 'default',
    priority    integer NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'PENDING',
    args        jsonb NOT NULL DEFAULT '[]',
    kwargs      jsonb NOT NULL DEFAULT '{{}}',
    options     jsonb NOT NULL DEFAULT '{{}}',
    run_at      timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    worker_id   uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    result      jsonb,
    error       jsonb,
    root_id     uuid,
    parent_id   uuid,
    CONSTRAINT jobs_state_check CHECK (
        state IN ('PENDING', 'STARTED', 'SUCCESS', 'FAILURE', 'RETRY', 'REVOKED'))
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.05);

-- Waiting jobs only; rows are deleted by the claim. Vacuumed eagerly so dead
-- index entries do not pile up in front of the claim.
CREATE TABLE {s}.job_queue (
    job_id   uuid PRIMARY KEY,
    queue    text NOT NULL,
    priority integer NOT NULL,
    run_at   timestamptz NOT NULL,
    task     text NOT NULL,
    -- Limit keys (see 0004); NULL for unlimited jobs, the fast path.
    rate_key        text,
    concurrency_key text
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_insert_scale_factor = 0,
        autovacuum_vacuum_insert_threshold = 20000,
        autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX job_queue_claim_idx ON {s}.job_queue (queue, priority DESC, run_at, job_id);
CREATE INDEX job_queue_run_at_idx ON {s}.job_queue (run_at);
CREATE INDEX job_queue_concurrency_idx ON {s}.job_queue (concurrency_key, priority DESC, run_at)
    WHERE concurrency_key IS NOT NULL;

-- Running jobs only: who holds each one and for which attempt.
CREATE TABLE {s}.job_lease (
    job_id     uuid PRIMARY KEY,
    worker_id  uuid NOT NULL,
    attempt    integer NOT NULL,
    task       text NOT NULL,
    queue      text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    concurrency_key text
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX job_lease_worker_idx ON {s}.job_lease (worker_id);
CREATE INDEX job_lease_concurrency_idx ON {s}.job_lease (concurrency_key)
    WHERE concurrency_key IS NOT NULL;

CREATE TABLE {s}.workers (
    id           uuid PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    concurrency  integer NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Enqueue from plain SQL (triggers, migrations, other languages).
CREATE FUNCTION {s}.enqueue(
    task       text,
    args       jsonb DEFAULT '[]',
    kwargs     jsonb DEFAULT '{{}}',
    queue      text DEFAULT 'default',
    priority   integer DEFAULT 0,
    run_at     timestamptz DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    id         uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := COALESCE(enqueue.id, {s}.uuid7());
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
    INSERT INTO {s}.jobs (id, task, queue, priority, args, kwargs, run_at, expires_at)
    VALUES (new_id, enqueue.task, enqueue.queue, enqueue.priority, enqueue.args,
            enqueue.kwargs, due, enqueue.expires_at);
    INSERT INTO {s}.job_queue (job_id, queue, priority, run_at, task)
    VALUES (new_id, enqueue.queue, enqueue.priority, due, enqueue.task);
    PERFORM pg_notify('{notify}', enqueue.queue);
    RETURN new_id;
END
$$;

-- Per queue: how many jobs are in each state and how long the oldest due job
-- has waited.
CREATE VIEW {s}.queue_stats AS
WITH waiting AS (
    SELECT queue,
           count(*) FILTER (WHERE run_at <= now()) AS due,
           count(*) FILTER (WHERE run_at > now()) AS scheduled,
           now() - min(run_at) FILTER (WHERE run_at <= now()) AS oldest_waiting
    FROM {s}.job_queue GROUP BY queue
), running AS (
    SELECT queue, count(*) AS started FROM {s}.job_lease GROUP BY queue
), finished AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'SUCCESS') AS success,
           count(*) FILTER (WHERE state = 'FAILURE') AS failure,
           count(*) FILTER (WHERE state = 'REVOKED') AS revoked,
           count(*) FILTER (WHERE state = 'RETRY') AS retry
    FROM {s}.jobs WHERE state IN ('SUCCESS', 'FAILURE', 'REVOKED', 'RETRY') GROUP BY queue
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

-- Per task over a window (default 1 hour; `SET jobqueue.stats_window = '1 day'`
-- to change it for a session): counts by state, failure rate, run times.
CREATE VIEW {s}.task_stats AS
WITH win AS (
    SELECT now() - COALESCE(NULLIF(current_setting('jobqueue.stats_window', true), ''),
                            '1 hour')::interval AS since
)
SELECT j.task,
       count(*) FILTER (WHERE j.state = 'PENDING') AS pending,
       count(*) FILTER (WHERE j.state = 'STARTED') AS started,
       count(*) FILTER (WHERE j.state = 'RETRY') AS retry,
       count(*) FILTER (WHERE j.state = 'SUCCESS') AS success,
       count(*) FILTER (WHERE j.state = 'FAILURE') AS failure,
       count(*) FILTER (WHERE j.state = 'REVOKED') AS revoked,
       round(count(*) FILTER (WHERE j.state = 'FAILURE')::numeric
             / NULLIF(count(*) FILTER (WHERE j.state IN ('SUCCESS', 'FAILURE')), 0), 4)
           AS failure_rate,
       avg(j.finished_at - j.started_at)
           FILTER (WHERE j.state IN ('SUCCESS', 'FAILURE')) AS mean_runtime,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY j.finished_at - j.started_at)
           FILTER (WHERE j.state IN ('SUCCESS', 'FAILURE')) AS p95_runtime
FROM {s}.jobs AS j, win
WHERE j.created_at >= win.since OR j.finished_at >= win.since
      OR j.state IN ('PENDING', 'STARTED', 'RETRY')
GROUP BY j.task;
"""

DOWNGRADE = """
DROP VIEW {s}.task_stats;
DROP VIEW {s}.queue_stats;
DROP FUNCTION {s}.enqueue(text, jsonb, jsonb, text, integer, timestamptz, timestamptz, uuid);
DROP TABLE {s}.workers;
DROP TABLE {s}.job_lease;
DROP TABLE {s}.job_queue;
DROP TABLE {s}.jobs;
DROP FUNCTION {s}.uuid7();
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"', notify=f"{schema}_jobs")


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
