"""Guarantees however a job is inserted (issue 24, item 7): the unique key,
the limit keys and the routing of a registered task are computed in SQL too,
so ``jobqueue.enqueue()`` (triggers, other languages), the beat and canvas
steps give a job what ``delay()`` gives it.

- ``task_settings``: each task's declarative settings, written by every
  starting worker of this release: its queue when a call names none (exact
  and glob ``task_routes``, the task's queue, the app's default; NULL when a
  routing function decides), its priority, the options its jobs store, and
  how each key is made (``{"kind": "task" | "args" | "constant" | "arg" |
  "python"}``) with the unique settings.
- ``canonical_json()``: the canonical text of a JSON value, byte for byte what
  Python's ``jobqueue.keys.canonical_arguments`` gives, so a unique task's
  default key (its arguments) is the same from SQL and from ``delay()``.
- ``task_key()``: one key of a job as Python computes it; a key that needs a
  Python function raises SQLSTATE ``JQ006`` naming the task, the setting and
  the parameter that passes it instead.
- ``unique_lock_seed()`` and ``unique_hold()``: a unique key taken under the
  advisory lock Python's enqueue takes (the same seed), with the replace and
  debounce modes.
- ``enqueue()`` gains ``unique_key``, ``rate_limit_key``,
  ``concurrency_key`` and ``options`` (at the end, with defaults); ``queue``
  and ``priority`` default to NULL: the task's settings (for a task no worker
  registered: ``'default'`` and 0, as before). Dropped and made again, with
  the EXECUTE grants it had.
- ``spawn()`` computes a step's keys from its final arguments (a parent's
  result included) and takes its unique key; a step whose key is held by
  another job **follows** it (``dependency_release()``: it ends with that
  job's result, without running). ``run_schedule()`` lets the settings route
  its job.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07

Old workers: workers, beats and producers of 0021 may keep running while
this is applied and during the rollout. Their statements are unchanged and
still valid (enqueue() keeps its parameters, spawn(), dependency_release()
and run_schedule() their signatures). They do not write task_settings: until
a worker of this release starts, enqueue() treats every task as before. Their
producers compute a unique task's default key in the earlier form, which
differs from the canonical one only for arguments holding objects whose keys
are not in sorted order, or floats written with an exponent: such a call
may be enqueued once more during the rollout.

Roles: roles granted before it get what this release needs, so no grant has
to run again: every role that may run enqueue() or advance() (producers,
workers) reads task_settings; every role that may delete leases (workers)
writes it and may update schedule_ticks (a beat's tick of a unique task
records the key's holder).
"""

from alembic import context, op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
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

-- enqueue() gains parameters: dropped and made again, with the EXECUTE
-- grants it had (jobqueue db grant's producers and workers).
CREATE TEMPORARY TABLE jobqueue_enqueue_acl AS
SELECT a.grantee FROM pg_proc AS p, aclexplode(p.proacl) AS a
WHERE p.pronamespace = '{schema}'::regnamespace AND p.proname = 'enqueue'
  AND a.privilege_type = 'EXECUTE';
DROP FUNCTION {schema}.enqueue;  -- the only one of that name
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

-- A signature (task, group or chord) becomes rows: records in jobs, waiting
-- rows in job_queue, a chord's counter and members. Spawning an id twice
-- changes nothing. A task that a worker registered (task_settings) gets its
-- keys from the step's final arguments (a parent's result included; a key
-- only Python computes keeps the one the producer froze), and a unique step
-- takes its key; a step whose key another job holds follows that job: it
-- waits for it (depend()) and ends with its outcome, without running
-- (dependency_release()). A key whose lock another transaction holds at that
-- moment is not waited for: the step is written as its own job.
CREATE OR REPLACE FUNCTION {schema}.spawn(sig jsonb, prepend jsonb, parent uuid, root uuid)
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

-- A dependent may run: its row becomes due at its own time (countdown, eta).
-- A canvas step that follows the job holding its unique key (spawn(), 0022)
-- does not run: it ends SUCCESS with that job's result, and what follows it
-- is created (advance()).
CREATE OR REPLACE FUNCTION {schema}.dependency_release(dependent uuid) RETURNS void
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

-- One job of the schedule's task with its arguments, due now, paused or not,
-- as enqueue() writes one: its queue and priority from the schedule's
-- options, else the task's settings (task_settings: routes by name, limit
-- keys, uniqueness); recorded as a tick at now() (with the holder's id when
-- a unique task's key is held). Its planned fire times do not move. Returns
-- the job's id.
CREATE OR REPLACE FUNCTION {schema}.run_schedule(name text) RETURNS uuid
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

-- Roles granted before this revision (jobqueue db grant) get what this
-- release needs, so a deployment need not grant again: every role that may
-- run enqueue() or advance() (producers and workers) reads task_settings;
-- every role that may delete leases (workers) writes it, and may record the
-- holder of a unique task's key in a beat's tick (UPDATE on schedule_ticks).
-- Not taken back by the downgrade (it drops the table).
DO $do$
DECLARE
    g oid;
BEGIN
    FOR g IN SELECT DISTINCT a.grantee FROM pg_proc AS p, aclexplode(p.proacl) AS a
             WHERE p.oid IN ('{schema}.advance(uuid[])'::regprocedure,
                             '{schema}.enqueue'::regproc)
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT SELECT ON {schema}.task_settings TO %s', g::regrole);
    END LOOP;
    FOR g IN SELECT DISTINCT a.grantee FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE c.oid = '{schema}.job_lease'::regclass AND a.privilege_type = 'DELETE'
               AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON {schema}.task_settings TO %s',
                       g::regrole);
        EXECUTE format('GRANT UPDATE ON {schema}.schedule_ticks TO %s', g::regrole);
    END LOOP;
END
$do$;
"""

# What 0021 had: enqueue() as 0018 made it, spawn() as 0021 made it,
# dependency_release() as 0018 and run_schedule() as 0017 made them.
DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION {schema}.run_schedule(name text) RETURNS uuid
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
    new_id := {schema}.enqueue(s.task, s.args, s.kwargs,
                               COALESCE(s.options ->> 'queue', 'default'),
                               COALESCE((s.options ->> 'priority')::integer, 0));
    INSERT INTO {schema}.schedule_ticks (schedule, fire_at, job_id)
    VALUES (s.name, now(), new_id)
    ON CONFLICT (schedule, fire_at) DO NOTHING;
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.dependency_release(dependent uuid) RETURNS void
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

DROP FUNCTION {schema}.unique_hold(text, uuid, text[], float8, text, jsonb, jsonb, timestamptz,
                                   boolean);
DROP FUNCTION {schema}.unique_lock_seed();
DROP FUNCTION {schema}.task_key(text, text, jsonb, jsonb, jsonb, text, boolean);
DROP FUNCTION {schema}.canonical_json(jsonb);
DROP TABLE {schema}.task_settings;
"""


def _render(ddl: str) -> str:
    # Placeholders as in schema.sql (not str.format: the SQL holds JSON braces).
    schema = context.config.attributes["schema"]
    return (
        ddl.replace("{schema_name}", schema)
        .replace("{schema}", f'"{schema}"')
        .replace("{channel_jobs}", f"{schema}_jobs")
        .replace("{channel_done}", f"{schema}_done")
    )


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
