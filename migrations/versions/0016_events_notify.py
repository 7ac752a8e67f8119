"""Events sent by a function: ``events_notify(channel, items)``, which the
claim, completion, revocation, rescue and worker statements call with the
array of their events, NULL (and so no call: it is STRICT) when nobody
listens; and ``events_listening()``, which stops a claim or a completion
that reports no events when a listener is there (docs/operations.md, "Events").

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

Why: 0015's statements built their events in a subquery gated by the
events lock. The gate kept the payload from being built, but the subquery's
plan was still set up and torn down at every execution: about 15 us of
server CPU per claim and per completion with nobody listening. An aggregate
(FILTER on the lock's try) fed to a STRICT function, not called when the
array is NULL, still cost about half of that. So the claim and the
completion now come in two forms: one with nothing of events in it
(job_claim, job_complete_many), which tries the lock once a row and calls
events_listening() when a try fails, and one that reports them
(job_claim_events, job_complete_many_events), which a worker runs from then
on, until nobody listens again.

Old workers: workers of 0015 may keep running while this is applied and
during the rollout: their statements do not call the function and keep
sending their own events. Only a function is added; no table is touched.
"""

from alembic import context, op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# Verbatim in jobqueue/sql/schema.sql (a test compares the function bodies).
UPGRADE = r"""
-- The events of one statement (jobqueue/events): items of kind:id[/attempt],
-- one NOTIFY per 120 of them (a NOTIFY takes a cluster-wide lock at commit;
-- payloads stay under the 8000-byte limit). STRICT: the statements pass
-- array_agg(...) FILTER (WHERE <the events lock's try failed>), NULL when
-- nobody listens, so the function is not even called then. Returns the
-- NOTIFYs sent.
CREATE FUNCTION {schema}.events_notify(channel text, items text[]) RETURNS integer
LANGUAGE plpgsql STRICT AS $$
DECLARE
    sent integer := 0;
BEGIN
    FOR i IN 1 .. cardinality(items) BY 120 LOOP
        PERFORM pg_notify(channel, array_to_string(items[i : i + 119], ','));
        sent := sent + 1;
    END LOOP;
    RETURN sent;
END
$$;

-- Called by a claim or a completion that reports no events (job_claim,
-- job_complete_many) when the events lock says a listener is there: raises
-- JQ004, so that statement changes nothing and the worker runs it again as
-- job_claim_events or job_complete_many_events. Never returns.
CREATE FUNCTION {schema}.events_listening() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a listener wants events: claim with job_claim_events'
        USING ERRCODE = 'JQ004';
END
$$;
"""

DOWNGRADE = r"""
DROP FUNCTION {schema}.events_listening();
DROP FUNCTION {schema}.events_notify(text, text[]);
"""


def _render(ddl: str) -> str:
    schema = context.config.attributes["schema"]
    return ddl.replace("{schema}", f'"{schema}"')


def upgrade() -> None:
    op.execute(_render(UPGRADE))


def downgrade() -> None:
    op.execute(_render(DOWNGRADE))
