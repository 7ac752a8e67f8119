"""SQL helpers for what statements repeated: a stored error, a job's retry limit.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Old workers: workers of 0008 may keep running while this is applied (it adds
two functions; nothing they run changes). Workers of this release need it
(they call both).

- ``error_json(type, message)``: an error the database itself records
  (WorkerLostError at rescue, TaskRevokedError at revoke, JobRecordMissing at
  claim), in the shape a worker stores (jobqueue.serialization.dump_error).
- ``max_retries(options)``: how many retries a job may have, from its
  options: the number stored there, none when it is stored as null
  (unlimited), and 3 when the job stores none (jobs written by SQL
  ``enqueue()``), which is jobqueue.retry.DEFAULT_MAX_RETRIES; a test keeps
  the two equal.

Both are plain SQL (inlined where they are used: no call overhead).
"""

from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION {s}.error_json(type text, message text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('type', type, 'module', 'jobqueue.exceptions',
                              'message', message, 'traceback', NULL)
$$;

CREATE FUNCTION {s}.max_retries(options jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN options ? 'max_retries' THEN (options ->> 'max_retries')::integer
                ELSE 3 END
$$;
"""

DOWNGRADE = """
DROP FUNCTION {s}.max_retries(jsonb);
DROP FUNCTION {s}.error_json(text, text);
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
