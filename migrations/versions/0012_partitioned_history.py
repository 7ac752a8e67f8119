"""Partitioned history: jobs and job_attempts are partitioned by time range of the
job id; retention drops whole partitions; queue_stats reads live counters.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

Old workers: workers and producers of 0011 may keep running while this is
applied. Their statements name ``jobs``, ``job_attempts`` and the views, which
keep their names and columns (a prepared statement is re-planned against the
new tables by name). They wait on the table lock of the short second step,
then go on; their row-wise retention runs beside the new partition drops.

Cost on a populated table: nothing is copied and no index is built.

1. Outside the main transaction, without blocking writers: the counters
   ``job_counts`` are filled by one read of ``jobs`` (a sequential scan,
   while workers run: triggers count every change made meanwhile, and the
   initial count subtracts what they counted before its snapshot, so the sum
   is exact); then a ``CHECK (id < <bound>)`` is added NOT VALID and
   validated (a second scan, under SHARE UPDATE EXCLUSIVE, which writers do
   not wait for). The bound is the start of the day after tomorrow (UTC), so
   new ids keep passing it.
2. In the main transaction (ACCESS EXCLUSIVE on both tables, held for
   milliseconds: docs/retention.md has the figures): ``jobs`` becomes
   ``jobs_legacy``, the partition covering every id below the bound, attached
   without a scan because the validated CHECK proves its range; its indexes
   are attached to the new partitioned indexes instead of being rebuilt.
   ``job_attempts`` likewise. Then a default partition (ids no range
   covers: random v4 ids chosen by callers, a gap while no leader ran) and
   the partitions of the next days.

A table holding caller-chosen random (v4) ids at or above the bound cannot
pass the CHECK: those rows are moved to the default partition, and the attach
then scans the legacy table under the lock (the slow path, logged).

Downgrade copies every row back into plain tables (under migrate.downgrade's
lock): its cost is a full copy of the history.
"""

import logging
import time
from datetime import datetime, timedelta, timezone

from alembic import context, op
from sqlalchemy import exc, text

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

# Statuses the counters keep (queue_stats shows them). PENDING and STARTED
# jobs are rows of job_queue and job_lease, which queue_stats counts directly.
COUNTED = "('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')"

# Phase 1: the counters and what keeps them, created before the tables move
# so that the initial count overlaps with the triggers instead of needing a lock.
COUNTERS = """
DROP TABLE IF EXISTS {s}.job_counts;
-- Finished (and retrying) jobs per hour of their id, queue and state, one
-- row per writing backend (slot: its pid; 0 for the migration's initial
-- count), so concurrent completions never wait on one counter row. Kept by
-- statement triggers on jobs; the rows of a dropped partition's hours go
-- with it. last_finished_at only grows: it tells retention when the newest
-- finish of a partition's hours passed its age.
CREATE TABLE {s}.job_counts (
    hour             timestamptz NOT NULL,
    queue            text NOT NULL,
    state            text NOT NULL,
    slot             integer NOT NULL,
    n                bigint NOT NULL,
    last_finished_at timestamptz,
    PRIMARY KEY (hour, queue, state, slot)
);

-- The hour of a UUIDv7 (its first 48 bits are Unix ms), in UTC whatever the
-- session's time zone: the key of job_counts.
CREATE OR REPLACE FUNCTION {s}.uuid7_hour(id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(((('x' || left(replace(id::text, '-', ''), 12))::bit(48)::bigint)
                         / 3600000) * 3600)
$$;

{track}
DROP TRIGGER IF EXISTS jobs_counted_insert ON {s}.jobs;
DROP TRIGGER IF EXISTS jobs_counted_update ON {s}.jobs;
DROP TRIGGER IF EXISTS jobs_counted_delete ON {s}.jobs;
{triggers}"""

