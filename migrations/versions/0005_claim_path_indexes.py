"""Fewer indexes on the claim path, so every plan there has one obvious index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21

- ``job_queue_run_at_idx`` goes. With statistics taken while ``job_queue`` was
  empty (it swings between empty and a backlog), the planner could claim
  through it, reading every due job and sorting them, instead of reading the
  first few in ``job_queue_claim_idx`` order. The next-due lookup now walks
  ``job_queue_claim_idx`` one priority at a time.
- ``job_lease_worker_idx`` goes: completions find leases by primary key, and
  the rare per-worker lookups (rescue, orphans) read a table that only holds
  running jobs. Each claim writes one index entry fewer.
"""

from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
DROP INDEX {s}.job_queue_run_at_idx;
DROP INDEX {s}.job_lease_worker_idx;
"""

DOWNGRADE = """
CREATE INDEX job_lease_worker_idx ON {s}.job_lease (worker_id);
CREATE INDEX job_queue_run_at_idx ON {s}.job_queue (run_at);
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
