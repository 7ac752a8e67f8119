"""The migrated schema matches the declared one, and downgrade/upgrade round-trips."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jobqueue import migrate
from jobqueue.schema import metadata
from tests.migrations import schema_compare


def _diff(dsn: str, schema: str, md: sa.MetaData) -> list[Any]:
    engine = migrate.engine(dsn)
    try:
        with engine.connect() as c:
            context = MigrationContext.configure(
                c,
                opts={
                    "include_schemas": True,
                    "compare_server_default": True,
                    "include_name": lambda name, kind, parent: kind != "schema" or name == schema,
                    "include_object": lambda obj, name, kind, reflected, other: (
                        name != "alembic_version" and not (kind == "table" and _partition(name))
                    ),
                },
            )
            return list(compare_metadata(context, md))
    finally:
        engine.dispose()


_PARTITION = re.compile(r"(jobs|job_attempts)_(legacy|default|p\d{8}_\d{4})")


def _partition(name: str | None) -> bool:
    """A partition of jobs or job_attempts: which exist depends on the day."""
    return _PARTITION.fullmatch(name or "") is not None


def _objects(conn: Any, schema: str) -> dict[str, list[str]]:
    return {
        "tables": [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
                "ORDER BY 1",
                (schema,),
            )
        ],
        "views": [
            r[0]
            for r in conn.execute(
                "SELECT viewname FROM pg_views WHERE schemaname = %s ORDER BY 1", (schema,)
            )
        ],
        "functions": [
            r[0]
            for r in conn.execute(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = %s ORDER BY 1",
                (schema,),
            )
        ],
    }


def test_migrated_schema_matches_declared_schema(dsn: str, schema: str) -> None:
    assert _diff(dsn, schema, metadata(schema)) == []


def test_the_comparison_notices_drift(dsn: str, schema: str) -> None:
    drifted = metadata(schema)
    sa.Table("jobs", drifted, sa.Column("surprise", sa.Text), extend_existing=True)
    diff = _diff(dsn, schema, drifted)
    assert any(d[0] == "add_column" and d[3].name == "surprise" for d in diff)


def test_downgrade_and_upgrade_round_trip(dsn: str, schema: str, conn: Any) -> None:
    before = _objects(conn, schema)
    assert before == {
        "tables": [
            "alembic_version",
            "batch_members",
            "batches",
            "chord_members",
            "chords",
            "control_replies",
            "control_requests",
            "fair_weights",
            "groups",
            "history_partitions",
            "history_plan",
            "job_attempts",
            "job_counts",
            "job_dependencies",
            "job_lease",
            "job_metrics",
            "job_queue",
            "job_waits",
            "jobs",
            "limit_state",
            "maintenance_leader",
            "queue_pauses",
            "schedule_ticks",
            "schedules",
            "schema_compat",
            "task_limits",
            "task_settings",
            "unique_keys",
            "workers",
        ],
        "views": [
            "all_jobs",
            "batch_progress",
            "fair_keys",
            "job_history",
            "queue_stats",
            "task_stats",
            "unserved_tasks",
            "workflow_jobs",
        ],
        "functions": [
            "admit",
            "admit_at",
            "advance",
            "advance_canvas",
            "batch_add",
            "batch_close",
            "batch_finish",
            "batch_open",
            "batches_settle",
            "batches_sweep",
            "cancel_jobs",
            "canonical_json",
            "canvas_ids",
            "canvas_unfail",
            "control_answers",
            "control_expected",
            "control_pending",
            "control_reply",
            "control_send",
            "delete_jobs",
            "depend",
            "dependencies_settle",
            "dependencies_sweep",
            "dependency_release",
            "dependency_wait",
            "enqueue",
            "error_json",
            "events_listening",
            "events_notify",
            "fail_chord",
            "fail_tree",
            "find_jobs",
            "history_expired",
            "history_lock",
            "history_partition_add",
            "history_partitions_ahead",
            "history_prune",
            "job_counts_track",
            "job_filter",
            "job_filter_joins",
            "job_metrics_fold",
            "job_metrics_track",
            "json_depth",
            "max_retries",
            "metric_buckets",
            "metrics",
            "move_jobs",
            "parse_rate",
            "pause_queue",
            "pause_schedule",
            "purge_queue",
            "reset_task_limit",
            "resume_queue",
            "resume_schedule",
            "retry_jobs",
            "revoke_running",
            "revoke_waiting",
            "run_schedule",
            "schedules_changed",
            "set_concurrency_limit",
            "set_fair_weight",
            "set_rate_limit",
            "spawn",
            "task_key",
            "unique_hold",
            "unique_lock_seed",
            "update_job",
            "uuid7",
            "uuid7_floor",
            "uuid7_hour",
            "waiting_lock",
            "worker_compatible",
        ],
    }
    for step in ("0003", "0002", "0001"):  # one revision at a time first
        migrate.downgrade(dsn, schema, step)
        assert migrate.current_revision(dsn, schema) == step
    assert "job_attempts" not in _objects(conn, schema)["tables"]
    migrate.upgrade(dsn, schema)
    assert _objects(conn, schema) == before
    migrate.downgrade(dsn, schema, "base")
    assert migrate.current_revision(dsn, schema) is None
    assert _objects(conn, schema) == {"tables": ["alembic_version"], "views": [], "functions": []}
    migrate.upgrade(dsn, schema)
    assert migrate.current_revision(dsn, schema) == migrate.head_revision()
    assert _objects(conn, schema) == before
    assert _diff(dsn, schema, metadata(schema)) == []


def test_concurrent_upgrades_migrate_once(dsn: str) -> None:
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(dsn, "race_schema")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert migrate.current_revision(dsn, "race_schema") == migrate.head_revision()
    migrate.downgrade(dsn, "race_schema", "base")


def test_downgrade_from_one_row_enqueue_keeps_waiting_jobs(
    jq: Any, dsn: str, schema: str, conn: Any
) -> None:
    """0007's downgrade writes the records of jobs still waiting in one row."""
    waiting = jq.add.apply_async((4, 5), countdown=600)
    migrate.downgrade(dsn, schema, "0006")
    row = conn.execute(
        f'SELECT j.state, j.args, q.job_id IS NOT NULL FROM "{schema}".jobs AS j '
        f'LEFT JOIN "{schema}".job_queue AS q ON q.job_id = j.id WHERE j.id = %s',
        (waiting.id,),
    ).fetchone()
    assert row == ("PENDING", [4, 5], True)
    migrate.upgrade(dsn, schema)
    assert waiting.state == "PENDING"


