-- Every statement jobqueue runs at run time lives here, named noun-first.
-- `{schema}` is replaced by the validated, quoted schema name and `{channel_*}`
-- by the NOTIFY channel names when the file is loaded; everything else is a
-- bound parameter. Blocks start with a line `-- name: <query_name>`.

-- name: job_insert
-- One job, one row, one round trip: the job waits in `job_queue` with its
-- arguments, and its record in `jobs` is written by the claim that first
-- takes it (a second row at enqueue costs about a seventh of the rate of
-- single enqueues). When a worker waits for the queue (wake_wanted), a
-- wake-up hint goes too, which PostgreSQL delivers only when the transaction
-- commits. Scheduled jobs send it too: the woken worker then sleeps until
-- they are due. Only for ids we generate (nothing here checks `jobs` for the
-- id) and jobs outside workflows (lineage lookups read `jobs` alone).
WITH waiting AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key, args, kwargs, options,
                                    expires_at, created_at)
    VALUES (%(id)s::uuid, %(queue)s, %(priority)s,
            COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
            %(task)s, %(rate_key)s, %(concurrency_key)s, %(fair_key)s, %(args)s::jsonb,
            %(kwargs)s::jsonb, %(options)s::jsonb,
            COALESCE(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s)),
            now())
    RETURNING queue
)
SELECT pg_notify('{channel_jobs}', queue) FROM waiting WHERE {wake_wanted};

-- name: job_insert_recorded
-- job_insert with the record written at once, for an id the caller chose (or
-- the retry of a generated one whose commit reply was lost): the primary keys
-- of both tables then refuse an id already taken, claimed or not.
WITH job AS (
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options,
                               run_at, expires_at, root_id, parent_id)
    VALUES (%(id)s::uuid, %(task)s, %(queue)s, %(priority)s, %(args)s::jsonb,
            %(kwargs)s::jsonb, %(options)s::jsonb,
            COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
            COALESCE(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s)),
            %(root_id)s::uuid, %(parent_id)s::uuid)
    RETURNING id, task, queue, priority, run_at
), waiting AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT id, queue, priority, run_at, task, %(rate_key)s, %(concurrency_key)s, %(fair_key)s
    FROM job
    RETURNING queue
)
SELECT pg_notify('{channel_jobs}', queue) FROM waiting WHERE {wake_wanted};

-- name: wake_wanted
-- Whether an enqueue into `queue` must NOTIFY: an expression, not a statement,
-- put in place of {wake_wanted}. A NOTIFY takes a lock held until commit that
-- serialises every notifying commit in the cluster (it halves concurrent
-- single enqueues), so send it only when a worker waits for the queue.
-- Waiting workers hold a shared session lock on (lock_waiting, queue); the
-- enqueue tries that lock exclusively for a moment and fails while anyone
-- holds it. Before looking, the enqueue takes (lock_enqueuing, queue) shared
-- until it commits: a worker that starts waiting after the look (and so is
-- not woken) sees that lock taken, and looks at the queue again only once the
-- enqueue has committed (worker_wait_settled). Any failed try means "notify".
CASE
    WHEN NOT pg_try_advisory_xact_lock_shared({lock_enqueuing}, hashtext(queue)) THEN true
    WHEN pg_try_advisory_lock({lock_waiting}, hashtext(queue))
        THEN NOT pg_advisory_unlock({lock_waiting}, hashtext(queue))
    ELSE true
END;

-- name: events_wanted
-- Whether a statement must report its events (jobqueue/events): an
-- expression, put in place of {events_wanted}. A listener holds (or waits in
-- line for) the exclusive session lock (lock_events, 0) on a connection of
-- its own while it listens; a statement tries the lock shared, until its
-- transaction ends: the try fails while any listener holds it or waits for
-- it, and statements never fail each other's tries (shared locks do not
-- conflict), so nobody listening means no NOTIFY at all. Tried once per event
-- (see events_notify, and job_claim's Events); the first try of a transaction
-- costs about 2 us of server CPU, the next find the lock held (a local
-- lookup). A
-- listener whose lock is granted knows that every transaction that tried
-- before has ended: it has missed none. A transaction whose try succeeded
-- keeps the lock, so all its later tries succeed too: it sends nothing, and
-- a listener that asked meanwhile waits for it to end.
NOT pg_try_advisory_xact_lock_shared({lock_events}, 0);

-- name: events_notify
-- The events of a statement, sent only while someone listens: a scalar
-- subquery put in place of {events_notify}, over the statement's CTE
-- `event (kind, item)`: kind is started, succeeded, failed, retried, revoked
-- (item: job id/attempt) or online, heartbeat, offline (item: worker id).
-- For the statements that run now and then (revoke, rescue, the worker's
-- row); the claim and the completion, which run for every job, have a form
-- with nothing of events in it (see job_claim). The FILTER tries the events
-- lock once a row, so when nobody listens the array is NULL and
-- events_notify() (migration 0016), STRICT, is not called. It sends one
-- NOTIFY per 120 items (a NOTIFY takes a cluster-wide lock at commit;
-- payloads of `kind:item,...`, in the order of `event`, stay under the
-- 8000-byte limit). A hint: the listener reads the rows.
(SELECT {schema}.events_notify('{channel_events}',
                               array_agg(kind || ':' || item) FILTER (WHERE {events_wanted}))
 FROM event);

-- name: events_plain
-- Whether a job's names can go into a data item (see job_claim's `event`):
-- an expression, put in place of {events_plain}. The item's fields are
-- split at chr(31) and the items at chr(30), so a name holding either goes
-- as a hint (read by the listener) instead.
strpos(task, chr(30)) + strpos(task, chr(31)) + strpos(queue, chr(30))
    + strpos(queue, chr(31)) = 0;

-- name: worker_wait_flag
-- The claim connection is about to wait for new jobs: from now on enqueues
-- into these queues NOTIFY (see wake_wanted). Returns the queues flagged; a
-- try fails only while an enqueue holds the lock for a moment.
SELECT q FROM unnest(%(queues)s::text[]) AS q
WHERE pg_try_advisory_lock_shared({lock_waiting}, hashtext(q));

-- name: worker_wait_unflag
-- The worker is busy (its last claim was full): enqueues need not wake it.
SELECT count(pg_advisory_unlock_shared({lock_waiting}, hashtext(q)))
FROM unnest(%(queues)s::text[]) AS q;

-- name: worker_wait_settled
-- True once no enqueue that may have looked before this worker flagged itself
-- is still uncommitted; a claim after this sees every job it did not hear of.
SELECT coalesce(bool_and(CASE WHEN pg_try_advisory_lock({lock_enqueuing}, hashtext(q))
                              THEN pg_advisory_unlock({lock_enqueuing}, hashtext(q))
                              ELSE false END), true)
FROM unnest(%(queues)s::text[]) AS q;

-- name: job_insert_many
-- Bulk enqueue of one task: per-job ids, args and kwargs as arrays, shared
-- options as scalars; one NOTIFY per queue (PostgreSQL folds duplicates).
WITH job AS (
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options,
                               run_at, expires_at, root_id)
    SELECT i.id, %(task)s, %(queue)s, %(priority)s, i.args::jsonb, i.kwargs::jsonb,
           i.options::jsonb,
           COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
           COALESCE(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s)),
           NULL
    FROM unnest(%(ids)s::uuid[], %(args)s::text[], %(kwargs)s::text[], %(options)s::text[])
         AS i(id, args, kwargs, options)
    RETURNING id, task, queue, priority, run_at
), waiting AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT j.id, j.queue, j.priority, j.run_at, j.task, k.rate_key, k.concurrency_key,
           k.fair_key
    FROM job AS j
    JOIN unnest(%(ids)s::uuid[], %(rate_keys)s::text[], %(concurrency_keys)s::text[],
                %(fair_keys)s::text[])
         AS k(id, rate_key, concurrency_key, fair_key) ON k.id = j.id
    RETURNING queue
)
SELECT pg_notify('{channel_jobs}', queue) FROM (SELECT DISTINCT queue FROM waiting) AS q;

-- name: job_claim
-- Claim up to %(limit)s due jobs across the worker's queues in one statement.
-- Each queue is read in claim order through its own index range (LATERAL), and
-- the claimed rows leave `job_queue`, so the table the claim scans only ever
-- holds waiting jobs. The CTEs also fence the planner so the LIMIT holds.
-- Expired jobs come back flagged: the worker records them REVOKED unrun.
-- First, worker_compatible() raises unless this worker's revision may claim
-- from the schema (a worker left running across an upgrade once deleted jobs
-- it could not record): then nothing at all is claimed.
-- Paused queues (pause_queue) are taken out of the worker's list once per
-- claim, one primary key probe per queue, before any row is read. Jobs of a
-- task an operator gave a rate limit (set_rate_limit) go through admit()
-- even without a rate key: the task list is read once per claim.
-- Events: the claim and the completion run for every job, so they come in
-- two forms, which the loader (sql/__init__.py) makes of one text whose end,
-- {events_end}, is <name>_without_events or <name>_with_events:
-- * <name> has nothing of events in it, so nothing is set up for them: each
--   row that would have an event tries the events lock (events_wanted, the
--   trick of the enqueue's conditional NOTIFY: about 2 us a statement), and
--   when a try fails a listener is there: events_listening() raises JQ004,
--   the statement changes nothing (its transaction is rolled back), and the
--   worker runs <name>_events instead (Store._with_events), and from then on.
--   A statement whose tries succeeded holds the lock until it commits, so a
--   listener that asks meanwhile waits for it: it misses nothing promised.
-- * <name>_events sends its events (events_notify, from an aggregate of its
--   rows), atomically with its changes; its last column is the NOTIFYs sent,
--   NULL when nobody listened: the worker goes back to <name>.
-- Release 0015 had one form with a gated subquery whose plan was set up at
-- every execution, listened to or not: about 13-22 us of server CPU per
-- claim and per completion; the aggregate alone (the _events forms) still
-- cost about half of that with nobody listening.
WITH {claim_candidate}, admitted AS (
    -- Limited jobs go only as their limits allow; unlimited ones need no check.
    -- A rate-limited job whose token comes within 50 ms is admitted with
    -- start_at, its token's time: its slot starts it no earlier. 50 ms is ten
    -- times a worker's shortest wait for the next token (5 ms), so the claims
    -- keep ahead of the rate; admitting only the tokens there now started
    -- one job per claim (a task limited to 5000/s ran 161 a second).
    SELECT a.id AS job_id, a.start_at
    FROM {schema}.admit_at(ARRAY(SELECT job_id FROM candidate WHERE limited), 0.05) AS a
    WHERE EXISTS (SELECT 1 FROM candidate WHERE limited)
), delays AS (
    -- The rate-limited jobs' start times (epoch seconds) as one map, made
    -- once: NULL when there are none, so any other claim pays one test per
    -- row. Such a job's started_at is its token's time, when its slot may
    -- start it: the started_at of a budget's jobs keep its limit exactly.
    -- Numbers, not timestamps: parsing a timestamp's text per row cost an
    -- unthrottled rate-limited drain a tenth of its rate.
    SELECT jsonb_object_agg(job_id, date_part('epoch', start_at)) AS m
    FROM admitted WHERE start_at IS NOT NULL
), taken AS (
    -- By the locked rows' addresses, not a join: job_queue's statistics are
    -- always stale (it swings between empty and a backlog), and a join planned
    -- for "1 row" can rescan one side for every row of the other.
    DELETE FROM {schema}.job_queue AS w
    WHERE w.ctid = ANY(ARRAY(
        SELECT row_id FROM candidate
        WHERE NOT limited OR job_id IN (SELECT job_id FROM admitted)))  -- hashed: linear
    RETURNING w.job_id, w.concurrency_key, w.task, w.queue, w.priority, w.run_at, w.args,
              w.kwargs, w.options, w.expires_at, w.created_at
), recorded AS (
    -- A job enqueued in one row (job_insert) gets its record now, started. An
    -- id already recorded is a duplicate of a job that has its record.
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options, run_at,
                               expires_at, created_at, state, attempts, worker_id, started_at)
    SELECT job_id, task, queue, priority, args, kwargs, options, run_at, expires_at,
           created_at, 'STARTED', 1, %(worker_id)s,
           CASE WHEN (SELECT m FROM delays) IS NULL THEN now()
                ELSE COALESCE(to_timestamp(((SELECT m FROM delays) -> job_id::text)::float8),
                              now()) END
    FROM taken WHERE args IS NOT NULL
    ON CONFLICT (id) DO NOTHING
    RETURNING id, task, queue, args, kwargs, options, attempts, run_at, root_id, parent_id,
              expires_at, created_at, priority, started_at
), started AS (
    -- By key, not a join (as `taken`): the session keeps one generic plan, and
    -- a join planned while `jobs` was empty read all of `jobs` on every claim
    -- (10,000 rows for 8 jobs; 18.7 ms instead of 0.4).
    UPDATE {schema}.jobs AS j
    SET state = 'STARTED', attempts = j.attempts + 1, worker_id = %(worker_id)s,
        started_at = CASE WHEN (SELECT m FROM delays) IS NULL THEN now()
                          ELSE COALESCE(to_timestamp(
                                   ((SELECT m FROM delays) -> j.id::text)::float8), now()) END,
        progress_state = NULL, progress = NULL
    WHERE j.id = ANY(ARRAY(SELECT job_id FROM taken WHERE args IS NULL))
      AND j.state IN ('PENDING', 'RETRY')
    RETURNING j.id, j.task, j.queue, j.args, j.kwargs, j.options, j.attempts,
              j.run_at, j.root_id, j.parent_id, j.expires_at, j.created_at, j.priority,
              j.started_at
), unrecorded AS (
    -- A waiting row whose record is missing (deleted by hand, say) is not
    -- dropped in silence: its job is recorded failed. One whose record exists
    -- but is not waiting was a stale duplicate; its record stands.
    INSERT INTO {schema}.jobs (id, task, queue, priority, run_at, created_at, state,
                               finished_at, error)
    SELECT t.job_id, t.task, t.queue, t.priority, t.run_at, now(), 'FAILURE', now(),
           {schema}.error_json('JobRecordMissing',
                               'job ' || t.job_id || ' was waiting in queue ' || t.queue
                               || ' but its record (with its arguments) was gone')
    FROM taken AS t
    WHERE t.args IS NULL AND t.job_id NOT IN (SELECT id FROM started)  -- hashed: linear
    ON CONFLICT (id) DO NOTHING
), claimed AS (
    SELECT * FROM recorded UNION ALL SELECT * FROM started
), leased AS (
    INSERT INTO {schema}.job_lease (job_id, worker_id, attempt, task, queue, concurrency_key)
    SELECT id, %(worker_id)s, attempts, task, queue, options ->> 'concurrency_key'
    FROM claimed
), event AS MATERIALIZED (
    -- job_claim_events only (job_claim does not read it, so it is not even
    -- planned there): one row, read once (MATERIALIZED: a join never runs it
    -- again), the NOTIFYs of the started events, sent if someone listens;
    -- NULL when nobody did (the statement's one try of the lock, an
    -- InitPlan, succeeded: a failing try per row cost 0.12 us a row). They go as
    -- data, which the listener believes without reading a row (reading its
    -- rows cost it about 5 us of server CPU a job) when the sender's role
    -- may claim (event_senders): chr(29), S, the worker, the time (epoch
    -- seconds), then an item per job: id, retries, task, queue, root_id and
    -- parent_id ('' for none), the fields split by chr(31), the items by chr(30)
    -- (jobqueue/events/hints.py, Data). 30 items a NOTIFY of at most 260
    -- bytes each stay under the 8000-byte limit; a job whose item would be
    -- longer, or whose names hold a separator (events_plain), goes as a hint.
    -- An aggregate and a slice per NOTIFY: chunking by size (a running sum,
    -- GROUP BY) cost the drain 2 us a job more. OFFSET 0 keeps `d` a subquery
    -- so an item is made once: inlined, the length check made it again
    -- (0.27 us a row).
    SELECT (SELECT NULLIF(count(pg_notify(
                               '{channel_events}',
                               chr(29) || 'S' || chr(31) || CAST(%(worker_id)s AS uuid)::text
                               || chr(31) || date_part('epoch', now())::text || chr(30)
                               || array_to_string(items[i : i + 29], chr(30)))), 0)
            FROM generate_series(1, cardinality(items), 30) AS i) AS sent
    FROM (SELECT array_agg(CASE WHEN octet_length(data) <= 260 AND plain THEN data
                                ELSE 'started:' || id::text || '/' || attempts END)
                     FILTER (WHERE (SELECT {events_wanted})) AS items
          FROM (SELECT id, attempts, {events_plain} AS plain,
                       id::text || chr(31) || (attempts - 1) || chr(31) || task || chr(31)
                       || queue || chr(31) || COALESCE(root_id::text, '') || chr(31)
                       || COALESCE(parent_id::text, '') AS data
                FROM claimed OFFSET 0) AS d) AS a
)
-- Ids as text and the JSON as text: the worker's claim thread only routes jobs,
-- and decoding UUIDs and three JSON values per row was most of its time; the
-- slot that runs a job decodes its arguments (worker/job.py). expires_in: the
-- seconds left before the job expires, checked again when a slot starts it;
-- age: seconds since it was enqueued (a worker that does not know the task
-- hands it back for that long: unknown_task_grace); priority: for the task's
-- self.request.delivery_info; start_in: seconds from now until a
-- rate-limited job's token (its slot waits for it when positive), NULL for
-- other jobs.
SELECT id::text, task, queue, args::text, kwargs::text, options::text, attempts, run_at,
       root_id::text, parent_id::text, COALESCE(expires_at <= now(), false),
       options ?| ARRAY['link', 'link_error', 'chord'] AS in_canvas,
       extract(epoch FROM expires_at - now())::float8 AS expires_in,
       extract(epoch FROM now() - created_at)::float8 AS age, priority,
       options ->> 'fair_key' AS fair_key,
       CASE WHEN options ? 'fair_key'
            THEN (SELECT f.weight FROM {schema}.fair_weights AS f
                  WHERE f.fair_key = options ->> 'fair_key') END AS fair_weight,
       CASE WHEN (SELECT m FROM delays) IS NOT NULL
            THEN date_part('epoch', started_at - clock_timestamp()) END AS start_in{events_end}
