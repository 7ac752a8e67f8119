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
    sa.Index("jobs_root_idx", jobs.c.root_id, postgresql_where=jobs.c.root_id != jobs.c.id)
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
    )
    sa.Index(
        "job_queue_claim_idx",
        job_queue.c.queue,
        job_queue.c.priority.desc(),
        job_queue.c.run_at,
        job_queue.c.job_id,
    )
    sa.Index("job_queue_run_at_idx", job_queue.c.run_at)
    job_lease = sa.Table(
        "job_lease",
        md,
        sa.Column("job_id", UUID, primary_key=True),
        sa.Column("worker_id", UUID, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("claimed_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    sa.Index("job_lease_worker_idx", job_lease.c.worker_id)
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
    return md
