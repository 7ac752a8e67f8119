"""Workers check at every claim that they know the schema; SQL enqueue refuses
arguments nested deeper than a worker can decode.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Old workers: workers of 0007 may keep running while this is applied (it adds
a table and functions, and replaces ``enqueue()`` with one that accepts the
same calls).

A worker used to compare the schema's revision with its own only when it
started. Left running across ``jobqueue db upgrade`` 0006 -> 0007, a worker
of the earlier release kept claiming from a ``job_queue`` whose rows now
carried jobs it could not record, and deleted them: every new single enqueue
was lost. From this revision on, the claim statement itself calls
``worker_compatible(<the worker's revision>)``, which raises (SQLSTATE JQ001)
unless the worker's revision lies between ``schema_compat``'s oldest worker
revision and the schema's own: the claim then changes nothing, and the worker
stops claiming and exits, saying why. A later revision that old workers
cannot run against raises ``oldest_worker_revision`` to itself in the same
transaction; one they can run against leaves it alone. Each revision's
docstring says which (docs/upgrading.md).
"""

from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The deepest nesting of arrays and objects a job's arguments may have: what
# the producer also refuses (jobqueue.serialization.MAX_NESTING). A worker
# decodes JSON recursively, in a thread whose stack already holds the
# worker's own frames; 3,000 levels written by SQL made the decode fail there.
MAX_NESTING = 200

UPGRADE = """
CREATE TABLE {s}.schema_compat (
    one                    boolean PRIMARY KEY DEFAULT true CHECK (one),
    oldest_worker_revision integer NOT NULL
);
INSERT INTO {s}.schema_compat (oldest_worker_revision) VALUES (8);

-- Called by every claim with the revision the worker was built for: raises
-- unless that worker may claim from this schema.
CREATE FUNCTION {s}.worker_compatible(worker_revision integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    current integer;
    oldest  integer;
BEGIN
    -- One read, each table by its key: a claim session disables sequential
    -- scans. About 30 us per claim.
    SELECT v.version_num::integer, c.oldest_worker_revision INTO current, oldest
    FROM {s}.alembic_version AS v, {s}.schema_compat AS c
    WHERE v.version_num IS NOT NULL AND c.one;
    IF worker_revision BETWEEN oldest AND current THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION 'jobqueue schema {n} is at revision %, which a worker of revision % '
                    'must not claim from (workers of revisions % to % may)',
                    current, worker_revision, oldest, current
        USING ERRCODE = 'JQ001',
              HINT = 'restart the worker with the jobqueue release that matches the '
                     'schema (docs/upgrading.md)';
END
$$;

-- How deeply arrays and objects nest in a JSON value (a scalar is 0).
CREATE FUNCTION {s}.json_depth(doc jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    WITH RECURSIVE walk(value, depth) AS (
        SELECT doc, 1 WHERE jsonb_typeof(doc) IN ('array', 'object')
        UNION ALL
        SELECT child.value, walk.depth + 1
        FROM walk
        CROSS JOIN LATERAL (
            SELECT e.value FROM jsonb_array_elements(
                CASE WHEN jsonb_typeof(walk.value) = 'array' THEN walk.value END) AS e
            UNION ALL
            SELECT o.value FROM jsonb_each(
                CASE WHEN jsonb_typeof(walk.value) = 'object' THEN walk.value END) AS o
        ) AS child
        WHERE jsonb_typeof(child.value) IN ('array', 'object')
    )
    SELECT COALESCE(max(depth), 0) FROM walk
$$;

{enqueue}"""

ENQUEUE = """
CREATE OR REPLACE FUNCTION {s}.enqueue(
    task       text,
    args       jsonb DEFAULT '[]',
    kwargs     jsonb DEFAULT '{{}}',
    queue      text DEFAULT 'default',
    priority   integer DEFAULT 0,
    run_at     timestamptz DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    id         uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := COALESCE(enqueue.id, {s}.uuid7());
    due    timestamptz := COALESCE(enqueue.run_at, now());
BEGIN
    IF jsonb_typeof(enqueue.args) <> 'array' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: args must be a JSON array, got %',
            jsonb_typeof(enqueue.args) USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(enqueue.kwargs) <> 'object' THEN
        RAISE EXCEPTION 'jobqueue.enqueue: kwargs must be a JSON object, got %',
            jsonb_typeof(enqueue.kwargs) USING ERRCODE = '22023';
    END IF;{depth_check}
    INSERT INTO {s}.jobs (id, task, queue, priority, args, kwargs, run_at, expires_at)
    VALUES (new_id, enqueue.task, enqueue.queue, enqueue.priority, enqueue.args,
            enqueue.kwargs, due, enqueue.expires_at);
    INSERT INTO {s}.job_queue (job_id, queue, priority, run_at, task)
    VALUES (new_id, enqueue.queue, enqueue.priority, due, enqueue.task);
    PERFORM pg_notify('{notify}', enqueue.queue);
    RETURN new_id;
END
$$;
"""

DEPTH_CHECK = f"""
    IF {{s}}.json_depth(enqueue.args) > {MAX_NESTING}
       OR {{s}}.json_depth(enqueue.kwargs) > {MAX_NESTING} THEN
        RAISE EXCEPTION 'jobqueue.enqueue: the arguments of task % nest arrays and objects '
                        '% levels deep; at most {MAX_NESTING} are allowed',
            enqueue.task,
            greatest({{s}}.json_depth(enqueue.args), {{s}}.json_depth(enqueue.kwargs))
            USING ERRCODE = '22023';
    END IF;"""

DOWNGRADE = """
{enqueue}
DROP FUNCTION {s}.json_depth(jsonb);
DROP FUNCTION {s}.worker_compatible(integer);
DROP TABLE {s}.schema_compat;
"""


def _render(ddl: str, depth_check: str) -> str:
    schema = context.config.attributes["schema"]
    enqueue = ENQUEUE.replace("{depth_check}", depth_check)
    return (
        ddl.replace("{enqueue}", enqueue)
        .replace("{notify}", f"{schema}_jobs")
        .replace("{n}", schema)
        .format(s=f'"{schema}"')
    )


def upgrade() -> None:
    op.execute(_render(UPGRADE, DEPTH_CHECK))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE, ""))
