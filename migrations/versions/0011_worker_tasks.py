"""Workers record the tasks they serve; a view shows waiting jobs nobody serves.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

Old workers: workers of 0010 may keep running while this is applied. They
register without a task list (NULL), which the view reads as "serves every
task of its queues", as they did.

During a rolling deploy a worker may claim a job of a task only the new
release knows. It now hands the job back (unrun, uncounted) for a worker that
knows it, until app.conf.unknown_task_grace after its enqueue; the
``unserved_tasks`` view shows jobs waiting for a task that no live worker of
their queue serves, so a deploy can be watched (and alerted on) in SQL.
"""

from alembic import context, op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE {s}.workers ADD COLUMN tasks text[];

-- Due jobs whose task no live worker of their queue serves (a worker with no
-- task list, from before 0011, counts as serving every task).
CREATE VIEW {s}.unserved_tasks AS
SELECT q.queue, q.task, count(*) AS waiting, now() - min(q.run_at) AS oldest_waiting
FROM {s}.job_queue AS q
WHERE q.run_at <= now()
  AND NOT EXISTS (
      SELECT 1 FROM {s}.workers AS w
      WHERE w.lease_expires_at > now() AND q.queue = ANY(w.queues)
        AND (w.tasks IS NULL OR q.task = ANY(w.tasks)))
GROUP BY q.queue, q.task;
"""

DOWNGRADE = """
DROP VIEW {s}.unserved_tasks;
ALTER TABLE {s}.workers DROP COLUMN tasks;
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