TRACK = """
-- Keeps job_counts: one statement-level trigger per kind of change, reading
-- its transition table (a whole batch of completions is one upsert per
-- (hour, queue, state)). SECURITY DEFINER: roles that write jobs need no
-- privilege on job_counts.
CREATE OR REPLACE FUNCTION {s}.job_counts_track() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {s}.job_counts AS c (hour, queue, state, slot, n, last_finished_at)
        SELECT {s}.uuid7_hour(id), queue, state, pg_backend_pid(), count(*), max(finished_at)
        FROM new_jobs WHERE state IN ('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (hour, queue, state, slot) DO UPDATE
        SET n = c.n + EXCLUDED.n,
            last_finished_at = greatest(c.last_finished_at, EXCLUDED.last_finished_at);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO {s}.job_counts AS c (hour, queue, state, slot, n, last_finished_at)
        SELECT d.hour, d.queue, d.state, pg_backend_pid(), sum(d.n), max(d.finished_at)
        FROM (SELECT {s}.uuid7_hour(id) AS hour, queue, state, 1 AS n, finished_at
              FROM new_jobs WHERE state IN ('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')
              UNION ALL
              SELECT {s}.uuid7_hour(id), queue, state, -1, NULL
              FROM old_jobs WHERE state IN ('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')) AS d
        GROUP BY 1, 2, 3 HAVING sum(d.n) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (hour, queue, state, slot) DO UPDATE
        SET n = c.n + EXCLUDED.n,
            last_finished_at = greatest(c.last_finished_at, EXCLUDED.last_finished_at);
    ELSE
        INSERT INTO {s}.job_counts AS c (hour, queue, state, slot, n)
        SELECT {s}.uuid7_hour(id), queue, state, pg_backend_pid(), -count(*)
        FROM old_jobs WHERE state IN ('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (hour, queue, state, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;
"""

TRIGGERS = """
CREATE TRIGGER jobs_counted_insert AFTER INSERT ON {s}.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.job_counts_track();
CREATE TRIGGER jobs_counted_update AFTER UPDATE ON {s}.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.job_counts_track();
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON {s}.jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.job_counts_track();
"""

# One statement, one snapshot: the rows of jobs as of that snapshot, minus what
# the triggers counted of changes that snapshot already sees (counted twice
# otherwise); changes committed after it are the triggers' alone.
INITIAL_COUNT = f"""
INSERT INTO {{s}}.job_counts (hour, queue, state, slot, n, last_finished_at)
SELECT hour, queue, state, 0, sum(n), max(last_finished_at)
FROM (SELECT {{s}}.uuid7_hour(id) AS hour, queue, state, count(*) AS n,
             max(finished_at) AS last_finished_at
      FROM {{s}}.jobs WHERE state IN {COUNTED} GROUP BY 1, 2, 3
      UNION ALL
      SELECT hour, queue, state, -sum(n), NULL FROM {{s}}.job_counts GROUP BY 1, 2, 3) AS d
GROUP BY 1, 2, 3
HAVING sum(n) <> 0;
"""

BOUND_CHECKS = (
    ("jobs", "id", "jobs_legacy_bound"),
    ("job_attempts", "job_id", "job_attempts_legacy_bound"),
)

# The lock is taken all at once or not at all, and tried again: the claim and
# the completion lock jobs, job_queue, job_lease and job_attempts in the order
# of their plans, so a LOCK of several tables that waits while holding some
# deadlocked with them (a completion of an 0011 worker failed). Each try waits
# at most 50 ms, then gives back what it got (the subtransaction ends). Views
# first, in the order their readers lock them (a view, then its tables).
MAIN = """
DO $$
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            LOCK TABLE {s}.task_stats, {s}.workflow_jobs, {s}.all_jobs, {s}.job_history,
                {s}.queue_stats, {s}.jobs, {s}.job_attempts IN ACCESS EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- everything this try locked is released: try again
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', '0', true);
END
$$;
DROP TRIGGER jobs_counted_insert ON {s}.jobs;
DROP TRIGGER jobs_counted_update ON {s}.jobs;
DROP TRIGGER jobs_counted_delete ON {s}.jobs;
ALTER TABLE {s}.jobs RENAME TO jobs_legacy;
ALTER INDEX {s}.jobs_pkey RENAME TO jobs_legacy_pkey;
ALTER INDEX {s}.jobs_root_idx RENAME TO jobs_legacy_root_idx;
ALTER INDEX {s}.jobs_parent_idx RENAME TO jobs_legacy_parent_idx;
ALTER INDEX {s}.jobs_group_idx RENAME TO jobs_legacy_group_idx;
ALTER TABLE {s}.job_attempts RENAME TO job_attempts_legacy;
ALTER INDEX {s}.job_attempts_pkey RENAME TO job_attempts_legacy_pkey;

{tables}
-- Rows a caller gave an id at or above the bound (random v4 ids) cannot stay
-- in the legacy partition: the default one takes them (none for ids jobqueue
-- made: a primary key range probe).
INSERT INTO {s}.jobs_default SELECT {jobs_columns} FROM {s}.jobs_legacy WHERE id >= '{bound}';
DELETE FROM {s}.jobs_legacy WHERE id >= '{bound}';
INSERT INTO {s}.job_attempts_default SELECT {attempts_columns} FROM {s}.job_attempts_legacy
WHERE job_id >= '{bound}';
DELETE FROM {s}.job_attempts_legacy WHERE job_id >= '{bound}';
-- No scan when phase 1 validated the CHECK: it proves the range.
ALTER TABLE {s}.jobs ATTACH PARTITION {s}.jobs_legacy FOR VALUES FROM (MINVALUE) TO ('{bound}');
ALTER TABLE {s}.job_attempts ATTACH PARTITION {s}.job_attempts_legacy
    FOR VALUES FROM (MINVALUE) TO ('{bound}');
ALTER TABLE {s}.jobs_legacy DROP CONSTRAINT IF EXISTS jobs_legacy_bound;
ALTER TABLE {s}.job_attempts_legacy DROP CONSTRAINT IF EXISTS job_attempts_legacy_bound;
INSERT INTO {s}.history_partitions (name, starts_at, ends_at)
VALUES ('legacy', NULL, '{bound_at}');

{views}
{triggers}
SELECT {s}.history_partitions_ahead();
"""

