"""One maintenance leader: rescue, retention and vacuum run on one worker at a time.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Old workers: workers of 0009 may keep running while this is applied. They
keep running maintenance on every heartbeat, as before, beside the elected
leader; that is safe (every step takes its rows with SKIP LOCKED or a
try-lock), only wasteful, until they are replaced.

With every worker running every step on every heartbeat, 50 workers made
about 40 maintenance statements a second. Now a worker's heartbeat also
claims or renews a lease on the single row of ``maintenance_leader`` (in the
same statement, so electing costs nothing), and only the worker holding it
runs the steps. The lease is short (three heartbeats): a leader that dies is
replaced within that, and one that exits cleanly gives the row up at once.
"""

from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE {s}.maintenance_leader (
    one              boolean PRIMARY KEY DEFAULT true CHECK (one),
    worker_id        uuid NOT NULL,
    elected_at       timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL
);
"""

DOWNGRADE = """
DROP TABLE {s}.maintenance_leader;
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
