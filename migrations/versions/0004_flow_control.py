"""Scheduling and flow control: periodic tasks, limits, unique jobs, time-ordered ids.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

- ``schedules`` / ``schedule_ticks``: a tick is enqueued only by whoever
  inserts its (schedule, fire time) row first, so any number of beat processes
  may run at once.
- ``task_limits`` (configuration, written by workers from their tasks) and
  ``limit_state`` (one row per limit key, locked while a claim spends from it):
  global rate and concurrency limits, exact across processes. Limited jobs
  carry their keys in ``job_queue`` and ``job_lease``.
- ``unique_keys``: one row per unique key, pointing at the job that holds it.
  A table (not a partial unique index on ``jobs.state``) keeps job updates HOT.
- ``uuid7_floor()``: the smallest id of a moment, so retention walks the
  primary key from the oldest job (ids are UUIDv7, time-ordered).
"""

from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
-- The first id created at or after ``moment`` (for range scans by time).
CREATE FUNCTION {s}.uuid7_floor(moment timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(overlay('\\x00000000000070008000000000000000'::bytea PLACING
        substring(int8send(floor(extract(epoch FROM moment) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 'hex')::uuid
$$;

CREATE TABLE {s}.task_limits (
    task              text PRIMARY KEY,
    rate_per_second   float8,
    burst             float8 NOT NULL DEFAULT 1,
    concurrency_limit integer,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT task_limits_rate_check CHECK (rate_per_second IS NULL OR rate_per_second > 0),
    CONSTRAINT task_limits_burst_check CHECK (burst >= 1),
    CONSTRAINT task_limits_concurrency_check CHECK (
        concurrency_limit IS NULL OR concurrency_limit > 0)
);

CREATE TABLE {s}.limit_state (
    key        text PRIMARY KEY,
    tokens     float8 NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {s}.unique_keys (
    key        text PRIMARY KEY,
    job_id     uuid NOT NULL,
    states     text[] NOT NULL,
    expires_at timestamptz
);

CREATE TABLE {s}.schedules (
    name           text PRIMARY KEY,
    task           text NOT NULL,
    args           jsonb NOT NULL DEFAULT '[]',
    kwargs         jsonb NOT NULL DEFAULT '{{}}',
    options        jsonb NOT NULL DEFAULT '{{}}',
    cron           text,
    interval_secs  float8,
    timezone       text NOT NULL DEFAULT 'UTC',
    enabled        boolean NOT NULL DEFAULT true,
    catch_up       text NOT NULL DEFAULT 'once',
    catch_up_limit integer NOT NULL DEFAULT 100,
    source         text NOT NULL DEFAULT 'sql',
    code_hash      text,
    next_run_at    timestamptz,
    last_run_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_kind_check CHECK ((cron IS NULL) <> (interval_secs IS NULL)),
    CONSTRAINT schedules_interval_check CHECK (interval_secs IS NULL OR interval_secs > 0),
    CONSTRAINT schedules_catch_up_check CHECK (catch_up IN ('once', 'skip', 'all'))
);
CREATE INDEX schedules_due_idx ON {s}.schedules (next_run_at) WHERE enabled;

-- A changed definition (from SQL, the CLI or code) is re-planned by the next beat.
CREATE FUNCTION {s}.schedules_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.cron IS DISTINCT FROM OLD.cron OR NEW.interval_secs IS DISTINCT FROM OLD.interval_secs
       OR NEW.timezone IS DISTINCT FROM OLD.timezone
       OR (NEW.enabled AND NOT OLD.enabled) THEN
        NEW.next_run_at := NULL;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER schedules_changed BEFORE UPDATE ON {s}.schedules
    FOR EACH ROW EXECUTE FUNCTION {s}.schedules_changed();

CREATE TABLE {s}.schedule_ticks (
    schedule   text NOT NULL,
    fire_at    timestamptz NOT NULL,
    job_id     uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, fire_at)
);

-- Admit limited claim candidates: per key (in key order, so claims never
-- deadlock) lock its state row, then admit what the concurrency limit (running
-- leases) and the token bucket allow. The others get a later run_at: they
-- wait without a worker slot and without blocking the head of the queue.
-- ROWS 1: without it the planner expects 1000 rows from every claim and
-- switches the claim to sequential scans of job_queue and jobs.
CREATE FUNCTION {s}.admit(ids uuid[]) RETURNS SETOF uuid LANGUAGE plpgsql ROWS 1 AS $$
DECLARE
    k        record;
    lim      record;
    st       record;
    running  integer;
    allowed  integer;
    spare    float8;
    deferred uuid[];
    rejected uuid[] := '{{}}';
BEGIN
    -- Concurrency first: tokens are not spent on jobs that could not start.
    FOR k IN
        SELECT q.concurrency_key AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {s}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND q.concurrency_key IS NOT NULL
        GROUP BY q.concurrency_key, q.task ORDER BY q.concurrency_key
    LOOP
        SELECT * INTO lim FROM {s}.task_limits WHERE task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.concurrency_limit IS NULL;
        INSERT INTO {s}.limit_state (key, tokens) VALUES ('c:' || k.key, 0)
        ON CONFLICT (key) DO NOTHING;
        PERFORM 1 FROM {s}.limit_state WHERE key = 'c:' || k.key FOR UPDATE;
        SELECT count(*) INTO running FROM {s}.job_lease WHERE concurrency_key = k.key;
        allowed := greatest(lim.concurrency_limit - running, 0);
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- Woken when a running job of this key finishes (job_complete_many),
        -- or after a second at the latest.
        UPDATE {s}.job_queue SET run_at = now() + interval '1 second'
        WHERE job_id = ANY(deferred);
    END LOOP;

    FOR k IN
        SELECT q.rate_key AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {s}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND NOT (q.job_id = ANY(rejected)) AND q.rate_key IS NOT NULL
        GROUP BY q.rate_key, q.task ORDER BY q.rate_key
    LOOP
        SELECT * INTO lim FROM {s}.task_limits WHERE task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.rate_per_second IS NULL;
        INSERT INTO {s}.limit_state (key, tokens) VALUES ('r:' || k.key, lim.burst)
        ON CONFLICT (key) DO NOTHING;
        SELECT * INTO st FROM {s}.limit_state WHERE key = 'r:' || k.key FOR UPDATE;
        spare := least(lim.burst, st.tokens + lim.rate_per_second
                       * extract(epoch FROM clock_timestamp() - st.updated_at));
        allowed := least(floor(spare)::integer, cardinality(k.jobs));
        spare := spare - allowed;
        UPDATE {s}.limit_state SET tokens = spare, updated_at = clock_timestamp()
        WHERE key = 'r:' || k.key;
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- The i-th deferred job is due when the i-th next token is.
        UPDATE {s}.job_queue AS q
        SET run_at = clock_timestamp()
                     + make_interval(secs => (d.n - spare) / lim.rate_per_second)
        FROM unnest(deferred) WITH ORDINALITY AS d(job_id, n)
        WHERE q.job_id = d.job_id;
    END LOOP;

    RETURN QUERY SELECT x FROM unnest(ids) AS x WHERE NOT (x = ANY(rejected));
END
$$;
"""

DOWNGRADE = """
DROP FUNCTION {s}.admit(uuid[]);
DROP TABLE {s}.schedule_ticks;
DROP TRIGGER schedules_changed ON {s}.schedules;
DROP FUNCTION {s}.schedules_changed();
DROP TABLE {s}.schedules;
DROP TABLE {s}.unique_keys;
DROP TABLE {s}.limit_state;
DROP TABLE {s}.task_limits;
DROP FUNCTION {s}.uuid7_floor(timestamptz);
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