-- In claim order: the pool starts a batch's jobs in the order it gets them,
-- and the deletes and inserts above return rows in whatever order they wrote.
ORDER BY priority DESC, run_at, id;

-- name: job_claim_without_events
-- The end of job_claim (see events_end): no events, each row tries the lock.
, CASE WHEN {events_wanted} THEN {schema}.events_listening() END AS events
FROM claimed;

-- name: job_claim_with_events
-- The end of job_claim_events: the claimed jobs' started events go with the
-- claim (event); `events`, the NOTIFYs sent, is NULL when nobody listened.
, event.sent AS events
FROM claimed, event;

-- name: job_claim_in_order
-- The claim's candidates in claim order (see job_claim): the form a worker
-- uses until it claims a job with a fair key (job_claim_fair).
candidate AS (
    SELECT c.job_id, c.row_id, c.limited
    FROM unnest(ARRAY(SELECT n FROM unnest(%(queues)s::text[]) AS n
                      WHERE NOT EXISTS (SELECT 1 FROM {schema}.queue_pauses AS p
                                        WHERE p.queue = n))) AS q(name)
    CROSS JOIN LATERAL (
        SELECT w.job_id, w.ctid AS row_id, w.priority, w.run_at,
               w.rate_key IS NOT NULL OR w.concurrency_key IS NOT NULL
               OR w.task = ANY(ARRAY(SELECT t.task FROM {schema}.task_limits AS t
                                     WHERE t.rate_set_by IS NOT NULL)) AS limited
        FROM {schema}.job_queue AS w
        WHERE w.queue = q.name AND w.run_at <= now()
          AND w.task <> ALL(%(skip_tasks)s::text[])  -- tasks it handed back lately
        ORDER BY w.priority DESC, w.run_at, w.job_id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE (SELECT {schema}.worker_compatible(%(revision)s::int))
    ORDER BY c.priority DESC, c.run_at, c.job_id
    LIMIT %(limit)s
)

-- name: job_claim_fair
-- The claim's candidates when jobs carry fair keys (the task's fair_key):
-- waiting jobs are taken round-robin across keys, so one key's backlog of a
-- million jobs delays another key's job by one turn, not by the backlog.
-- * `turn`: the keys of each queue that have waiting jobs, at most %(limit)s
--   a claim, found in the fair index one probe per key (a loose index scan:
--   the index is never read through). Keys are visited in descending order
--   from below %(fair_from)s, then from the top down to it: a worker's claims
--   so walk every key in turn, however many there are (worker/fairness.py
--   keeps where its round stands). Descending, because a probe then lands
--   on a key's newest entries: its oldest ones, in front, are the dead
--   entries of the jobs claimed since job_queue was last vacuumed (up to
--   half of a backlog), which an ascending probe walked through every claim.
-- * `head`: the queue's head in claim order, a full claim's worth, as
--   job_claim_in_order reads it: jobs without a key, keys not visited this
--   turn, and what fills the claim when few keys wait.
-- * Each key visited offers its first jobs (its share of the limit, times
--   its weight in fair_weights), unless the head holds that many of them
--   already (a key with a backlog usually fills the head: reading it again
--   cost a walk through those dead entries).
-- The first job of each key goes first (in turn order), then the second, and
-- so on; a key of weight w offers w jobs in each round (and a worker claiming
-- one job at a time stays on it for w claims). Priority still comes first: a
-- higher-priority job is taken before any lower one, whatever its key.
-- The key's scan uses a range (fair_key >= k AND fair_key <= k), not
-- equality: with equality the planner reduced the ordering to the claim
-- index's and read a million-job key through it, row by row (31 ms a key).
turn AS MATERIALIZED (
    SELECT q.name AS queue, k.fair_key, row_number() OVER (ORDER BY k.n, q.ord) AS turn
    FROM unnest(ARRAY(SELECT n FROM unnest(%(queues)s::text[]) AS n
                      WHERE NOT EXISTS (SELECT 1 FROM {schema}.queue_pauses AS p
                                        WHERE p.queue = n))) WITH ORDINALITY AS q(name, ord)
    CROSS JOIN LATERAL (
        WITH RECURSIVE step(fair_key, n, wrapped) AS (
            SELECT COALESCE(a.k, b.k), 1, a.k IS NULL
            FROM (SELECT max(w.fair_key) AS k FROM {schema}.job_queue AS w
                  WHERE w.queue = q.name AND w.fair_key < %(fair_from)s) AS a,
                 LATERAL (SELECT max(w.fair_key) AS k FROM {schema}.job_queue AS w
                          WHERE a.k IS NULL AND w.queue = q.name
                            AND w.fair_key >= %(fair_from)s) AS b
            UNION ALL
            SELECT COALESCE(a.k, b.k), s.n + 1, s.wrapped OR a.k IS NULL
            FROM step AS s,
                 LATERAL (SELECT max(w.fair_key) AS k FROM {schema}.job_queue AS w
                          WHERE w.queue = q.name AND w.fair_key < s.fair_key
                            AND (NOT s.wrapped OR w.fair_key >= %(fair_from)s)) AS a,
                 LATERAL (SELECT max(w.fair_key) AS k FROM {schema}.job_queue AS w
                          WHERE a.k IS NULL AND NOT s.wrapped AND w.queue = q.name
                            AND w.fair_key >= %(fair_from)s) AS b
            WHERE s.fair_key IS NOT NULL AND s.n < %(limit)s
        )
        SELECT fair_key, n FROM step WHERE fair_key IS NOT NULL
    ) AS k
), head AS MATERIALIZED (
    SELECT c.*, NULL::bigint AS turn, 1 AS weight
    FROM unnest(ARRAY(SELECT n FROM unnest(%(queues)s::text[]) AS n
                      WHERE NOT EXISTS (SELECT 1 FROM {schema}.queue_pauses AS p
                                        WHERE p.queue = n))) AS q(name)
    CROSS JOIN LATERAL (
        SELECT w.job_id, w.ctid AS row_id, w.priority, w.run_at, w.queue, w.fair_key,
               w.rate_key IS NOT NULL OR w.concurrency_key IS NOT NULL
               OR w.task = ANY(ARRAY(SELECT t.task FROM {schema}.task_limits AS t
                                     WHERE t.rate_set_by IS NOT NULL)) AS limited
        FROM {schema}.job_queue AS w
        WHERE w.queue = q.name AND w.run_at <= now()
          AND w.task <> ALL(%(skip_tasks)s::text[])
        ORDER BY w.priority DESC, w.run_at, w.job_id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
), share AS (
    SELECT t.queue, t.fair_key, t.turn, COALESCE(f.weight, 1) AS weight,
           least(%(limit)s, COALESCE(f.weight, 1)
                 * ceil(%(limit)s::numeric / (SELECT count(*) + 1 FROM turn))::int) AS share,
           COALESCE(h.n, 0) AS in_head
    FROM turn AS t
    LEFT JOIN {schema}.fair_weights AS f ON f.fair_key = t.fair_key
    LEFT JOIN (SELECT queue, fair_key, count(*) AS n FROM head GROUP BY queue, fair_key) AS h
           ON h.queue = t.queue AND h.fair_key = t.fair_key
), offered AS (
    SELECT * FROM head
    UNION ALL
    SELECT c.*, s.turn, s.weight
    FROM share AS s
    CROSS JOIN LATERAL (
        SELECT w.job_id, w.ctid AS row_id, w.priority, w.run_at, w.queue, w.fair_key,
               w.rate_key IS NOT NULL OR w.concurrency_key IS NOT NULL
               OR w.task = ANY(ARRAY(SELECT t.task FROM {schema}.task_limits AS t
                                     WHERE t.rate_set_by IS NOT NULL)) AS limited
        FROM {schema}.job_queue AS w
        WHERE s.in_head < s.share
          AND w.queue = s.queue AND w.fair_key >= s.fair_key AND w.fair_key <= s.fair_key
          AND w.run_at <= now() AND w.task <> ALL(%(skip_tasks)s::text[])
          AND w.job_id <> ALL(ARRAY(SELECT h.job_id FROM head AS h))  -- offered once
        ORDER BY w.fair_key, w.priority DESC, w.run_at, w.job_id
        LIMIT s.share
        FOR UPDATE SKIP LOCKED
    ) AS c
), ranked AS (
    -- A key's weight and turn from `share` (the head's rows carry neither).
    SELECT o.job_id, o.row_id, o.limited, o.priority, o.run_at,
           (row_number() OVER key_order - 1) / COALESCE(s.weight, 1) AS round,
           s.turn AS key_turn
    FROM offered AS o
    LEFT JOIN share AS s ON s.queue = o.queue AND s.fair_key = o.fair_key
    WINDOW key_order AS (PARTITION BY o.queue, o.fair_key
                         ORDER BY o.priority DESC, o.run_at, o.job_id)
), candidate AS (
    SELECT job_id, row_id, limited
    FROM ranked
    WHERE (SELECT {schema}.worker_compatible(%(revision)s::int))
    ORDER BY priority DESC, round, key_turn NULLS LAST, run_at, job_id
    LIMIT %(limit)s
)

