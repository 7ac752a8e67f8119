"""What each kind of role may do on the schema, object by object, and why
(``jobqueue.roles`` grants it): every object of the schema at head, and one
``Rule`` per privilege with the statement or function that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store import VACUUMED

KINDS = ("producer", "worker", "reader", "monitor")

# Every object of the schema at head, by kind. An object the schema holds that
# is not listed here makes `grant` refuse (it cannot say who needs it); one
# listed but absent (an older or newer revision's) is skipped.
TABLES = (
    "jobs",
    "job_queue",
    "job_lease",
    "job_attempts",
    "workers",
    "maintenance_leader",
    "alembic_version",
    "schema_compat",
    "groups",
    "chords",
    "chord_members",
    "task_limits",
    "limit_state",
    "unique_keys",
    "schedules",
    "schedule_ticks",
    "job_counts",  # revision 0012; its partitions of jobs/job_attempts are not objects of their own
    "history_plan",
    "history_partitions",
    "queue_pauses",  # revision 0013
    # revision 0014: remote control, written and read only through its
    # SECURITY DEFINER functions (the identity's sequence included)
    "control_requests",
    "control_requests_id_seq",
    "control_replies",
    "job_metrics",  # revision 0015
    "job_waits",  # revision 0018: dependencies, written only by their SECURITY DEFINER functions
    "job_dependencies",
    "batches",  # revision 0019: batches, written only by their SECURITY DEFINER functions
    "batch_members",
    "fair_weights",  # revision 0021: fair keys' weights
    "task_settings",  # revision 0022: how SQL makes each task's jobs, written by workers
)
VIEWS = (
    "all_jobs",
    "job_history",
    "queue_stats",
    "task_stats",
    "workflow_jobs",
    "unserved_tasks",  # revision 0011
    "batch_progress",  # revision 0019
    "fair_keys",  # revision 0021
)
FUNCTIONS = (
    "uuid7",
    "uuid7_floor",
    "worker_compatible",
    "error_json",
    "max_retries",
    "json_depth",
    "enqueue",
    "spawn",
    "fail_chord",
    "fail_tree",
    "advance",
    "admit",
    "admit_at",  # revision 0023: rate limits admit ahead (admit() calls it)
    "schedules_changed",  # a trigger function: firing a trigger checks no EXECUTE
    "job_counts_track",  # likewise (revision 0012, as the five below)
    "uuid7_hour",
    "history_expired",
    "history_lock",
    "history_partition_add",
    "history_partitions_ahead",
    "history_prune",
    # revision 0013: operations (SECURITY DEFINER; EXECUTE is the privilege)...
    "pause_queue",
    "resume_queue",
    "purge_queue",
    "retry_jobs",
    "cancel_jobs",
    "delete_jobs",
    "move_jobs",
    "find_jobs",
    # ...and their helpers, called only by them (as the schema's owner)
    "job_filter",
    "job_filter_joins",
    "waiting_lock",
    "revoke_waiting",
    "revoke_running",
    "canvas_ids",
    "canvas_unfail",
    # revision 0014: run-time limits and remote control (SECURITY DEFINER)...
    "set_rate_limit",
    "set_concurrency_limit",
    "reset_task_limit",
    "control_send",
    "control_pending",
    "control_reply",
    "control_answers",
    "control_expected",
    "parse_rate",  # ...and set_rate_limit's parser (IMMUTABLE, harmless to anyone)
    # revision 0015: metrics (metrics() is SECURITY DEFINER; EXECUTE is the privilege)
    "metrics",
    "metric_buckets",
    "job_metrics_track",  # a trigger function
    "job_metrics_fold",
    # revision 0016: the events a statement sends while someone listens
    "events_notify",
    "events_listening",
    # revision 0017: schedules as operations (SECURITY DEFINER; EXECUTE is the privilege)
    "pause_schedule",
    "resume_schedule",
    "run_schedule",
    # revision 0018: dependencies (depend, dependencies_settle and
    # dependencies_sweep are SECURITY DEFINER; EXECUTE is the privilege)
    "advance_canvas",
    "dependency_wait",
    "dependency_release",
    "dependencies_settle",
    "depend",
    "dependencies_sweep",
    # revision 0019: batches (all but batch_finish are SECURITY DEFINER;
    # EXECUTE is the privilege; batch_finish runs inside them)
    "batch_finish",
    "batches_settle",
    "batch_open",
    "batch_add",
    "batch_close",
    "batches_sweep",
    # revision 0020: a waiting job changed in place (SECURITY DEFINER)
    "update_job",
    # revision 0021: a fair key's weight (SECURITY DEFINER)
    "set_fair_weight",
    # revision 0022: keys and routes computed in SQL (enqueue(), spawn())
    "canonical_json",
    "task_key",
    "unique_lock_seed",
    "unique_hold",
)


@dataclass(frozen=True)
class Rule:
    """One privilege on one object for one kind of role, and why."""

    privilege: str  # SELECT, INSERT, UPDATE, DELETE, MAINTAIN or EXECUTE
    target: str  # a name in TABLES, VIEWS or FUNCTIONS
    why: str
    columns: tuple[str, ...] = ()  # a column-level grant when set


# The columns a producer writes when it inserts a job record: enqueues with a
# record (job_insert_recorded, job_insert_many, the unique inserts,
# enqueue()), spawn() (canvases), fail_tree() and job_revoke (a waiting job
# revoked gets its REVOKED record). Not result, attempts, worker_id,
# started_at, progress_state, progress: only a worker writes those.
_PRODUCER_JOB_INSERT = (
    "id",
    "task",
    "queue",
    "priority",
    "state",
    "args",
    "kwargs",
    "options",
    "run_at",
    "expires_at",
    "created_at",
    "root_id",
    "parent_id",
    "group_id",
    "group_index",
    "revoked_at",
    "revoke_terminate",
    "finished_at",
    "error",
)
# What job_revoke changes in an unfinished job's record (and what its row lock,
# job_revoke_lock's SELECT ... FOR UPDATE, needs one column of).
_PRODUCER_JOB_UPDATE = ("revoked_at", "revoke_terminate", "state", "finished_at", "error")

_REVISION = "every jobqueue client reads the schema's revision before its first statement"
_CANVAS = "canvases (canvas_insert -> spawn()) and what a revoke ends (job_advance -> advance())"

PRODUCER: tuple[Rule, ...] = (
    Rule("SELECT", "alembic_version", _REVISION),
    Rule(
        "SELECT",
        "jobs",
        "RETURNING of the enqueues, the unique-key holder check, revoke's row lock, "
        "AsyncResult.children (job_children) and advance(); all_jobs shows the same rows",
    ),
    Rule(
        "INSERT",
        "jobs",
        "job records: enqueues with a record, spawn(), fail_tree(), a revoked waiting job",
        _PRODUCER_JOB_INSERT,
    ),
    Rule(
        "UPDATE",
        "jobs",
        "revoke() marks or ends an unfinished job (job_revoke, job_revoke_lock)",
        _PRODUCER_JOB_UPDATE,
    ),
    Rule("SELECT", "job_queue", "RETURNING of the enqueues and of job_revoke"),
    Rule("INSERT", "job_queue", "every enqueue: a job waits here (incl. COPY)"),
    Rule(
        "DELETE",
        "job_queue",
        "revoke() takes a waiting job out of its queue (job_revoke); no other producer "
        "statement deletes",
    ),
    Rule("SELECT", "unique_keys", "unique enqueues read the key's holder"),
    Rule("INSERT", "unique_keys", "unique enqueues take a key"),
    Rule(
        "UPDATE",
        "unique_keys",
        "unique enqueues take over a key whose holder finished or whose window passed",
        ("job_id", "states", "expires_at"),
    ),
    Rule("SELECT", "groups", "GroupResult.restore (group_get)"),
    Rule("INSERT", "groups", "canvas_insert registers a canvas's groups"),
    Rule("SELECT", "chords", "spawn() and fail_chord() (UPDATE ... RETURNING *)"),
    Rule("INSERT", "chords", "spawn() and fail_tree() write a chord's counter"),
    Rule(
        "UPDATE",
        "chords",
        "an empty chord is done at once (spawn()); revoking a member fails its chord "
        "(fail_chord())",
        ("state", "finished_at"),
    ),
    Rule("SELECT", "chord_members", "advance() finds a revoked member's row"),
    Rule("INSERT", "chord_members", "spawn() writes a chord's members"),
    Rule("DELETE", "chord_members", "advance() counts a revoked chord member once"),
    Rule("SELECT", "all_jobs", "AsyncResult.get/state (job_get, job_get_many)"),
    Rule("EXECUTE", "enqueue", "enqueue from SQL"),
    Rule("EXECUTE", "uuid7", "enqueue() makes the job id"),
    Rule("EXECUTE", "json_depth", "enqueue() checks the arguments' nesting"),
    Rule("EXECUTE", "uuid7_floor", "querying all_jobs by time (docs/sql.md)"),
    Rule("EXECUTE", "error_json", "job_revoke writes the TaskRevokedError"),
    Rule("EXECUTE", "events_notify", "job_revoke reports its events (0016)"),
    Rule("EXECUTE", "spawn", _CANVAS),
    Rule("EXECUTE", "fail_tree", _CANVAS),
    Rule("EXECUTE", "fail_chord", _CANVAS),
    Rule("EXECUTE", "advance", _CANVAS),
    # Dependencies (revision 0018): a job enqueued with depends_on, and what a
    # revoke counts for the jobs that wait on the revoked one.
    Rule("EXECUTE", "advance_canvas", _CANVAS),
    Rule("EXECUTE", "depend", "apply_async(depends_on=...), enqueue(depends_on => ...) (0018)"),
    Rule("EXECUTE", "dependency_wait", "a dependent waits in job_queue until then (0018)"),
    Rule("EXECUTE", "dependencies_settle", "advance(): jobs waiting on a revoked one (0018)"),
    Rule("SELECT", "job_dependencies", "advance() looks whether any job waits at all (0018)"),
    # Batches (revision 0019): app.batch(), batch.add/close/progress, and what
    # a revoke counts for the batch of the revoked job.
    Rule("EXECUTE", "batch_open", "app.batch(), batch_open() from SQL (0019)"),
    Rule("EXECUTE", "batch_add", "batch.add(), batch_add() from SQL (0019)"),
    Rule("EXECUTE", "batch_close", "batch.close(), batch_close() from SQL (0019)"),
    Rule("EXECUTE", "batches_settle", "advance(): the batch of a revoked job (0019)"),
    Rule("SELECT", "batch_members", "advance() looks whether any batch waits at all (0019)"),
    Rule("SELECT", "batch_progress", "batch.progress() (0019)"),
    Rule("EXECUTE", "update_job", "AsyncResult.update(), unique replace and debounce (0020)"),
    # Keys and routes in SQL (revision 0022): enqueue() and spawn() read each
    # task's settings and compute its keys as Python does.
    Rule("SELECT", "task_settings", "enqueue() and spawn() make a task's jobs as delay() (0022)"),
    *(
        Rule("EXECUTE", name, "enqueue() and spawn(): keys and uniqueness in SQL (0022)")
        for name in ("canonical_json", "task_key", "unique_lock_seed", "unique_hold")
    ),
    # Operations (revision 0013): the app that enqueues and revokes also
    # manages its jobs and queues (app.control, the CLI). The functions run
    # as the schema's owner, so EXECUTE is all they need.
    *(
        Rule("EXECUTE", name, "operations: app.control, jobqueue jobs/queue (docs/sql.md)")
        for name in (
            "pause_queue",
            "resume_queue",
            "purge_queue",
            "retry_jobs",
            "cancel_jobs",
            "delete_jobs",
            "move_jobs",
            "find_jobs",
            "set_fair_weight",  # revision 0021
        )
    ),
    # Run-time limits and remote control (revision 0014): app.control.rate_limit,
    # inspect() and broadcast(), jobqueue inspect|control.
    *(
        Rule("EXECUTE", name, "run-time limits: app.control.rate_limit, jobqueue control")
        for name in ("set_rate_limit", "set_concurrency_limit", "reset_task_limit")
    ),
    *(
        Rule("EXECUTE", name, "remote control: app.control.inspect(), jobqueue inspect|control")
        for name in ("control_send", "control_answers", "control_expected")
    ),
    # Schedules as operations (revision 0017): the dashboard's pause, resume
    # and run now of a schedule.
    *(
        Rule("EXECUTE", name, "schedule operations: jobqueue dashboard, psql (0017)")
        for name in ("pause_schedule", "resume_schedule", "run_schedule")
    ),
    # The app that enqueues may serve /metrics from its web application
    # (jobqueue.metrics.make_wsgi_app / make_asgi_app, revision 0015).
    Rule("EXECUTE", "metrics", "the metrics apps mounted in a web application (0015)"),
)

_ALL_DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
_WORKER_TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "jobs": (_ALL_DML, "claim, completion, retries, rescue, release, progress, retention"),
    "job_queue": (_ALL_DML, "claim (and admit() deferring limited jobs), retries, rescue"),
    "job_lease": (
        ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "claim, completion, rescue, orphans; UPDATE for row locks only (FOR UPDATE): an "
        "atomic task's transaction holds its lease, the rescue skips held ones (0018)",
    ),
    "job_attempts": (("SELECT", "INSERT", "DELETE"), "failed attempts; retention"),
    "workers": (_ALL_DML, "registration, heartbeat, rescue of dead workers"),
    "maintenance_leader": (_ALL_DML, "the heartbeat elects the maintenance leader"),
    "groups": (("SELECT", "INSERT", "DELETE"), "canvases enqueued by tasks; retention"),
    "chords": (_ALL_DML, "chord counting (advance()); retention"),
    "chord_members": (("SELECT", "INSERT", "DELETE"), "chord counting (advance())"),
    "task_limits": (_ALL_DML, "a starting worker writes its tasks' limits; admit()"),
    "limit_state": (_ALL_DML, "admit() spends rate and concurrency budgets; retention"),
    "unique_keys": (_ALL_DML, "unique enqueues by tasks; retention"),
    "schedules": (_ALL_DML, "the beat (and the schedule commands of the CLI)"),
    "schedule_ticks": (
        ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "the beat's ticks (a unique task's tick records its key's holder: 0022); retention",
    ),
    "history_plan": (("SELECT",), "retention's row-wise prune (job_prune) reads the period"),
    "queue_pauses": (("SELECT",), "the claim skips paused queues (revision 0013)"),
    "job_dependencies": (("SELECT",), "completions look whether any job waits at all (0018)"),
    "batch_members": (("SELECT",), "completions look whether any batch waits at all (0019)"),
    "batches": (("SELECT", "DELETE"), "retention deletes completed batches past their age (0019)"),
    "fair_weights": (("SELECT",), "the fair claim reads the keys' weights (0021)"),
    "task_settings": (
        ("SELECT", "INSERT", "UPDATE"),
        "a starting worker writes how SQL makes its tasks' jobs; enqueue(), spawn() (0022)",
    ),
}
_WORKER_FUNCTIONS = {
    "worker_compatible": "every claim checks the worker's revision",
    "admit": "the claim admits jobs with limits",
    "admit_at": "the claim admits jobs with limits, rates a horizon ahead (0023)",
    "error_json": "claims, rescues and revokes record errors",
    "max_retries": "rescue decides between RETRY and FAILURE",
    "uuid7_floor": "retention walks the primary key by time",
    "uuid7": "enqueue() from tasks' SQL",
    "json_depth": "enqueue() from tasks' SQL",
    "enqueue": "enqueue from SQL",
    "spawn": "callbacks and chord bodies (advance())",
    "fail_tree": "a failed step fails what follows it (advance())",
    "fail_chord": "a failed member fails its chord (advance())",
    "advance": "completion, rescue and revoke create what follows a job",
    # SECURITY DEFINER: they create and drop partitions as the schema's owner,
    # so a worker needs no DDL; not executable by PUBLIC.
    "history_partitions_ahead": "the maintenance leader creates history partitions ahead",
    "history_prune": "retention drops expired history partitions",
    "control_pending": "remote control: a worker reads the requests sent to it (0014)",
    "control_reply": "remote control: a worker answers a request (0014)",
    "job_metrics_fold": "the maintenance leader folds closed sessions' metric rows (0015)",
    "events_notify": "claims, completions, rescues and the worker's row report events (0016)",
    "events_listening": "claims and completions without events stop for a listener (0016)",
    "advance_canvas": "completion, rescue and revoke create what follows a job (0018)",
    "depend": "jobs enqueued with depends_on by tasks (0018)",
    "dependency_wait": "jobs enqueued with depends_on by tasks (0018)",
    "dependencies_settle": "completions count the jobs that wait on finished ones (0018)",
    "dependencies_sweep": "the maintenance leader counts what completions missed (0018)",
    "batches_settle": "completions count the members of batches that finished (0019)",
    "batches_sweep": "the maintenance leader counts batch members completions missed (0019)",
    "batch_open": "batches opened by tasks (0019)",
    "batch_add": "batches that tasks add jobs to (0019)",
    "batch_close": "batches closed by tasks (0019)",
    "update_job": "unique replace and debounce enqueued by tasks (0020)",
    "canonical_json": "enqueue() and spawn(): a unique task's key from its arguments (0022)",
    "task_key": "enqueue() and spawn(): keys computed in SQL (0022)",
    "unique_lock_seed": "enqueue() and spawn(): the lock of a unique key (0022)",
    "unique_hold": "enqueue() and spawn() take a unique key (0022)",
}

WORKER: tuple[Rule, ...] = (
    Rule("SELECT", "alembic_version", _REVISION),
    Rule("SELECT", "alembic_version", "worker_compatible() at every claim"),
    Rule("SELECT", "schema_compat", "worker_compatible() at every claim"),
    *(
        Rule(privilege, table, why)
        for table, (privileges, why) in _WORKER_TABLES.items()
        for privilege in privileges
    ),
    Rule("SELECT", "all_jobs", "AsyncResult in tasks (job_get, job_get_many)"),
    Rule("SELECT", "batch_progress", "batch.progress() in tasks (0019)"),
    *(Rule("EXECUTE", name, why) for name, why in _WORKER_FUNCTIONS.items()),
)
# PostgreSQL 17+: VACUUM and ANALYZE without owning the table.
WORKER_MAINTAIN: tuple[Rule, ...] = tuple(
    Rule("MAINTAIN", table, "the vacuum step keeps the claim path clean (PostgreSQL 17+)")
    for table in VACUUMED
)

READER: tuple[Rule, ...] = (
    Rule("SELECT", "alembic_version", _REVISION),
    *(
        Rule("SELECT", view, "the views read the tables with their owner's rights")
        for view in VIEWS
    ),
    Rule("EXECUTE", "uuid7_floor", "querying all_jobs by time (docs/sql.md)"),
    Rule("EXECUTE", "find_jobs", "jobqueue jobs list and dashboards: jobs by filter, read-only"),
    Rule("EXECUTE", "metrics", "jobqueue metrics (the Prometheus exporter) and psql (0015)"),
)

# What `jobqueue dashboard --read-only` reads besides a reader's views: the
# tables behind its pages (docs/dashboard.md). SELECT only: a monitor changes
# nothing, and the dashboard's actions need a producer.
_MONITOR_TABLES = {
    "jobs": "the jobs list, a job's page, failures and workflows (keyset on the id)",
    "job_queue": "waiting jobs in the jobs list; the overview's backlog",
    "job_lease": "running jobs per worker and per task (workers, limits)",
    "job_attempts": "a job's attempts (the job_history view reads it too)",
    "workers": "the workers page and the overview's lapsed-lease banner",
    "groups": "a workflow's groups",
    "chords": "a workflow's chord counters",
    "task_limits": "the limits page",
    "limit_state": "the limits page: a rate limit's tokens left",
    "schedules": "the schedules page and the overview's schedules due soon",
    "queue_pauses": "paused queues",
    "job_counts": "about-counts of the jobs list, from counters instead of count(*)",
    "job_metrics": "the overview's throughput and failure charts (sampled counters)",
    "history_partitions": "the jobs list's time range, per partition",
    "maintenance_leader": "the workers page marks the maintenance leader",
}
MONITOR: tuple[Rule, ...] = (
    *READER,
    *(
        Rule("SELECT", table, f"jobqueue dashboard: {why}")
        for table, why in _MONITOR_TABLES.items()
    ),
)


RULES: dict[str, tuple[Rule, ...]] = {
    "producer": PRODUCER,
    "worker": WORKER,
    "reader": READER,
    "monitor": MONITOR,
}
