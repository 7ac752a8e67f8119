"""Limit state that retention can delete.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21

``limit_state`` grew by one row per rate or concurrency key ever used, and keys
may be per argument (``rate_limit_key``): unbounded. Retention now deletes
rows that hold nothing a new row would not:

- ``full_at``: when a rate row's bucket is full again. Past it, the row equals
  the one ``admit()`` would create, so deleting it changes no decision.
- ``admit()`` takes its row lock in a loop: a row deleted between its insert
  (a no-op when the row exists) and its ``FOR UPDATE`` is created again,
  instead of the claim going on without the lock (and overshooting a limit).

The function is written whole below, as migrations are snapshots; the
downgrade writes it back without the loop and ``full_at``, as 0004 had it.
"""

from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ADMIT = """
CREATE OR REPLACE FUNCTION {{s}}.admit(ids uuid[]) RETURNS SETOF uuid LANGUAGE plpgsql ROWS 1
AS $$
DECLARE
    k        record;
    lim      record;
    st       record;
    running  integer;
    allowed  integer;
    spare    float8;
    deferred uuid[];
    rejected uuid[] := '{{{{}}}}';
BEGIN
    -- Concurrency first: tokens are not spent on jobs that could not start.
    FOR k IN
        SELECT q.concurrency_key AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {{s}}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND q.concurrency_key IS NOT NULL
        GROUP BY q.concurrency_key, q.task ORDER BY q.concurrency_key
    LOOP
        SELECT * INTO lim FROM {{s}}.task_limits WHERE task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.concurrency_limit IS NULL;
        {lock_concurrency}
        SELECT count(*) INTO running FROM {{s}}.job_lease WHERE concurrency_key = k.key;
        allowed := greatest(lim.concurrency_limit - running, 0);
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- Woken when a running job of this key finishes (job_complete_many),
        -- or after a second at the latest.
        UPDATE {{s}}.job_queue SET run_at = now() + interval '1 second'
        WHERE job_id = ANY(deferred);
    END LOOP;

    FOR k IN
        SELECT q.rate_key AS key, q.task,
               array_agg(q.job_id ORDER BY q.priority DESC, q.run_at, q.job_id) AS jobs
        FROM {{s}}.job_queue AS q
        WHERE q.job_id = ANY(ids) AND NOT (q.job_id = ANY(rejected)) AND q.rate_key IS NOT NULL
        GROUP BY q.rate_key, q.task ORDER BY q.rate_key
    LOOP
        SELECT * INTO lim FROM {{s}}.task_limits WHERE task = k.task;
        CONTINUE WHEN NOT FOUND OR lim.rate_per_second IS NULL;
        {lock_rate}
        spare := least(lim.burst, st.tokens + lim.rate_per_second
                       * extract(epoch FROM clock_timestamp() - st.updated_at));
        allowed := least(floor(spare)::integer, cardinality(k.jobs));
        spare := spare - allowed;
        UPDATE {{s}}.limit_state SET tokens = spare, updated_at = clock_timestamp(){full_at}
        WHERE key = 'r:' || k.key;
        deferred := k.jobs[allowed + 1:];
        rejected := rejected || deferred;
        -- The i-th deferred job is due when the i-th next token is.
        UPDATE {{s}}.job_queue AS q
        SET run_at = clock_timestamp()
                     + make_interval(secs => (d.n - spare) / lim.rate_per_second)
        FROM unnest(deferred) WITH ORDINALITY AS d(job_id, n)
        WHERE q.job_id = d.job_id;
    END LOOP;

    RETURN QUERY SELECT x FROM unnest(ids) AS x WHERE NOT (x = ANY(rejected));
END
$$;
"""

# Until the row is ours: retention may delete it between the two statements.
LOCK_LOOP = """LOOP
            INSERT INTO {{s}}.limit_state (key, tokens) VALUES ('{kind}:' || k.key, {fresh})
            ON CONFLICT (key) DO NOTHING;
            SELECT * INTO st FROM {{s}}.limit_state WHERE key = '{kind}:' || k.key FOR UPDATE;
            EXIT WHEN FOUND;
        END LOOP;"""

LOCK_ONCE = """INSERT INTO {{s}}.limit_state (key, tokens) VALUES ('{kind}:' || k.key, {fresh})
        ON CONFLICT (key) DO NOTHING;
        SELECT * INTO st FROM {{s}}.limit_state WHERE key = '{kind}:' || k.key FOR UPDATE;"""


def _admit(lock: str, full_at: str) -> str:
    return ADMIT.format(
        lock_concurrency=lock.format(kind="c", fresh="0"),
        lock_rate=lock.format(kind="r", fresh="lim.burst"),
        full_at=full_at,
    )


UPGRADE = "ALTER TABLE {s}.limit_state ADD COLUMN full_at timestamptz;\n" + _admit(
    LOCK_LOOP,
    ",\n            full_at = clock_timestamp()"
    " + make_interval(secs => (lim.burst - spare) / lim.rate_per_second)",
)

DOWNGRADE = _admit(LOCK_ONCE, "") + "ALTER TABLE {s}.limit_state DROP COLUMN full_at;\n"


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.format(s=f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