# The objects of head that the upgrade creates, exactly as schema.sql has them.
TABLES = """
-- The record of every job, partitioned by time range of its (UUIDv7) id.
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
    revoked_at       timestamptz,
    revoke_terminate boolean NOT NULL DEFAULT false,
    group_id    uuid,
    group_index integer,
    progress_state text,
    progress       jsonb,
    CONSTRAINT jobs_state_check CHECK (
        state IN ('PENDING', 'STARTED', 'SUCCESS', 'FAILURE', 'RETRY', 'REVOKED'))
) PARTITION BY RANGE (id);
CREATE INDEX jobs_root_idx ON {s}.jobs (root_id) WHERE root_id IS NOT NULL;
CREATE INDEX jobs_parent_idx ON {s}.jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_group_idx ON {s}.jobs (group_id, group_index) WHERE group_id IS NOT NULL;

CREATE TABLE {s}.job_attempts (
    job_id      uuid NOT NULL,
    attempt     integer NOT NULL,
    worker_id   uuid,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    state       text NOT NULL,
    error       jsonb,
    PRIMARY KEY (job_id, attempt)
) PARTITION BY RANGE (job_id);

CREATE TABLE {s}.jobs_default PARTITION OF {s}.jobs DEFAULT
    WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
          autovacuum_analyze_scale_factor = 0.05);
CREATE TABLE {s}.job_attempts_default PARTITION OF {s}.job_attempts DEFAULT;

-- How history is partitioned: each partition covers `period` of ids (aligned
-- on multiples of it since the epoch, UTC), and the leader keeps `ahead`
-- periods after the current one created. Read when partitions are created, so
-- a change applies to the next one.
CREATE TABLE {s}.history_plan (
    one    boolean PRIMARY KEY DEFAULT true,
    period interval NOT NULL DEFAULT '1 day',
    ahead  integer NOT NULL DEFAULT 3,
    CONSTRAINT history_plan_one_check CHECK (one),
    CONSTRAINT history_plan_period_check CHECK (
        period >= interval '1 hour' AND extract(epoch FROM period)::bigint % 3600 = 0),
    CONSTRAINT history_plan_ahead_check CHECK (ahead BETWEEN 1 AND 100)
);
INSERT INTO {s}.history_plan DEFAULT VALUES;

-- The range partitions of jobs and job_attempts (jobs_<name>,
-- job_attempts_<name>): ids from uuid7_floor(starts_at) (NULL: the lowest) to
-- uuid7_floor(ends_at). The default partitions are not listed.
CREATE TABLE {s}.history_partitions (
    name      text PRIMARY KEY,
    starts_at timestamptz,
    ends_at   timestamptz NOT NULL
);

-- The locks that history DDL takes, all at once or none: exclusive (drop,
-- compaction) is ACCESS EXCLUSIVE on both parents; otherwise (a new
-- partition) SHARE UPDATE EXCLUSIVE on them, which claims and completions do
-- not wait for, and ACCESS EXCLUSIVE on the default partitions. Claims and
-- completions lock the partitions in their plans' order, so a lock of several
-- tables that waited while holding some could deadlock with them: each try
-- waits 50 ms at most and gives back what it got. Twenty tries, then it
-- fails, to be tried again at the next heartbeat (a DDL left waiting makes
-- every later statement on the table queue behind it).
CREATE FUNCTION {s}.history_lock(exclusive boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR n IN 1..20 LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            IF exclusive THEN
                LOCK TABLE ONLY {s}.jobs, {s}.job_attempts IN ACCESS EXCLUSIVE MODE;
            ELSE
                LOCK TABLE ONLY {s}.jobs, {s}.job_attempts IN SHARE UPDATE EXCLUSIVE MODE;
                LOCK TABLE {s}.jobs_default, {s}.job_attempts_default IN ACCESS EXCLUSIVE MODE;
            END IF;
            PERFORM set_config('lock_timeout', '0', true);
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- everything this try locked is released
        END;
    END LOOP;
    RAISE EXCEPTION 'jobqueue: the history tables stayed locked by others for 1 s'
        USING ERRCODE = 'lock_not_available', HINT = 'tried again at the next heartbeat';
END
$$;

-- A partition of each table for ids made from `starts` to `ends`. Built beside
-- the tables and attached (claims and completions go on), after moving into
-- it the rows the default partitions hold in its range (they are few).
CREATE FUNCTION {s}.history_partition_add(starts timestamptz, ends timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name text := 'p' || to_char(starts AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI');
    lo   uuid := {s}.uuid7_floor(starts);
    hi   uuid := {s}.uuid7_floor(ends);
BEGIN
    PERFORM {s}.history_lock(false);
    EXECUTE format('CREATE TABLE {s}.%I (LIKE {s}.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                   ' WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,'
                   ' autovacuum_analyze_scale_factor = 0.05)', 'jobs_' || name);
    EXECUTE format('CREATE TABLE {s}.%I (LIKE {s}.job_attempts INCLUDING DEFAULTS'
                   ' INCLUDING CONSTRAINTS)', 'job_attempts_' || name);
    EXECUTE format('WITH moved AS (DELETE FROM {s}.jobs_default WHERE id >= $1 AND id < $2'
                   ' RETURNING *) INSERT INTO {s}.%I SELECT * FROM moved', 'jobs_' || name)
        USING lo, hi;
    EXECUTE format('WITH moved AS (DELETE FROM {s}.job_attempts_default'
                   ' WHERE job_id >= $1 AND job_id < $2 RETURNING *)'
                   ' INSERT INTO {s}.%I SELECT * FROM moved', 'job_attempts_' || name)
        USING lo, hi;
    EXECUTE format('ALTER TABLE {s}.jobs ATTACH PARTITION {s}.%I FOR VALUES FROM (%L) TO (%L)',
                   'jobs_' || name, lo, hi);
    EXECUTE format('ALTER TABLE {s}.job_attempts ATTACH PARTITION {s}.%I'
                   ' FOR VALUES FROM (%L) TO (%L)', 'job_attempts_' || name, lo, hi);
    INSERT INTO {s}.history_partitions (name, starts_at, ends_at) VALUES (name, starts, ends);
    RETURN name;
END
$$;

-- Run by the maintenance leader at every heartbeat: partitions up to `ahead`
-- periods after the current one. After the newest one, or from the current
-- period when that is older (ids of a gap stay in the default partition).
-- Returns how many it created (0, a catalog read, nearly always).
CREATE FUNCTION {s}.history_partitions_ahead() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    plan record;
    step float8;
    edge timestamptz;
    made integer := 0;
BEGIN
    SELECT period, ahead INTO plan FROM {s}.history_plan;
    step := extract(epoch FROM plan.period);
    SELECT greatest(max(p.ends_at),
                    to_timestamp(floor(extract(epoch FROM now()) / step) * step))
    INTO edge FROM {s}.history_partitions AS p;
    WHILE edge <= now() + plan.period * plan.ahead LOOP
        PERFORM {s}.history_partition_add(edge, edge + make_interval(secs => step));
        edge := edge + make_interval(secs => step);
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

-- Retention by partition, oldest first. A partition whose every job finished
-- and passed its age (success_age for SUCCESS and REVOKED, failure_age for
-- FAILURE; NULL keeps those forever) is dropped, with its job_attempts
-- partition and counters. One held back only by failures younger than
-- failure_age is compacted: its failures (and their attempts) are copied into
-- a new table that replaces it, and the rest goes with the old one. Returns
-- each partition dropped (kept = 0) or compacted (kept = failures kept).
-- Unfinished jobs are rows of job_queue (waiting, retrying) or job_lease
-- (running): two primary key range probes; a partition holding one stays,
-- and job_prune deletes its expired rows one by one. The newest finish per
-- state comes from job_counts. Both take ACCESS EXCLUSIVE on the parents for
-- the swap itself (milliseconds), and check again under it.
CREATE FUNCTION {s}.history_prune(success_age float8, failure_age float8)
RETURNS TABLE (name text, kept bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p        record;
    min_age  float8 := least(success_age, failure_age);
    bounds   text;
    failures bigint;
    copied   bigint;
BEGIN
    IF success_age IS NULL AND failure_age IS NULL THEN
        RETURN;
    END IF;
    FOR p IN
        SELECT h.name, h.starts_at, h.ends_at FROM {s}.history_partitions AS h
        WHERE h.ends_at <= now() - make_interval(secs => min_age)
        ORDER BY h.ends_at
    LOOP
        IF {s}.history_expired(p.starts_at, p.ends_at, success_age, failure_age) THEN
            PERFORM {s}.history_lock(true);
            -- Again under the lock: nothing can change the partition's rows now.
            CONTINUE WHEN NOT {s}.history_expired(p.starts_at, p.ends_at, success_age,
                                                  failure_age);
            EXECUTE format('DROP TABLE {s}.%I, {s}.%I', 'jobs_' || p.name,
                           'job_attempts_' || p.name);
            DELETE FROM {s}.history_partitions AS h WHERE h.name = p.name;
            DELETE FROM {s}.job_counts AS c
            WHERE c.hour < p.ends_at AND (p.starts_at IS NULL OR c.hour >= p.starts_at);
            name := p.name;
            kept := 0;
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- Held back by young failures alone (with the default ages, a day's
        -- successes expire six days before its failures)?
        CONTINUE WHEN success_age IS NULL OR failure_age IS NULL
                      OR failure_age <= success_age
                      OR NOT {s}.history_expired(p.starts_at, p.ends_at, success_age, 0);
        SELECT COALESCE(sum(c.n) FILTER (WHERE c.state = 'FAILURE'), 0) INTO failures
        FROM {s}.job_counts AS c
        WHERE c.hour < p.ends_at AND (p.starts_at IS NULL OR c.hour >= p.starts_at)
        HAVING sum(c.n) FILTER (WHERE c.state IN ('SUCCESS', 'REVOKED')) > 0;
        CONTINUE WHEN NOT FOUND;  -- nothing but failures left: nothing to gain
        -- Copied before the lock (a read: workers go on). The partition holds
        -- no unfinished job, so only a delete could change it meanwhile: the
        -- count is checked again under the lock.
        EXECUTE format('CREATE TABLE {s}.%I (LIKE {s}.jobs INCLUDING DEFAULTS'
                       ' INCLUDING CONSTRAINTS) WITH (fillfactor = 80,'
                       ' autovacuum_vacuum_scale_factor = 0.02,'
                       ' autovacuum_analyze_scale_factor = 0.05)', 'jobs_' || p.name || '_kept');
        EXECUTE format('INSERT INTO {s}.%I ({jobs_columns}) SELECT {jobs_columns} FROM {s}.%I'
                       ' WHERE state = %L', 'jobs_' || p.name || '_kept', 'jobs_' || p.name,
                       'FAILURE');
        GET DIAGNOSTICS copied = ROW_COUNT;
        EXECUTE format('CREATE TABLE {s}.%I (LIKE {s}.job_attempts INCLUDING DEFAULTS'
                       ' INCLUDING CONSTRAINTS)', 'job_attempts_' || p.name || '_kept');
        EXECUTE format('INSERT INTO {s}.%I ({attempts_columns}) SELECT {attempts_columns}'
                       ' FROM {s}.%I WHERE job_id IN (SELECT id FROM {s}.%I)',
                       'job_attempts_' || p.name || '_kept', 'job_attempts_' || p.name,
                       'jobs_' || p.name || '_kept');
        -- Indexes and a CHECK of the range built now, so the attach under the
        -- lock builds and scans nothing: building them there held readers for
        -- 213 ms with 50,000 failures kept.
        bounds := '%1$s < ' || quote_literal({s}.uuid7_floor(p.ends_at))
                  || CASE WHEN p.starts_at IS NULL THEN ''
                          ELSE ' AND %1$s >= ' || quote_literal({s}.uuid7_floor(p.starts_at)) END;
        EXECUTE format('ALTER TABLE {s}.%I ADD PRIMARY KEY (id), ADD CONSTRAINT kept_range CHECK ('
                       || format(bounds, 'id') || ')', 'jobs_' || p.name || '_kept');
        EXECUTE format('CREATE INDEX ON {s}.%I (root_id) WHERE root_id IS NOT NULL',
                       'jobs_' || p.name || '_kept');
        EXECUTE format('CREATE INDEX ON {s}.%I (parent_id) WHERE parent_id IS NOT NULL',
                       'jobs_' || p.name || '_kept');
        EXECUTE format('CREATE INDEX ON {s}.%I (group_id, group_index) WHERE group_id IS NOT NULL',
                       'jobs_' || p.name || '_kept');
        EXECUTE format('ALTER TABLE {s}.%I ADD PRIMARY KEY (job_id, attempt),'
                       ' ADD CONSTRAINT kept_range CHECK (' || format(bounds, 'job_id') || ')',
                       'job_attempts_' || p.name || '_kept');
        PERFORM {s}.history_lock(true);
        IF copied <> failures
           OR NOT {s}.history_expired(p.starts_at, p.ends_at, success_age, 0)
           OR failures <> (SELECT COALESCE(sum(c.n), 0) FROM {s}.job_counts AS c
                           WHERE c.state = 'FAILURE' AND c.hour < p.ends_at
                             AND (p.starts_at IS NULL OR c.hour >= p.starts_at)) THEN
            EXECUTE format('DROP TABLE {s}.%I, {s}.%I', 'jobs_' || p.name || '_kept',
                           'job_attempts_' || p.name || '_kept');
            CONTINUE;  -- changed meanwhile: next time
        END IF;
        bounds := CASE WHEN p.starts_at IS NULL THEN 'MINVALUE'
                       ELSE quote_literal({s}.uuid7_floor(p.starts_at)) END
                  || ') TO (' || quote_literal({s}.uuid7_floor(p.ends_at));
        EXECUTE format('DROP TABLE {s}.%I, {s}.%I', 'jobs_' || p.name,
                       'job_attempts_' || p.name);
        EXECUTE format('ALTER TABLE {s}.%I RENAME TO %I', 'jobs_' || p.name || '_kept',
                       'jobs_' || p.name);
        EXECUTE format('ALTER TABLE {s}.%I RENAME TO %I', 'job_attempts_' || p.name || '_kept',
                       'job_attempts_' || p.name);
        EXECUTE format('ALTER TABLE {s}.jobs ATTACH PARTITION {s}.%I FOR VALUES FROM (%s)',
                       'jobs_' || p.name, bounds);
        EXECUTE format('ALTER TABLE {s}.job_attempts ATTACH PARTITION {s}.%I'
                       ' FOR VALUES FROM (%s)', 'job_attempts_' || p.name, bounds);
        EXECUTE format('ALTER TABLE {s}.%I DROP CONSTRAINT kept_range', 'jobs_' || p.name);
        EXECUTE format('ALTER TABLE {s}.%I DROP CONSTRAINT kept_range',
                       'job_attempts_' || p.name);
        DELETE FROM {s}.job_counts AS c
        WHERE c.state IN ('SUCCESS', 'REVOKED') AND c.hour < p.ends_at
          AND (p.starts_at IS NULL OR c.hour >= p.starts_at);
        name := p.name;
        kept := copied;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Whether every job made from `starts` to `ends` finished and passed its age.
CREATE FUNCTION {s}.history_expired(starts timestamptz, ends timestamptz, success_age float8,
                                    failure_age float8) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (
               SELECT 1 FROM {s}.job_queue AS q
               WHERE q.job_id < {s}.uuid7_floor(ends)
                 AND q.job_id >= COALESCE({s}.uuid7_floor(starts),
                                          '00000000-0000-0000-0000-000000000000'))
       AND NOT EXISTS (
               SELECT 1 FROM {s}.job_lease AS l
               WHERE l.job_id < {s}.uuid7_floor(ends)
                 AND l.job_id >= COALESCE({s}.uuid7_floor(starts),
                                          '00000000-0000-0000-0000-000000000000'))
       AND NOT EXISTS (
               SELECT 1 FROM {s}.job_counts AS c
               WHERE c.hour < ends AND (starts IS NULL OR c.hour >= starts)
               GROUP BY c.state
               HAVING sum(c.n) > 0
                  AND CASE c.state
                          WHEN 'FAILURE' THEN failure_age IS NULL OR max(c.last_finished_at)
                                              > now() - make_interval(secs => failure_age)
                          WHEN 'RETRY' THEN true
                          ELSE success_age IS NULL OR max(c.last_finished_at)
                               > now() - make_interval(secs => success_age)
                      END)
$$;
-- Partitions are made and dropped by the maintenance leader (granted by
-- jobqueue db grant --worker), not by any role that may use the schema.
REVOKE EXECUTE ON FUNCTION {s}.history_partition_add(timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {s}.history_partitions_ahead() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {s}.history_prune(float8, float8) FROM PUBLIC;
"""

