-- The statements a worker and a producer of the previous release (schema
-- revision 0022, code at f57897e) run, as that release shipped them: the
-- upgrade tests play that release's processes against a schema moving to
-- the new head. Frozen: never edit; the next release adds its own file.

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
    SELECT {schema}.admit(ARRAY(SELECT job_id FROM candidate WHERE limited)) AS job_id
    WHERE EXISTS (SELECT 1 FROM candidate WHERE limited)
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
           created_at, 'STARTED', 1, %(worker_id)s, now()
    FROM taken WHERE args IS NOT NULL
    ON CONFLICT (id) DO NOTHING
    RETURNING id, task, queue, args, kwargs, options, attempts, run_at, root_id, parent_id,
              expires_at, created_at, priority
), started AS (
    -- By key, not a join (as `taken`): the session keeps one generic plan, and
    -- a join planned while `jobs` was empty read all of `jobs` on every claim
    -- (10,000 rows for 8 jobs; 18.7 ms instead of 0.4).
    UPDATE {schema}.jobs AS j
    SET state = 'STARTED', attempts = j.attempts + 1, worker_id = %(worker_id)s,
        started_at = now(), progress_state = NULL, progress = NULL
    WHERE j.id = ANY(ARRAY(SELECT job_id FROM taken WHERE args IS NULL))
      AND j.state IN ('PENDING', 'RETRY')
    RETURNING j.id, j.task, j.queue, j.args, j.kwargs, j.options, j.attempts,
              j.run_at, j.root_id, j.parent_id, j.expires_at, j.created_at, j.priority
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
-- self.request.delivery_info.
SELECT id::text, task, queue, args::text, kwargs::text, options::text, attempts, run_at,
       root_id::text, parent_id::text, COALESCE(expires_at <= now(), false),
       options ?| ARRAY['link', 'link_error', 'chord'] AS in_canvas,
       extract(epoch FROM expires_at - now())::float8 AS expires_in,
       extract(epoch FROM now() - created_at)::float8 AS age, priority,
       options ->> 'fair_key' AS fair_key,
       CASE WHEN options ? 'fair_key'
            THEN (SELECT f.weight FROM {schema}.fair_weights AS f
                  WHERE f.fair_key = options ->> 'fair_key') END AS fair_weight{events_end}
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
