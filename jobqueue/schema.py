"""The declared schema, as SQLAlchemy Core tables.

Migrations create the schema with hand-written DDL; a test diffs the migrated
database against these declarations, so the two can never drift apart. The
tables are also handy for querying jobs with SQLAlchemy.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from .sql import validate_schema

TZ = sa.TIMESTAMP(timezone=True)


def metadata(schema: str = "jobqueue") -> sa.MetaData:
    validate_schema(schema)
    md = sa.MetaData(schema=schema)
    sa.Table(
        "jobs",
        md,
        sa.Column("id", UUID, primary_key=True),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.Text, nullable=False, server_default="PENDING"),
        sa.Column("args", JSONB, nullable=False, server_default="[]"),
        sa.Column("kwargs", JSONB, nullable=False, server_default="{}"),
        sa.Column("options", JSONB, nullable=False, server_default="{}"),
        sa.Column("run_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TZ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker_id", UUID),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
        sa.Column("result", JSONB),
        sa.Column("error", JSONB),
        sa.Column("root_id", UUID),
        sa.Column("parent_id", UUID),
        sa.Column("revoked_at", TZ),
        sa.Column("revoke_terminate", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("group_id", UUID),
        sa.Column("group_index", sa.Integer),
        sa.Column("progress_state", sa.Text),
        sa.Column("progress", JSONB),
        sa.CheckConstraint(
            "state IN ('PENDING', 'STARTED', 'SUCCESS', 'FAILURE', 'RETRY', 'REVOKED')",
            name="jobs_state_check",
        ),
    )
    jobs = md.tables[f"{schema}.jobs"]
    sa.Index("jobs_root_idx", jobs.c.root_id, postgresql_where=jobs.c.root_id.isnot(None))
    sa.Index("jobs_parent_idx", jobs.c.parent_id, postgresql_where=jobs.c.parent_id.isnot(None))
    sa.Index(
        "jobs_group_idx",
        jobs.c.group_id,
        jobs.c.group_index,
        postgresql_where=jobs.c.group_id.isnot(None),
    )
    job_queue = sa.Table(
        "job_queue",
        md,
        sa.Column("job_id", UUID, primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("run_at", TZ, nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("rate_key", sa.Text),
        sa.Column("concurrency_key", sa.Text),
        # The job's payload while it has no record in jobs yet (one-row enqueue).
        sa.Column("args", JSONB),
        sa.Column("kwargs", JSONB),
        sa.Column("options", JSONB),
        sa.Column("expires_at", TZ),
        sa.Column("created_at", TZ),
        # Claimed round-robin across keys (job_claim_fair; 0021).
        sa.Column("fair_key", sa.Text(collation="C")),
    )
    sa.Index(
        "job_queue_fair_idx",
        job_queue.c.queue,
        job_queue.c.fair_key,
        job_queue.c.priority.desc(),
        job_queue.c.run_at,
        job_queue.c.job_id,
        postgresql_where=job_queue.c.fair_key.isnot(None),
    )
    sa.Index(
        "job_queue_concurrency_idx",
        job_queue.c.concurrency_key,
        job_queue.c.priority.desc(),
        job_queue.c.run_at,
        postgresql_where=job_queue.c.concurrency_key.isnot(None),
    )
    sa.Index(
        "job_queue_claim_idx",
        job_queue.c.queue,
        job_queue.c.priority.desc(),
        job_queue.c.run_at,
        job_queue.c.job_id,
    )
    job_lease = sa.Table(
        "job_lease",
        md,
        sa.Column("job_id", UUID, primary_key=True),
        sa.Column("worker_id", UUID, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("claimed_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("concurrency_key", sa.Text),
    )
    sa.Index(
        "job_lease_concurrency_idx",
        job_lease.c.concurrency_key,
        postgresql_where=job_lease.c.concurrency_key.isnot(None),
    )
    sa.Table(
        "workers",
        md,
        sa.Column("id", UUID, primary_key=True),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", ARRAY(sa.Text), nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("started_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("heartbeat_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column(
            "lease_expires_at",
            TZ,
            nullable=False,
            server_default=sa.text("(now() + '00:00:30'::interval)"),
        ),
        sa.Column("tasks", ARRAY(sa.Text)),  # the task names it serves (0011)
        sa.Column("pool", sa.Text),  # threads or processes (0014)
        sa.Index("workers_lease_idx", "lease_expires_at"),
    )
    sa.Table(
        "job_attempts",
        md,
        sa.Column("job_id", UUID, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("worker_id", UUID),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("error", JSONB),
    )
    # History partitions and counters (0012): jobs and job_attempts above are
    # partitioned by range of job id; their partitions are not declared here.
    sa.Table(
        "job_counts",
        md,
        sa.Column("hour", TZ, primary_key=True),
        sa.Column("queue", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("last_finished_at", TZ),
    )
    sa.Table(
        "job_metrics",  # revision 0015
        md,
        sa.Column("queue", sa.Text, primary_key=True),
        sa.Column("task", sa.Text, primary_key=True),
        sa.Column("metric", sa.Text, primary_key=True),
        sa.Column("le", sa.Float(precision=53), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("sum_us", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint(
            "metric IN ('succeeded', 'failed', 'retried', 'revoked', 'wait', 'run')",
            name="job_metrics_metric_check",
        ),
    )
    sa.Table(
        "history_plan",
        md,
        sa.Column("one", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column(
            "period", sa.Interval, nullable=False, server_default=sa.text("'1 day'::interval")
        ),
        sa.Column("ahead", sa.Integer, nullable=False, server_default="3"),
        sa.CheckConstraint("one", name="history_plan_one_check"),
        sa.CheckConstraint(
            "period >= interval '1 hour' AND extract(epoch FROM period)::bigint % 3600 = 0",
            name="history_plan_period_check",
        ),
        sa.CheckConstraint("ahead BETWEEN 1 AND 100", name="history_plan_ahead_check"),
    )
    sa.Table(
        "history_partitions",
        md,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("starts_at", TZ),
        sa.Column("ends_at", TZ, nullable=False),
    )
    sa.Table(  # queues paused by pause_queue() (0013)
        "queue_pauses",
        md,
        sa.Column("queue", sa.Text, primary_key=True),
        sa.Column("paused_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("reason", sa.Text),
        sa.CheckConstraint("queue <> ''", name="queue_pauses_queue_check"),
    )
    sa.Table(
        "fair_weights",
        md,
        sa.Column("fair_key", sa.Text, primary_key=True),
        sa.Column("weight", sa.Integer, nullable=False),
        sa.Column("set_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("weight BETWEEN 2 AND 1000", name="fair_weights_weight_check"),
    )
    sa.Table(
        "groups",
        md,
        sa.Column("id", UUID, primary_key=True),
        sa.Column("members", ARRAY(UUID), nullable=False),
        sa.Column("root_id", UUID),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    sa.Table(
        "chords",
        md,
        sa.Column("id", UUID, primary_key=True),
        sa.Column("state", sa.Text, nullable=False, server_default="PENDING"),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.Column("body", JSONB, nullable=False),
        sa.Column("root_id", UUID),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", TZ),
        sa.CheckConstraint("state IN ('PENDING', 'DONE', 'FAILED')", name="chords_state_check"),
    )
    sa.Table(
        "chord_members",
        md,
        sa.Column("job_id", UUID, primary_key=True),
        sa.Column("chord_id", UUID, nullable=False),
    )
    sa.Table(  # a dependent's counter (depends_on, 0018)
        "job_waits",
        md,
        sa.Column("job_id", UUID, primary_key=True),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.Column("on_failure", sa.Text, nullable=False, server_default="fail"),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "on_failure IN ('fail', 'cancel', 'run')", name="job_waits_on_failure_check"
        ),
    )
    sa.Table(  # a dependency still to be counted for a dependent (0018)
        "job_dependencies",
        md,
        sa.Column("dependency", UUID, primary_key=True),
        sa.Column("dependent", UUID, primary_key=True),
        sa.Index("job_dependencies_dependent_idx", "dependent"),
    )
    sa.Table(  # a batch and its counters by outcome (app.batch(), 0019)
        "batches",
        md,
        sa.Column("id", UUID, primary_key=True),
        sa.Column("state", sa.Text, nullable=False, server_default="OPEN"),
        sa.Column("succeeded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revoked", sa.Integer, nullable=False, server_default="0"),
        sa.Column("on_complete", JSONB),
        sa.Column("on_success", JSONB),
        sa.Column("on_failure", JSONB),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("closed_at", TZ),
        sa.Column("finished_at", TZ),
        sa.CheckConstraint("state IN ('OPEN', 'CLOSED', 'DONE')", name="batches_state_check"),
    )
    sa.Table(  # a batch member still to be counted (0019)
        "batch_members",
        md,
        sa.Column("job_id", UUID, primary_key=True),
        sa.Column("batch_id", UUID, nullable=False),
        sa.Index("batch_members_batch_idx", "batch_id"),
    )
    sa.Table(
        "task_limits",
        md,
        sa.Column("task", sa.Text, primary_key=True),
        sa.Column("rate_per_second", sa.Float(53)),
        sa.Column("burst", sa.Float(53), nullable=False, server_default="1"),
        sa.Column("concurrency_limit", sa.Integer),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "rate_per_second IS NULL OR rate_per_second > 0", name="task_limits_rate_check"
        ),
        sa.CheckConstraint("burst >= 1", name="task_limits_burst_check"),
        sa.CheckConstraint(
            "concurrency_limit IS NULL OR concurrency_limit > 0",
            name="task_limits_concurrency_check",
        ),
        # What the task declares in code, and who set the limit in force (0014).
        sa.Column("declared_rate", sa.Float(53)),
        sa.Column("declared_burst", sa.Float(53)),
        sa.Column("declared_concurrency", sa.Integer),
        sa.Column("rate_set_by", sa.Text),
        sa.Column("concurrency_set_by", sa.Text),
        sa.Index(
            "task_limits_operator_rate_idx",
            "task",
            postgresql_where=sa.text("rate_set_by IS NOT NULL"),
        ),
    )
    sa.Table(  # remote control requests (control_send, 0014); UNLOGGED
        "control_requests",
        md,
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("arguments", JSONB, nullable=False, server_default="{}"),
        sa.Column("destination", ARRAY(sa.Text)),
        sa.Column("sent_by", sa.Text, nullable=False, server_default=sa.text("SESSION_USER")),
        sa.Column("sent_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TZ, nullable=False),
    )
    sa.Table(  # workers' replies (control_reply, 0014); UNLOGGED
        "control_replies",
        md,
        sa.Column(
            "request_id",
            sa.BigInteger,
            sa.ForeignKey(f"{schema}.control_requests.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("worker_id", UUID, primary_key=True),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("reply", JSONB, nullable=False),
        sa.Column("replied_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    sa.Table(
        "limit_state",
        md,
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("tokens", sa.Float(53), nullable=False),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("full_at", TZ),
    )
    sa.Table(
        "unique_keys",
        md,
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("job_id", UUID, nullable=False),
        sa.Column("states", ARRAY(sa.Text), nullable=False),
        sa.Column("expires_at", TZ),
    )
    sa.Table(  # each task's settings as SQL applies them (0022), written by workers
        "task_settings",
        md,
        sa.Column("task", sa.Text, primary_key=True),
        sa.Column("queue", sa.Text),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("options", JSONB, nullable=False, server_default="{}"),
        sa.Column("rate_limit_key", JSONB),
        sa.Column("concurrency_key", JSONB),
        sa.Column("unique_key", JSONB),
        sa.Column(
            "unique_states",
            ARRAY(sa.Text),
            nullable=False,
            server_default="{PENDING,STARTED,RETRY}",
        ),
        sa.Column("unique_window", sa.Float(53)),
        sa.Column("on_duplicate", sa.Text, nullable=False, server_default="keep"),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "on_duplicate IN ('keep', 'replace', 'debounce')",
            name="task_settings_on_duplicate_check",
        ),
    )
    schedules = sa.Table(
        "schedules",
        md,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("args", JSONB, nullable=False, server_default="[]"),
        sa.Column("kwargs", JSONB, nullable=False, server_default="{}"),
        sa.Column("options", JSONB, nullable=False, server_default="{}"),
        sa.Column("cron", sa.Text),
        sa.Column("interval_secs", sa.Float(53)),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("catch_up", sa.Text, nullable=False, server_default="once"),
        sa.Column("catch_up_limit", sa.Integer, nullable=False, server_default="100"),
        sa.Column("source", sa.Text, nullable=False, server_default="sql"),
        sa.Column("code_hash", sa.Text),
        sa.Column("next_run_at", TZ),
        sa.Column("last_run_at", TZ),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "(cron IS NULL) <> (interval_secs IS NULL)", name="schedules_kind_check"
        ),
        sa.CheckConstraint(
            "interval_secs IS NULL OR interval_secs > 0", name="schedules_interval_check"
        ),
        sa.CheckConstraint("catch_up IN ('once', 'skip', 'all')", name="schedules_catch_up_check"),
    )
    sa.Index("schedules_due_idx", schedules.c.next_run_at, postgresql_where=schedules.c.enabled)
    sa.Table(
        "schedule_ticks",
        md,
        sa.Column("schedule", sa.Text, primary_key=True),
        sa.Column("fire_at", TZ, primary_key=True),
        sa.Column("job_id", UUID, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    # One row: the oldest worker revision that may claim (worker_compatible()).
    sa.Table(
        "schema_compat",
        md,
        sa.Column("one", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("oldest_worker_revision", sa.Integer, nullable=False),
        sa.CheckConstraint("one", name="schema_compat_one_check"),
    )
    # One row: the worker that runs maintenance (the heartbeat elects it).
    sa.Table(
        "maintenance_leader",
        md,
        sa.Column("one", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("worker_id", UUID, nullable=False),
        sa.Column("elected_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("lease_expires_at", TZ, nullable=False),
        sa.CheckConstraint("one", name="maintenance_leader_one_check"),
    )
    return md