VIEWS = """
CREATE OR REPLACE VIEW {s}.all_jobs AS
SELECT id, task, queue, priority, state, args, kwargs, options, run_at, expires_at,
       attempts, worker_id, created_at, started_at, finished_at, result, error, root_id,
       parent_id, revoked_at, revoke_terminate, group_id, group_index, progress_state,
       progress
FROM {s}.jobs
UNION ALL
SELECT job_id, task, queue, priority, 'PENDING', args, kwargs, options, run_at, expires_at,
       0, NULL, created_at, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, false, NULL, NULL, NULL,
       NULL
FROM {s}.job_queue
WHERE args IS NOT NULL;

CREATE OR REPLACE VIEW {s}.job_history AS
SELECT a.job_id, j.task, a.attempt, a.worker_id, a.started_at, a.finished_at, a.state,
       a.error ->> 'type' AS error_type, a.error ->> 'message' AS error_message,
       a.error ->> 'traceback' AS traceback
FROM {s}.job_attempts AS a
JOIN {s}.jobs AS j ON j.id = a.job_id
UNION ALL
SELECT j.id, j.task, j.attempts, j.worker_id, j.started_at, j.finished_at, j.state,
       NULL, NULL, NULL
FROM {s}.jobs AS j
WHERE j.state = 'SUCCESS';

{queue_stats}"""