-- name: job_complete_many
-- Record a batch of outcomes. A row changes only if this worker still holds
-- the lease for that very attempt and the job is still STARTED, so a late or
-- duplicate completion (say from a worker presumed dead) changes nothing.
-- RETRY puts the job back in the queue after its delay (REVOKED instead if a
-- revocation arrived meanwhile); every attempt that did not succeed is kept in
-- job_attempts. Waiters of finished jobs get one NOTIFY per 200 ids (payload
-- limit 8000 bytes); workers get one per queue that has a retry.
-- The outcomes come as one text per column (see worker.outcome_params): ids,
-- attempts and states comma-separated, results, errors and delays as JSON
-- arrays. Binding six Python lists as arrays cost the completer more than the
-- statement itself.
WITH input AS MATERIALIZED (
    SELECT string_to_array(%(ids)s, ',')::uuid[] AS ids,
           string_to_array(%(attempts)s, ',')::int[] AS attempts
), outcome AS (
    SELECT *
    FROM ROWS FROM (unnest((SELECT ids FROM input)), unnest((SELECT attempts FROM input)),
                    unnest(string_to_array(%(states)s, ',')),
                    json_array_elements_text(%(results)s::json),
                    json_array_elements_text(%(errors)s::json),
                    json_array_elements_text(%(delays)s::json))
         AS o(job_id, attempt, state, result, error, delay)
), released AS (
    -- No join the planner could turn around (see job_claim: job_lease's
    -- statistics are always stale): each outcome's lease is found by primary
    -- key, with its attempt and worker, in a LATERAL subquery that OFFSET 0
    -- keeps a nested loop, and deleted by address. Looking each row's attempt
    -- up by its position in the array instead (array_position) made the
    -- delete quadratic: 1.74 ms for 500 outcomes, against 1.08 this way.
    DELETE FROM {schema}.job_lease AS l
    WHERE l.ctid = ANY(ARRAY(
        SELECT h.row_id
        FROM unnest((SELECT ids FROM input), (SELECT attempts FROM input)) AS p(job_id, attempt)
        CROSS JOIN LATERAL (
            SELECT s.ctid AS row_id FROM {schema}.job_lease AS s
            WHERE s.job_id = p.job_id AND s.attempt = p.attempt
              AND s.worker_id = %(worker_id)s
            OFFSET 0) AS h))
    RETURNING l.job_id, l.concurrency_key
), unblocked AS (
    -- Concurrency-limited jobs finished: as many jobs waiting on their key as
    -- they freed slots may go. (One per key per statement, as it was, left
    -- the others deferred by admit() for up to a second: a batch of 500
    -- completions freed 500 slots and woke one job, and a task limited to 8
    -- at once drained 419 no-op jobs a second.)
    UPDATE {schema}.job_queue AS q SET run_at = now()
    WHERE q.job_id IN (
        SELECT w.job_id
        FROM (SELECT concurrency_key, count(*) AS freed FROM released
              WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key) AS r
        CROSS JOIN LATERAL (
            SELECT w.job_id FROM {schema}.job_queue AS w
            WHERE w.concurrency_key = r.concurrency_key AND w.run_at > now()
              -- deferred by admit() (by a second), not delayed on purpose
              AND w.run_at <= now() + interval '1 second'
            ORDER BY w.priority DESC, w.run_at LIMIT r.freed) AS w)
    RETURNING q.queue
), finished AS (
    -- RELEASED: the worker handed the job back unrun (it does not know the
    -- task): back to the queue after the delay, the attempt not counted, no
    -- history row, the previous state and error kept.
    -- SNOOZED (self.snooze()): back to the queue, PENDING, after the delay;
    -- the run stays an attempt (with its history row) but uses no retry
    -- (retries_base + 1, as retry_jobs(reset_retries) counts them).
    UPDATE {schema}.jobs AS j
    SET state = CASE WHEN o.state IN ('RETRY', 'RELEASED', 'SNOOZED')
                          AND j.revoked_at IS NOT NULL
                         THEN 'REVOKED'
                     WHEN o.state = 'RELEASED'
                         THEN CASE WHEN j.attempts > 1 THEN 'RETRY' ELSE 'PENDING' END
                     WHEN o.state = 'SNOOZED' THEN 'PENDING'
                     ELSE o.state END,
        attempts = CASE WHEN o.state = 'RELEASED' THEN j.attempts - 1 ELSE j.attempts END,
        options = CASE WHEN o.state = 'SNOOZED'
                       THEN jsonb_set(j.options, '{retries_base}', to_jsonb(
                                COALESCE((j.options ->> 'retries_base')::integer, 0) + 1))
                       ELSE j.options END,
        result = o.result::jsonb,
        error = CASE WHEN o.state IN ('RELEASED', 'SNOOZED') THEN j.error
                     ELSE o.error::jsonb END,
        run_at = CASE WHEN o.state IN ('RETRY', 'RELEASED', 'SNOOZED')
                      THEN now() + make_interval(secs => COALESCE(o.delay::float8, 0))
                      ELSE j.run_at END,
        finished_at = CASE WHEN o.state IN ('RETRY', 'RELEASED', 'SNOOZED')
                                AND j.revoked_at IS NULL
                           THEN NULL ELSE now() END
    FROM outcome AS o
    JOIN released AS r ON r.job_id = o.job_id
    -- By key, one lookup per outcome (the plan: a nested loop into `jobs`'
    -- primary key, as the claim session's settings leave it no other). It
    -- also had `j.id = ANY(<the batch's ids>)`, meant to give a key lookup
    -- whatever the join order: as a condition of that inner index scan it
    -- was prepared again for every outcome (its array sorted), twice the
    -- cost of the rest of the completion: 500 outcomes took 28-30 ms with
    -- it, 14-16 ms without (EXPLAIN ANALYZE: 26 of 35 ms in that loop).
    WHERE j.id = o.job_id AND j.state = 'STARTED' AND j.attempts = o.attempt
    RETURNING j.id, j.state, j.queue, j.priority, j.run_at, j.task, j.attempts,
              j.worker_id, j.started_at, j.error, j.options, o.state AS outcome,
              o.error AS outcome_error, o.result
), retried AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT id, queue, priority, run_at, task, options ->> 'rate_key',
           options ->> 'concurrency_key', options ->> 'fair_key'
    FROM finished WHERE state IN ('RETRY', 'PENDING')
    RETURNING queue
), history AS (
    INSERT INTO {schema}.job_attempts (job_id, attempt, worker_id, started_at, state, error)
    SELECT id, attempts, worker_id, started_at,
           CASE WHEN outcome = 'SNOOZED' AND state = 'PENDING' THEN 'SNOOZED' ELSE state END,
           CASE WHEN outcome = 'SNOOZED' THEN outcome_error::jsonb ELSE error END
    FROM finished WHERE outcome NOT IN ('SUCCESS', 'RELEASED')
), waited AS (
    -- Jobs enqueued with depends_on count the ones that just finished
    -- (dependencies_settle, 0018), while any job waits at all: otherwise one
    -- probe of an empty table.
    SELECT {schema}.dependencies_settle(ARRAY(
               SELECT id FROM finished WHERE state IN ('SUCCESS', 'FAILURE', 'REVOKED')))
               AS counted
    WHERE EXISTS (SELECT 1 FROM {schema}.job_dependencies)
), batched AS (
    -- Batch members count the ones that just finished (batches_settle, 0019),
    -- while any member waits at all: otherwise one probe of an empty table.
    -- Read after `waited` (the column order), so batch rows are locked last,
    -- as advance() locks them.
    SELECT {schema}.batches_settle(ARRAY(
               SELECT id FROM finished WHERE state IN ('SUCCESS', 'FAILURE', 'REVOKED')))
               AS counted
    WHERE EXISTS (SELECT 1 FROM {schema}.batch_members)
)
SELECT count(*) AS finished,
       (SELECT count(pg_notify('{channel_done}', ids))
        FROM (SELECT string_agg(id::text, ',') AS ids
              FROM (SELECT id, (row_number() OVER ()) / 200 AS chunk
                    FROM finished WHERE state NOT IN ('RETRY', 'PENDING')) AS f
              GROUP BY chunk) AS chunks) AS notified,
       (SELECT count(pg_notify('{channel_jobs}', queue))
        FROM (SELECT queue FROM retried UNION SELECT queue FROM unblocked) AS q) AS woken,
       -- Outcomes that changed nothing: this worker no longer held the lease
       -- (rescued elsewhere, or a duplicate). The worker logs each.
       ARRAY(SELECT o.job_id::text FROM outcome AS o
             WHERE o.job_id NOT IN (SELECT id FROM finished)) AS refused,  -- hashed: linear
       (SELECT counted FROM waited) AS counted,
       (SELECT counted FROM batched) AS batched
{events_end};

-- name: job_complete_many_without_events
-- The end of job_complete_many (see events_end): no events, each row that
-- would have one tries the lock. A job handed back unrun (RELEASED) is no
-- event: it was never started.
, NULL::integer AS events
FROM finished
-- Always true, or raises:
WHERE CASE WHEN outcome <> 'RELEASED' AND {events_wanted}
           THEN {schema}.events_listening() END IS NULL;

-- name: job_complete_many_with_events
-- The end of job_complete_many_events: the events, a success as data (as
-- job_claim's, with C; an item: id, retries, run time, and the first 201
-- characters of the result's JSON, which never holds a separator: the
-- listener knows the task and queue from the claim's data, and reads the
-- rows of a job it does not know) and any other outcome as a hint;
-- `events`, the NOTIFYs sent, is NULL when nobody listened. An item past
-- 260 bytes (a long result of non-ASCII text) goes as a hint.
, (SELECT NULLIF(count(pg_notify(
                         '{channel_events}',
                         chr(29) || 'C' || chr(31) || CAST(%(worker_id)s AS uuid)::text
                         || chr(31) || date_part('epoch', now())::text || chr(30)
                         || array_to_string(items[i : i + 29], chr(30)))), 0)
   FROM (SELECT array_agg(CASE WHEN kind = 'succeeded' AND octet_length(data) <= 260
                               THEN data ELSE kind || ':' || id::text || '/' || attempts END)
                    FILTER (WHERE (SELECT {events_wanted})) AS items
         FROM (SELECT id, attempts, kind,
                      id::text || chr(31) || (attempts - 1) || chr(31)
                      || date_part('epoch', now() - started_at)::text || chr(31)
                      || left(result, 201) AS data
               FROM (SELECT id, attempts, started_at, result,
                            CASE state WHEN 'SUCCESS' THEN 'succeeded' WHEN 'FAILURE' THEN 'failed'
                                       WHEN 'REVOKED' THEN 'revoked' ELSE 'retried' END AS kind
                     FROM finished WHERE outcome <> 'RELEASED') AS f
               OFFSET 0) AS d) AS a,
        generate_series(1, cardinality(items), 30) AS i) AS events
FROM finished;

-- name: job_rescue
-- Any live worker runs this now and then: workers whose lease expired (no
-- heartbeat for their TTL) are removed, and the jobs they held go back to the
-- queue as RETRY with a WorkerLostError (the attempt counts). They fail instead
-- when the task says reject_on_worker_lost=False or has no retries left, and
-- end REVOKED if a revocation is pending. SKIP LOCKED: rescuers never wait on
-- each other, and each lease is taken by exactly one of them. The caller runs
-- job_advance on `finished` in the same transaction.
WITH dead AS (
    SELECT id FROM {schema}.workers
    WHERE lease_expires_at < now()
    FOR UPDATE SKIP LOCKED
), buried AS (
    DELETE FROM {schema}.workers AS w USING dead AS d WHERE w.id = d.id
), lost AS (
    -- A lease held by an open atomic transaction (job_lease_hold) is skipped:
    -- that attempt may still commit, and its job must not run again before it
    -- ends. It is rescued by a later pass if that transaction rolls back.
    DELETE FROM {schema}.job_lease AS l
    WHERE l.ctid = ANY(ARRAY(
        SELECT s.ctid FROM {schema}.job_lease AS s
        WHERE s.worker_id IN (SELECT id FROM dead)
           OR NOT EXISTS (SELECT 1 FROM {schema}.workers AS w WHERE w.id = s.worker_id)
        FOR UPDATE SKIP LOCKED))
    RETURNING l.job_id, l.attempt, l.worker_id
), decided AS (
    SELECT l.job_id, l.attempt, l.worker_id,
           CASE WHEN j.revoked_at IS NOT NULL THEN 'REVOKED'
                WHEN (j.options ->> 'reject_on_worker_lost')::boolean IS FALSE THEN 'FAILURE'
                -- retries_base: the attempts before retry_jobs(reset_retries)
                WHEN j.attempts - COALESCE((j.options ->> 'retries_base')::integer, 0)
                     > {schema}.max_retries(j.options) THEN 'FAILURE'
                ELSE 'RETRY' END AS next_state
    FROM lost AS l
    JOIN {schema}.jobs AS j ON j.id = l.job_id
    WHERE j.id = ANY(ARRAY(SELECT job_id FROM lost))
), rescued AS (
    UPDATE {schema}.jobs AS j
    SET state = d.next_state,
        error = {schema}.error_json('WorkerLostError',
                                    'worker ' || d.worker_id
                                    || ' stopped heartbeating during attempt ' || d.attempt),
        run_at = now(),
        finished_at = CASE WHEN d.next_state = 'RETRY' THEN NULL ELSE now() END
    FROM decided AS d
    WHERE j.id = ANY(ARRAY(SELECT job_id FROM decided))
      AND j.id = d.job_id AND j.state = 'STARTED' AND j.attempts = d.attempt
    RETURNING j.id, j.state, j.queue, j.priority, j.run_at, j.task, j.attempts,
              j.worker_id, j.started_at, j.error, j.options
), requeued AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT id, queue, priority, run_at, task, options ->> 'rate_key',
           options ->> 'concurrency_key', options ->> 'fair_key'
    FROM rescued WHERE state = 'RETRY'
    RETURNING queue
), history AS (
    INSERT INTO {schema}.job_attempts (job_id, attempt, worker_id, started_at, state, error)
    SELECT id, attempts, worker_id, started_at, state, error FROM rescued
), event AS (
    SELECT 'offline' AS kind, id::text AS item FROM dead
    UNION ALL
    SELECT CASE state WHEN 'RETRY' THEN 'retried' WHEN 'FAILURE' THEN 'failed'
                      ELSE 'revoked' END,
           id::text || '/' || attempts
    FROM rescued
)
SELECT (SELECT count(*) FROM dead) AS workers,
       (SELECT count(*) FROM rescued) AS jobs,
       (SELECT count(pg_notify('{channel_jobs}', queue))
        FROM (SELECT DISTINCT queue FROM requeued) AS q) AS woken,
       (SELECT count(pg_notify('{channel_done}', id::text))
        FROM rescued WHERE state <> 'RETRY') AS notified,
       ARRAY(SELECT id FROM rescued WHERE state <> 'RETRY') AS finished,
       {events_notify} AS events;

-- name: job_revoke_lock
-- Run before job_revoke, in its transaction: wait for whatever is changing these
-- jobs (a completion putting a job back in the queue for a retry) to commit.
-- job_revoke's next statement then sees the job where that left it; in one
-- statement, its snapshot predates the requeued row and the job stayed RETRY,
-- to be claimed and run again. Id order: revokes of many jobs never deadlock.
SELECT id FROM {schema}.jobs WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE;

-- name: job_revoke
-- Revocations live in the job row. A waiting job leaves the queue and is
-- REVOKED now (one enqueued in one row gets its record here); a running one
-- is marked, and its worker is told over NOTIFY (a hint it confirms with
-- job_revocations; workers also re-check the jobs they hold on heartbeat): it
-- does not start a job still waiting in its prefetch buffer, and stops a
-- running one if terminate is set.
-- The caller runs job_advance on `finished` in the same transaction.
WITH unqueued AS (
    DELETE FROM {schema}.job_queue AS q
    WHERE q.job_id = ANY(%(ids)s::uuid[])
    RETURNING q.job_id, q.task, q.queue, q.priority, q.run_at, q.args, q.kwargs, q.options,
              q.expires_at, q.created_at
), revoked_error AS (
    SELECT {schema}.error_json('TaskRevokedError', 'revoked') AS error
), recorded AS (
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options, run_at,
                               expires_at, created_at, state, revoked_at, revoke_terminate,
                               finished_at, error)
    SELECT u.job_id, u.task, u.queue, u.priority, u.args, u.kwargs, u.options, u.run_at,
           u.expires_at, u.created_at, 'REVOKED', now(),
           %(terminate)s, now(), e.error
    FROM unqueued AS u, revoked_error AS e
    WHERE u.args IS NOT NULL
    RETURNING id, state, worker_id, attempts
), updated AS (
    UPDATE {schema}.jobs AS j
    SET revoked_at = COALESCE(j.revoked_at, now()),
        revoke_terminate = j.revoke_terminate OR %(terminate)s,
        state = CASE WHEN u.job_id IS NOT NULL THEN 'REVOKED' ELSE j.state END,
        finished_at = CASE WHEN u.job_id IS NOT NULL THEN now() ELSE j.finished_at END,
        error = CASE WHEN u.job_id IS NOT NULL THEN (SELECT error FROM revoked_error)
                     ELSE j.error END
    FROM unnest(%(ids)s::uuid[]) AS x(id)
    LEFT JOIN unqueued AS u ON u.job_id = x.id
    WHERE j.id = ANY(%(ids)s::uuid[])
      AND j.id = x.id AND j.state IN ('PENDING', 'STARTED', 'RETRY')
    RETURNING j.id, j.state, j.worker_id, j.attempts
), target AS (
    SELECT * FROM recorded UNION ALL SELECT * FROM updated
), event AS (
    -- A running job's event comes from its worker, which records it REVOKED.
    SELECT 'revoked' AS kind, id::text || '/' || attempts AS item
    FROM target WHERE state = 'REVOKED'
)
SELECT (SELECT count(*) FROM target) AS revoked,
       (SELECT count(pg_notify('{channel_done}', id::text))
        FROM target WHERE state = 'REVOKED') AS notified,
       (SELECT count(pg_notify('{channel_control}',
                               json_build_object('revoke', id, 'worker', worker_id)::text))
        FROM target WHERE state = 'STARTED') AS signalled,
       ARRAY(SELECT id FROM target WHERE state = 'REVOKED') AS finished,
       {events_notify} AS events;

