-- The jobqueue schema as it stands at the newest migration (revision 0023), in
-- one file: tables, indexes, views, functions, triggers and the rows the schema
-- needs, grouped by concept. The reference to read, not an installer: alembic
-- (migrations/versions, `jobqueue db upgrade`) remains the only way a schema is
-- created or upgraded, and nothing runs this file except a test.
--
-- A new revision updates this file in the same commit. tests/migrations/test_migrations.py
-- applies it to an empty schema and compares that, object by object (columns,
-- defaults, constraints, indexes, views, function bodies, triggers, rows), with
-- a schema migrated to head: any difference fails and names the object.
--
-- Placeholders, as in queries.sql: `{schema}` is the quoted schema name,
-- `{schema_name}` the bare name (in a message), `{channel_jobs}` and
-- `{channel_done}` the NOTIFY channels (`<schema>_jobs`: a job is due in the
-- queue named by the payload; `<schema>_done`: the job with the payload's id
-- finished), `{channel_control}` the workers' control channel (a running job
-- was revoked). Runs top to bottom on an empty schema. Function bodies are
-- verbatim what the migrations install (the test compares them as text), so
-- their line breaks and indentation are the migrations'.


-- ===========================================================================
-- Ids
-- ===========================================================================

-- Time-ordered ids (UUIDv7: 48-bit Unix ms, then random), like the Python side,
-- so new rows land at the right edge of the primary key and retention can walk
-- it oldest first. Setting bits 52-53 turns gen_random_uuid()'s v4 into v7.
CREATE FUNCTION {schema}.uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
        substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                  FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- The first id created at or after `moment` (for range scans by time:
-- retention walks the primary key from the oldest job).
CREATE FUNCTION {schema}.uuid7_floor(moment timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(overlay('\x00000000000070008000000000000000'::bytea PLACING
        substring(int8send(floor(extract(epoch FROM moment) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 'hex')::uuid
$$;


-- ===========================================================================
-- Jobs: the record, the waiting, the running, the failed attempts
-- (docs/states.md)
--
-- A waiting job has a row in job_queue, a running one a row in job_lease, and
-- the claim moves it from one to the other in one transaction; so the claim
-- scans only waiting jobs, never finished history, and completion is guarded
-- by the lease. Every job has a record in jobs, except a job enqueued singly
-- from Python that no worker has claimed yet: it waits in job_queue alone,
-- with its arguments (one row per enqueue, not two).
-- ===========================================================================

-- The record of every job: arguments, state, result, error. Partitioned by
-- time range of its UUIDv7 id (docs/retention.md), so retention drops whole
-- partitions, and a lookup, claim or completion by id reads one partition. Its
-- indexes are on never-updated columns only, so state changes are HOT updates;
-- each partition has fillfactor 80 (history_partition_add), which leaves each
-- page room for them.
CREATE TABLE {schema}.jobs (
    id          uuid PRIMARY KEY,
    task        text NOT NULL,
    queue       text NOT NULL DEFAULT 'default',
    priority    integer NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'PENDING',
    args        jsonb NOT NULL DEFAULT '[]',
    kwargs      jsonb NOT NULL DEFAULT '{}',
    options     jsonb NOT NULL DEFAULT '{}',
    run_at      timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    worker_id   uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    result      jsonb,
    error       jsonb,
    -- Lineage: the first job of the workflow, and the job that spawned this one.
    root_id     uuid,
    parent_id   uuid,
    -- Revocations live in SQL, so they need no worker online and survive restarts.
    revoked_at       timestamptz,
    revoke_terminate boolean NOT NULL DEFAULT false,
    -- A group member's group and place in it (chord results are read in order).
    group_id    uuid,
    group_index integer,
    -- update_state() from the running attempt; cleared when an attempt starts.
    progress_state text,
    progress       jsonb,
    CONSTRAINT jobs_state_check CHECK (
        state IN ('PENDING', 'STARTED', 'SUCCESS', 'FAILURE', 'RETRY', 'REVOKED'))
) PARTITION BY RANGE (id);
-- Workflow lookups: by root (workflow_jobs), parent (children), group (chord
-- results in order).
CREATE INDEX jobs_root_idx ON {schema}.jobs (root_id) WHERE root_id IS NOT NULL;
CREATE INDEX jobs_parent_idx ON {schema}.jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_group_idx ON {schema}.jobs (group_id, group_index) WHERE group_id IS NOT NULL;

-- Waiting jobs only; rows are deleted by the claim. Vacuumed eagerly so dead
-- index entries do not pile up in front of the claim.
CREATE TABLE {schema}.job_queue (
    job_id   uuid PRIMARY KEY,
    queue    text NOT NULL,
    priority integer NOT NULL,
    run_at   timestamptz NOT NULL,
    task     text NOT NULL,
    -- Limit keys (admit()); NULL for unlimited jobs, the fast path.
    rate_key        text,
    concurrency_key text,
    -- The job's payload while it has no record in jobs yet (args IS NOT NULL):
    -- filled by the single enqueue only. Jobs enqueued by SQL, in bulk, by
    -- canvases, for unique tasks or with a caller-chosen id have their record
    -- at once, and NULL here (a job in a workflow always has its record, so
    -- lineage lookups need only jobs).
    args       jsonb,
    kwargs     jsonb,
    options    jsonb,
    expires_at timestamptz,
    created_at timestamptz,
    -- The job's fair key (the task's fair_key, 0021): claimed round-robin
    -- across keys (job_claim_fair); NULL for most jobs. Ordered by bytes
    -- (UTF-8: code points), as workers order keys to take turns.
    fair_key   text COLLATE "C"
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_insert_scale_factor = 0,
        autovacuum_vacuum_insert_threshold = 20000,
        autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
-- The claim's index, and the only one it has a choice of: no index on run_at
-- alone (dropped in 0005). With statistics taken while job_queue was empty (it
-- swings between empty and a backlog) the planner claimed through it, reading
-- and sorting every due job; the next-due lookup walks this index one priority
-- at a time instead.
CREATE INDEX job_queue_claim_idx ON {schema}.job_queue (queue, priority DESC, run_at, job_id);
-- The next job waiting on a concurrency key, released when a running one ends.
CREATE INDEX job_queue_concurrency_idx
    ON {schema}.job_queue (concurrency_key, priority DESC, run_at)
    WHERE concurrency_key IS NOT NULL;
-- The fair claim's index (job_claim_fair): the keys of a queue that have
-- waiting jobs, one probe each, and each key's jobs in claim order. Partial,
-- so jobs without a key (most) cost nothing more.
CREATE INDEX job_queue_fair_idx ON {schema}.job_queue (queue, fair_key, priority DESC, run_at, job_id)
    WHERE fair_key IS NOT NULL;

-- Running jobs only: who holds each one and for which attempt. No index on
-- worker_id (dropped in 0005): completions find leases by primary key, and the
-- rare per-worker lookups (rescue, orphans) read a table that only holds
-- running jobs; each claim writes one index entry fewer.
CREATE TABLE {schema}.job_lease (
    job_id     uuid PRIMARY KEY,
    worker_id  uuid NOT NULL,
    attempt    integer NOT NULL,
    task       text NOT NULL,
    queue      text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    concurrency_key text
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0);
-- admit() counts the running jobs of a concurrency key.
CREATE INDEX job_lease_concurrency_idx ON {schema}.job_lease (concurrency_key)
    WHERE concurrency_key IS NOT NULL;

-- One row per attempt that did not end in success (retried, failed, lost with
-- its worker, timed out, revoked); a successful final attempt is the jobs row
-- itself.
CREATE TABLE {schema}.job_attempts (
    job_id      uuid NOT NULL,
    attempt     integer NOT NULL,
    worker_id   uuid,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    state       text NOT NULL,
    error       jsonb,
    PRIMARY KEY (job_id, attempt)
) PARTITION BY RANGE (job_id);


-- ===========================================================================
-- History: partitions and counters (docs/retention.md)
--
-- jobs and job_attempts are partitioned alike, by ranges of job ids (a day by
-- default): the maintenance leader creates partitions ahead and drops those
-- whose every job finished and expired. A default partition takes any id no
-- range covers, so an insert never fails for want of a partition. A database
-- migrated from 0011 also has jobs_legacy (its former table, every id below
-- the bound the migration chose). queue_stats reads counters instead of
-- scanning history.
-- ===========================================================================

-- Finished (and retrying) jobs per hour of their id, queue and state, one
-- row per writing backend (slot: its pid; 0 for the migration's initial
-- count), so concurrent completions never wait on one counter row. Kept by
-- statement triggers on jobs; the rows of a dropped partition's hours go
-- with it. last_finished_at only grows: it tells retention when the newest
-- finish of a partition's hours passed its age.
CREATE TABLE {schema}.job_counts (
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
CREATE FUNCTION {schema}.uuid7_hour(id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(((('x' || left(replace(id::text, '-', ''), 12))::bit(48)::bigint)
                         / 3600000) * 3600)
$$;

-- Keeps job_counts: one statement-level trigger per kind of change, reading
-- its transition table (a whole batch of completions is one upsert per
-- (hour, queue, state)). SECURITY DEFINER: roles that write jobs need no
-- privilege on job_counts.
CREATE FUNCTION {schema}.job_counts_track() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {schema}.job_counts AS c (hour, queue, state, slot, n, last_finished_at)
        SELECT {schema}.uuid7_hour(id), queue, state, pg_backend_pid(), count(*), max(finished_at)
        FROM new_jobs WHERE state IN ('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (hour, queue, state, slot) DO UPDATE
        SET n = c.n + EXCLUDED.n,
            last_finished_at = greatest(c.last_finished_at, EXCLUDED.last_finished_at);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO {schema}.job_counts AS c (hour, queue, state, slot, n, last_finished_at)
        SELECT d.hour, d.queue, d.state, pg_backend_pid(), sum(d.n), max(d.finished_at)
        FROM (SELECT {schema}.uuid7_hour(id) AS hour, queue, state, 1 AS n, finished_at
              FROM new_jobs WHERE state IN ('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')
              UNION ALL
              SELECT {schema}.uuid7_hour(id), queue, state, -1, NULL
              FROM old_jobs WHERE state IN ('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')) AS d
        GROUP BY 1, 2, 3 HAVING sum(d.n) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (hour, queue, state, slot) DO UPDATE
        SET n = c.n + EXCLUDED.n,
            last_finished_at = greatest(c.last_finished_at, EXCLUDED.last_finished_at);
    ELSE
        INSERT INTO {schema}.job_counts AS c (hour, queue, state, slot, n)
        SELECT {schema}.uuid7_hour(id), queue, state, pg_backend_pid(), -count(*)
        FROM old_jobs WHERE state IN ('RETRY', 'SUCCESS', 'FAILURE', 'REVOKED')
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (hour, queue, state, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.job_counts_track();
CREATE TRIGGER jobs_counted_update AFTER UPDATE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.job_counts_track();
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.job_counts_track();

CREATE TABLE {schema}.jobs_default PARTITION OF {schema}.jobs DEFAULT
    WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
          autovacuum_analyze_scale_factor = 0.05);
CREATE TABLE {schema}.job_attempts_default PARTITION OF {schema}.job_attempts DEFAULT;

-- How history is partitioned: each partition covers `period` of ids (aligned
-- on multiples of it since the epoch, UTC), and the leader keeps `ahead`
-- periods after the current one created. Read when partitions are created, so
-- a change applies to the next one.
CREATE TABLE {schema}.history_plan (
    one    boolean PRIMARY KEY DEFAULT true,
    period interval NOT NULL DEFAULT '1 day',
    ahead  integer NOT NULL DEFAULT 3,
    CONSTRAINT history_plan_one_check CHECK (one),
    CONSTRAINT history_plan_period_check CHECK (
        period >= interval '1 hour' AND extract(epoch FROM period)::bigint % 3600 = 0),
    CONSTRAINT history_plan_ahead_check CHECK (ahead BETWEEN 1 AND 100)
);
INSERT INTO {schema}.history_plan DEFAULT VALUES;

-- The range partitions of jobs and job_attempts (jobs_<name>,
-- job_attempts_<name>): ids from uuid7_floor(starts_at) (NULL: the lowest) to
-- uuid7_floor(ends_at). The default partitions are not listed.
CREATE TABLE {schema}.history_partitions (
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
CREATE FUNCTION {schema}.history_lock(exclusive boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR n IN 1..20 LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            IF exclusive THEN
                LOCK TABLE ONLY {schema}.jobs, {schema}.job_attempts IN ACCESS EXCLUSIVE MODE;
            ELSE
                LOCK TABLE ONLY {schema}.jobs, {schema}.job_attempts IN SHARE UPDATE EXCLUSIVE MODE;
                LOCK TABLE {schema}.jobs_default, {schema}.job_attempts_default IN ACCESS EXCLUSIVE MODE;
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
CREATE FUNCTION {schema}.history_partition_add(starts timestamptz, ends timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name text := 'p' || to_char(starts AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI');
    lo   uuid := {schema}.uuid7_floor(starts);
    hi   uuid := {schema}.uuid7_floor(ends);
BEGIN
    PERFORM {schema}.history_lock(false);
    EXECUTE format('CREATE TABLE {schema}.%I (LIKE {schema}.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                   ' WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,'
                   ' autovacuum_analyze_scale_factor = 0.05)', 'jobs_' || name);
    EXECUTE format('CREATE TABLE {schema}.%I (LIKE {schema}.job_attempts INCLUDING DEFAULTS'
                   ' INCLUDING CONSTRAINTS)', 'job_attempts_' || name);
    EXECUTE format('WITH moved AS (DELETE FROM {schema}.jobs_default WHERE id >= $1 AND id < $2'
                   ' RETURNING *) INSERT INTO {schema}.%I SELECT * FROM moved', 'jobs_' || name)
        USING lo, hi;
    EXECUTE format('WITH moved AS (DELETE FROM {schema}.job_attempts_default'
                   ' WHERE job_id >= $1 AND job_id < $2 RETURNING *)'
                   ' INSERT INTO {schema}.%I SELECT * FROM moved', 'job_attempts_' || name)
        USING lo, hi;
    EXECUTE format('ALTER TABLE {schema}.jobs ATTACH PARTITION {schema}.%I FOR VALUES FROM (%L) TO (%L)',
                   'jobs_' || name, lo, hi);
    EXECUTE format('ALTER TABLE {schema}.job_attempts ATTACH PARTITION {schema}.%I'
                   ' FOR VALUES FROM (%L) TO (%L)', 'job_attempts_' || name, lo, hi);
    INSERT INTO {schema}.history_partitions (name, starts_at, ends_at) VALUES (name, starts, ends);
    RETURN name;
END
$$;

-- Run by the maintenance leader at every heartbeat: partitions up to `ahead`
-- periods after the current one. After the newest one, or from the current
-- period when that is older (ids of a gap stay in the default partition).
-- Returns how many it created (0, a catalog read, nearly always).
CREATE FUNCTION {schema}.history_partitions_ahead() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    plan record;
    step float8;
    edge timestamptz;
    made integer := 0;
BEGIN
    SELECT period, ahead INTO plan FROM {schema}.history_plan;
    step := extract(epoch FROM plan.period);
    SELECT greatest(max(p.ends_at),
                    to_timestamp(floor(extract(epoch FROM now()) / step) * step))
    INTO edge FROM {schema}.history_partitions AS p;
    WHILE edge <= now() + plan.period * plan.ahead LOOP
        PERFORM {schema}.history_partition_add(edge, edge + make_interval(secs => step));
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
CREATE FUNCTION {schema}.history_prune(success_age float8, failure_age float8)
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
        SELECT h.name, h.starts_at, h.ends_at FROM {schema}.history_partitions AS h
        WHERE h.ends_at <= now() - make_interval(secs => min_age)
        ORDER BY h.ends_at
    LOOP
        IF {schema}.history_expired(p.starts_at, p.ends_at, success_age, failure_age) THEN
            PERFORM {schema}.history_lock(true);
            -- Again under the lock: nothing can change the partition's rows now.
            CONTINUE WHEN NOT {schema}.history_expired(p.starts_at, p.ends_at, success_age,
                                                  failure_age);
            EXECUTE format('DROP TABLE {schema}.%I, {schema}.%I', 'jobs_' || p.name,
                           'job_attempts_' || p.name);
            DELETE FROM {schema}.history_partitions AS h WHERE h.name = p.name;
            DELETE FROM {schema}.job_counts AS c
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
                      OR NOT {schema}.history_expired(p.starts_at, p.ends_at, success_age, 0);
        SELECT COALESCE(sum(c.n) FILTER (WHERE c.state = 'FAILURE'), 0) INTO failures
        FROM {schema}.job_counts AS c
        WHERE c.hour < p.ends_at AND (p.starts_at IS NULL OR c.hour >= p.starts_at)
        HAVING sum(c.n) FILTER (WHERE c.state IN ('SUCCESS', 'REVOKED')) > 0;
        CONTINUE WHEN NOT FOUND;  -- nothing but failures left: nothing to gain
        -- Copied before the lock (a read: workers go on). The partition holds
        -- no unfinished job, so only a delete could change it meanwhile: the
        -- count is checked again under the lock.
        EXECUTE format('CREATE TABLE {schema}.%I (LIKE {schema}.jobs INCLUDING DEFAULTS'
                       ' INCLUDING CONSTRAINTS) WITH (fillfactor = 80,'
                       ' autovacuum_vacuum_scale_factor = 0.02,'
                       ' autovacuum_analyze_scale_factor = 0.05)', 'jobs_' || p.name || '_kept');
        EXECUTE format('INSERT INTO {schema}.%I (id, task, queue, priority, state, args, kwargs, options, run_at, expires_at, attempts, worker_id, created_at, started_at, finished_at, result, error, root_id, parent_id, revoked_at, revoke_terminate, group_id, group_index, progress_state, progress) SELECT id, task, queue, priority, state, args, kwargs, options, run_at, expires_at, attempts, worker_id, created_at, started_at, finished_at, result, error, root_id, parent_id, revoked_at, revoke_terminate, group_id, group_index, progress_state, progress FROM {schema}.%I'
                       ' WHERE state = %L', 'jobs_' || p.name || '_kept', 'jobs_' || p.name,
                       'FAILURE');
        GET DIAGNOSTICS copied = ROW_COUNT;
        EXECUTE format('CREATE TABLE {schema}.%I (LIKE {schema}.job_attempts INCLUDING DEFAULTS'
                       ' INCLUDING CONSTRAINTS)', 'job_attempts_' || p.name || '_kept');
        EXECUTE format('INSERT INTO {schema}.%I (job_id, attempt, worker_id, started_at, finished_at, state, error) SELECT job_id, attempt, worker_id, started_at, finished_at, state, error'
                       ' FROM {schema}.%I WHERE job_id IN (SELECT id FROM {schema}.%I)',
                       'job_attempts_' || p.name || '_kept', 'job_attempts_' || p.name,
                       'jobs_' || p.name || '_kept');
        -- Indexes and a CHECK of the range built now, so the attach under the
        -- lock builds and scans nothing: building them there held readers for
        -- 213 ms with 50,000 failures kept.
        bounds := '%1$s < ' || quote_literal({schema}.uuid7_floor(p.ends_at))
                  || CASE WHEN p.starts_at IS NULL THEN ''
                          ELSE ' AND %1$s >= ' || quote_literal({schema}.uuid7_floor(p.starts_at)) END;
        EXECUTE format('ALTER TABLE {schema}.%I ADD PRIMARY KEY (id), ADD CONSTRAINT kept_range CHECK ('
                       || format(bounds, 'id') || ')', 'jobs_' || p.name || '_kept');
        EXECUTE format('CREATE INDEX ON {schema}.%I (root_id) WHERE root_id IS NOT NULL',
                       'jobs_' || p.name || '_kept');
        EXECUTE format('CREATE INDEX ON {schema}.%I (parent_id) WHERE parent_id IS NOT NULL',
                       'jobs_' || p.name || '_kept');
        EXECUTE format('CREATE INDEX ON {schema}.%I (group_id, group_index) WHERE group_id IS NOT NULL',
                       'jobs_' || p.name || '_kept');
        EXECUTE format('ALTER TABLE {schema}.%I ADD PRIMARY KEY (job_id, attempt),'
                       ' ADD CONSTRAINT kept_range CHECK (' || format(bounds, 'job_id') || ')',
                       'job_attempts_' || p.name || '_kept');
        PERFORM {schema}.history_lock(true);
        IF copied <> failures
           OR NOT {schema}.history_expired(p.starts_at, p.ends_at, success_age, 0)
           OR failures <> (SELECT COALESCE(sum(c.n), 0) FROM {schema}.job_counts AS c
                           WHERE c.state = 'FAILURE' AND c.hour < p.ends_at
                             AND (p.starts_at IS NULL OR c.hour >= p.starts_at)) THEN
            EXECUTE format('DROP TABLE {schema}.%I, {schema}.%I', 'jobs_' || p.name || '_kept',
                           'job_attempts_' || p.name || '_kept');
            CONTINUE;  -- changed meanwhile: next time
        END IF;
        bounds := CASE WHEN p.starts_at IS NULL THEN 'MINVALUE'
                       ELSE quote_literal({schema}.uuid7_floor(p.starts_at)) END
                  || ') TO (' || quote_literal({schema}.uuid7_floor(p.ends_at));
        EXECUTE format('DROP TABLE {schema}.%I, {schema}.%I', 'jobs_' || p.name,
                       'job_attempts_' || p.name);
        EXECUTE format('ALTER TABLE {schema}.%I RENAME TO %I', 'jobs_' || p.name || '_kept',
                       'jobs_' || p.name);
        EXECUTE format('ALTER TABLE {schema}.%I RENAME TO %I', 'job_attempts_' || p.name || '_kept',
                       'job_attempts_' || p.name);
        EXECUTE format('ALTER TABLE {schema}.jobs ATTACH PARTITION {schema}.%I FOR VALUES FROM (%s)',
                       'jobs_' || p.name, bounds);
        EXECUTE format('ALTER TABLE {schema}.job_attempts ATTACH PARTITION {schema}.%I'
                       ' FOR VALUES FROM (%s)', 'job_attempts_' || p.name, bounds);
        EXECUTE format('ALTER TABLE {schema}.%I DROP CONSTRAINT kept_range', 'jobs_' || p.name);
        EXECUTE format('ALTER TABLE {schema}.%I DROP CONSTRAINT kept_range',
                       'job_attempts_' || p.name);
        DELETE FROM {schema}.job_counts AS c
        WHERE c.state IN ('SUCCESS', 'REVOKED') AND c.hour < p.ends_at
          AND (p.starts_at IS NULL OR c.hour >= p.starts_at);
        name := p.name;
        kept := copied;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Whether every job made from `starts` to `ends` finished and passed its age.
CREATE FUNCTION {schema}.history_expired(starts timestamptz, ends timestamptz, success_age float8,
                                    failure_age float8) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (
               SELECT 1 FROM {schema}.job_queue AS q
               WHERE q.job_id < {schema}.uuid7_floor(ends)
                 AND q.job_id >= COALESCE({schema}.uuid7_floor(starts),
                                          '00000000-0000-0000-0000-000000000000'))
       AND NOT EXISTS (
               SELECT 1 FROM {schema}.job_lease AS l
               WHERE l.job_id < {schema}.uuid7_floor(ends)
                 AND l.job_id >= COALESCE({schema}.uuid7_floor(starts),
                                          '00000000-0000-0000-0000-000000000000'))
       AND NOT EXISTS (
               SELECT 1 FROM {schema}.job_counts AS c
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
REVOKE EXECUTE ON FUNCTION {schema}.history_partition_add(timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.history_partitions_ahead() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.history_prune(float8, float8) FROM PUBLIC;

-- Every job: its record, or (before its first claim) its row in job_queue.
-- One statement sees a job in exactly one of the two: the claim that moves it
-- deletes the one and inserts the other in one transaction. What to query
-- instead of jobs when waiting jobs matter.
CREATE VIEW {schema}.all_jobs AS
SELECT id, task, queue, priority, state, args, kwargs, options, run_at, expires_at,
       attempts, worker_id, created_at, started_at, finished_at, result, error, root_id,
       parent_id, revoked_at, revoke_terminate, group_id, group_index, progress_state,
       progress
FROM {schema}.jobs
UNION ALL
SELECT job_id, task, queue, priority, 'PENDING', args, kwargs, options, run_at, expires_at,
       0, NULL, created_at, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, false, NULL, NULL, NULL,
       NULL
FROM {schema}.job_queue
WHERE args IS NOT NULL;

-- Every attempt of every job, oldest first: failed ones from job_attempts,
-- a finished successful one from jobs.
CREATE VIEW {schema}.job_history AS
SELECT a.job_id, j.task, a.attempt, a.worker_id, a.started_at, a.finished_at, a.state,
       a.error ->> 'type' AS error_type, a.error ->> 'message' AS error_message,
       a.error ->> 'traceback' AS traceback
FROM {schema}.job_attempts AS a
JOIN {schema}.jobs AS j ON j.id = a.job_id
UNION ALL
SELECT j.id, j.task, j.attempts, j.worker_id, j.started_at, j.finished_at, j.state,
       NULL, NULL, NULL
FROM {schema}.jobs AS j
WHERE j.state = 'SUCCESS';


-- ===========================================================================
-- Workers
-- ===========================================================================

-- One row per live worker, refreshed by its heartbeat. Each heartbeat pushes
-- lease_expires_at forward by the worker's own lease TTL; past it, any live
-- worker may rescue its jobs.
CREATE TABLE {schema}.workers (
    id           uuid PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    concurrency  integer NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL DEFAULT now() + interval '30 seconds',
    tasks        text[], -- the task names it serves (NULL: registered before 0011)
    pool         text    -- threads or processes (NULL: registered before 0014)
);
CREATE INDEX workers_lease_idx ON {schema}.workers (lease_expires_at);

-- Due jobs whose task no live worker of their queue serves (a worker with no
-- task list, from before 0011, counts as serving every task): what a rolling
-- deploy leaves waiting for the new release's workers.
CREATE VIEW {schema}.unserved_tasks AS
SELECT q.queue, q.task, count(*) AS waiting, now() - min(q.run_at) AS oldest_waiting
FROM {schema}.job_queue AS q
WHERE q.run_at <= now()
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.workers AS w
      WHERE w.lease_expires_at > now() AND q.queue = ANY(w.queues)
        AND (w.tasks IS NULL OR q.task = ANY(w.tasks)))
GROUP BY q.queue, q.task;

-- One row: the worker that runs maintenance (rescue, retention, vacuum) for
-- everyone. Taken or renewed by that worker's heartbeat statement when free or
-- its own; the lease lasts three heartbeats, and a clean exit gives it up.
CREATE TABLE {schema}.maintenance_leader (
    one              boolean PRIMARY KEY DEFAULT true,
    worker_id        uuid NOT NULL,
    elected_at       timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL,
    CONSTRAINT maintenance_leader_one_check CHECK (one)
);


-- ===========================================================================
-- Schema revision and worker compatibility (docs/upgrading.md)
--
-- Every claim calls worker_compatible(<the worker's revision>), so a worker
-- left running across an upgrade it cannot run against stops claiming (and
-- exits, saying why) instead of mishandling rows it does not know.
-- ===========================================================================

-- alembic's own table: alembic creates it and writes its row. Shown because
-- worker_compatible() reads it, and because its row is the revision this file
-- describes.
CREATE TABLE {schema}.alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO {schema}.alembic_version (version_num) VALUES ('0023');

-- One row: the oldest worker revision that may claim from this schema. A
-- revision that old workers cannot run against raises it to itself in the same
-- transaction; one they can run against leaves it alone.
CREATE TABLE {schema}.schema_compat (
    one                    boolean PRIMARY KEY DEFAULT true,
    oldest_worker_revision integer NOT NULL,
    CONSTRAINT schema_compat_one_check CHECK (one)
);
INSERT INTO {schema}.schema_compat (oldest_worker_revision) VALUES (8);

-- Called by every claim with the revision the worker was built for: raises
-- (SQLSTATE JQ001) unless that revision lies between schema_compat's oldest
-- worker revision and the schema's own; the claim then changes nothing.
CREATE FUNCTION {schema}.worker_compatible(worker_revision integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    current integer;
    oldest  integer;
BEGIN
    -- One read, each table by its key: a claim session disables sequential
    -- scans. About 30 us per claim.
    SELECT v.version_num::integer, c.oldest_worker_revision INTO current, oldest
    FROM {schema}.alembic_version AS v, {schema}.schema_compat AS c
    WHERE v.version_num IS NOT NULL AND c.one;
    IF worker_revision BETWEEN oldest AND current THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION 'jobqueue schema {schema_name} is at revision %, which a worker of revision % '
                    'must not claim from (workers of revisions % to % may)',
                    current, worker_revision, oldest, current
        USING ERRCODE = 'JQ001',
              HINT = 'restart the worker with the jobqueue release that matches the '
                     'schema (docs/upgrading.md)';
END
$$;


-- ===========================================================================
-- Helpers the run-time statements share (queries.sql)
-- ===========================================================================

-- An error the database itself records (WorkerLostError at rescue,
-- TaskRevokedError at revoke, JobRecordMissing at claim), in the shape a
-- worker stores (jobqueue.serialization.dump_error).
CREATE FUNCTION {schema}.error_json(type text, message text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('type', type, 'module', 'jobqueue.exceptions',
                              'message', message, 'traceback', NULL)
$$;

-- How many retries a job may have: the number in its options, none when that
-- is null (unlimited), and 3 when it stores none (jobs written by SQL
-- enqueue()): jobqueue.retry.DEFAULT_MAX_RETRIES, which a test keeps equal.
CREATE FUNCTION {schema}.max_retries(options jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN options ? 'max_retries' THEN (options ->> 'max_retries')::integer
                ELSE 3 END
$$;

-- The events of one statement (jobqueue/events): items of kind:id[/attempt],
-- one NOTIFY per 120 of them (a NOTIFY takes a cluster-wide lock at commit;
-- payloads stay under the 8000-byte limit). STRICT: the statements pass
-- array_agg(...) FILTER (WHERE <the events lock's try failed>), NULL when
-- nobody listens, so the function is not even called then. Returns the
-- NOTIFYs sent.
CREATE FUNCTION {schema}.events_notify(channel text, items text[]) RETURNS integer
LANGUAGE plpgsql STRICT AS $$
DECLARE
    sent integer := 0;
BEGIN
    FOR i IN 1 .. cardinality(items) BY 120 LOOP
        PERFORM pg_notify(channel, array_to_string(items[i : i + 119], ','));
        sent := sent + 1;
    END LOOP;
    RETURN sent;
END
$$;

-- Called by a claim or a completion that reports no events (job_claim,
-- job_complete_many) when the events lock says a listener is there: raises
-- JQ004, so that statement changes nothing and the worker runs it again as
-- job_claim_events or job_complete_many_events. Never returns.
CREATE FUNCTION {schema}.events_listening() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a listener wants events: claim with job_claim_events'
        USING ERRCODE = 'JQ004';
END
$$;


-- ===========================================================================
-- Enqueue from plain SQL (triggers, migrations, other languages)
-- ===========================================================================

-- How deeply arrays and objects nest in a JSON value (a scalar is 0).
CREATE FUNCTION {schema}.json_depth(doc jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    WITH RECURSIVE walk(value, depth) AS (
        SELECT doc, 1 WHERE jsonb_typeof(doc) IN ('array', 'object')
        UNION ALL
        SELECT child.value, walk.depth + 1
        FROM walk
        CROSS JOIN LATERAL (
            SELECT e.value FROM jsonb_array_elements(
                CASE WHEN jsonb_typeof(walk.value) = 'array' THEN walk.value END) AS e
            UNION ALL
            SELECT o.value FROM jsonb_each(
                CASE WHEN jsonb_typeof(walk.value) = 'object' THEN walk.value END) AS o
        ) AS child
        WHERE jsonb_typeof(child.value) IN ('array', 'object')
    )
    SELECT COALESCE(max(depth), 0) FROM walk
$$;

-- How each registered task's jobs are made when SQL makes them (enqueue(),
-- spawn(), run_schedule()), written by every starting worker (0022). queue:
-- for a call that names none (NULL: a task_routes function decides, which
-- only Python can run). The key columns say how each key is made, as JSON:
-- {"kind": "task"} (the task's name), "args" (its canonical arguments),
-- "constant" (with "value"), "arg" (one argument: "name", "position") or
-- "python" (a function); NULL: the task has no such key.
CREATE TABLE {schema}.task_settings (
    task            text PRIMARY KEY,
    queue           text,
    priority        integer NOT NULL DEFAULT 0,
    options         jsonb NOT NULL DEFAULT '{}',
    rate_limit_key  jsonb,
    concurrency_key jsonb,
    unique_key      jsonb,
    unique_states   text[] NOT NULL DEFAULT '{PENDING,STARTED,RETRY}',
    unique_window   float8,
    on_duplicate    text NOT NULL DEFAULT 'keep',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT task_settings_on_duplicate_check CHECK (
        on_duplicate IN ('keep', 'replace', 'debounce'))
);

-- A JSON value's canonical text: compact, every object's keys in code point
-- order, numbers as numeric prints them. Python's
-- jobqueue.keys.canonical_arguments gives the same text for the same value.
CREATE FUNCTION {schema}.canonical_json(doc jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    CASE jsonb_typeof(doc)
    WHEN 'object' THEN
        RETURN '{' || COALESCE((
            SELECT string_agg(to_jsonb(e.key)::text || ':'
                              || CASE WHEN jsonb_typeof(e.value) IN ('object', 'array')
                                      THEN {schema}.canonical_json(e.value)
                                      ELSE e.value::text END,
                              ',' ORDER BY e.key COLLATE "C")
            FROM jsonb_each(doc) AS e), '') || '}';
    WHEN 'array' THEN
        RETURN '[' || COALESCE((
            SELECT string_agg(CASE WHEN jsonb_typeof(e.value) IN ('object', 'array')
                                   THEN {schema}.canonical_json(e.value)
                                   ELSE e.value::text END,
                              ',' ORDER BY e.n)
            FROM jsonb_array_elements(doc) WITH ORDINALITY AS e(value, n)), '') || ']';
    ELSE
        RETURN doc::text;
    END CASE;
END
$$;

-- The key a job of `task` carries for one setting (rate_limit_key,
-- concurrency_key or unique_key; `spec`: that column of task_settings), as
-- Python computes it: the task's name, then ':' and the key (the canonical
-- arguments, a constant, one argument or its parameter's default, or `given`:
-- what the caller says the task's function would return). NULL: the task has
-- no such key. A key SQL cannot compute raises (JQ006: it needs Python;
-- 22023: the argument is missing, or neither a string nor an integer), or
-- without `strict` is NULL for the caller to fall back on (spawn()).
CREATE FUNCTION {schema}.task_key(task text, setting text, spec jsonb, args jsonb,
                                  kwargs jsonb, given text DEFAULT NULL,
                                  strict boolean DEFAULT true) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    kind  text := spec ->> 'kind';
    value jsonb;
BEGIN
    IF given IS NOT NULL AND (spec IS NULL OR kind = 'task') AND strict THEN
        RAISE EXCEPTION 'jobqueue.enqueue: task % has no key function for %, so % => % '
                        'means nothing', task, setting, setting, quote_literal(given)
            USING ERRCODE = '22023',
                  HINT = CASE WHEN spec IS NULL
                              THEN 'The task declares no such key: leave it out.'
                              ELSE 'All its jobs share one key, the task''s name: leave it '
                                   'out.' END;
    ELSIF spec IS NULL THEN
        RETURN NULL;
    ELSIF given IS NOT NULL AND kind <> 'task' THEN
        RETURN task || ':' || given;
    END IF;
    IF kind = 'task' THEN
        RETURN task;
    ELSIF kind = 'args' THEN
        RETURN task || ':' || {schema}.canonical_json(jsonb_build_array(args, kwargs));
    ELSIF kind = 'constant' THEN
        RETURN task || ':' || (spec ->> 'value');
    ELSIF kind = 'arg' THEN
        value := COALESCE(kwargs -> (spec ->> 'name'), args -> ((spec ->> 'position')::integer),
                          spec -> 'default');
        IF jsonb_typeof(value) = 'string' THEN
            RETURN task || ':' || (value #>> '{}');
        ELSIF jsonb_typeof(value) = 'number' AND value::text ~ '^-?[0-9]+$' THEN
            RETURN task || ':' || value::text;
        ELSIF NOT strict THEN
            RETURN NULL;
        ELSIF value IS NULL THEN
            RAISE EXCEPTION 'jobqueue.enqueue: task % takes its % from its argument %, '
                            'which this call does not give', task, setting, spec ->> 'name'
                USING ERRCODE = '22023';
        END IF;
        RAISE EXCEPTION 'jobqueue.enqueue: task % takes its % from its argument %, which must '
                        'be a string or an integer, got %',
            task, setting, spec ->> 'name', jsonb_typeof(value) USING ERRCODE = '22023';
    ELSIF NOT strict THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'jobqueue.enqueue: task %''s % is a Python function, which SQL cannot run',
        task, setting
        USING ERRCODE = 'JQ006',
              HINT = format('Pass the key it would return for these arguments: '
                            'enqueue(%L, ..., %s => ''<key>''), or declare the key with '
                            'jobqueue.arg(<parameter>) so that SQL computes it.', task, setting);
END
$$;

-- Writes the job's record at once (jobs and job_queue), and notifies.
-- A task a worker registered (task_settings) gets what delay() gives it: its
-- queue and priority when the call names none, its stored options, its limit
-- keys and its unique key; a unique task's call whose key is held returns
-- the holder's id and writes nothing (or, replace and debounce, changes the
-- waiting holder). A key only a Python function gives raises JQ006 unless
-- the call passes it (unique_key, rate_limit_key, concurrency_key: what the
-- function would return). Other tasks: queue 'default', priority 0, no keys.
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
    queue      text DEFAULT NULL,
    priority   integer DEFAULT NULL,
    run_at     timestamptz DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    id         uuid DEFAULT NULL,
    depends_on uuid[] DEFAULT NULL,
    on_dependency_failure text DEFAULT 'fail',
    unique_key text DEFAULT NULL,
    rate_limit_key text DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    options    jsonb DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := COALESCE(enqueue.id, {schema}.uuid7());
    due    timestamptz := COALESCE(enqueue.run_at, now());
    s      record;
    q      text;
    prio   integer;
    opts   jsonb;
    rk     text;
    ck     text;
    uk     text;
    holder uuid;
BEGIN
    IF jsonb_typeof(enqueue.args) <> 'array' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: args must be a JSON array, got %',
            jsonb_typeof(enqueue.args) USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(enqueue.kwargs) <> 'object' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: kwargs must be a JSON object, got %',
            jsonb_typeof(enqueue.kwargs) USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(COALESCE(enqueue.options, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: options must be a JSON object, got %',
            jsonb_typeof(enqueue.options) USING ERRCODE = '22023';
    END IF;
    IF {schema}.json_depth(enqueue.args) > 200
       OR {schema}.json_depth(enqueue.kwargs) > 200 THEN
        RAISE EXCEPTION 'jobqueue.enqueue: the arguments of task % nest arrays and objects '
                        '% levels deep; at most 200 are allowed',
            enqueue.task,
            greatest({schema}.json_depth(enqueue.args), {schema}.json_depth(enqueue.kwargs))
            USING ERRCODE = '22023';
    END IF;
    opts := COALESCE(enqueue.options, '{}') - 'rate_key' - 'concurrency_key';
    SELECT * INTO s FROM {schema}.task_settings AS t WHERE t.task = enqueue.task;
    IF FOUND THEN
        q := COALESCE(enqueue.queue, s.queue);
        IF q IS NULL THEN
            RAISE EXCEPTION 'jobqueue.enqueue: task % is routed by a function in '
                            'app.conf.task_routes, which SQL cannot run', enqueue.task
                USING ERRCODE = 'JQ006',
                      HINT = 'Pass the queue: enqueue(..., queue => ''<queue>''), or route '
                             'the task by its name (a mapping in task_routes).';
        END IF;
        prio := COALESCE(enqueue.priority, s.priority);
        -- (task_key() only for a key there is: most tasks have none)
        IF num_nonnulls(s.rate_limit_key, s.concurrency_key, s.unique_key, enqueue.unique_key,
                        enqueue.rate_limit_key, enqueue.concurrency_key) > 0 THEN
            rk := {schema}.task_key(enqueue.task, 'rate_limit_key', s.rate_limit_key,
                                    enqueue.args, enqueue.kwargs, enqueue.rate_limit_key);
            ck := {schema}.task_key(enqueue.task, 'concurrency_key', s.concurrency_key,
                                    enqueue.args, enqueue.kwargs, enqueue.concurrency_key);
            uk := {schema}.task_key(enqueue.task, 'unique_key', s.unique_key, enqueue.args,
                                    enqueue.kwargs, enqueue.unique_key);
            opts := opts || jsonb_strip_nulls(jsonb_build_object('rate_key', rk,
                                                                 'concurrency_key', ck));
        END IF;
        opts := s.options || opts;
    ELSE
        IF COALESCE(enqueue.unique_key, enqueue.rate_limit_key, enqueue.concurrency_key)
           IS NOT NULL THEN
            RAISE EXCEPTION 'jobqueue.enqueue: task % is not in task_settings (no worker of '
                            'this release has started with it), so its keys are unknown',
                enqueue.task
                USING ERRCODE = '22023',
                      HINT = 'Start a worker that registers the task, or leave the keys out.';
        END IF;
        q := COALESCE(enqueue.queue, 'default');
        prio := COALESCE(enqueue.priority, 0);
    END IF;
    IF uk IS NOT NULL THEN
        IF enqueue.depends_on IS NOT NULL THEN
            RAISE EXCEPTION 'jobqueue.enqueue: task % is unique: depends_on cannot be '
                            'combined with a unique task''s key', enqueue.task
                USING ERRCODE = '22023';
        END IF;
        holder := {schema}.unique_hold(uk, new_id, s.unique_states, s.unique_window,
                                       s.on_duplicate, enqueue.args, enqueue.kwargs, due, true);
        IF holder <> new_id THEN
            RETURN holder;  -- the key is held: nothing written
        END IF;
    END IF;
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options, run_at,
                               expires_at)
    VALUES (new_id, enqueue.task, q, prio, enqueue.args, enqueue.kwargs, opts, due,
            enqueue.expires_at);
    IF enqueue.depends_on IS NOT NULL THEN
        INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                        concurrency_key)
        VALUES (new_id, q, prio, {schema}.dependency_wait(), enqueue.task, rk, ck);
        PERFORM {schema}.depend(new_id, enqueue.depends_on, enqueue.on_dependency_failure);
        RETURN new_id;
    END IF;
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key)
    VALUES (new_id, q, prio, due, enqueue.task, rk, ck);
    PERFORM pg_notify('{channel_jobs}', q);
    RETURN new_id;
END
$$;


-- ===========================================================================
-- Canvas: groups, chords with SQL counters, links, progress
--
-- A canvas is JSON written by Python (jobqueue/canvas.py) with every job id
-- chosen up front. spawn() turns a signature into rows; fail_tree() writes the
-- rows of work that can no longer run as FAILURE; advance() is called in the
-- same transaction that finishes jobs (completion, rescue, revocation) and
-- creates what comes next: link callbacks, error callbacks, chord bodies.
-- Every step is idempotent (ids are known, inserts skip existing ids, chord
-- membership rows are deleted once), and a chord's counter row is locked by
-- each decrement, so a body is spawned exactly once.
-- ===========================================================================

-- Member ids of every group in a canvas, known before the members exist.
CREATE TABLE {schema}.groups (
    id         uuid PRIMARY KEY,
    members    uuid[] NOT NULL,
    root_id    uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A chord's counter: header members still to succeed; its body runs at 0.
CREATE TABLE {schema}.chords (
    id          uuid PRIMARY KEY,
    state       text NOT NULL DEFAULT 'PENDING',
    remaining   integer NOT NULL,
    body        jsonb NOT NULL,
    root_id     uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT chords_state_check CHECK (state IN ('PENDING', 'DONE', 'FAILED'))
);

-- A header job still to be counted; deleting the row is what counts it once.
CREATE TABLE {schema}.chord_members (
    job_id   uuid PRIMARY KEY,
    chord_id uuid NOT NULL
);

-- A signature (task, group or chord) becomes rows: records in jobs, waiting
-- rows in job_queue, a chord's counter and members. Spawning an id twice
-- changes nothing. A task that a worker registered (task_settings) gets its
-- keys from the step's final arguments (a parent's result included; a key
-- only Python computes keeps the one the producer froze), and a unique step
-- takes its key; a step whose key another job holds follows that job: it
-- waits for it (depend()) and ends with its outcome, without running
-- (dependency_release()). A key whose lock another transaction holds at that
-- moment is not waited for: the step is written as its own job.
CREATE FUNCTION {schema}.spawn(sig jsonb, prepend jsonb, parent uuid, root uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kind     text := COALESCE(sig ->> 'type', 'task');
    member   jsonb;
    new_id   uuid;
    chord_id uuid;
    due      timestamptz;
    q        text;
    args     jsonb;
    kwargs   jsonb;
    opts     jsonb;
    s        record;
    uk       text;
    holder   uuid;
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
    args := CASE WHEN prepend IS NULL OR COALESCE((sig ->> 'immutable')::boolean, false)
                 THEN COALESCE(sig -> 'args', '[]') ELSE prepend || COALESCE(sig -> 'args', '[]')
            END;
    kwargs := COALESCE(sig -> 'kwargs', '{}');
    opts := COALESCE(sig -> 'options', '{}');
    SELECT * INTO s FROM {schema}.task_settings AS t WHERE t.task = sig ->> 'task';
    -- (task_key() only for a key there is: most tasks have none; options that
    -- are not an object are left as they are: the worker refuses them)
    IF FOUND AND num_nonnulls(s.rate_limit_key, s.concurrency_key, s.unique_key) > 0
       AND jsonb_typeof(opts) = 'object' THEN
        opts := (opts - 'rate_key' - 'concurrency_key') || jsonb_strip_nulls(jsonb_build_object(
            'rate_key', COALESCE({schema}.task_key(sig ->> 'task', 'rate_limit_key',
                                                   s.rate_limit_key, args, kwargs, NULL, false),
                                 opts ->> 'rate_key'),
            'concurrency_key', COALESCE({schema}.task_key(sig ->> 'task', 'concurrency_key',
                                                          s.concurrency_key, args, kwargs, NULL,
                                                          false),
                                        opts ->> 'concurrency_key')));
        uk := COALESCE({schema}.task_key(sig ->> 'task', 'unique_key', s.unique_key, args,
                                         kwargs, NULL, false),
                       CASE WHEN s.unique_key IS NOT NULL THEN opts ->> 'unique_key' END);
    END IF;
    IF uk IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = new_id) THEN
            RETURN;  -- spawned before: spawning is idempotent
        END IF;
        holder := {schema}.unique_hold(uk, new_id, s.unique_states, s.unique_window,
                                       s.on_duplicate, args, kwargs, due, false);
        IF holder = new_id THEN
            holder := NULL;
        ELSIF holder IS NOT NULL THEN
            opts := opts || jsonb_build_object('follows', holder);
        END IF;
    END IF;
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options, run_at, expires_at,
                          root_id, parent_id, group_id, group_index)
    VALUES (new_id, sig ->> 'task', q, COALESCE((sig ->> 'priority')::int, 0), args, kwargs,
            opts, due, now() + make_interval(secs => (sig ->> 'expires_in')::float8),
            COALESCE(root, new_id), parent, (sig ->> 'group_id')::uuid,
            (sig ->> 'group_index')::int)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;  -- spawned before: spawning is idempotent
    END IF;
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                               concurrency_key, fair_key)
    VALUES (new_id, q, COALESCE((sig ->> 'priority')::int, 0),
            CASE WHEN holder IS NULL THEN due ELSE {schema}.dependency_wait() END,
            sig ->> 'task', opts ->> 'rate_key', opts ->> 'concurrency_key',
            opts ->> 'fair_key');
    IF chord_id IS NOT NULL THEN
        INSERT INTO {schema}.chord_members (job_id, chord_id) VALUES (new_id, chord_id);
    END IF;
    IF holder IS NOT NULL THEN
        PERFORM {schema}.depend(new_id, ARRAY[holder], 'fail');
        RETURN;
    END IF;
    PERFORM pg_notify('{channel_jobs}', q);
END
$$;

-- A chord that can no longer complete: marked FAILED once, its body (and what
-- follows it) written FAILURE with a ChordError naming the failed member.
CREATE FUNCTION {schema}.fail_chord(chord_id uuid, failed uuid, err jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    UPDATE {schema}.chords SET state = 'FAILED', finished_at = now()
    WHERE id = chord_id AND state = 'PENDING'
    RETURNING * INTO c;
    IF FOUND THEN
        PERFORM {schema}.fail_tree(c.body, jsonb_build_object(
            'type', 'ChordError', 'module', 'jobqueue.exceptions', 'traceback', NULL,
            'failed_job', failed,
            'message', format('Dependency %s raised %s: %s', failed,
                              COALESCE(err ->> 'type', 'an error'),
                              COALESCE(err ->> 'message', ''))),
            failed, c.root_id);
    END IF;
END
$$;

-- Work that can no longer run: its rows are written FAILURE with `err`, and
-- the error callbacks it carries fire (once: their ids are fixed).
CREATE FUNCTION {schema}.fail_tree(sig jsonb, err jsonb, parent uuid, root uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kind   text := COALESCE(sig ->> 'type', 'task');
    member jsonb;
    new_id uuid;
BEGIN
    IF kind = 'group' THEN
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'tasks') LOOP
            PERFORM {schema}.fail_tree(member, err, parent, root);
        END LOOP;
        RETURN;
    ELSIF kind = 'chord' THEN
        INSERT INTO {schema}.chords (id, state, remaining, body, root_id, finished_at)
        VALUES ((sig ->> 'id')::uuid, 'FAILED', 0, sig -> 'body', root, now())
        ON CONFLICT (id) DO NOTHING;
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'header') LOOP
            PERFORM {schema}.fail_tree(member, err, parent, root);
        END LOOP;
        PERFORM {schema}.fail_tree(sig -> 'body', err, parent, root);
        RETURN;
    END IF;
    new_id := (sig ->> 'id')::uuid;
    INSERT INTO {schema}.jobs (id, task, queue, priority, state, args, kwargs, options,
                          root_id, parent_id, group_id, group_index, error, finished_at)
    VALUES (new_id, sig ->> 'task', COALESCE(sig ->> 'queue', 'default'),
            COALESCE((sig ->> 'priority')::int, 0), 'FAILURE', COALESCE(sig -> 'args', '[]'),
            COALESCE(sig -> 'kwargs', '{}'), COALESCE(sig -> 'options', '{}'),
            COALESCE(root, new_id), parent, (sig ->> 'group_id')::uuid,
            (sig ->> 'group_index')::int, err, now())
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM pg_notify('{channel_done}', new_id::text);
    IF sig -> 'options' ? 'chord' THEN  -- a member of a chord: that chord fails too
        PERFORM {schema}.fail_chord((sig -> 'options' ->> 'chord')::uuid, new_id, err);
    END IF;
    FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'options' -> 'link_error') LOOP
        PERFORM {schema}.spawn(member, jsonb_build_array(new_id::text), new_id, root);
    END LOOP;
    FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'options' -> 'link') LOOP
        PERFORM {schema}.fail_tree(member, err, new_id, root);
    END LOOP;
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
-- (advance_canvas), then the jobs that wait on them (dependencies_settle),
-- then the batches they belong to (batches_settle; each one probe of an empty
-- table while nothing waits). Jobs not finished, or already advanced, change
-- nothing.
CREATE FUNCTION {schema}.advance(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
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

-- Every job of a workflow (canvas), by root id; waiting jobs too.
CREATE VIEW {schema}.workflow_jobs AS
SELECT root_id, id, task, state, parent_id, group_id, group_index, queue, attempts,
       created_at, started_at, finished_at, error ->> 'type' AS error_type
FROM {schema}.all_jobs;


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
-- A canvas step that follows the job holding its unique key (spawn(), 0022)
-- does not run: it ends SUCCESS with that job's result, and what follows it
-- is created (advance()).
CREATE FUNCTION {schema}.dependency_release(dependent uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    q text;
    h record;
BEGIN
    DELETE FROM {schema}.job_waits WHERE job_id = dependent;
    SELECT l.state, l.result INTO h
    FROM {schema}.jobs AS f
    JOIN {schema}.jobs AS l ON l.id = (f.options ->> 'follows')::uuid
    WHERE f.id = dependent AND f.state = 'PENDING' AND f.options ? 'follows';
    IF FOUND AND h.state = 'SUCCESS' THEN
        DELETE FROM {schema}.job_queue AS w
        WHERE w.job_id = dependent AND w.run_at = {schema}.dependency_wait();
        IF FOUND THEN
            UPDATE {schema}.jobs SET state = 'SUCCESS', result = h.result, finished_at = now()
            WHERE id = dependent AND state = 'PENDING';
            PERFORM pg_notify('{channel_done}', dependent::text);
            PERFORM {schema}.advance(ARRAY[dependent]);
        END IF;
        RETURN;
    END IF;
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

-- SECURITY DEFINER: EXECUTE is the privilege (jobqueue db grant).
REVOKE EXECUTE ON FUNCTION {schema}.dependencies_settle(uuid[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.depend(uuid, uuid[], text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.dependencies_sweep(uuid, integer) FROM PUBLIC;


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

-- SECURITY DEFINER: EXECUTE is the privilege (jobqueue db grant).
REVOKE EXECUTE ON FUNCTION {schema}.batches_settle(uuid[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.batch_open(uuid, jsonb, jsonb, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.batch_add(uuid, uuid[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.batch_close(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.batches_sweep(uuid, integer) FROM PUBLIC;


-- ===========================================================================
-- Flow control: global rate and concurrency limits, unique jobs
--
-- Exact across processes: task_limits is the configuration (written by
-- workers from their tasks), limit_state one row per limit key, locked while a
-- claim spends from it. Limited jobs carry their keys in job_queue and
-- job_lease.
-- ===========================================================================

CREATE TABLE {schema}.task_limits (
    task              text PRIMARY KEY,
    rate_per_second   float8,
    burst             float8 NOT NULL DEFAULT 1,
    concurrency_limit integer,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT task_limits_rate_check CHECK (rate_per_second IS NULL OR rate_per_second > 0),
    CONSTRAINT task_limits_burst_check CHECK (burst >= 1),
    CONSTRAINT task_limits_concurrency_check CHECK (
        concurrency_limit IS NULL OR concurrency_limit > 0),
    -- A limit set by an operator (set_rate_limit, set_concurrency_limit)
    -- stands until reset_task_limit, whatever the starting workers declare:
    -- they write their declared limits beside it (declared_*), and the
    -- effective columns only where no operator set them (*_set_by IS NULL).
    declared_rate        float8,
    declared_burst       float8,
    declared_concurrency integer,
    rate_set_by          text,
    concurrency_set_by   text
);
-- Every claim reads the tasks an operator gave a rate: through this index,
-- empty unless someone did (a scan of task_limits per claim would read every
-- limited task's row).
CREATE INDEX task_limits_operator_rate_idx ON {schema}.task_limits (task)
    WHERE rate_set_by IS NOT NULL;

-- Keys are 'c:<concurrency key>' (a row to lock) and 'r:<rate key>' (a token
-- bucket). Keys may be per argument, so retention deletes rows that hold
-- nothing a new row would not: full_at is when a rate row's bucket is full
-- again; past it, the row equals the one admit() would create.
CREATE TABLE {schema}.limit_state (
    key        text PRIMARY KEY,
    tokens     float8 NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    full_at    timestamptz
);

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
CREATE FUNCTION {schema}.admit(ids uuid[]) RETURNS SETOF uuid LANGUAGE sql ROWS 1
AS $$ SELECT a.id FROM {schema}.admit_at(ids, 0) AS a $$;

-- One row per unique key, pointing at the job that holds it. A table (not a
-- partial unique index on jobs.state) keeps job updates HOT.
CREATE TABLE {schema}.unique_keys (
    key        text PRIMARY KEY,
    job_id     uuid NOT NULL,
    states     text[] NOT NULL,
    expires_at timestamptz
);

-- The seed of unique keys' advisory locks: what Python's unique_lock binds
-- (jobqueue.sql.lock_classes: the signed CRC-32 of the text below),
-- so an enqueue from SQL and one from Python take the same lock.
CREATE FUNCTION {schema}.unique_lock_seed() RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    data bytea := convert_to('jobqueue:{schema_name}:unique', 'UTF8');
    crc  bigint := 4294967295;
BEGIN
    FOR i IN 0 .. length(data) - 1 LOOP
        crc := crc # get_byte(data, i);
        FOR b IN 1 .. 8 LOOP
            crc := CASE WHEN crc & 1 = 1 THEN (crc >> 1) # 3988292384 ELSE crc >> 1 END;
        END LOOP;
    END LOOP;
    crc := crc # 4294967295;
    RETURN CASE WHEN crc >= 2147483648 THEN crc - 4294967296 ELSE crc END;
END
$$;

-- A unique key for job `job` (not written yet), under the key's advisory lock
-- (Python's unique_lock; held until the transaction ends): the job that holds
-- the key now. `job`: it took the key, and the caller writes it. Another: the
-- key is held by a job in one of its counting states, within its window, and
-- the caller writes nothing (or a follower); in the replace and debounce
-- modes that holder, if it still waits, took these arguments (and, to
-- debounce, this due time) first. NULL: `wait` is false and the lock was busy
-- (another transaction is enqueuing the same key right now).
CREATE FUNCTION {schema}.unique_hold(k text, job uuid, counting text[], window_secs float8,
                                     on_duplicate text, new_args jsonb, new_kwargs jsonb,
                                     due timestamptz, wait boolean) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    lock_id   bigint := hashtextextended(k, {schema}.unique_lock_seed());
    holder    uuid;
    take_over boolean := false;
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(lock_id);
    ELSIF NOT pg_try_advisory_xact_lock(lock_id) THEN
        RETURN NULL;
    END IF;
    IF on_duplicate <> 'keep' THEN
        SELECT u.job_id INTO holder FROM {schema}.unique_keys AS u
        WHERE u.key = k AND (u.expires_at IS NULL OR u.expires_at > now())
          AND EXISTS (SELECT 1 FROM {schema}.jobs AS j
                      WHERE j.id = u.job_id AND j.state = ANY(u.states));
        IF holder IS NOT NULL AND {schema}.update_job(
                holder, new_args, new_kwargs,
                CASE WHEN on_duplicate = 'debounce' THEN due END, NULL) THEN
            RETURN holder;
        END IF;
        take_over := true;  -- no holder that waits: this job takes the key
    END IF;
    INSERT INTO {schema}.unique_keys AS u (key, job_id, states, expires_at)
    VALUES (k, job, counting, now() + make_interval(secs => window_secs))
    ON CONFLICT (key) DO UPDATE
    SET job_id = EXCLUDED.job_id, states = EXCLUDED.states, expires_at = EXCLUDED.expires_at
    WHERE take_over OR u.expires_at <= now()
       OR NOT EXISTS (SELECT 1 FROM {schema}.jobs AS j
                      WHERE j.id = u.job_id AND j.state = ANY(u.states))
    RETURNING u.job_id INTO holder;
    IF FOUND THEN
        RETURN job;
    END IF;
    SELECT u.job_id INTO holder FROM {schema}.unique_keys AS u WHERE u.key = k;
    RETURN holder;
END
$$;


-- ===========================================================================
-- Periodic tasks
--
-- A tick is enqueued only by whoever inserts its (schedule, fire time) row
-- first, so any number of beat processes may run at once.
-- ===========================================================================

CREATE TABLE {schema}.schedules (
    name           text PRIMARY KEY,
    task           text NOT NULL,
    args           jsonb NOT NULL DEFAULT '[]',
    kwargs         jsonb NOT NULL DEFAULT '{}',
    options        jsonb NOT NULL DEFAULT '{}',
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
CREATE INDEX schedules_due_idx ON {schema}.schedules (next_run_at) WHERE enabled;

-- A changed definition (from SQL, the CLI or code) is re-planned by the next beat.
CREATE FUNCTION {schema}.schedules_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER schedules_changed BEFORE UPDATE ON {schema}.schedules
    FOR EACH ROW EXECUTE FUNCTION {schema}.schedules_changed();

CREATE TABLE {schema}.schedule_ticks (
    schedule   text NOT NULL,
    fire_at    timestamptz NOT NULL,
    job_id     uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, fire_at)
);


-- ===========================================================================
-- Operations (docs/sql.md, "Operations"; revision 0013)
--
-- Pause and resume a queue, purge it, and retry, cancel, delete, move or find
-- jobs by filter: one function each, which Python (Store), the CLI and psql
-- all call. The bulk ones change at most max_jobs rows per call, in one short
-- transaction that locks only those rows (FOR UPDATE SKIP LOCKED), and return
-- how many: callers loop until 0. SECURITY DEFINER: EXECUTE is the privilege
-- (jobqueue db grant).
-- ===========================================================================

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
-- that had none, waiters told, what follows them in a canvas advanced, the
-- jobs that wait on them and the batches they belong to counted.
CREATE FUNCTION {schema}.revoke_waiting(ids uuid[], terminate boolean, message text)
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


-- ===========================================================================
-- A waiting job changed in place (revision 0020).
-- A waiting job changed in place (AsyncResult.update(), jobqueue jobs update,
-- a unique task's replace and debounce modes): its arguments, its due time,
-- its priority. NULL leaves a field as it is. Only while it waits: its row in
-- job_queue is locked first, so a claim that holds it wins (then false: it
-- runs, or ran, as it was). A job waiting on dependencies keeps waiting; its
-- new due time applies once they are counted. Workers of its queue are
-- notified (it may be due sooner). Bad input raises JQ002. Returns whether
-- the job was waiting and changed.
CREATE FUNCTION {schema}.update_job(id uuid, args jsonb DEFAULT NULL, kwargs jsonb DEFAULT NULL,
                                    run_at timestamptz DEFAULT NULL,
                                    priority integer DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w       record;
    waiting boolean;
BEGIN
    IF update_job.args IS NOT NULL AND jsonb_typeof(update_job.args) <> 'array' THEN
        RAISE EXCEPTION 'jobqueue: update_job: args must be a JSON array, got %',
            jsonb_typeof(update_job.args) USING ERRCODE = 'JQ002';
    END IF;
    IF update_job.kwargs IS NOT NULL AND jsonb_typeof(update_job.kwargs) <> 'object' THEN
        RAISE EXCEPTION 'jobqueue: update_job: kwargs must be a JSON object, got %',
            jsonb_typeof(update_job.kwargs) USING ERRCODE = 'JQ002';
    END IF;
    IF {schema}.json_depth(COALESCE(update_job.args, '[]')) > 200
       OR {schema}.json_depth(COALESCE(update_job.kwargs, '{}')) > 200 THEN
        RAISE EXCEPTION 'jobqueue: update_job: the arguments nest arrays and objects more '
                        'than 200 levels deep' USING ERRCODE = 'JQ002';
    END IF;
    IF update_job.priority IS NOT NULL AND update_job.priority NOT BETWEEN -32768 AND 32767 THEN
        RAISE EXCEPTION 'jobqueue: update_job: priority must be in [-32768, 32767], got %',
            update_job.priority USING ERRCODE = 'JQ002';
    END IF;
    SELECT * INTO w FROM {schema}.job_queue AS q WHERE q.job_id = update_job.id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    waiting := w.run_at = {schema}.dependency_wait();
    UPDATE {schema}.job_queue AS q
    SET args = CASE WHEN q.args IS NULL THEN NULL ELSE COALESCE(update_job.args, q.args) END,
        kwargs = CASE WHEN q.kwargs IS NULL THEN NULL
                      ELSE COALESCE(update_job.kwargs, q.kwargs) END,
        run_at = CASE WHEN waiting THEN q.run_at ELSE COALESCE(update_job.run_at, q.run_at) END,
        priority = COALESCE(update_job.priority, q.priority)
    WHERE q.job_id = update_job.id;
    UPDATE {schema}.jobs AS j
    SET args = COALESCE(update_job.args, j.args),
        kwargs = COALESCE(update_job.kwargs, j.kwargs),
        run_at = COALESCE(update_job.run_at, j.run_at),
        priority = COALESCE(update_job.priority, j.priority)
    WHERE j.id = update_job.id AND j.state IN ('PENDING', 'RETRY');
    PERFORM pg_notify('{channel_jobs}', w.queue);
    RETURN true;
END
$$;

REVOKE EXECUTE ON FUNCTION {schema}.update_job(uuid, jsonb, jsonb, timestamptz, integer)
    FROM PUBLIC;

-- Schedules as operations (revision 0017): pause, resume and run now, for
-- the dashboard (jobqueue/dashboard), Python and psql alike.
-- ===========================================================================

-- A schedule stops firing (enabled = false) until resumed; what it already
-- enqueued is left alone. JQ002 for a schedule that does not exist. Returns
-- false if it was already paused.
CREATE FUNCTION {schema}.pause_schedule(name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM 1 FROM {schema}.schedules AS s WHERE s.name = pause_schedule.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue: there is no schedule %', quote_literal(pause_schedule.name)
            USING ERRCODE = 'JQ002';
    END IF;
    UPDATE {schema}.schedules AS s SET enabled = false
    WHERE s.name = pause_schedule.name AND s.enabled;
    RETURN FOUND;
END
$$;

-- Fires again; the schedules_changed trigger clears its next fire time, so
-- the next beat plans it from now (a paused stretch is not caught up).
-- Returns false if it was not paused.
CREATE FUNCTION {schema}.resume_schedule(name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM 1 FROM {schema}.schedules AS s WHERE s.name = resume_schedule.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue: there is no schedule %', quote_literal(resume_schedule.name)
            USING ERRCODE = 'JQ002';
    END IF;
    UPDATE {schema}.schedules AS s SET enabled = true
    WHERE s.name = resume_schedule.name AND NOT s.enabled;
    RETURN FOUND;
END
$$;

-- One job of the schedule's task with its arguments, due now, paused or not,
-- as enqueue() writes one: its queue and priority from the schedule's
-- options, else the task's settings (task_settings: routes by name, limit
-- keys, uniqueness); recorded as a tick at now() (with the holder's id when
-- a unique task's key is held). Its planned fire times do not move. Returns
-- the job's id.
CREATE FUNCTION {schema}.run_schedule(name text) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s      record;
    new_id uuid;
BEGIN
    SELECT * INTO s FROM {schema}.schedules AS x WHERE x.name = run_schedule.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue: there is no schedule %', quote_literal(run_schedule.name)
            USING ERRCODE = 'JQ002';
    END IF;
    new_id := {schema}.enqueue(s.task, s.args, s.kwargs, s.options ->> 'queue',
                               (s.options ->> 'priority')::integer);
    INSERT INTO {schema}.schedule_ticks (schedule, fire_at, job_id)
    VALUES (s.name, now(), new_id)
    ON CONFLICT (schedule, fire_at) DO NOTHING;
    RETURN new_id;
END
$$;

-- EXECUTE is the privilege (jobqueue db grant: producers).
REVOKE EXECUTE ON FUNCTION {schema}.pause_schedule FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.resume_schedule FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.run_schedule FROM PUBLIC;


-- ===========================================================================
-- Run-time limits and remote control (0014): set_rate_limit and friends;
-- control_send / control_pending / control_reply / control_answers carry
-- app.control.inspect() and jobqueue inspect|control (docs/operations.md).
-- ===========================================================================

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

-- ===========================================================================
-- Statistics
-- ===========================================================================

-- Per queue: how many jobs are in each state, how long the oldest due job
-- has waited, and whether it is paused (a paused queue with no job shows too).
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
       COALESCE(w.oldest_waiting, interval '0') AS oldest_waiting,
       p.queue IS NOT NULL AS paused
FROM (SELECT queue FROM waiting UNION SELECT queue FROM running
      UNION SELECT queue FROM finished UNION SELECT queue FROM {schema}.queue_pauses) AS q
LEFT JOIN waiting AS w USING (queue)
LEFT JOIN running AS r USING (queue)
LEFT JOIN finished AS f USING (queue)
LEFT JOIN {schema}.queue_pauses AS p USING (queue);

-- Per task over a window (default 1 hour; `SET jobqueue.stats_window = '1 day'`
-- to change it for a session): counts by state, failure rate, run times.
-- Waiting jobs count too (all_jobs).
CREATE VIEW {schema}.task_stats AS
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
FROM {schema}.all_jobs AS j, win
WHERE j.created_at >= win.since OR j.finished_at >= win.since
      OR j.state IN ('PENDING', 'STARTED', 'RETRY')
GROUP BY j.task;


-- ===========================================================================
-- Metrics (docs/operations.md, "Metrics"): counters and histograms kept by
-- triggers, and metrics(), what the Prometheus exporter prints
-- ===========================================================================

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

-- job_metrics is kept by these (the upgrade creates them under the lock loop
-- of 0012).
CREATE TRIGGER jobs_metered_insert AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.job_metrics_track();
CREATE TRIGGER jobs_metered_update AFTER UPDATE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.job_metrics_track();



-- ===========================================================================
-- Fair scheduling (docs/routing-and-limits.md, "Fair scheduling"; revision 0021)
--
-- Jobs with a fair key (job_queue.fair_key, from the task's fair_key) are
-- claimed round-robin across keys (job_claim_fair in queries.sql), so one
-- key's backlog does not hold up another key's jobs. A key's weight is how
-- many of its jobs go in each round: 1 unless set here.
-- ===========================================================================

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

-- The first partitions (a migrated schema has them from 0012).
SELECT {schema}.history_partitions_ahead();