QUEUE_STATS = """
CREATE OR REPLACE VIEW {s}.queue_stats AS
WITH waiting AS (
    SELECT queue,
           count(*) FILTER (WHERE run_at <= now()) AS due,
           count(*) FILTER (WHERE run_at > now()) AS scheduled,
           now() - min(run_at) FILTER (WHERE run_at <= now()) AS oldest_waiting
    FROM {s}.job_queue GROUP BY queue
), running AS (
    SELECT queue, count(*) AS started FROM {s}.job_lease GROUP BY queue
), finished AS (
{finished}
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
"""

# Finished jobs per queue from the counters: a read of a few hundred rows per
# queue and day kept (was a scan of all history: 430 ms at 2.8 M rows).
FINISHED_COUNTED = """    SELECT queue,
           sum(n) FILTER (WHERE state = 'SUCCESS')::bigint AS success,
           sum(n) FILTER (WHERE state = 'FAILURE')::bigint AS failure,
           sum(n) FILTER (WHERE state = 'REVOKED')::bigint AS revoked,
           sum(n) FILTER (WHERE state = 'RETRY')::bigint AS retry
    FROM {s}.job_counts GROUP BY queue HAVING sum(n) <> 0"""

FINISHED_SCANNED = """    SELECT queue,
           count(*) FILTER (WHERE state = 'SUCCESS') AS success,
           count(*) FILTER (WHERE state = 'FAILURE') AS failure,
           count(*) FILTER (WHERE state = 'REVOKED') AS revoked,
           count(*) FILTER (WHERE state = 'RETRY') AS retry
    FROM {s}.jobs WHERE state IN ('SUCCESS', 'FAILURE', 'REVOKED', 'RETRY') GROUP BY queue"""

