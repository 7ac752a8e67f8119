"""The maintenance sweeps of dependencies and batch members look at a bounded
slice per round and go on where the last one stopped, so a backlog of
millions costs a round a bounded amount."""

from __future__ import annotations

from typing import Any


def _finish_behind_its_back(conn: Any, schema: str, ids: list[str]) -> None:
    """Jobs finished as a worker of an earlier release finishes them: their
    waiting rows gone, SUCCESS, nothing counted."""
    conn.execute(f'DELETE FROM "{schema}".job_queue WHERE job_id = ANY(%s::uuid[])', [ids])
    conn.execute(
        f"UPDATE \"{schema}\".jobs SET state = 'SUCCESS', finished_at = now() "
        "WHERE id = ANY(%s::uuid[])",
        [ids],
    )


def test_dependencies_sweep_goes_on_where_it_stopped(schema: str, conn: Any) -> None:
    q = f'"{schema}"'
    deps = sorted(
        str(conn.execute(f"SELECT {q}.enqueue('add', '[1, 1]')").fetchone()[0]) for _ in range(3)
    )
    dependent = conn.execute(
        f"SELECT {q}.enqueue('add', '[2, 2]', depends_on => %s::uuid[])", [deps]
    ).fetchone()[0]
    _finish_behind_its_back(conn, schema, deps)
    sweep = f"SELECT counted, next_id::text FROM {q}.dependencies_sweep(%s::uuid, 2)"
    assert conn.execute(sweep, [None]).fetchone() == (2, deps[1])
    remaining = f"SELECT remaining FROM {q}.job_waits WHERE job_id = %s"
    assert conn.execute(remaining, [dependent]).fetchone() == (1,)
    assert conn.execute(sweep, [deps[1]]).fetchone() == (1, None)  # the rest, then from the start
    assert conn.execute(remaining, [dependent]).fetchone() is None
    due = conn.execute(
        f"SELECT run_at <= now() FROM {q}.job_queue WHERE job_id = %s", [dependent]
    ).fetchone()
    assert due == (True,)


def test_batches_sweep_goes_on_where_it_stopped(schema: str, conn: Any) -> None:
    q = f'"{schema}"'
    batch = conn.execute(f"SELECT {q}.batch_open()").fetchone()[0]
    members = sorted(
        str(conn.execute(f"SELECT {q}.enqueue('add', '[1, 1]')").fetchone()[0]) for _ in range(3)
    )
    conn.execute(f"SELECT {q}.batch_add(%s, %s::uuid[])", [batch, members])
    conn.execute(f"SELECT {q}.batch_close(%s)", [batch])
    _finish_behind_its_back(conn, schema, members)
    sweep = f"SELECT counted, next_id::text FROM {q}.batches_sweep(%s::uuid, 2)"
    assert conn.execute(sweep, [None]).fetchone() == (2, members[1])
    state = f"SELECT state, pending FROM {q}.batch_progress WHERE id = %s"
    assert conn.execute(state, [batch]).fetchone() == ("CLOSED", 1)
    assert conn.execute(sweep, [members[1]]).fetchone() == (1, None)
    assert conn.execute(state, [batch]).fetchone() == ("DONE", 0)
