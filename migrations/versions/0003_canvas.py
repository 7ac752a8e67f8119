"""Canvas: groups, chords with SQL counters, links, progress.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

A canvas is JSON written by Python (``jobqueue/canvas.py``) with every job id
chosen up front. ``spawn`` turns a signature into rows; ``fail_tree`` writes
the rows of work that can no longer run as FAILURE; ``advance`` is called in
the same transaction that finishes jobs (completion, rescue, revocation) and
creates what comes next: link callbacks, error callbacks, chord bodies.
Every step is idempotent (ids are known, inserts skip existing ids, chord
membership rows are deleted once), and a chord's counter row is locked by
each decrement, so a body is spawned exactly once.
"""

from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE {s}.jobs
    ADD COLUMN group_id uuid,
    ADD COLUMN group_index integer,
    ADD COLUMN progress_state text,
    ADD COLUMN progress jsonb;
-- Never-updated columns only, so job updates stay HOT.
CREATE INDEX jobs_root_idx ON {s}.jobs (root_id) WHERE root_id IS NOT NULL;
CREATE INDEX jobs_parent_idx ON {s}.jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_group_idx ON {s}.jobs (group_id, group_index) WHERE group_id IS NOT NULL;

-- Member ids of every group in a canvas, known before the members exist.
CREATE TABLE {s}.groups (
    id         uuid PRIMARY KEY,
    members    uuid[] NOT NULL,
    root_id    uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {s}.chords (
    id          uuid PRIMARY KEY,
    state       text NOT NULL DEFAULT 'PENDING',
    remaining   integer NOT NULL,
    body        jsonb NOT NULL,
    root_id     uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT chords_state_check CHECK (state IN ('PENDING', 'DONE', 'FAILED'))
);

-- A header job still to be counted; deleting the row is what counts it once.
CREATE TABLE {s}.chord_members (
    job_id   uuid PRIMARY KEY,
    chord_id uuid NOT NULL
);

CREATE FUNCTION {s}.spawn(sig jsonb, prepend jsonb, parent uuid, root uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kind     text := COALESCE(sig ->> 'type', 'task');
    member   jsonb;
    new_id   uuid;
    chord_id uuid;
    due      timestamptz;
    q        text;
BEGIN
    IF kind = 'group' THEN
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'tasks') LOOP
            PERFORM {s}.spawn(member, prepend, parent, root);
        END LOOP;
        RETURN;
    ELSIF kind = 'chord' THEN
        INSERT INTO {s}.chords (id, remaining, body, root_id)
        VALUES ((sig ->> 'id')::uuid, jsonb_array_length(sig -> 'header'), sig -> 'body', root)
        ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF jsonb_array_length(sig -> 'header') = 0 THEN
            UPDATE {s}.chords SET state = 'DONE', finished_at = now()
            WHERE id = (sig ->> 'id')::uuid;
            PERFORM {s}.spawn(sig -> 'body', '[[]]'::jsonb, parent, root);
            RETURN;
        END IF;
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'header') LOOP
            PERFORM {s}.spawn(member, prepend, parent, root);
        END LOOP;
        RETURN;
    END IF;

    new_id := (sig ->> 'id')::uuid;
    chord_id := (sig -> 'options' ->> 'chord')::uuid;
    due := now() + make_interval(secs => COALESCE((sig ->> 'countdown')::float8, 0));
    q := COALESCE(sig ->> 'queue', 'default');
    INSERT INTO {s}.jobs (id, task, queue, priority, args, kwargs, options, run_at, expires_at,
                          root_id, parent_id, group_id, group_index)
    VALUES (new_id, sig ->> 'task', q, COALESCE((sig ->> 'priority')::int, 0),
            CASE WHEN prepend IS NULL OR COALESCE((sig ->> 'immutable')::boolean, false)
                 THEN COALESCE(sig -> 'args', '[]') ELSE prepend || COALESCE(sig -> 'args', '[]')
            END,
            COALESCE(sig -> 'kwargs', '{{}}'), COALESCE(sig -> 'options', '{{}}'), due,
            now() + make_interval(secs => (sig ->> 'expires_in')::float8),
            COALESCE(root, new_id), parent, (sig ->> 'group_id')::uuid,
            (sig ->> 'group_index')::int)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;  -- spawned before: spawning is idempotent
    END IF;
    INSERT INTO {s}.job_queue (job_id, queue, priority, run_at, task, rate_key,
                               concurrency_key)
    VALUES (new_id, q, COALESCE((sig ->> 'priority')::int, 0), due, sig ->> 'task',
            sig -> 'options' ->> 'rate_key', sig -> 'options' ->> 'concurrency_key');
    IF chord_id IS NOT NULL THEN
        INSERT INTO {s}.chord_members (job_id, chord_id) VALUES (new_id, chord_id);
    END IF;
    PERFORM pg_notify('{notify}', q);