JOBS_COLUMNS = (
    "id, task, queue, priority, state, args, kwargs, options, run_at, expires_at, attempts, "
    "worker_id, created_at, started_at, finished_at, result, error, root_id, parent_id, "
    "revoked_at, revoke_terminate, group_id, group_index, progress_state, progress"
)
ATTEMPTS_COLUMNS = "job_id, attempt, worker_id, started_at, finished_at, state, error"

# Back to plain tables: every row copied, then the partitioned tables dropped.
DOWNGRADE = """
CREATE TABLE {s}.jobs_plain (
    id          uuid NOT NULL,
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
    revoked_at       timestamptz,
    revoke_terminate boolean NOT NULL DEFAULT false,
    group_id    uuid,
    group_index integer,
    progress_state text,
    progress       jsonb,
    CONSTRAINT jobs_state_check CHECK (
        state IN ('PENDING', 'STARTED', 'SUCCESS', 'FAILURE', 'RETRY', 'REVOKED'))
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.05);
INSERT INTO {s}.jobs_plain ({jobs_columns}) SELECT {jobs_columns} FROM {s}.jobs;
CREATE TABLE {s}.job_attempts_plain (
    job_id      uuid NOT NULL,
    attempt     integer NOT NULL,
    worker_id   uuid,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    state       text NOT NULL,
    error       jsonb
);
INSERT INTO {s}.job_attempts_plain ({attempts_columns})
SELECT {attempts_columns} FROM {s}.job_attempts;
{views_plain}
DROP TABLE {s}.jobs, {s}.job_attempts;
ALTER TABLE {s}.jobs_plain RENAME TO jobs;
ALTER TABLE {s}.job_attempts_plain RENAME TO job_attempts;
ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);
ALTER TABLE {s}.job_attempts ADD CONSTRAINT job_attempts_pkey PRIMARY KEY (job_id, attempt);
CREATE INDEX jobs_root_idx ON {s}.jobs (root_id) WHERE root_id IS NOT NULL;
CREATE INDEX jobs_parent_idx ON {s}.jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_group_idx ON {s}.jobs (group_id, group_index) WHERE group_id IS NOT NULL;
DROP FUNCTION {s}.history_prune(float8, float8);
DROP FUNCTION {s}.history_expired(timestamptz, timestamptz, float8, float8);
DROP FUNCTION {s}.history_partitions_ahead();
DROP FUNCTION {s}.history_partition_add(timestamptz, timestamptz);
DROP FUNCTION {s}.history_lock(boolean);
DROP TABLE {s}.history_partitions, {s}.history_plan, {s}.job_counts;
DROP FUNCTION {s}.job_counts_track();
DROP FUNCTION {s}.uuid7_hour(uuid);
"""