-- name: job_insert_dependent
-- A job enqueued with depends_on (0018): its record and its row in job_queue,
-- due at dependency_wait() until depend() has counted every job it waits for
-- (those already finished at once: then it is due now, and notified).
WITH job AS (
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options,
                               run_at, expires_at, root_id, parent_id)
    VALUES (%(id)s::uuid, %(task)s, %(queue)s, %(priority)s, %(args)s::jsonb,
            %(kwargs)s::jsonb, %(options)s::jsonb,
            COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
            COALESCE(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s)),
            %(root_id)s::uuid, %(parent_id)s::uuid)
    RETURNING id, task, queue, priority
), waiting AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT id, queue, priority, {schema}.dependency_wait(), task, %(rate_key)s,
           %(concurrency_key)s, %(fair_key)s
    FROM job
    RETURNING job_id
)
SELECT {schema}.depend((SELECT job_id FROM waiting), %(depends_on)s::uuid[],
                       %(on_dependency_failure)s);

-- name: dependencies_sweep
-- The maintenance leader's round (0018): dependencies that finished but were
-- not counted (see dependencies_sweep() in schema.sql), a bounded slice per
-- round from where the last one stopped.
SELECT counted, next_id::text FROM {schema}.dependencies_sweep(%(from_id)s::uuid);

-- name: batches_sweep
-- The maintenance leader's round (0019): batch members that finished (or
-- were deleted) but were not counted (see batches_sweep() in schema.sql).
SELECT counted, next_id::text FROM {schema}.batches_sweep(%(from_id)s::uuid);

-- name: batch_open
-- A new batch (app.batch()), its callbacks frozen signatures (0019).
SELECT {schema}.batch_open(%(id)s::uuid, %(on_complete)s::jsonb, %(on_success)s::jsonb,
                           %(on_failure)s::jsonb);

-- name: batch_add
-- Jobs just enqueued in this transaction join an open batch (0019).
SELECT {schema}.batch_add(%(batch)s::uuid, %(ids)s::uuid[]);

-- name: batch_close
-- No job may join the batch any more; DONE at once if every member settled.
SELECT {schema}.batch_close(%(batch)s::uuid);

-- name: batch_progress
-- One batch's counts and its callbacks' job ids (the batch_progress view).
SELECT state, total, pending, succeeded, failed, revoked, closed, completed,
       on_complete_job, on_success_job, on_failure_job
FROM {schema}.batch_progress
WHERE id = %(batch)s::uuid;

-- name: job_lease_hold
-- An atomic task's transaction locks its job's lease before the task runs, and
-- completes the job (job_complete_many) before it commits: the task's writes
-- and the job's outcome commit together. While it is open no rescuer takes the
-- lease (job_rescue skips locked ones), so the job cannot run again while this
-- attempt may still commit. No row: the lease is gone (rescued, released), and
-- the attempt must not run. The lease's worker id is the one to complete with.
-- The session is named after the job for the transaction (atomic_end).
SELECT worker_id::text,
       set_config('application_name', 'jobqueue-atomic ' || %(id)s::text, true)
FROM {schema}.job_lease
WHERE job_id = %(id)s::uuid AND attempt = %(attempt)s
FOR UPDATE;

-- name: atomic_end
-- A pool stopped an atomic task (time limit, termination, a killed child):
-- its transaction ends now, on the server, before its outcome is recorded. A
-- killed process's transaction would otherwise stay open until the statement
-- it runs ends (the server only notices a gone client when it next talks to
-- it), and the completer's release of the lease would wait on it. Found by
-- the session's name (job_lease_hold), so it works through PgBouncer too.
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'jobqueue-atomic ' || %(id)s::text AND pid <> pg_backend_pid();

-- name: job_lease_wait
-- An atomic transaction's commit went unanswered: wait until the server has
-- ended it (its lock on the lease), then say whether the lease is still there
-- (it did not commit: the commit would have taken it). Then job_attempt_state.
SELECT count(*) FROM (SELECT 1 FROM {schema}.job_lease
                      WHERE job_id = %(id)s::uuid AND attempt = %(attempt)s
                      FOR UPDATE) AS held;

-- name: job_attempt_state
SELECT state FROM {schema}.jobs WHERE id = %(id)s::uuid AND attempts = %(attempt)s;

-- name: lease_orphans
-- Leases this worker holds but does not know about: a claim that committed
-- while its reply was lost with the connection. Old enough to rule out a
-- claim whose reply is still on its way.
SELECT job_id FROM {schema}.job_lease
WHERE worker_id = %(id)s AND NOT (job_id = ANY(%(running)s::uuid[]))
  AND claimed_at < now() - interval '10 seconds';

-- name: job_revocations
-- Which of the jobs a worker holds have been revoked, and whether with
-- terminate: what a control NOTIFY claims is acted on only once this says so.
SELECT id, revoke_terminate FROM {schema}.jobs
WHERE id = ANY(%(ids)s::uuid[]) AND revoked_at IS NOT NULL AND state = 'STARTED'
  AND worker_id = %(worker_id)s::uuid;

-- name: job_release_many
-- Put jobs this worker claimed but will not run back in the queue, as if they
-- had never been claimed (shutdown). Guarded by the lease like completion.
WITH released AS (
    DELETE FROM {schema}.job_lease AS l
    WHERE l.job_id = ANY(%(ids)s::uuid[]) AND l.worker_id = %(worker_id)s
    RETURNING l.job_id, l.attempt
), reset AS (
    UPDATE {schema}.jobs AS j
    SET state = 'PENDING', attempts = j.attempts - 1, worker_id = NULL, started_at = NULL
    FROM released AS r
    -- One lookup per released job, by its id alone (see job_complete_many).
    WHERE j.id = r.job_id AND j.state = 'STARTED' AND j.attempts = r.attempt
    RETURNING j.id, j.queue, j.priority, j.run_at, j.task, j.options
), requeued AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT id, queue, priority, run_at, task, options ->> 'rate_key',
           options ->> 'concurrency_key', options ->> 'fair_key'
    FROM reset
    RETURNING queue
)
SELECT pg_notify('{channel_jobs}', queue) FROM (SELECT DISTINCT queue FROM requeued) AS q;

-- name: job_next_run_at
-- When the earliest scheduled job of these queues becomes due, so an idle
-- worker can sleep exactly until then instead of polling.
-- The claim index orders run_at within a priority, so walk each queue's
-- priorities (a few index probes each) and take the earliest future run_at.
WITH RECURSIVE level AS (
    SELECT q.name AS queue,
           (SELECT max(w.priority) FROM {schema}.job_queue AS w WHERE w.queue = q.name)
               AS priority
    FROM unnest(%(queues)s::text[]) AS q(name)
    UNION ALL
    SELECT l.queue,
           (SELECT max(w.priority) FROM {schema}.job_queue AS w
            WHERE w.queue = l.queue AND w.priority < l.priority)
    FROM level AS l
    WHERE l.priority IS NOT NULL
)
SELECT min(n.run_at) AS next_run_at, now() AS db_now
FROM level AS l
CROSS JOIN LATERAL (
    SELECT w.run_at FROM {schema}.job_queue AS w
    WHERE w.queue = l.queue AND w.priority = l.priority AND w.run_at > now()
    ORDER BY w.run_at
    LIMIT 1
) AS n;

-- name: job_get
-- From all_jobs: a job enqueued in one row has no record until claimed.
SELECT id, task, queue, state, result, error, attempts, created_at, started_at,
       finished_at, worker_id, root_id, parent_id, group_id, group_index,
       progress_state, progress
FROM {schema}.all_jobs
WHERE id = %(id)s::uuid;

-- name: worker_register
WITH registered AS (
    INSERT INTO {schema}.workers (id, hostname, pid, queues, concurrency, version,
                                  lease_expires_at, tasks, pool)
    VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, %(version)s,
            now() + make_interval(secs => %(lease_ttl)s), %(tasks)s, %(pool)s)
    RETURNING id
), event AS (
    SELECT 'online' AS kind, id::text AS item FROM registered
)
SELECT {events_notify};

-- name: unserved_tasks
SELECT queue, task, waiting, oldest_waiting FROM {schema}.unserved_tasks
ORDER BY queue, task;

-- name: worker_heartbeat
-- Renews every lease this worker holds at once: they hang off its row. In
-- the same statement, the worker takes or keeps the maintenance lease: it is
-- the leader if it already was, or if the lease has lapsed (the leader died
-- or stopped beating). Returns (alive, leader): alive is false when the
-- worker's row is gone (presumed dead and rescued).
WITH beat AS (
    UPDATE {schema}.workers
    SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => %(lease_ttl)s)
    WHERE id = %(id)s
    RETURNING id
), lead AS (
    INSERT INTO {schema}.maintenance_leader AS m (one, worker_id, lease_expires_at)
    SELECT true, id, now() + make_interval(secs => %(leader_ttl)s) FROM beat
    ON CONFLICT (one) DO UPDATE
    SET worker_id = EXCLUDED.worker_id, lease_expires_at = EXCLUDED.lease_expires_at,
        elected_at = CASE WHEN m.worker_id = EXCLUDED.worker_id THEN m.elected_at ELSE now() END
    WHERE m.worker_id = EXCLUDED.worker_id OR m.lease_expires_at < now()
    RETURNING worker_id
), event AS (
    SELECT 'heartbeat' AS kind, id::text AS item FROM beat
)
SELECT EXISTS (SELECT 1 FROM beat), EXISTS (SELECT 1 FROM lead), {events_notify};

-- name: worker_unregister
-- A leaving leader gives the maintenance lease up: the next heartbeat of any
-- other worker takes it.
WITH gone AS (
    DELETE FROM {schema}.maintenance_leader WHERE worker_id = %(id)s::uuid
), unregistered AS (
    DELETE FROM {schema}.workers WHERE id = %(id)s RETURNING id
), event AS (
    SELECT 'offline' AS kind, id::text AS item FROM unregistered
)
SELECT {events_notify};

-- name: events_listen
-- The events listener (jobqueue/events) on its direct connection.
LISTEN "{channel_events}";

-- name: events_session
-- The listener's reads (event_jobs, event_workers) with generic plans: their
-- custom plans cost 1-2 ms of planning each, as much as reading 300 jobs,
-- and look no better (the key lookups are pruned to a partition at run
-- time either way). No JIT: a batch of thousands of hints could cross its
-- cost threshold and compile for longer than it reads.
SELECT set_config('plan_cache_mode', 'force_generic_plan', false), set_config('jit', 'off', false);

-- name: events_hold_session
-- The listener's second connection only holds (or waits for) the lock that
-- makes statements report events (events_wanted); it must wait as long as
-- it takes, and its server process must notice a client that went away
-- while it waits (a crashed listener), not wait on in its name.
SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false),
       CASE WHEN current_setting('server_version_num')::int >= 140000
            THEN set_config('client_connection_check_interval', '1000', false) END;

-- name: events_hold
-- Sent without waiting for the reply: granted at once, or once the listener
-- before it leaves. Either way statements report events from now on (a
-- waiting exclusive request fails their shared tries too).
SELECT pg_advisory_lock({lock_events}, 0);

-- name: events_ready
-- Whether the listener misses nothing from now on: its hold connection
-- (pid) has the lock, or waits behind another listener that has it (so every
-- statement since that one's grant has reported). Waiting behind a statement
-- that tried before the request only is not enough: that one sends nothing.
SELECT COALESCE(bool_or(l.pid = %(pid)s AND l.granted), false)
       OR (COALESCE(bool_or(l.pid = %(pid)s), false)
           AND COALESCE(bool_or(l.pid <> %(pid)s AND l.granted AND l.mode = 'ExclusiveLock'),
                        false))
FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.classid = ({lock_events}::bigint & 4294967295)::oid
  AND l.objid = 0 AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());

-- name: events_queue_usage
-- How full the server's notification queue is (0 to 1): a listener that
-- falls far behind holds its tail, and once it is full every NOTIFY fails
-- at commit (claims and completions among them).
SELECT pg_notification_queue_usage();

