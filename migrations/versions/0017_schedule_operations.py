"""Schedules as operations: ``pause_schedule(name)``, ``resume_schedule(name)``
and ``run_schedule(name)`` (run now), one SQL function each like the job and
queue operations of 0013, so the dashboard (jobqueue/dashboard), Python and
psql do the same thing (issue 22; docs/sql.md, "Operations").

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-09

Old workers: workers, beats and producers of 0016 may keep running while
this is applied and during the rollout. Only functions are added; no table
or statement of theirs changes. A beat of 0016 plans a resumed schedule as
it always did (the schedules_changed trigger clears its next fire time).
"""

from alembic import context, op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- A schedule stops firing (enabled = false) until resumed; what it already
-- enqueued is left alone. JQ002 for a schedule that does not exist. Returns
-- false if it was already paused.
CREATE FUNCTION {schema}.pause_schedule(name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM 1 FROM {schema}.schedules AS s WHERE s.name = pause_schedule.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue: there is no schedule %', quote_literal(pause_schedule.name)
            USING ERRCODE = 'JQ002';
    END IF;
    UPDATE {schema}.schedules AS s SET enabled = false
    WHERE s.name = pause_schedule.name AND s.enabled;
    RETURN FOUND;
END
$$;

-- Fires again; the schedules_changed trigger clears its next fire time, so
-- the next beat plans it from now (a paused stretch is not caught up).
-- Returns false if it was not paused.
CREATE FUNCTION {schema}.resume_schedule(name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM 1 FROM {schema}.schedules AS s WHERE s.name = resume_schedule.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue: there is no schedule %', quote_literal(resume_schedule.name)
            USING ERRCODE = 'JQ002';
    END IF;
    UPDATE {schema}.schedules AS s SET enabled = true
    WHERE s.name = resume_schedule.name AND NOT s.enabled;
    RETURN FOUND;
END
$$;

-- One job of the schedule's task with its arguments, due now, paused or not,
-- as enqueue() writes one (its queue and priority from the schedule's
-- options; limits and routes that the beat resolves in Python do not apply),
-- recorded as a tick at now(). Its planned fire times do not move. Returns
-- the job's id.
CREATE FUNCTION {schema}.run_schedule(name text) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s      record;
    new_id uuid;
BEGIN
    SELECT * INTO s FROM {schema}.schedules AS x WHERE x.name = run_schedule.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobqueue: there is no schedule %', quote_literal(run_schedule.name)
            USING ERRCODE = 'JQ002';
    END IF;
    new_id := {schema}.enqueue(s.task, s.args, s.kwargs,
                               COALESCE(s.options ->> 'queue', 'default'),
                               COALESCE((s.options ->> 'priority')::integer, 0));
    INSERT INTO {schema}.schedule_ticks (schedule, fire_at, job_id)
    VALUES (s.name, now(), new_id)
    ON CONFLICT (schedule, fire_at) DO NOTHING;
    RETURN new_id;
END
$$;

-- EXECUTE is the privilege (jobqueue db grant: producers).
REVOKE EXECUTE ON FUNCTION {schema}.pause_schedule FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.resume_schedule FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {schema}.run_schedule FROM PUBLIC;
"""

DOWNGRADE = r"""
DROP FUNCTION {schema}.run_schedule(text);
DROP FUNCTION {schema}.resume_schedule(text);
DROP FUNCTION {schema}.pause_schedule(text);
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.replace("{schema}", f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
