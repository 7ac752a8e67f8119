"""Reliability: worker leases, attempt history, revocations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

- ``workers.lease_expires_at``: each heartbeat pushes it forward by the
  worker's own lease TTL; past it, any live worker may rescue its jobs.
- ``job_attempts``: one row per attempt that did not end in success (retried,
  failed, lost with its worker, timed out, revoked); a successful final attempt
  is the ``jobs`` row itself. The ``job_history`` view joins both.
- ``jobs.revoked_at`` / ``jobs.revoke_terminate``: revocations live in SQL, so
  they need no worker online and survive restarts.
"""

from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE {s}.workers
    ADD COLUMN lease_expires_at timestamptz NOT NULL DEFAULT now() + interval '30 seconds';
CREATE INDEX workers_lease_idx ON {s}.workers (lease_expires_at);

ALTER TABLE {s}.jobs
    ADD COLUMN revoked_at timestamptz,
    ADD COLUMN revoke_terminate boolean NOT NULL DEFAULT false;

CREATE TABLE {s}.job_attempts (
    job_id      uuid NOT NULL,
    attempt     integer NOT NULL,
    worker_id   uuid,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    state       text NOT NULL,
    error       jsonb,
    PRIMARY KEY (job_id, attempt)
);

-- Every attempt of every job, oldest first: failed ones from job_attempts,
-- a finished successful one from jobs.
CREATE VIEW {s}.job_history AS
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
"""

DOWNGRADE = """
DROP VIEW {s}.job_history;
DROP TABLE {s}.job_attempts;
ALTER TABLE {s}.jobs DROP COLUMN revoke_terminate, DROP COLUMN revoked_at;
DROP INDEX {s}.workers_lease_idx;
ALTER TABLE {s}.workers DROP COLUMN lease_expires_at;
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