-- name: event_senders
-- Which of the server processes that sent data payloads (job_claim's event) run
-- as a role that may claim jobs (INSERT into job_lease: a worker's, the
-- owner's, a superuser's). Such a role can write every column the hints'
-- reads would confirm, so what it sends is believed as it is; anyone else's
-- data is only hints. A process is looked up by the pid the server stamped
-- on the notification (a client cannot choose it), while it still runs:
-- one that ended meanwhile is not believed (its items are then read as
-- hints). usesysid is visible to every role (pg_stat_activity).
SELECT a.pid FROM pg_stat_activity AS a
WHERE a.pid = ANY(%(pids)s::integer[])
  AND has_table_privilege(a.usesysid, '{schema}.job_lease', 'INSERT');

-- name: event_jobs
-- What the events listener reports of the jobs a NOTIFY named (a hint, so
-- confirmed here): the row of each job, read once however many of its
-- events the batch names. A job no longer there (pruned, deleted) has no
-- row. Ids come comma-separated (as job_complete_many's), the filters as
-- arrays (NULL: any). Times and run times as the text of epoch seconds,
-- which the listener writes into its JSON as they are: formatting a float
-- in Python (the shortest repr) cost it more than the read, and float8's
-- output is the same shortest form. Each lookup by key (LATERAL ... LIMIT
-- 1 is never made a join). The listener's session uses generic plans
-- (events_session): a custom plan cost 1-2 ms of planning a read, as much
-- as reading 300 jobs.
SELECT j.id::text, j.attempts, j.task, j.queue, j.state, j.worker_id::text,
       date_part('epoch', j.started_at)::text, date_part('epoch', j.finished_at)::text,
       date_part('epoch', j.finished_at - j.started_at)::text,
       j.error ->> 'type', j.error ->> 'message', j.error ->> 'traceback',
       CASE WHEN j.state = 'SUCCESS' THEN left(j.result::text, 201) END,
       CASE WHEN j.state = 'RETRY' THEN date_part('epoch', j.run_at)::text END,
       j.revoke_terminate, j.root_id::text, j.parent_id::text
FROM unnest(string_to_array(%(ids)s, ',')::uuid[]) AS h(id)
CROSS JOIN LATERAL (
    SELECT * FROM {schema}.jobs AS j WHERE j.id = h.id LIMIT 1
) AS j
WHERE (%(queues)s::text[] IS NULL OR j.queue = ANY(%(queues)s::text[]))
  AND (%(tasks)s::text[] IS NULL OR j.task = ANY(%(tasks)s::text[]));

-- name: event_attempts
-- The records of attempts the job's row no longer describes (an earlier
-- attempt, or one that went to a retry): the listener reads these only for
-- such hints, which a drain of successes never has.
SELECT a.job_id::text, a.attempt, a.state, a.worker_id::text,
       date_part('epoch', a.started_at)::text, date_part('epoch', a.finished_at)::text,
       date_part('epoch', a.finished_at - a.started_at)::text,
       a.error ->> 'type', a.error ->> 'message', a.error ->> 'traceback'
FROM ROWS FROM (unnest(string_to_array(%(ids)s, ',')::uuid[]),
                unnest(string_to_array(%(attempts)s, ',')::int[])) AS h(id, attempt)
CROSS JOIN LATERAL (
    SELECT * FROM {schema}.job_attempts AS a
    WHERE a.job_id = h.id AND a.attempt = h.attempt LIMIT 1
) AS a;

-- name: event_workers
-- The workers a NOTIFY named (every worker when ids is NULL), with the jobs
-- each holds now.
SELECT w.id::text, w.hostname, w.pid, w.queues, w.concurrency, w.version,
       date_part('epoch', w.started_at), date_part('epoch', w.heartbeat_at),
       (SELECT count(*) FROM {schema}.job_lease AS l WHERE l.worker_id = w.id)
FROM {schema}.workers AS w
WHERE %(ids)s::uuid[] IS NULL OR w.id = ANY(%(ids)s::uuid[]);

-- name: schema_version
SELECT version_num FROM {schema}.alembic_version;

-- name: queue_stats
SELECT queue, pending, started, retry, success, failure, revoked, oldest_waiting, paused
FROM {schema}.queue_stats ORDER BY queue;

-- name: job_history
-- Every attempt of one job, oldest first (jobs show, app.control.history).
SELECT job_id, task, attempt, worker_id, started_at, finished_at, state, error_type,
       error_message, traceback
FROM {schema}.job_history WHERE job_id = %(id)s::uuid ORDER BY attempt;

-- name: queue_pause
-- Operations (docs/sql.md, "Operations"): each calls its function of the
-- schema, so Python, the CLI and psql do exactly the same thing. Bulk ones
-- change at most max_jobs rows per call; the caller loops until 0.
SELECT {schema}.pause_queue(%(queue)s::text, %(reason)s::text);

-- name: queue_resume
SELECT {schema}.resume_queue(%(queue)s::text);

-- name: fair_weight_set
SELECT {schema}.set_fair_weight(%(key)s::text, %(weight)s::int);

-- name: fair_keys
SELECT queue, fair_key, waiting, due, oldest_due_wait, weight
FROM {schema}.fair_keys ORDER BY waiting DESC, queue, fair_key;

-- name: queue_purge
SELECT {schema}.purge_queue(%(queue)s::text, %(max_jobs)s::integer);

-- name: job_retry_many
SELECT {schema}.retry_jobs(%(ids)s::uuid[], %(queue)s::text, %(task)s::text, %(state)s::text,
    %(exception)s::text, %(enqueued_after)s::timestamptz, %(enqueued_before)s::timestamptz,
    %(finished_after)s::timestamptz, %(finished_before)s::timestamptz, %(max_jobs)s::integer,
    %(reset_retries)s::boolean);

-- name: job_cancel_many
SELECT {schema}.cancel_jobs(%(ids)s::uuid[], %(queue)s::text, %(task)s::text, %(state)s::text,
    %(exception)s::text, %(enqueued_after)s::timestamptz, %(enqueued_before)s::timestamptz,
    %(finished_after)s::timestamptz, %(finished_before)s::timestamptz, %(max_jobs)s::integer,
    %(terminate)s::boolean);

-- name: job_delete_many
SELECT {schema}.delete_jobs(%(ids)s::uuid[], %(queue)s::text, %(task)s::text, %(state)s::text,
    %(exception)s::text, %(enqueued_after)s::timestamptz, %(enqueued_before)s::timestamptz,
    %(finished_after)s::timestamptz, %(finished_before)s::timestamptz, %(max_jobs)s::integer);

-- name: job_move_many
SELECT {schema}.move_jobs(%(ids)s::uuid[], %(queue)s::text, %(task)s::text, %(state)s::text,
    %(exception)s::text, %(enqueued_after)s::timestamptz, %(enqueued_before)s::timestamptz,
    %(finished_after)s::timestamptz, %(finished_before)s::timestamptz, %(max_jobs)s::integer,
    %(to_queue)s::text, %(to_priority)s::integer, %(to_eta)s::timestamptz);

-- name: job_find
SELECT * FROM {schema}.find_jobs(%(ids)s::uuid[], %(queue)s::text, %(task)s::text,
    %(state)s::text, %(exception)s::text, %(enqueued_after)s::timestamptz,
    %(enqueued_before)s::timestamptz, %(finished_after)s::timestamptz,
    %(finished_before)s::timestamptz, %(max_jobs)s::integer, %(after)s::uuid);

-- name: canvas_insert
-- A whole canvas in one statement: its groups' member ids, then spawn()
-- writes the jobs that can start now (the rest are JSON in their options).
WITH registered AS (
    INSERT INTO {schema}.groups (id, members, root_id)
    SELECT (g ->> 'id')::uuid,
           ARRAY(SELECT jsonb_array_elements_text(g -> 'members'))::uuid[],
           %(root)s::uuid
    FROM jsonb_array_elements(%(groups)s::jsonb) AS g
    ON CONFLICT (id) DO NOTHING  -- a retry after a lost commit reply
)
SELECT {schema}.spawn(%(canvas)s::jsonb, NULL, NULL, %(root)s::uuid);

-- name: job_advance
-- Create what follows finished jobs (callbacks, error callbacks, chord
-- bodies); called in the transaction that finished them.
SELECT {schema}.advance(%(ids)s::uuid[]);

-- name: job_membership
-- self.replace() of a chord's header member: its place in the header, which
-- the replacement's last job takes over.
SELECT group_id::text, group_index FROM {schema}.jobs WHERE id = %(id)s::uuid;

-- name: job_replace
-- self.replace(): in the transaction that records the replaced job's outcome,
-- before job_complete_many, and only while this worker holds that attempt's
-- lease (locked until the commit). The job gives up its callbacks and its
-- chord membership (its chord_members row; the replacement's last job gets
-- one, so `remaining` is unchanged), the replacement's groups are
-- registered, and no row is returned when the lease is not ours (the outcome
-- is then refused too). job_replace_spawn writes the replacement after it.
WITH held AS (
    SELECT l.job_id FROM {schema}.job_lease AS l
    WHERE l.job_id = %(id)s::uuid AND l.worker_id = %(worker_id)s
      AND l.attempt = %(attempt)s
    FOR UPDATE
), detached AS (
    UPDATE {schema}.jobs AS j
    SET options = j.options - 'link' - 'link_error' - 'chord',
        -- a chord's body reads its header's results by group_id: the
        -- replacement's last job holds this place now (a plain group's
        -- member keeps it: nothing reads results by it)
        group_id = CASE WHEN j.options ? 'chord' THEN NULL ELSE j.group_id END,
        group_index = CASE WHEN j.options ? 'chord' THEN NULL ELSE j.group_index END
    FROM held
    WHERE j.id = held.job_id AND j.state = 'STARTED' AND j.attempts = %(attempt)s
    RETURNING j.id
), uncounted AS (
    DELETE FROM {schema}.chord_members AS m USING detached AS d WHERE m.job_id = d.id
), registered AS (
    INSERT INTO {schema}.groups (id, members, root_id)
    SELECT (g ->> 'id')::uuid,
           ARRAY(SELECT jsonb_array_elements_text(g -> 'members'))::uuid[],
           %(root)s::uuid
    FROM jsonb_array_elements(%(groups)s::jsonb) AS g
    WHERE EXISTS (SELECT FROM detached)
    ON CONFLICT (id) DO NOTHING
)
SELECT id FROM detached;

-- name: job_replace_spawn
-- The replacement (ids chosen up front: spawning twice writes nothing more),
-- a child of the replaced job.
SELECT {schema}.spawn(%(canvas)s::jsonb, NULL, %(id)s::uuid, %(root)s::uuid);

-- name: chord_lock
-- self.add_to_chord(): the chord's row, locked until the new member is
-- written (its header's size gives the new member's place).
SELECT c.state, c.root_id::text, cardinality(g.members)
FROM {schema}.chords AS c
JOIN {schema}.groups AS g ON g.id = c.id
WHERE c.id = %(id)s::uuid
FOR UPDATE OF c;

-- name: group_lock
-- self.add_to_group(): the group of the running job (its record's group_id),
-- locked until the new member is written; not for a chord's header (whose
-- body counts its members: add_to_chord).
SELECT g.id::text, g.root_id::text, cardinality(g.members),
       EXISTS (SELECT 1 FROM {schema}.chords AS c WHERE c.id = g.id)
FROM {schema}.jobs AS j
JOIN {schema}.groups AS g ON g.id = j.group_id
WHERE j.id = %(id)s::uuid
FOR UPDATE OF g;

-- name: group_add
-- self.add_to_group(): one more member, listed in the group (so
-- GroupResult.restore() and the dashboard see it) by the statement that
-- spawns it.
WITH listed AS (
    UPDATE {schema}.groups SET members = members || %(member)s::uuid
    WHERE id = %(group)s::uuid
    RETURNING id
), registered AS (
    INSERT INTO {schema}.groups (id, members, root_id)
    SELECT (g ->> 'id')::uuid,
           ARRAY(SELECT jsonb_array_elements_text(g -> 'members'))::uuid[],
           %(root)s::uuid
    FROM jsonb_array_elements(%(groups)s::jsonb) AS g
    WHERE EXISTS (SELECT FROM listed)
    ON CONFLICT (id) DO NOTHING
)
SELECT {schema}.spawn(%(canvas)s::jsonb, NULL, %(parent)s::uuid, %(root)s::uuid)
FROM listed;

-- name: chord_add
-- self.add_to_chord(): one more header member, counted (`remaining` + 1) and
-- listed in the header's group by the statement that spawns it. Nothing when
-- the chord is no longer PENDING.
WITH counted AS (
    UPDATE {schema}.chords SET remaining = remaining + 1
    WHERE id = %(chord)s::uuid AND state = 'PENDING'
    RETURNING id
), listed AS (
    UPDATE {schema}.groups SET members = members || %(member)s::uuid
    WHERE id = (SELECT id FROM counted)
), registered AS (
    INSERT INTO {schema}.groups (id, members, root_id)
    SELECT (g ->> 'id')::uuid,
           ARRAY(SELECT jsonb_array_elements_text(g -> 'members'))::uuid[],
           %(root)s::uuid
    FROM jsonb_array_elements(%(groups)s::jsonb) AS g
    WHERE EXISTS (SELECT FROM counted)
    ON CONFLICT (id) DO NOTHING
)
SELECT {schema}.spawn(%(canvas)s::jsonb, NULL, %(parent)s::uuid, %(root)s::uuid)
FROM counted;

-- name: job_progress
-- update_state() from a running task: only its current attempt may write.
UPDATE {schema}.jobs SET progress_state = %(state)s, progress = %(meta)s::jsonb
WHERE id = %(id)s::uuid AND state = 'STARTED'
  AND attempts = COALESCE(%(attempt)s::int, attempts)
RETURNING id;

-- name: job_children
SELECT id FROM {schema}.jobs WHERE parent_id = %(id)s::uuid ORDER BY created_at, id;

-- name: job_get_many
SELECT id, state, result, error FROM {schema}.all_jobs WHERE id = ANY(%(ids)s::uuid[]);

-- name: group_get
SELECT members FROM {schema}.groups WHERE id = %(id)s::uuid;

-- name: unique_lock
-- Serialise enqueuers of the same unique keys (in one order, so never a
-- deadlock) for the rest of the transaction; the insert that follows then
-- sees every holder committed before it.
-- Seeded per schema, so tenants sharing a database never wait on each other.
SELECT count(pg_advisory_xact_lock(h))
FROM (SELECT DISTINCT hashtextextended(k, {lock_unique}) AS h
      FROM unnest(%(unique_keys)s::text[]) AS k ORDER BY 1) AS locks;

-- name: job_insert_unique
-- Like job_insert, unless the unique key is held: by a job still in one of
-- the key's counting states, within its window. Returns the holder's id.
-- take_over: the key goes to this job whatever holds it (replace and
-- debounce, once unique_update found the holder no longer waiting).
WITH holder AS (
    INSERT INTO {schema}.unique_keys AS u (key, job_id, states, expires_at)
    VALUES (%(unique_key)s, %(id)s::uuid, %(unique_states)s::text[],
            now() + make_interval(secs => %(unique_window)s))
    ON CONFLICT (key) DO UPDATE
    SET job_id = EXCLUDED.job_id, states = EXCLUDED.states, expires_at = EXCLUDED.expires_at
    WHERE %(take_over)s OR u.expires_at <= now()
       OR NOT EXISTS (SELECT 1 FROM {schema}.jobs AS j
                      WHERE j.id = u.job_id AND j.state = ANY(u.states))
    RETURNING job_id
), job AS (
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options,
                               run_at, expires_at, root_id, parent_id)
    SELECT %(id)s::uuid, %(task)s, %(queue)s, %(priority)s, %(args)s::jsonb,
           %(kwargs)s::jsonb, %(options)s::jsonb,
           COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
           COALESCE(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s)),
           NULL, NULL
    FROM holder
    RETURNING id, task, queue, priority, run_at
), waiting AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT id, queue, priority, run_at, task, %(rate_key)s, %(concurrency_key)s, %(fair_key)s
    FROM job
    RETURNING queue
)
SELECT COALESCE((SELECT job_id FROM holder),
                (SELECT job_id FROM {schema}.unique_keys WHERE key = %(unique_key)s)),
       (SELECT count(pg_notify('{channel_jobs}', queue)) FROM waiting WHERE {wake_wanted});

-- name: update_job
-- AsyncResult.update(): eta wins over countdown (seconds from the database's now).
SELECT {schema}.update_job(
    %(id)s::uuid, %(args)s::jsonb, %(kwargs)s::jsonb,
    CASE WHEN %(eta)s::timestamptz IS NOT NULL THEN %(eta)s::timestamptz
         WHEN %(countdown)s::float8 IS NOT NULL
             THEN now() + make_interval(secs => %(countdown)s::float8) END,
    %(priority)s::integer);

-- name: unique_update
-- A unique task's replace and debounce modes (on_duplicate), under the key's
-- lock (unique_lock): the holder, if it still counts and still waits, takes
-- this call's arguments and, to debounce, its due time, in place
-- (update_job); its id. No row: the holder is gone or no longer waits (it
-- runs), and job_insert_unique takes the key over for this call.
WITH holder AS MATERIALIZED (
    SELECT u.job_id FROM {schema}.unique_keys AS u
    WHERE u.key = %(unique_key)s AND (u.expires_at IS NULL OR u.expires_at > now())
      AND EXISTS (SELECT 1 FROM {schema}.jobs AS j
                  WHERE j.id = u.job_id AND j.state = ANY(u.states))
)
SELECT h.job_id::text FROM holder AS h
WHERE {schema}.update_job(
    h.job_id, %(args)s::jsonb, %(kwargs)s::jsonb,
    CASE WHEN %(on_duplicate)s = 'debounce'
         THEN COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)) END,
    NULL);