def _schema() -> str:
    return str(context.config.attributes["schema"])


def _render(ddl: str, **parts: str) -> str:
    out = ddl
    for key, value in parts.items():
        out = out.replace("{" + key + "}", value)
    return out.format(s=f'"{_schema()}"')


def _views(table_suffix: str, finished: str) -> str:
    views = VIEWS.replace("{queue_stats}", QUEUE_STATS.replace("{finished}", finished))
    if table_suffix:  # the downgrade points the views at the plain copies first
        views = views.replace("{s}.jobs ", "{s}.jobs" + table_suffix + " ")
        views = views.replace("{s}.jobs\n", "{s}.jobs" + table_suffix + "\n")
        views = views.replace("{s}.job_attempts ", "{s}.job_attempts" + table_suffix + " ")
    return views


def legacy_bound(now: datetime) -> datetime:
    """The start of the day after tomorrow (UTC): the legacy partition's end.
    New ids keep passing its CHECK for at least a day after phase 1."""
    today = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=2)


def upgrade() -> None:
    bind = op.get_bind()
    bound_at = legacy_bound(datetime.now(timezone.utc))
    floor = text(f'SELECT "{_schema()}".uuid7_floor(:t)')
    bound = str(bind.execute(floor, {"t": bound_at}).scalar())
    # Phase 1, each statement committed on its own: migrate.upgrade hands
    # alembic a connection already in a transaction (so alembic's
    # autocommit_block is not available); this commits the revisions before
    # this one too, which are complete.
    bind.commit()

    def run(sql: str) -> None:
        op.execute(sql)
        bind.commit()

    started = time.monotonic()
    run(_render(COUNTERS, track=TRACK, triggers=TRIGGERS))
    run(_render(INITIAL_COUNT))
    for table, column, name in BOUND_CHECKS:
        qualified = f'"{_schema()}".{table}'
        run(f"ALTER TABLE {qualified} DROP CONSTRAINT IF EXISTS {name}")
        run(f"ALTER TABLE {qualified} ADD CONSTRAINT {name} CHECK ({column} < '{bound}') NOT VALID")
        try:
            run(f"ALTER TABLE {qualified} VALIDATE CONSTRAINT {name}")
        except exc.IntegrityError:
            # Caller-chosen ids at or above the bound: phase 2 moves them to the
            # default partition, and its attach scans the table under the lock.
            bind.rollback()
            run(f"ALTER TABLE {qualified} DROP CONSTRAINT {name}")
            log.warning(
                "%s holds ids at or above %s (random v4 ids?): they go to the default "
                "partition, and attaching the legacy partition scans it under the lock",
                qualified,
                bound,
            )
    locked = time.monotonic()
    log.info("0012 phase 1 (counting, CHECK validated; no blocking lock): %.2fs", locked - started)
    op.execute(
        _render(
            MAIN,
            tables=TABLES,
            views=_views("", FINISHED_COUNTED),
            triggers=TRIGGERS,
            bound=bound,
            bound_at=bound_at.isoformat(),
            jobs_columns=JOBS_COLUMNS,
            attempts_columns=ATTEMPTS_COLUMNS,
        )
    )
    # The lock is held until migrate.upgrade commits, right after.
    log.info("0012 phase 2 (tables locked): %.3fs", time.monotonic() - locked)


def downgrade() -> None:
    op.execute(
        _render(
            DOWNGRADE,
            views_plain=_views("_plain", FINISHED_SCANNED),
            jobs_columns=JOBS_COLUMNS,
            attempts_columns=ATTEMPTS_COLUMNS,
        )
    )
