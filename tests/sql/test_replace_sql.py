"""job_replace driven directly: only the attempt that holds the lease writes a
replacement, and writing it again changes nothing."""

from __future__ import annotations

import json
from typing import Any

from jobqueue import states
from jobqueue.freezer import freeze_replacement
from jobqueue.ids import new_id
from jobqueue.serialization import dump_replaced
from jobqueue.sql import queries
from jobqueue.store import Store
from jobqueue.worker.outcome import Outcome, outcome_params
from tests.sql.test_sql_paths import _claim


def _replaced(jq: Any, job_id: str, attempt: int) -> Outcome:
    params, result = freeze_replacement(jq.app, jq.add.s(20, 22) | jq.add.s(1), job_id, job_id, {})
    encoded = dump_replaced(result)
    return Outcome(job_id, attempt, states.SUCCESS, result=encoded, replacement=params)


def test_only_the_lease_holder_writes_the_replacement(jq: Any, schema: str, conn: Any) -> None:
    result = jq.add.delay(1, 2)
    first, second = new_id(), new_id()
    [(job_id, *_)] = _claim(conn, schema, first)
    job_id = str(job_id)
    conn.execute(queries(schema)["job_release_many"], {"ids": [job_id], "worker_id": first})
    _claim(conn, schema, second)
    store = Store(jq.app.db)

    def children() -> int:
        row = conn.execute(
            f'SELECT count(*) FROM "{schema}".jobs WHERE parent_id = %s', [job_id]
        ).fetchone()
        return int(row[0])

    late = _replaced(jq, job_id, 1)
    assert store.complete(conn, outcome_params([late], first), []) == [job_id]  # refused
    assert children() == 0 and result.state == states.STARTED
    holder = _replaced(jq, job_id, 1)
    assert store.complete(conn, outcome_params([holder], second), []) == []
    assert children() == 1
    assert store.complete(conn, outcome_params([holder], second), []) == [job_id]  # again
    assert children() == 1
    assert result.state == states.SUCCESS
    first_step = conn.execute(
        f'SELECT task, args, state FROM "{schema}".jobs WHERE parent_id = %s', [job_id]
    ).fetchone()
    assert first_step == ("add", [20, 22], states.PENDING)  # waiting for a worker
    pointer = result.result  # the replacement's result: the chain's last step, not yet made
    assert pointer.id == holder_result_id(holder) and pointer.state == states.PENDING


def holder_result_id(outcome: Outcome) -> str:
    return str(json.loads(outcome.result or "{}")["by"]["id"])