-- name: job_insert_many_unique
-- Bulk job_insert_unique (keys distinct within the batch). Returns each key
-- whose holder is another job, with that job's id.
WITH item AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(args)s::text[], %(kwargs)s::text[],
                         %(options)s::text[], %(rate_keys)s::text[],
                         %(concurrency_keys)s::text[], %(unique_keys)s::text[],
                         %(fair_keys)s::text[])
         AS i(id, args, kwargs, options, rate_key, concurrency_key, unique_key, fair_key)
), holder AS (
    INSERT INTO {schema}.unique_keys AS u (key, job_id, states, expires_at)
    SELECT unique_key, id, %(unique_states)s::text[],
           now() + make_interval(secs => %(unique_window)s)
    FROM item
    ON CONFLICT (key) DO UPDATE
    SET job_id = EXCLUDED.job_id, states = EXCLUDED.states, expires_at = EXCLUDED.expires_at
    WHERE u.expires_at <= now()
       OR NOT EXISTS (SELECT 1 FROM {schema}.jobs AS j
                      WHERE j.id = u.job_id AND j.state = ANY(u.states))
    RETURNING job_id
), job AS (
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options,
                               run_at, expires_at, root_id)
    SELECT i.id, %(task)s, %(queue)s, %(priority)s, i.args::jsonb, i.kwargs::jsonb,
           i.options::jsonb,
           COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
           COALESCE(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s)),
           NULL
    FROM item AS i JOIN holder AS h ON h.job_id = i.id
    RETURNING id, task, queue, priority, run_at
), waiting AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT j.id, j.queue, j.priority, j.run_at, j.task, i.rate_key, i.concurrency_key,
           i.fair_key
    FROM job AS j JOIN item AS i ON i.id = j.id
    RETURNING queue
), woken AS (
    SELECT count(pg_notify('{channel_jobs}', queue)) FROM (SELECT DISTINCT queue FROM waiting) AS q
)
SELECT u.key, u.job_id
FROM {schema}.unique_keys AS u
JOIN item AS i ON i.unique_key = u.key
WHERE NOT EXISTS (SELECT 1 FROM holder AS h WHERE h.job_id = i.id)
  AND (SELECT count(*) FROM woken) >= 0;

-- name: task_limits_sync
-- A starting worker writes the limits its tasks declare (and clears those
-- they no longer declare). A limit an operator set (set_rate_limit,
-- set_concurrency_limit) stands: the declared one is kept beside it, for
-- reset_task_limit.
WITH given AS (
    SELECT * FROM unnest(%(tasks)s::text[], %(rates)s::float8[], %(bursts)s::float8[],
                         %(limits)s::int[]) AS g(task, rate, burst, max_running)
), cleared AS (
    DELETE FROM {schema}.task_limits AS t USING given AS g
    WHERE t.task = g.task AND g.rate IS NULL AND g.max_running IS NULL
      AND t.rate_set_by IS NULL AND t.concurrency_set_by IS NULL
), undeclared AS (
    UPDATE {schema}.task_limits AS t
    SET declared_rate = NULL, declared_burst = NULL, declared_concurrency = NULL,
        concurrency_limit = CASE WHEN t.concurrency_set_by IS NULL THEN NULL
                                 ELSE t.concurrency_limit END,
        rate_per_second = CASE WHEN t.rate_set_by IS NULL THEN NULL ELSE t.rate_per_second END
    FROM given AS g
    WHERE t.task = g.task AND g.rate IS NULL AND g.max_running IS NULL
      AND (t.rate_set_by IS NOT NULL OR t.concurrency_set_by IS NOT NULL)
)
INSERT INTO {schema}.task_limits AS t (task, rate_per_second, burst, concurrency_limit,
                                       declared_rate, declared_burst, declared_concurrency)
SELECT task, rate, burst, max_running, rate, burst, max_running FROM given
WHERE rate IS NOT NULL OR max_running IS NOT NULL
ON CONFLICT (task) DO UPDATE
SET declared_rate = EXCLUDED.declared_rate, declared_burst = EXCLUDED.declared_burst,
    declared_concurrency = EXCLUDED.declared_concurrency,
    rate_per_second = CASE WHEN t.rate_set_by IS NULL THEN EXCLUDED.rate_per_second
                           ELSE t.rate_per_second END,
    burst = CASE WHEN t.rate_set_by IS NULL THEN EXCLUDED.burst ELSE t.burst END,
    concurrency_limit = CASE WHEN t.concurrency_set_by IS NULL THEN EXCLUDED.concurrency_limit
                             ELSE t.concurrency_limit END,
    updated_at = now();

-- name: task_settings_sync
-- A starting worker writes how SQL makes its tasks' jobs (revision 0022):
-- their queue when a call names none, priority, stored options and how each
-- key is made, for enqueue(), spawn() and run_schedule(). Rows that already
-- say the same are left alone; tasks this worker does not know are kept (other
-- workers may run them).
INSERT INTO {schema}.task_settings AS t (task, queue, priority, options, rate_limit_key,
                                         concurrency_key, unique_key, unique_states,
                                         unique_window, on_duplicate)
SELECT task, queue, priority, options, rate_limit_key, concurrency_key, unique_key,
       unique_states, unique_window, on_duplicate
FROM jsonb_to_recordset(%(settings)s::jsonb)
     AS s(task text, queue text, priority integer, options jsonb, rate_limit_key jsonb,
          concurrency_key jsonb, unique_key jsonb, unique_states text[], unique_window float8,
          on_duplicate text)
ON CONFLICT (task) DO UPDATE
SET queue = EXCLUDED.queue, priority = EXCLUDED.priority, options = EXCLUDED.options,
    rate_limit_key = EXCLUDED.rate_limit_key, concurrency_key = EXCLUDED.concurrency_key,
    unique_key = EXCLUDED.unique_key, unique_states = EXCLUDED.unique_states,
    unique_window = EXCLUDED.unique_window, on_duplicate = EXCLUDED.on_duplicate,
    updated_at = now()
WHERE (t.queue, t.priority, t.options, t.rate_limit_key, t.concurrency_key, t.unique_key,
       t.unique_states, t.unique_window, t.on_duplicate)
      IS DISTINCT FROM (EXCLUDED.queue, EXCLUDED.priority, EXCLUDED.options,
                        EXCLUDED.rate_limit_key, EXCLUDED.concurrency_key, EXCLUDED.unique_key,
                        EXCLUDED.unique_states, EXCLUDED.unique_window, EXCLUDED.on_duplicate);

-- name: task_limits_list
-- The limits in force, what each task declares, and who set them otherwise.
SELECT task, rate_per_second, burst, concurrency_limit, declared_rate, declared_concurrency,
       rate_set_by, concurrency_set_by, updated_at
FROM {schema}.task_limits ORDER BY task;

-- name: task_rate_set
SELECT {schema}.set_rate_limit(%(task)s, %(rate)s, %(burst)s, %(set_by)s);

-- name: task_concurrency_set
SELECT {schema}.set_concurrency_limit(%(task)s, %(max_running)s, %(set_by)s);

-- name: task_limit_reset
SELECT {schema}.reset_task_limit(%(task)s);

-- name: control_send
SELECT {schema}.control_send(%(command)s, %(arguments)s::jsonb, %(destination)s::text[],
                             %(timeout)s);

-- name: control_expected
SELECT worker_id::text, hostname FROM {schema}.control_expected(%(destination)s::text[]);

-- name: control_answers
SELECT worker_id::text, hostname, reply FROM {schema}.control_answers(%(request)s);

-- name: control_pending
SELECT id, command, arguments FROM {schema}.control_pending(%(worker_id)s);

-- name: control_reply
SELECT {schema}.control_reply(%(request)s, %(worker_id)s, %(reply)s::jsonb);

-- name: worker_update
-- Remote control changed a worker's pool size or queues (pool_grow,
-- add_consumer...): the table says what it runs now.
UPDATE {schema}.workers SET concurrency = %(concurrency)s, queues = %(queues)s
WHERE id = %(id)s;

-- name: job_prune
-- Retention, a small batch at a time (any worker, SKIP LOCKED): finished jobs
-- past their age, found by walking the time-ordered primary key from the
-- oldest id, so no index on state or finish time is needed. When the shorter
-- age is at least a partition period (history_plan; a day by default), only
-- jobs made a period before it: younger ones go with their whole partition
-- (history_prune), without a row deleted, and this deletes what a partition
-- held back by an unfinished job, and the default partition, hold. Shorter
-- ages than a period are kept to the second, row by row, as before 0012.
WITH doomed AS (
    SELECT id FROM {schema}.jobs
    WHERE id < {schema}.uuid7_floor(
              now() - make_interval(secs => %(oldest)s)
              - (SELECT CASE WHEN period <= make_interval(secs => %(oldest)s) THEN period
                             ELSE interval '0' END
                 FROM {schema}.history_plan))
      AND ((state IN ('SUCCESS', 'REVOKED')
            AND finished_at < now() - make_interval(secs => %(success_age)s))
        OR (state = 'FAILURE'
            AND finished_at < now() - make_interval(secs => %(failure_age)s)))
    ORDER BY id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM {schema}.jobs AS j WHERE j.id = ANY(ARRAY(SELECT id FROM doomed)) RETURNING j.id
), attempts AS (
    DELETE FROM {schema}.job_attempts AS a USING gone AS g WHERE a.job_id = g.id
)
SELECT count(*) FROM gone;

-- name: job_metrics_fold
-- The maintenance leader: the metric rows of closed sessions folded into one
-- (see job_metrics_fold() in schema.sql); how many rows went.
SELECT {schema}.job_metrics_fold();

-- name: metrics_limits
-- The exporter's read, bounded on the server as well as by the exporter's own
-- deadline: run in the read's transaction, so it holds through a transaction
-- pooler (where startup options would be refused) and ends with it.
SELECT set_config('statement_timeout', %(ms)s, true), set_config('lock_timeout', %(ms)s, true);

-- name: metrics_read
-- Every metric as (name, labels, value): metrics() in schema.sql.
SELECT metric, labels, value FROM {schema}.metrics();

-- name: history_partitions_ahead
-- The maintenance leader: the history partitions of the next periods (see
-- history_partitions_ahead() in schema.sql); how many it created.
SELECT {schema}.history_partitions_ahead();

-- name: history_prune
-- Retention by partition: drops the partitions of jobs and job_attempts whose
-- every job finished and passed its age, and compacts those held back only by
-- young failures (see history_prune() in schema.sql); (name, failures kept).
SELECT name, kept FROM {schema}.history_prune(%(success_age)s::float8, %(failure_age)s::float8);

-- name: meta_prune
-- The bookkeeping of canvases, batches, schedules, unique keys and limits past
-- the same age. A rate row goes once its bucket has been full that long (a new row
-- would start full too); a concurrency row, which only carries the lock,
-- once that old with no job of its key running. admit() makes a row again if
-- one goes while a claim is between its insert and its lock.
WITH old_groups AS (
    DELETE FROM {schema}.groups WHERE id IN (
        SELECT id FROM {schema}.groups
        WHERE created_at < now() - make_interval(secs => %(age)s) LIMIT %(batch)s)
), old_chords AS (
    DELETE FROM {schema}.chords WHERE id IN (
        SELECT id FROM {schema}.chords
        WHERE state <> 'PENDING' AND finished_at < now() - make_interval(secs => %(age)s)
        LIMIT %(batch)s)
), old_batches AS (
    -- Completed batches (0019): their member rows went as they were counted.
    DELETE FROM {schema}.batches WHERE id IN (
        SELECT id FROM {schema}.batches
        WHERE state = 'DONE' AND finished_at < now() - make_interval(secs => %(age)s)
        LIMIT %(batch)s)
), old_ticks AS (
    DELETE FROM {schema}.schedule_ticks WHERE (schedule, fire_at) IN (
        SELECT schedule, fire_at FROM {schema}.schedule_ticks
        WHERE created_at < now() - make_interval(secs => %(age)s) LIMIT %(batch)s)
), old_keys AS (
    DELETE FROM {schema}.unique_keys WHERE key IN (
        SELECT u.key FROM {schema}.unique_keys AS u
        WHERE (u.expires_at < now())
           OR NOT EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = u.job_id)
        LIMIT %(batch)s)
), old_limits AS (
    DELETE FROM {schema}.limit_state WHERE key IN (
        SELECT s.key FROM {schema}.limit_state AS s
        WHERE CASE WHEN s.key LIKE 'r:%%'
                   THEN COALESCE(s.full_at, s.updated_at)
                        < now() - make_interval(secs => %(age)s)
                   ELSE s.updated_at < now() - make_interval(secs => %(age)s)
                        AND NOT EXISTS (SELECT 1 FROM {schema}.job_lease AS l
                                        WHERE l.concurrency_key = substr(s.key, 3))
              END
        LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED)
)
SELECT 1;

-- name: schedule_sync_code
-- Schedules declared in code: created if new; replaced only when their code
-- changed, so edits made in SQL or the CLI survive restarts. Pausing survives.
INSERT INTO {schema}.schedules AS s (name, task, args, kwargs, options, cron, interval_secs,
                                     timezone, catch_up, catch_up_limit, source, code_hash)
VALUES (%(name)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(options)s::jsonb,
        %(cron)s, %(interval)s, %(timezone)s, %(catch_up)s, %(catch_up_limit)s, 'code',
        %(code_hash)s)
ON CONFLICT (name) DO UPDATE
SET task = EXCLUDED.task, args = EXCLUDED.args, kwargs = EXCLUDED.kwargs,
    options = EXCLUDED.options, cron = EXCLUDED.cron, interval_secs = EXCLUDED.interval_secs,
    timezone = EXCLUDED.timezone, catch_up = EXCLUDED.catch_up,
    catch_up_limit = EXCLUDED.catch_up_limit, source = 'code', code_hash = EXCLUDED.code_hash
WHERE s.code_hash IS DISTINCT FROM EXCLUDED.code_hash;

-- name: schedules_due
-- Due (or never planned) schedules, each taken by one beat at a time.
SELECT name, task, args, kwargs, options, cron, interval_secs, timezone, catch_up,
       catch_up_limit, next_run_at, now() AS db_now
FROM {schema}.schedules
WHERE enabled AND (next_run_at IS NULL OR next_run_at <= now())
ORDER BY next_run_at NULLS FIRST
LIMIT 100
FOR UPDATE SKIP LOCKED;

-- name: schedule_plan
UPDATE {schema}.schedules
SET next_run_at = %(next_run_at)s,
    last_run_at = COALESCE(%(last_run_at)s, last_run_at)
WHERE name = %(name)s;

-- name: schedule_fire
-- One tick: enqueued only if this (schedule, fire time) is new.
WITH tick AS (
    INSERT INTO {schema}.schedule_ticks (schedule, fire_at, job_id)
    VALUES (%(schedule)s, %(fire_at)s, %(id)s::uuid)
    ON CONFLICT (schedule, fire_at) DO NOTHING
    RETURNING job_id
), job AS (
    INSERT INTO {schema}.jobs (id, task, queue, priority, args, kwargs, options,
                               run_at, expires_at)
    SELECT %(id)s::uuid, %(task)s, %(queue)s, %(priority)s, %(args)s::jsonb,
           %(kwargs)s::jsonb, %(options)s::jsonb,
           COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
           COALESCE(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s))
    FROM tick
    RETURNING id, task, queue, priority, run_at
), waiting AS (
    INSERT INTO {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                                    concurrency_key, fair_key)
    SELECT id, queue, priority, run_at, task, %(rate_key)s, %(concurrency_key)s, %(fair_key)s
    FROM job
    RETURNING queue
)
SELECT (SELECT count(*) FROM tick), (SELECT count(pg_notify('{channel_jobs}', queue))
                                     FROM waiting);

-- name: schedule_tick
-- One tick's row, for a job written by the statements that follow it in the
-- beat's transaction (a unique task's: unique_lock, job_insert_unique). No
-- row: another beat enqueued this tick.
INSERT INTO {schema}.schedule_ticks (schedule, fire_at, job_id)
VALUES (%(schedule)s, %(fire_at)s, %(id)s::uuid)
ON CONFLICT (schedule, fire_at) DO NOTHING
RETURNING job_id;