@pytest.fixture
def reference(conn: Any) -> Iterator[str]:
    """A fresh schema built by running jobqueue/sql/schema.sql, not alembic."""
    name = f"ref_{secrets.token_hex(4)}"
    schema_compare.apply_reference(conn, name)
    try:
        yield name
    finally:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def test_schema_sql_is_the_schema_the_migrations_build(
    conn: Any, schema: str, reference: str
) -> None:
    """schema.sql, applied to an empty schema, defines exactly what the
    migrations do at head: every column (type, nullability, default, order),
    constraint, index, view, function body, trigger and the schema's own rows.
    A revision that changes the schema updates schema.sql in the same commit."""
    diff = schema_compare.differences(
        schema_compare.definitions(conn, schema), schema_compare.definitions(conn, reference)
    )
    if diff:
        pytest.fail(
            f"jobqueue/sql/schema.sql differs from the schema migrated to "
            f"{migrate.head_revision()} in {len(diff)} object(s):\n\n" + "\n\n".join(diff.values()),
            pytrace=False,
        )


def test_the_schema_sql_comparison_notices_drift(conn: Any, reference: str) -> None:
    """Each kind of object compared: one change of each in the applied copy is
    reported under that object's name, and nothing else is."""
    before = schema_compare.definitions(conn, reference)
    (admit,) = conn.execute(
        "SELECT pg_get_functiondef(%s::regprocedure)",
        (f'"{reference}".admit_at(uuid[], float8)',),
    ).fetchone()
    assert "interval '1 second'" in admit
    for drift in (
        admit.replace("interval '1 second'", "interval '2 seconds'"),  # one body
        f'CREATE OR REPLACE VIEW "{reference}".workflow_jobs AS SELECT root_id, id, task, '
        "state, parent_id, group_id, group_index, queue, attempts, created_at, started_at, "
        f"finished_at, error ->> 'type' AS error_type FROM \"{reference}\".jobs",
        f"ALTER TABLE \"{reference}\".jobs ALTER COLUMN queue SET DEFAULT 'other'",
        f'ALTER TABLE "{reference}".job_queue ADD COLUMN surprise text',
        f'ALTER TABLE "{reference}".task_limits DROP CONSTRAINT task_limits_burst_check',
        f'DROP INDEX "{reference}".jobs_parent_idx',
        f'CREATE INDEX job_queue_run_at_idx ON "{reference}".job_queue (run_at)',
        f'DROP TRIGGER schedules_changed ON "{reference}".schedules',
        f'UPDATE "{reference}".schema_compat SET oldest_worker_revision = 7',
    ):
        conn.execute(drift)
    diff = schema_compare.differences(before, schema_compare.definitions(conn, reference))
    assert sorted(diff) == [
        "constraint task_limits.task_limits_burst_check",
        "function admit_at(ids uuid[], horizon double precision)",
        "index job_queue_run_at_idx",
        "index jobs_parent_idx",
        "partitioned table jobs",
        "rows of schema_compat",
        "table job_queue",
        "trigger schedules.schedules_changed",
        "view workflow_jobs",
    ]
    body = diff["function admit_at(ids uuid[], horizon double precision)"]
    assert (
        "-        UPDATE {schema}.job_queue AS q SET run_at = now() + interval '1 second'" in body
    )
    assert (
        "+        UPDATE {schema}.job_queue AS q SET run_at = now() + interval '2 seconds'" in body
    )
    assert "+queue text NOT NULL DEFAULT 'other'::text" in diff["partitioned table jobs"]
    assert "+surprise text" in diff["table job_queue"]
    assert diff["index jobs_parent_idx"].endswith("missing from schema.sql")
    assert diff["index job_queue_run_at_idx"].endswith("not in the migrated schema")
