"""The SQL that docs/deployment.md and keda.yaml give operators runs against a
freshly migrated schema and answers what the docs say it answers."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from tests.deploy_examples import doc_section, keda_queries, sql_blocks, statements


def in_schema(sql: str, schema: str) -> str:
    return re.sub(r"\bjobqueue\.", f"{schema}.", sql)


def run(conn: psycopg.Connection[Any], sql: str, schema: str) -> list[tuple[Any, ...]]:
    return conn.execute(in_schema(sql, schema)).fetchall()


def test_the_autoscaling_sql_counts_due_jobs_only(dsn: str, schema: str) -> None:
    (per_queue, single) = sql_blocks(doc_section("Autoscaling"))
    backlog, oldest = statements(single)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Nothing ever enqueued: still one row, 0, for a scaler that wants a number.
        assert run(conn, backlog, schema) == [(0,)]
        assert run(conn, oldest, schema) == [(0,)]
        for query in keda_queries():
            assert run(conn, query, schema) == [(0,)]
        conn.execute(
            in_schema(
                "SELECT jobqueue.enqueue('t', run_at => now() - interval '90 seconds');"
                "SELECT jobqueue.enqueue('t', queue => 'email');"
                "SELECT jobqueue.enqueue('t', run_at => now() + interval '1 day');"
                "SELECT jobqueue.enqueue('t', queue => 'other');",
                schema,
            )
        )
        assert run(conn, backlog, schema) == [(2,)]  # not the far-future one, not 'other'
        (seconds,) = run(conn, oldest, schema)[0]
        assert 90 <= seconds < 150
        assert [r[0] for r in run(conn, keda_queries()[0], schema)] == [2]
        assert 90 <= run(conn, keda_queries()[1], schema)[0][0] < 150
        rows = {r[0]: r[1:] for r in run(conn, per_queue, schema)}
        assert rows["default"][:3] == (1, 1, 0)  # due, scheduled, started
        assert rows["email"][:3] == (1, 0, 0)


def test_the_backup_partition_list(dsn: str, schema: str) -> None:
    (query,) = sql_blocks(doc_section("Backups and restores"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert run(conn, query, schema) == [(None,)]  # only partitions of now and ahead
        # A migrated schema's first partition ("legacy": every id before the
        # partitions of the days ahead), as if its range had ended days ago.
        run(
            conn,
            "UPDATE jobqueue.history_partitions SET ends_at = now() - interval '3 days'"
            " WHERE starts_at IS NULL RETURNING name",
            schema,
        )
        ((listed,),) = run(conn, query, schema)
        assert sorted(listed.split()) == [
            f"--exclude-table-data={schema}.job_attempts_legacy",
            f"--exclude-table-data={schema}.jobs_legacy",
        ]
        # A job of that range still waiting: the partition must be dumped whole.
        run(
            conn,
            "SELECT jobqueue.enqueue('t', id => jobqueue.uuid7_floor(now() - interval '4 days'))",
            schema,
        )
        assert run(conn, query, schema) == [(None,)]
