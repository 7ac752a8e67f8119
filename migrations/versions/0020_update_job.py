"""Waiting jobs changed in place: ``update_job(id, args, kwargs, run_at,
priority)`` (``AsyncResult.update()``, and a unique task's ``on_duplicate``
replace and debounce modes; issue 24, item 6), one SQL function like the
operations of 0013.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06

Old workers: workers, beats and producers of 0019 may keep running while
this is applied and during the rollout. Only a function is added; no table
or statement of theirs changes.
"""

from alembic import context, op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- A waiting job changed in place (AsyncResult.update(), jobqueue jobs update,
-- a unique task's replace and debounce modes): its arguments, its due time,
-- its priority. NULL leaves a field as it is. Only while it waits: its row in
-- job_queue is locked first, so a claim that holds it wins (then false: it
-- runs, or ran, as it was). A job waiting on dependencies keeps waiting; its
-- new due time applies once they are counted. Workers of its queue are
-- notified (it may be due sooner). Bad input raises JQ002. Returns whether
-- the job was waiting and changed.
CREATE FUNCTION {schema}.update_job(id uuid, args jsonb DEFAULT NULL, kwargs jsonb DEFAULT NULL,
                                    run_at timestamptz DEFAULT NULL,
                                    priority integer DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w       record;
    waiting boolean;
BEGIN
    IF update_job.args IS NOT NULL AND jsonb_typeof(update_job.args) <> 'array' THEN
        RAISE EXCEPTION 'jobqueue: update_job: args must be a JSON array, got %',
            jsonb_typeof(update_job.args) USING ERRCODE = 'JQ002';
    END IF;
    IF update_job.kwargs IS NOT NULL AND jsonb_typeof(update_job.kwargs) <> 'object' THEN
        RAISE EXCEPTION 'jobqueue: update_job: kwargs must be a JSON object, got %',
            jsonb_typeof(update_job.kwargs) USING ERRCODE = 'JQ002';
    END IF;
    IF {schema}.json_depth(COALESCE(update_job.args, '[]')) > 200
       OR {schema}.json_depth(COALESCE(update_job.kwargs, '{}')) > 200 THEN
        RAISE EXCEPTION 'jobqueue: update_job: the arguments nest arrays and objects more '
                        'than 200 levels deep' USING ERRCODE = 'JQ002';
    END IF;
    IF update_job.priority IS NOT NULL AND update_job.priority NOT BETWEEN -32768 AND 32767 THEN
        RAISE EXCEPTION 'jobqueue: update_job: priority must be in [-32768, 32767], got %',
            update_job.priority USING ERRCODE = 'JQ002';
    END IF;
    SELECT * INTO w FROM {schema}.job_queue AS q WHERE q.job_id = update_job.id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    waiting := w.run_at = {schema}.dependency_wait();
    UPDATE {schema}.job_queue AS q
    SET args = CASE WHEN q.args IS NULL THEN NULL ELSE COALESCE(update_job.args, q.args) END,
        kwargs = CASE WHEN q.kwargs IS NULL THEN NULL
                      ELSE COALESCE(update_job.kwargs, q.kwargs) END,
        run_at = CASE WHEN waiting THEN q.run_at ELSE COALESCE(update_job.run_at, q.run_at) END,
        priority = COALESCE(update_job.priority, q.priority)
    WHERE q.job_id = update_job.id;
    UPDATE {schema}.jobs AS j
    SET args = COALESCE(update_job.args, j.args),
        kwargs = COALESCE(update_job.kwargs, j.kwargs),
        run_at = COALESCE(update_job.run_at, j.run_at),
        priority = COALESCE(update_job.priority, j.priority)
    WHERE j.id = update_job.id AND j.state IN ('PENDING', 'RETRY');
    PERFORM pg_notify('{channel_jobs}', w.queue);
    RETURN true;
END
$$;

REVOKE EXECUTE ON FUNCTION {schema}.update_job(uuid, jsonb, jsonb, timestamptz, integer)
    FROM PUBLIC;
"""

DOWNGRADE = r"""
DROP FUNCTION {schema}.update_job(uuid, jsonb, jsonb, timestamptz, integer);
"""


def _render(ddl: str) -> str:
    # Placeholders as in schema.sql (not str.format: the SQL holds JSON braces).
    schema = context.config.attributes["schema"]
    return ddl.replace("{schema}", f'"{schema}"').replace("{channel_jobs}", f"{schema}_jobs")


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