-- name: schedule_tick_holder
-- The tick's job is the one holding its unique task's key (nothing new was
-- written).
UPDATE {schema}.schedule_ticks SET job_id = %(holder)s::uuid
WHERE schedule = %(schedule)s AND fire_at = %(fire_at)s;

-- name: schedule_fire_sql
-- One tick of a task the beat does not have registered: enqueue() makes its
-- job from what workers wrote to task_settings (revision 0022: the queue and
-- priority the schedule and the beat's routes do not give, the stored
-- options, limit keys and uniqueness); for a task no worker registered, the
-- beat's default queue and priority. Returns the id of the tick's job (the
-- holder's when a unique task's key is held); no row: another beat enqueued
-- this tick.
WITH tick AS (
    INSERT INTO {schema}.schedule_ticks (schedule, fire_at, job_id)
    VALUES (%(schedule)s, %(fire_at)s, %(id)s::uuid)
    ON CONFLICT (schedule, fire_at) DO NOTHING
    RETURNING job_id
), known AS (
    SELECT EXISTS (SELECT 1 FROM {schema}.task_settings WHERE task = %(task)s) AS yes
)
SELECT {schema}.enqueue(
    %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb,
    queue => COALESCE(%(queue)s, CASE WHEN NOT k.yes THEN %(default_queue)s END),
    priority => COALESCE(%(priority)s::integer,
                         CASE WHEN NOT k.yes THEN %(default_priority)s::integer END),
    run_at => COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
    expires_at => COALESCE(%(expires_at)s::timestamptz,
                           now() + make_interval(secs => %(expires_in)s)),
    id => t.job_id, options => %(options)s::jsonb)::text
FROM tick AS t, known AS k;

-- name: schedules_next
SELECT min(next_run_at) - now() FROM {schema}.schedules WHERE enabled;

-- name: schedule_list
SELECT name, task, COALESCE(cron, interval_secs::text || 's'), timezone, enabled, catch_up,
       source, next_run_at, last_run_at
FROM {schema}.schedules ORDER BY name;

-- name: schedule_delete
DELETE FROM {schema}.schedules WHERE name = %(name)s RETURNING name;

-- name: schedule_add
INSERT INTO {schema}.schedules (name, task, args, kwargs, options, cron, interval_secs,
                                timezone, catch_up)
VALUES (%(name)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(options)s::jsonb,
        %(cron)s, %(interval)s, %(timezone)s, %(catch_up)s)
ON CONFLICT (name) DO UPDATE
SET task = EXCLUDED.task, args = EXCLUDED.args, kwargs = EXCLUDED.kwargs,
    options = EXCLUDED.options, cron = EXCLUDED.cron, interval_secs = EXCLUDED.interval_secs,
    timezone = EXCLUDED.timezone, catch_up = EXCLUDED.catch_up, source = 'sql';

-- name: schedule_prune_code
-- Schedules once declared in code but no longer: removed when a beat starts.
DELETE FROM {schema}.schedules
WHERE source = 'code' AND NOT (name = ANY(%(names)s::text[]))
RETURNING name;

-- name: schedule_pause
-- Schedules as operations (revision 0017): one function each, like queues.
SELECT {schema}.pause_schedule(%(name)s);

-- name: schedule_resume
SELECT {schema}.resume_schedule(%(name)s);

-- name: schedule_run
SELECT {schema}.run_schedule(%(name)s)::text;

-- name: schedule_postpone
-- A schedule that cannot be planned (bad cron or time zone written in SQL) is
-- tried again a minute later instead of stopping the beat.
UPDATE {schema}.schedules SET next_run_at = now() + interval '1 minute' WHERE name = %(name)s;

-- name: db_times
-- Bulk enqueue computes run_at/expires_at once, from the database clock, and
-- the jobs' created_at (now()).
SELECT COALESCE(%(eta)s::timestamptz, now() + make_interval(secs => %(countdown)s)),
       COALESCE(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s)),
       now();

-- name: job_queue_copy
-- Bulk enqueue (enqueue_many) as job_insert writes one job: one row each,
-- with its arguments, the record written by the claim that first takes it.
-- Writing the records too (a COPY into the partitioned jobs, with its
-- statement triggers) cost as much again: chunks of 1,000 ran at 66,700
-- jobs/s with both, 87,000 with this alone (a stock server, one client).
COPY {schema}.job_queue (job_id, queue, priority, run_at, task, rate_key, concurrency_key,
                         fair_key, args, kwargs, options, expires_at, created_at)
FROM STDIN;

-- name: session_hot_path
-- The claim and completion sessions: job_queue and job_lease swing between
-- empty and a backlog, so their statistics are always out of date, and a plan
-- costed for "1 row" may scan a whole backlog per claim. These sessions only
-- run statements that find rows by key or in index order: make the planner
-- take an index whenever one exists. Their plans then no longer depend on the
-- values bound, so keep one generic plan per prepared statement: left to
-- itself, PostgreSQL judged the claim's generic plan dearer than a custom one
-- and re-planned it on every execution, which took 0.4 ms on an empty queue and
-- 1-2 ms behind a 100k backlog (more than the claim itself, on an idle worker).
-- No JIT: a sequential scan left in a plan (a one-row table without a usable
-- index) is costed at 10^10 here, which passes every JIT threshold: a
-- one-row read then took 5 ms, nearly all of it compiling.
SELECT set_config('enable_seqscan', 'off', false),
       set_config('enable_bitmapscan', 'off', false),
       set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('jit', 'off', false);

-- name: queue_notify
SELECT pg_notify('{channel_jobs}', %(queue)s);

-- name: hot_tables_dead
-- Dead rows in the tables on the claim path (fed by claims and completions),
-- and rows changed since their statistics were taken. jobs is partitioned
-- (0012): its figures are its partitions' sums (the parent has none).
SELECT relname, n_dead_tup, n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables
WHERE schemaname = %(schema)s AND relname IN ('job_queue', 'job_lease')
UNION ALL
SELECT 'jobs', COALESCE(sum(s.n_dead_tup), 0)::bigint, COALESCE(sum(s.n_live_tup), 0)::bigint,
       COALESCE(sum(s.n_mod_since_analyze), 0)::bigint
FROM pg_partition_tree('{schema}.jobs') AS p
JOIN pg_stat_user_tables AS s ON s.relid = p.relid;

-- name: vacuum_job_queue
VACUUM (SKIP_LOCKED, ANALYZE) {schema}.job_queue;

-- name: vacuum_job_lease
VACUUM (SKIP_LOCKED, ANALYZE) {schema}.job_lease;

-- name: vacuum_jobs
VACUUM (SKIP_LOCKED, ANALYZE) {schema}.jobs;

-- name: analyze_job_queue
ANALYZE (SKIP_LOCKED) {schema}.job_queue;

-- name: analyze_job_lease
ANALYZE (SKIP_LOCKED) {schema}.job_lease;

-- name: analyze_jobs
ANALYZE (SKIP_LOCKED) {schema}.jobs;

-- Dashboard (jobqueue/dashboard, docs/dashboard.md): what its pages read.
-- Each must answer in milliseconds with 10 M finished jobs and 100 k waiting:
-- jobs are read by their primary key (ids are UUIDv7, so a time range is an
-- id range, and an id range prunes the day partitions of jobs), history is
-- never counted (counters: job_counts, job_metrics, queue_stats), and a
-- filter that the indexes cannot serve reads at most %(budget)s rows per
-- page (the page says how far back it looked and links to the rest). The
-- dashboard's actions are the operations' own statements (Store).

-- name: dashboard_timeout
-- Every page's reads run in one transaction bounded on the server, without
-- JIT: the planner's costs for a walk over a partitioned history pass its
-- threshold, and compiling took 450 ms of a 0.2 ms loose index scan.
SELECT set_config('statement_timeout', %(ms)s, true), set_config('lock_timeout', %(ms)s, true),
       set_config('jit', 'off', true);

-- name: dashboard_queues
SELECT s.queue, s.due, s.scheduled, s.started, s.success, s.failure, s.revoked,
       extract(epoch FROM s.oldest_waiting)::float8, s.paused, p.paused_at, p.reason
FROM {schema}.queue_stats AS s
LEFT JOIN {schema}.queue_pauses AS p ON p.queue = s.queue
ORDER BY s.queue;

-- name: dashboard_outcomes
-- The outcome counters per queue, summed over tasks and writing sessions:
-- the throughput and failure charts are differences of these, sampled by
-- the dashboard (charts.Sampler). job_metrics holds a few rows per (queue,
-- task, session), never one per job: this reads the same handful of rows
-- with 10 M finished jobs as with none, and nothing on the claim or the
-- completion path changes.
SELECT m.queue, COALESCE(sum(m.n) FILTER (WHERE m.metric = 'succeeded'), 0)::bigint,
       COALESCE(sum(m.n) FILTER (WHERE m.metric = 'failed'), 0)::bigint
FROM {schema}.job_metrics AS m
WHERE m.metric IN ('succeeded', 'failed')
GROUP BY m.queue;

-- name: dashboard_finished_minutes
-- The charts' last hour before the dashboard started sampling, read once
-- when it starts: jobs finished (SUCCESS or FAILURE) per queue and minute
-- since %(since)s. finished_at has no index (one would end the completion's
-- HOT updates), and a job finished now may have been made any time before;
-- but job_counts keeps, per hour of ids, when its newest job finished
-- (last_finished_at): only the hours of ids with a finish since then are
-- read, each an id range of jobs' primary key. Usually the last hour or
-- two of ids; the caller bounds it in time (statement_timeout) and charts
-- from its own samples alone when it takes longer.
SELECT j.queue, extract(epoch FROM date_trunc('minute', j.finished_at))::float8,
       count(*) FILTER (WHERE j.state = 'SUCCESS'), count(*) FILTER (WHERE j.state = 'FAILURE')
FROM (SELECT c.hour FROM {schema}.job_counts AS c
      WHERE c.state IN ('SUCCESS', 'FAILURE') AND c.last_finished_at >= %(since)s::timestamptz
      GROUP BY c.hour) AS h
JOIN LATERAL (SELECT j.queue, j.finished_at, j.state FROM {schema}.jobs AS j
              WHERE j.id >= {schema}.uuid7_floor(h.hour)
                AND j.id < {schema}.uuid7_floor(h.hour + interval '1 hour')
                AND j.finished_at >= %(since)s::timestamptz
                AND j.state IN ('SUCCESS', 'FAILURE')) AS j ON true
GROUP BY 1, 2;

-- name: dashboard_workers
-- Every registered worker, live ones first; running jobs from job_lease
-- (running jobs only), grouped once.
SELECT w.id, w.hostname, w.pid, w.pool, w.concurrency, w.queues, w.tasks, w.version,
       w.started_at, w.heartbeat_at, w.lease_expires_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age,
       w.lease_expires_at > now() AS alive, COALESCE(r.n, 0) AS running,
       l.worker_id IS NOT NULL AS leader
FROM {schema}.workers AS w
LEFT JOIN (SELECT worker_id, count(*) AS n FROM {schema}.job_lease GROUP BY worker_id) AS r
       ON r.worker_id = w.id
LEFT JOIN {schema}.maintenance_leader AS l
       ON l.worker_id = w.id AND l.lease_expires_at > now()
ORDER BY w.lease_expires_at > now() DESC, w.hostname, w.pid;

-- name: dashboard_lapsed
-- Workers whose lease lapsed with jobs still held: the overview's banner
-- (the maintenance leader rescues those jobs).
SELECT w.hostname, w.pid, extract(epoch FROM now() - w.lease_expires_at)::float8,
       (SELECT count(*) FROM {schema}.job_lease AS l WHERE l.worker_id = w.id)
FROM {schema}.workers AS w
WHERE w.lease_expires_at <= now()
ORDER BY w.lease_expires_at
LIMIT 20;

-- name: dashboard_schedules
SELECT s.name, s.task, COALESCE(s.cron, s.interval_secs::text || 's'), s.timezone, s.enabled,
       s.next_run_at, s.last_run_at, s.source, s.args, s.kwargs,
       COALESCE(s.options ->> 'queue', 'default')
FROM {schema}.schedules AS s
ORDER BY s.enabled DESC, s.next_run_at NULLS LAST, s.name;

-- name: dashboard_schedules_soon
SELECT s.name, s.task, s.next_run_at
FROM {schema}.schedules AS s
WHERE s.enabled AND s.next_run_at IS NOT NULL
ORDER BY s.next_run_at
LIMIT %(limit)s;

-- name: dashboard_limits
-- Limits in force and their use now: running jobs of the task, and the
-- tokens its rate bucket holds (refilled as admit_at() refills it; 0 while
-- the bucket owes tokens a claim promised ahead).
SELECT t.task, t.rate_per_second, t.burst, t.concurrency_limit, t.declared_rate,
       t.declared_concurrency, t.rate_set_by, t.concurrency_set_by, t.updated_at,
       (SELECT count(*) FROM {schema}.job_lease AS l WHERE l.task = t.task) AS running,
       (SELECT greatest(least(t.burst, s.tokens + t.rate_per_second
                              * extract(epoch FROM now() - s.updated_at)::float8), 0)
        FROM {schema}.limit_state AS s WHERE s.key = 'r:' || t.task) AS tokens
FROM {schema}.task_limits AS t
ORDER BY t.task;

-- The jobs list is a walk newest first (dashboard/reads.py, Reads.walk), in
-- steps of at most %(budget)s rows in the id range [%(low)s, %(high)s), each
-- through the table that holds the jobs its filter can match: waiting jobs
-- from job_queue, running ones from job_lease, finished and retrying ones
-- from jobs over only the hours job_counts says hold some
-- (dashboard_walk_hours), anything else from all_jobs. A backlog of waiting
-- jobs (always the newest ids) is then never read by a filter on finished
-- jobs, nor history by a filter on waiting or running ones. Each step
-- returns its first %(page)s matches (id, state), and on every row how many
-- rows it read and the lowest id read (where the next step goes on from).
-- jobs has no index but its primary key and lineage ones (an index on state,
-- task or error would cost every completion its HOT update): a filter the
-- sources cannot narrow reads rows until the page is full or the page's time
-- is up, and the page says how far back it looked.

-- name: dashboard_walk_page
-- The end of every dashboard_walk_* statement, put in place of
-- {dashboard_walk_page}: over its CTE `scanned (id, state, hit)`, the rows
-- it read (scanned, and the lowest id, where the next page starts) and up to
-- `page` hits, newest first. One row even when nothing matched.
SELECT t.scanned, t.lowest, h.id, h.state
FROM (SELECT count(*) AS scanned,
             (SELECT s.id FROM scanned AS s ORDER BY s.id LIMIT 1) AS lowest FROM scanned) AS t
LEFT JOIN LATERAL (SELECT s.id, s.state FROM scanned AS s WHERE s.hit
                   ORDER BY s.id DESC LIMIT %(page)s) AS h ON true
ORDER BY h.id DESC NULLS LAST;

