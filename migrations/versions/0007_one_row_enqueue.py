"""One row per enqueue: a job waits in ``job_queue`` with its arguments, and
its record in ``jobs`` is written when a worker first claims it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21

A single enqueue is one commit, and its rate is bound by what that commit
writes (see docs/performance.md): a second row with its own index entries
cost about a seventh of the rate. ``job_queue`` now carries the job's payload
columns, filled only while the job has no record yet (``args IS NOT NULL``);
jobs enqueued by SQL, in bulk, by canvases, for unique tasks or with a
caller-chosen id keep writing their record at once, as before (a job in a
workflow always has its record, so lineage lookups need only ``jobs``).

``all_jobs`` is every job, recorded or not: what to query instead of ``jobs``
when waiting jobs matter. ``task_stats`` and ``workflow_jobs`` read it.
"""

from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The two views that read every job: from all_jobs now, from jobs before.
VIEWS = """
CREATE OR REPLACE VIEW {s}.task_stats AS
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
FROM {s}.{source} AS j, win
WHERE j.created_at >= win.since OR j.finished_at >= win.since
      OR j.state IN ('PENDING', 'STARTED', 'RETRY')
GROUP BY j.task;

CREATE OR REPLACE VIEW {s}.workflow_jobs AS
SELECT root_id, id, task, state, parent_id, group_id, group_index, queue, attempts,
       created_at, started_at, finished_at, error ->> 'type' AS error_type
FROM {s}.{source};
"""

UPGRADE = """
ALTER TABLE {s}.job_queue
    ADD COLUMN args jsonb,
    ADD COLUMN kwargs jsonb,
    ADD COLUMN options jsonb,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN created_at timestamptz;

-- Every job: its record, or (before its first claim) its row in job_queue.
-- One statement sees a job in exactly one of the two: the claim that moves it
-- deletes the one and inserts the other in one transaction.
CREATE VIEW {s}.all_jobs AS
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

{views}"""

# Down: waiting jobs get their records first, so nothing is lost.
DOWNGRADE = """
INSERT INTO {s}.jobs (id, task, queue, priority, args, kwargs, options, run_at, expires_at,
                      created_at)
SELECT job_id, task, queue, priority, args, kwargs, options, run_at, expires_at, created_at
FROM {s}.job_queue WHERE args IS NOT NULL;

{views}
DROP VIEW {s}.all_jobs;

ALTER TABLE {s}.job_queue
    DROP COLUMN args,
    DROP COLUMN kwargs,
    DROP COLUMN options,
    DROP COLUMN expires_at,
    DROP COLUMN created_at;
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE.replace("{views}", VIEWS.replace("{source}", "all_jobs"))))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE.replace("{views}", VIEWS.replace("{source}", "jobs"))))