END
$$;

-- A chord that can no longer complete: marked FAILED once, its body (and what
-- follows it) written FAILURE with a ChordError naming the failed member.
CREATE FUNCTION {s}.fail_chord(chord_id uuid, failed uuid, err jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    UPDATE {s}.chords SET state = 'FAILED', finished_at = now()
    WHERE id = chord_id AND state = 'PENDING'
    RETURNING * INTO c;
    IF FOUND THEN
        PERFORM {s}.fail_tree(c.body, jsonb_build_object(
            'type', 'ChordError', 'module', 'jobqueue.exceptions', 'traceback', NULL,
            'failed_job', failed,
            'message', format('Dependency %s raised %s: %s', failed,
                              COALESCE(err ->> 'type', 'an error'),
                              COALESCE(err ->> 'message', ''))),
            failed, c.root_id);
    END IF;
END
$$;

-- Work that can no longer run: its rows are written FAILURE with ``err``, and
-- the error callbacks it carries fire (once: their ids are fixed).
CREATE FUNCTION {s}.fail_tree(sig jsonb, err jsonb, parent uuid, root uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kind   text := COALESCE(sig ->> 'type', 'task');
    member jsonb;
    new_id uuid;
BEGIN
    IF kind = 'group' THEN
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'tasks') LOOP
            PERFORM {s}.fail_tree(member, err, parent, root);
        END LOOP;
        RETURN;
    ELSIF kind = 'chord' THEN
        INSERT INTO {s}.chords (id, state, remaining, body, root_id, finished_at)
        VALUES ((sig ->> 'id')::uuid, 'FAILED', 0, sig -> 'body', root, now())
        ON CONFLICT (id) DO NOTHING;
        FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'header') LOOP
            PERFORM {s}.fail_tree(member, err, parent, root);
        END LOOP;
        PERFORM {s}.fail_tree(sig -> 'body', err, parent, root);
        RETURN;
    END IF;
    new_id := (sig ->> 'id')::uuid;
    INSERT INTO {s}.jobs (id, task, queue, priority, state, args, kwargs, options,
                          root_id, parent_id, group_id, group_index, error, finished_at)
    VALUES (new_id, sig ->> 'task', COALESCE(sig ->> 'queue', 'default'),
            COALESCE((sig ->> 'priority')::int, 0), 'FAILURE', COALESCE(sig -> 'args', '[]'),
            COALESCE(sig -> 'kwargs', '{{}}'), COALESCE(sig -> 'options', '{{}}'),
            COALESCE(root, new_id), parent, (sig ->> 'group_id')::uuid,
            (sig ->> 'group_index')::int, err, now())
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM pg_notify('{done}', new_id::text);
    IF sig -> 'options' ? 'chord' THEN  -- a member of a chord: that chord fails too
        PERFORM {s}.fail_chord((sig -> 'options' ->> 'chord')::uuid, new_id, err);
    END IF;
    FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'options' -> 'link_error') LOOP
        PERFORM {s}.spawn(member, jsonb_build_array(new_id::text), new_id, root);
    END LOOP;
    FOR member IN SELECT value FROM jsonb_array_elements(sig -> 'options' -> 'link') LOOP
        PERFORM {s}.fail_tree(member, err, new_id, root);
    END LOOP;
