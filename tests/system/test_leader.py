"""One maintenance leader: elected by the heartbeat, replaced when it goes."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import wait_for

FAST = ("--heartbeat-interval", "0.2", "--lease-ttl", "2")


def _leader(conn: Any, schema: str) -> str | None:
    row = conn.execute(
        f'SELECT l.worker_id::text FROM "{schema}".maintenance_leader AS l '
        f'JOIN "{schema}".workers AS w ON w.id = l.worker_id'
    ).fetchone()
    return None if row is None else str(row[0])


def _worker_ids(conn: Any, schema: str) -> dict[int, str]:
    rows = conn.execute(f'SELECT pid, id::text FROM "{schema}".workers').fetchall()
    return {int(pid): str(worker_id) for pid, worker_id in rows}


def test_one_worker_leads_and_a_successor_takes_over_when_it_goes(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    workers = [start_worker("--concurrency", "1", *FAST) for _ in range(3)]
    ids = _worker_ids(conn, schema)
    first = wait_for(lambda: _leader(conn, schema), 20, "a leader")
    leading = next(w for w in workers if ids[w.proc.pid] == first)
    others = [w for w in workers if w is not leading]
    # Only the leader runs maintenance: the others never say they lead.
    wait_for(lambda: "is now the maintenance leader" in leading.log, 20, "the leader's log")
    assert all("maintenance leader" not in w.log for w in others)

    # A clean exit hands the lease over at once: the next heartbeat takes it.
    started = time.monotonic()
    assert leading.terminate() == 0
    second = wait_for(
        lambda: (_leader(conn, schema) or first) != first and _leader(conn, schema),
        10,
        "a successor",
    )
    clean = time.monotonic() - started
    assert second in {ids[w.proc.pid] for w in others}

    # A killed leader is replaced once its short lease lapses (three beats).
    killed = next(w for w in others if ids[w.proc.pid] == second)
    survivor = next(w for w in others if w is not killed)
    started = time.monotonic()
    killed.kill()
    wait_for(lambda: _leader(conn, schema) == ids[survivor.proc.pid], 10, "the survivor to lead")
    failover = time.monotonic() - started
    print(f"leader handover: clean exit {clean:.2f}s, kill -9 {failover:.2f}s (heartbeat 0.2s)")
    assert failover < 3.0  # lease 0.6 s plus a heartbeat, with room for a slow machine
    assert jq.add.delay(2, 2).get(timeout=20) == 4  # and it still runs jobs
