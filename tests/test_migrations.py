"""The migrated schema matches the declared one, and downgrade/upgrade round-trips."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jobqueue import migrate
from jobqueue.schema import metadata


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
                        name != "alembic_version"
                    ),
                },
            )
            return list(compare_metadata(context, md))
    finally:
        engine.dispose()


def _objects(conn: Any, schema: str) -> dict[str, list[str]]:
    return {
        "tables": [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
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
            "chord_members",
            "chords",
            "groups",
            "job_attempts",
            "job_lease",
            "job_queue",
            "jobs",
            "limit_state",
            "schedule_ticks",
            "schedules",
            "schema_compat",
            "task_limits",
            "unique_keys",
            "workers",
        ],
        "views": ["all_jobs", "job_history", "queue_stats", "task_stats", "workflow_jobs"],
        "functions": [
            "admit",
            "advance",
            "enqueue",
            "fail_chord",
            "fail_tree",
            "json_depth",
            "schedules_changed",
            "spawn",
            "uuid7",
            "uuid7_floor",
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