END
$$;

-- Run in the transaction that finished ``ids``: callbacks, error callbacks,
-- chord counting. Jobs not finished, or already advanced, change nothing.
CREATE FUNCTION {s}.advance(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    j       record;
    c       record;
    sig     jsonb;
    err     jsonb;
    results jsonb;
    n       integer := 0;
BEGIN
    -- Chord rows are locked in one order everywhere, so batches never deadlock.
    FOR j IN
        SELECT id, state, result, error, options, root_id FROM {s}.jobs
        WHERE id = ANY(ids) AND state IN ('SUCCESS', 'FAILURE', 'REVOKED')
        ORDER BY options ->> 'chord', id
    LOOP
        n := n + 1;
        IF j.state = 'SUCCESS' THEN
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link') LOOP
                PERFORM {s}.spawn(sig, jsonb_build_array(j.result), j.id, j.root_id);
            END LOOP;
        ELSE
            err := COALESCE(j.error, '{{}}') || jsonb_build_object('failed_job', j.id);
            -- Error callbacks first: one shared by later steps fires with this id.
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link_error') LOOP
                PERFORM {s}.spawn(sig, jsonb_build_array(j.id::text), j.id, j.root_id);
            END LOOP;
            FOR sig IN SELECT value FROM jsonb_array_elements(j.options -> 'link') LOOP
                PERFORM {s}.fail_tree(sig, err, j.id, j.root_id);
            END LOOP;
        END IF;
        CONTINUE WHEN NOT (j.options ? 'chord');
        DELETE FROM {s}.chord_members WHERE job_id = j.id;
        CONTINUE WHEN NOT FOUND;  -- counted already
        IF j.state = 'SUCCESS' THEN
            UPDATE {s}.chords SET remaining = remaining - 1
            WHERE id = (j.options ->> 'chord')::uuid AND state = 'PENDING'
            RETURNING * INTO c;
            IF FOUND AND c.remaining = 0 THEN
                UPDATE {s}.chords SET state = 'DONE', finished_at = now() WHERE id = c.id;
                SELECT COALESCE(jsonb_agg(result ORDER BY group_index), '[]') INTO results
                FROM {s}.jobs WHERE group_id = c.id;
                PERFORM {s}.spawn(c.body, jsonb_build_array(results), j.id, c.root_id);
            END IF;
        ELSE
            PERFORM {s}.fail_chord((j.options ->> 'chord')::uuid, j.id,
                                   COALESCE(j.error, jsonb_build_object('type', j.state)));
        END IF;
    END LOOP;
    RETURN n;
END
$$;

-- Every job of a workflow (canvas), by root id.
CREATE VIEW {s}.workflow_jobs AS
SELECT root_id, id, task, state, parent_id, group_id, group_index, queue, attempts,
       created_at, started_at, finished_at, error ->> 'type' AS error_type
FROM {s}.jobs;
"""

DOWNGRADE = """
DROP VIEW {s}.workflow_jobs;
DROP FUNCTION {s}.advance(uuid[]);
DROP FUNCTION {s}.fail_tree(jsonb, jsonb, uuid, uuid);
DROP FUNCTION {s}.fail_chord(uuid, uuid, jsonb);
DROP FUNCTION {s}.spawn(jsonb, jsonb, uuid, uuid);
DROP TABLE {s}.chord_members;
DROP TABLE {s}.chords;
DROP TABLE {s}.groups;
DROP INDEX {s}.jobs_group_idx;
DROP INDEX {s}.jobs_parent_idx;
DROP INDEX {s}.jobs_root_idx;
ALTER TABLE {s}.jobs DROP COLUMN progress, DROP COLUMN progress_state,
    DROP COLUMN group_index, DROP COLUMN group_id;
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"', notify=f"{schema}_jobs", done=f"{schema}_done")


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