-- name: dashboard_walk_all
-- all_jobs, spelled out: records, and the waiting jobs that have none yet.
-- Those are found among the newest %(budget)s rows of job_queue (an
-- unrecorded job among the newest %(budget)s jobs is among them), not by
-- filtering job_queue for them: behind a bulk-enqueued backlog (all
-- recorded) that filter read the whole backlog on every step.
WITH scanned AS MATERIALIZED (
    SELECT j.id, j.state,
           (%(states)s::text[] IS NULL OR j.state = ANY(%(states)s::text[]))
           AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
           AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
           AND (%(exception)s::text IS NULL OR j.error ->> 'type' = %(exception)s::text)
           AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb
                OR j.kwargs @> %(args)s::jsonb) AS hit
    FROM ((SELECT r.id, r.state, r.queue, r.task, r.error, r.args, r.kwargs
           FROM {schema}.jobs AS r
           WHERE r.id < %(high)s::uuid AND r.id >= %(low)s::uuid
           ORDER BY r.id DESC
           LIMIT %(budget)s)
          UNION ALL
          SELECT q.job_id, 'PENDING', q.queue, q.task, NULL::jsonb, q.args, q.kwargs
          FROM (SELECT * FROM {schema}.job_queue AS w
                WHERE w.job_id < %(high)s::uuid AND w.job_id >= %(low)s::uuid
                ORDER BY w.job_id DESC
                LIMIT %(budget)s) AS q
          WHERE q.args IS NOT NULL) AS j
    ORDER BY j.id DESC
    LIMIT %(budget)s
)
{dashboard_walk_page};

-- name: dashboard_walk_history
-- Records only (finished and retrying jobs all have one), over one hour
-- that job_counts says holds some of %(states)s.
WITH scanned AS MATERIALIZED (
    SELECT j.id, j.state,
           j.state = ANY(%(states)s::text[])
           AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
           AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
           AND (%(exception)s::text IS NULL OR j.error ->> 'type' = %(exception)s::text)
           AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb
                OR j.kwargs @> %(args)s::jsonb) AS hit
    FROM {schema}.jobs AS j
    WHERE j.id < %(high)s::uuid AND j.id >= %(low)s::uuid
    ORDER BY j.id DESC
    LIMIT %(budget)s
)
{dashboard_walk_page};

-- name: dashboard_walk_waiting
-- job_queue's primary key, the record (if the job has one) by its primary
-- key: LIMIT 1 keeps that a probe per row, never a join over jobs.
WITH scanned AS MATERIALIZED (
    SELECT q.job_id AS id, COALESCE(r.state, 'PENDING') AS state,
           (%(states)s::text[] IS NULL OR COALESCE(r.state, 'PENDING') = ANY(%(states)s::text[]))
           AND (%(queue)s::text IS NULL OR q.queue = %(queue)s::text)
           AND (%(task)s::text IS NULL OR q.task = %(task)s::text)
           AND (%(exception)s::text IS NULL OR r.error ->> 'type' = %(exception)s::text)
           AND (%(args)s::jsonb IS NULL OR COALESCE(q.args, r.args) @> %(args)s::jsonb
                OR COALESCE(q.kwargs, r.kwargs) @> %(args)s::jsonb) AS hit
    FROM {schema}.job_queue AS q
    LEFT JOIN LATERAL (SELECT j.state, j.args, j.kwargs, j.error FROM {schema}.jobs AS j
                       WHERE q.args IS NULL AND j.id = q.job_id LIMIT 1) AS r ON true
    WHERE q.job_id < %(high)s::uuid AND q.job_id >= %(low)s::uuid
    ORDER BY q.job_id DESC
    LIMIT %(budget)s
)
{dashboard_walk_page};

-- name: dashboard_walk_running
-- job_lease's primary key (running jobs only), each record by its key.
WITH scanned AS MATERIALIZED (
    SELECT l.job_id AS id, r.state,
           (%(states)s::text[] IS NULL OR r.state = ANY(%(states)s::text[]))
           AND (%(queue)s::text IS NULL OR l.queue = %(queue)s::text)
           AND (%(task)s::text IS NULL OR l.task = %(task)s::text)
           AND (%(exception)s::text IS NULL OR r.error ->> 'type' = %(exception)s::text)
           AND (%(args)s::jsonb IS NULL OR r.args @> %(args)s::jsonb
                OR r.kwargs @> %(args)s::jsonb) AS hit
    FROM {schema}.job_lease AS l
    JOIN LATERAL (SELECT j.state, j.args, j.kwargs, j.error FROM {schema}.jobs AS j
                  WHERE j.id = l.job_id LIMIT 1) AS r ON true
    WHERE l.job_id < %(high)s::uuid AND l.job_id >= %(low)s::uuid
    ORDER BY l.job_id DESC
    LIMIT %(budget)s
)
{dashboard_walk_page};

-- name: dashboard_walk_hours
-- The newest %(limit)s hours from %(low)s's to %(high)s's that hold a job of
-- %(states)s (of %(queue)s), from the counters: a walk over finished jobs
-- skips the hours that hold none (a backlog's, say) without reading them.
-- job_counts' primary key starts with the hour.
SELECT c.hour
FROM {schema}.job_counts AS c
WHERE c.state = ANY(%(states)s::text[])
  AND (%(queue)s::text IS NULL OR c.queue = %(queue)s::text)
  AND c.hour <= {schema}.uuid7_hour(%(high)s::uuid)
  AND c.hour >= {schema}.uuid7_hour(%(low)s::uuid)
GROUP BY c.hour
HAVING sum(c.n) > 0
ORDER BY c.hour DESC
LIMIT %(limit)s;

-- name: dashboard_jobs_rows
-- A page of the jobs list: its matches by id.
SELECT j.id, j.task, j.queue, j.state, j.args, j.kwargs, j.error ->> 'type', j.attempts,
       j.created_at, j.started_at, j.finished_at, j.run_at
FROM {schema}.all_jobs AS j
WHERE j.id = ANY(%(ids)s::uuid[])
ORDER BY j.id DESC;

-- name: dashboard_jobs_estimate
-- About how many jobs match a filter of queue, state and enqueue time alone,
-- from counters (never count(*) over history): finished and retrying jobs
-- per hour of their id (job_counts; the range rounded out to whole hours),
-- waiting and running ones from queue_stats (the time range ignored).
SELECT COALESCE((SELECT sum(c.n) FROM {schema}.job_counts AS c
                 WHERE (%(state)s::text IS NULL OR c.state = %(state)s::text)
                   AND (%(queue)s::text IS NULL OR c.queue = %(queue)s::text)
                   AND (%(since)s::timestamptz IS NULL
                        OR c.hour >= date_trunc('hour', %(since)s::timestamptz))
                   AND (%(until)s::timestamptz IS NULL OR c.hour < %(until)s::timestamptz)), 0)
       + CASE WHEN %(state)s::text IS NULL OR %(state)s::text IN ('PENDING', 'STARTED') THEN
             COALESCE((SELECT sum(CASE WHEN %(state)s::text = 'PENDING' THEN s.pending - s.retry
                                       WHEN %(state)s::text = 'STARTED' THEN s.started
                                       ELSE s.pending - s.retry + s.started END)
                       FROM {schema}.queue_stats AS s
                       WHERE %(queue)s::text IS NULL OR s.queue = %(queue)s::text), 0)
         ELSE 0 END;

-- name: dashboard_job
SELECT j.id, j.task, j.queue, j.priority, j.state, j.args, j.kwargs, j.options, j.run_at,
       j.expires_at, j.attempts, j.worker_id, j.created_at, j.started_at, j.finished_at,
       j.result, j.error, j.root_id, j.parent_id, j.revoked_at, j.revoke_terminate, j.group_id,
       j.group_index, j.progress_state, j.progress, w.hostname, w.pid
FROM {schema}.all_jobs AS j
LEFT JOIN {schema}.workers AS w ON w.id = j.worker_id
WHERE j.id = %(id)s::uuid;

-- name: dashboard_job_attempts
-- Every attempt that ended (job_history), with its worker while registered.
SELECT h.attempt, h.worker_id, w.hostname, w.pid, h.started_at, h.finished_at, h.state,
       h.error_type, h.error_message, h.traceback
FROM {schema}.job_history AS h
LEFT JOIN {schema}.workers AS w ON w.id = h.worker_id
WHERE h.job_id = %(id)s::uuid
ORDER BY h.attempt;

-- name: dashboard_job_children
SELECT j.id, j.task, j.state FROM {schema}.jobs AS j
WHERE j.parent_id = %(id)s::uuid ORDER BY j.id LIMIT 200;

-- name: dashboard_group
SELECT j.id, j.task, j.state, j.group_index FROM {schema}.jobs AS j
WHERE j.group_id = %(id)s::uuid ORDER BY j.group_index LIMIT 200;

-- name: dashboard_chord
-- A chord's counter and how many header members it started with (the jobs
-- of its workflow that name it).
SELECT c.id, c.state, c.remaining, c.created_at, c.finished_at,
       (SELECT count(*) FROM {schema}.jobs AS j
        WHERE j.root_id = c.root_id AND j.options ->> 'chord' = c.id::text) AS members
FROM {schema}.chords AS c
WHERE c.id = %(id)s::uuid;

-- name: dashboard_failures
-- One step of the failures page's walk (Reads.failures): the attempts that
-- ended in FAILURE among at most %(budget)s attempts in [%(low)s, %(high)s),
-- newest first, grouped by task and exception type with the newest of each
-- group. job_attempts holds the attempts that did not succeed only (a few
-- in a hundred jobs), partitioned by job id as jobs is: its primary key
-- walks failures without reading the successes around them. A failure
-- counts if its job is still failed and it was the job's last attempt
-- (one probe of jobs by primary key per failure). A job recorded failed
-- without running (JobRecordMissing: no attempt) is not among them.
WITH scanned AS MATERIALIZED (
    SELECT a.job_id, a.attempt, a.state
    FROM {schema}.job_attempts AS a
    WHERE a.job_id < %(high)s::uuid AND a.job_id >= %(low)s::uuid
    ORDER BY a.job_id DESC, a.attempt DESC
    LIMIT %(budget)s
), failed AS (
    SELECT s.job_id, r.task, r.exception
    FROM scanned AS s
    JOIN LATERAL (SELECT j.task, COALESCE(j.error ->> 'type', '') AS exception
                  FROM {schema}.jobs AS j
                  WHERE j.id = s.job_id AND j.state = 'FAILURE' AND j.attempts = s.attempt
                  LIMIT 1) AS r ON true
    WHERE s.state = 'FAILURE'
)
SELECT t.scanned, t.lowest, g.task, g.exception, g.n, g.newest
FROM (SELECT count(*) AS scanned,
             (SELECT s.job_id FROM scanned AS s ORDER BY s.job_id LIMIT 1) AS lowest
      FROM scanned) AS t
LEFT JOIN LATERAL (
    -- The newest of a group: uuid has no max() before PostgreSQL 16.
    SELECT f.task, f.exception, count(*) AS n,
           (array_agg(f.job_id ORDER BY f.job_id DESC))[1] AS newest
    FROM failed AS f GROUP BY f.task, f.exception
) AS g ON true;

-- name: dashboard_failure_examples
-- The newest failure of each group: its message and when it failed.
SELECT j.id, j.error ->> 'message', j.finished_at
FROM {schema}.jobs AS j
WHERE j.id = ANY(%(ids)s::uuid[]);

-- name: dashboard_failed_totals
-- Failures per task since the counters began (job_metrics: never decreases).
SELECT m.task, sum(m.n)::bigint FROM {schema}.job_metrics AS m
WHERE m.metric = 'failed' GROUP BY m.task;

-- name: dashboard_workflow_roots
-- The newest workflows below %(before)s: distinct root ids, read from the
-- root index one step at a time (a loose index scan: one probe per
-- partition per workflow, whatever their size).
WITH RECURSIVE roots(id) AS (
    (SELECT j.root_id FROM {schema}.jobs AS j
     WHERE j.root_id IS NOT NULL AND j.root_id < %(before)s::uuid
     ORDER BY j.root_id DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT j.root_id FROM {schema}.jobs AS j
            WHERE j.root_id IS NOT NULL AND j.root_id < r.id
            ORDER BY j.root_id DESC LIMIT 1)
    FROM roots AS r WHERE r.id IS NOT NULL
)
SELECT r.id FROM roots AS r WHERE r.id IS NOT NULL LIMIT %(page)s;

-- name: dashboard_workflow_summaries
-- Each workflow's jobs by state (the root index per root).
SELECT j.root_id, count(*), count(*) FILTER (WHERE j.state = 'SUCCESS'),
       count(*) FILTER (WHERE j.state = 'FAILURE'), count(*) FILTER (WHERE j.state = 'STARTED'),
       count(*) FILTER (WHERE j.state IN ('PENDING', 'RETRY')),
       count(*) FILTER (WHERE j.state = 'REVOKED'),
       min(j.created_at), max(j.finished_at),
       count(DISTINCT j.group_id), count(DISTINCT j.options ->> 'chord'),
       -- The root job's task; a chord's root is the chord (no job has its
       -- id): then the task of its first job.
       COALESCE((SELECT r.task FROM {schema}.jobs AS r WHERE r.id = j.root_id),
                (array_agg(j.task ORDER BY j.id))[1])
FROM {schema}.jobs AS j
WHERE j.root_id = ANY(%(roots)s::uuid[])
GROUP BY j.root_id;

-- name: dashboard_workflow
-- The jobs of one workflow in id order (the first %(limit)s).
SELECT j.id, j.task, j.state, j.parent_id, j.group_id, j.group_index, j.options ->> 'chord',
       j.created_at, j.started_at, j.finished_at, j.error ->> 'type', j.queue
FROM {schema}.jobs AS j
WHERE j.root_id = %(root)s::uuid
ORDER BY j.id
LIMIT %(limit)s;

-- name: dashboard_chords
-- Each chord's counter and its callback as the chord holds it (a task's
-- name, or the kind of canvas, and the job id it will run as): the job
-- exists only once the header is done.
SELECT c.id, c.state, c.remaining, c.created_at, c.finished_at,
       COALESCE(c.body ->> 'task', c.body ->> 'type'), c.body ->> 'id'
FROM {schema}.chords AS c WHERE c.id = ANY(%(ids)s::uuid[]);

-- name: testing_reset
-- jobqueue.testing, between two tests: the schema as a fresh migration leaves
-- it. Every table is emptied except those whose rows are the schema's own
-- bookkeeping: its revision (alembic_version, schema_compat) and its history
-- partitions (history_plan, history_partitions: a partition some test's
-- worker created stays, empty, and recorded). Tables found in the catalog,
-- so a table a later migration adds is emptied too. DELETE, not TRUNCATE: on
-- tables this small it costs about 1 ms, where one TRUNCATE of them all
-- costs about 35 (a new file for each). Two passes: deleting finished jobs
-- writes job_counts rows (its statement trigger), which the second removes.
DO $$
DECLARE
    t    regclass;
    pass integer;
BEGIN
    FOR pass IN 1..2 LOOP
        FOR t IN
            SELECT c.oid::regclass FROM pg_class AS c
            WHERE c.relnamespace = '{schema}'::regnamespace
              AND c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND c.relname NOT IN ('alembic_version', 'schema_compat', 'history_plan',
                                    'history_partitions')
            ORDER BY c.relname
        LOOP
            EXECUTE 'DELETE FROM ' || t::text;
        END LOOP;
    END LOOP;
END
$$;

-- name: testing_schema_drop
-- jobqueue.testing, at the end of a session: the schema it created, and all in it.
DROP SCHEMA IF EXISTS {schema} CASCADE;
