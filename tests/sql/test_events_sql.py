"""The events of the claim and the completion, driven directly: nothing at
all when nobody listens (events_notify() is not even called: the statements
hand it NULL), and once the events lock is held, every claimed and finished
job, as data (a NOTIFY per 7,000 bytes of items, which the listener believes
from a worker's role without reading rows) or as a hint. The forms without events
(job_claim, job_complete_many) refuse while a listener is there (JQ004),
having changed nothing; Store switches to the _events forms and back."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobqueue import migrate, states
from jobqueue.events.hints import DATA, parse, parse_data
from jobqueue.ids import new_id
from jobqueue.sql import channels, lock_classes, queries
from jobqueue.worker.outcome import Outcome, outcome_params

LISTENED = "JQ004"

REVISION = int(migrate.head_revision())


def _claim(
    conn: Any, schema: str, worker: str, limit: int, name: str = "job_claim"
) -> list[tuple[Any, ...]]:
    params = {
        "queues": ["default"],
        "limit": limit,
        "worker_id": worker,
        "revision": REVISION,
        "skip_tasks": [],
    }
    return conn.execute(queries(schema)[name], params).fetchall()


def _complete(
    conn: Any, schema: str, worker: str, rows: list[Any], name: str = "job_complete_many"
) -> Any:
    outcomes = [Outcome(r[0], r[6], states.SUCCESS, result="2") for r in rows]
    statement = queries(schema)[name]
    return conn.execute(statement, outcome_params(outcomes, worker)).fetchone()


def _payloads(spy: psycopg.Connection[Any]) -> list[str]:
    spy.execute("SELECT 1")  # notifications that came meanwhile arrive with a reply
    return [notice.payload for notice in spy.notifies(timeout=0.2)]


def _hints(payload: str) -> list[Any]:
    return parse_data(payload, 0).hints() if payload.startswith(DATA) else parse(payload)


def test_claim_and_completion_notify_only_while_the_lock_is_held(
    jq: Any, dsn: str, schema: str, conn: Any
) -> None:
    worker = new_id()
    with psycopg.connect(dsn, autocommit=True) as spy:
        spy.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channels(schema)["events"])))

        # Nobody listens: no NOTIFY from either claim or the completion, and
        # their events columns are NULL (events_notify() was not called: it
        # would have said 0).
        jq.app.enqueue_many(jq.add, [(1, 1)] * 10)
        rows = _claim(conn, schema, worker, 5)
        assert len(rows) == 5 and {r[-1] for r in rows} == {None}
        more = _claim(conn, schema, worker, 5, "job_claim_events")
        assert len(more) == 5 and {r[-1] for r in more} == {None}
        assert _complete(conn, schema, worker, rows)[-1] is None
        assert _complete(conn, schema, worker, more, "job_complete_many_events")[-1] is None
        assert _claim(conn, schema, worker, 10) == []  # an empty claim
        assert _payloads(spy) == []

        # A listener holds the lock: 250 jobs claimed and finished in one
        # statement each, reported in order.
        with psycopg.connect(dsn, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s, 0)", (lock_classes(schema)["events"],))
            results = jq.app.enqueue_many(jq.add, [(1, 1)] * 250)
            # The claim without events takes nothing, and says why.
            with pytest.raises(psycopg.Error) as refused:
                _claim(conn, schema, worker, 300)
            assert refused.value.sqlstate == LISTENED
            waiting = f'SELECT count(*) FROM "{schema}".job_queue'
            assert conn.execute(waiting).fetchone()[0] == 250
            rows = _claim(conn, schema, worker, 300, "job_claim_events")
            started = _payloads(spy)
            assert len(rows) == 250 and {r[-1] for r in rows} == {len(started)}
            with pytest.raises(psycopg.Error) as refused:
                _complete(conn, schema, worker, rows)
            assert refused.value.sqlstate == LISTENED
            leases = f'SELECT count(*) FROM "{schema}".job_lease'
            assert conn.execute(leases).fetchone()[0] == 250
            row = _complete(conn, schema, worker, rows, "job_complete_many_events")
            succeeded = _payloads(spy)
            assert row[0] == 250 and row[-1] == len(succeeded)
        assert _claim(conn, schema, worker, 10) == []
        assert _payloads(spy) == []  # the lock is gone with its session

    ids = {r.id for r in results}
    claimed = [(r[0], r[6]) for r in rows]
    for payloads, kind, order in ((started, "S", claimed), (succeeded, "C", None)):
        datas = [parse_data(p, 0) for p in payloads]
        # 30 items a NOTIFY (of at most 260 bytes each).
        sizes = [len(d.body.encode()) for d in datas]
        assert len(datas) == 9 and all(size < 8000 for size in sizes)
        assert sum(len(d.body.split("\x1e")) for d in datas) == 250
        assert {(d.kind, d.worker) for d in datas} == {(kind, worker)}
        hints = [h for d in datas for h in d.hints()]
        assert {h.id for h in hints} == ids and {h.attempt for h in hints} == {1}
        if order is not None:  # in claim order
            assert [(h.id, h.attempt) for h in hints] == order
        items = [i.split("\x1f") for d in datas for i in d.body.split("\x1e")]
        if kind == "S":  # retries, task, queue, root and parent ids ('' for none)
            assert {tuple(i[1:]) for i in items} == {("0", "add", "default", "", "")}
        else:  # retries, run time, result
            assert {(i[1], i[3]) for i in items} == {("0", "2")}
            assert all(float(i[2]) >= 0 for i in items)
        assert all(len(p.encode()) < 8000 for p in payloads)


def test_the_store_switches_forms_as_listeners_come_and_go(
    jq: Any, dsn: str, schema: str, conn: Any
) -> None:
    """Store.claim and Store.complete run the form without events while
    nobody listens, and the _events form (redoing the refused statement)
    from the moment a listener is there until a statement says it left."""
    store, worker = jq.app.store, new_id()
    spy = psycopg.connect(dsn, autocommit=True)
    spy.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channels(schema)["events"])))

    def cycle(n: int) -> list[str]:
        jq.app.enqueue_many(jq.add, [(1, 1)] * n)
        rows = store.claim(conn, ["default"], 100, worker, REVISION)
        outcomes = [Outcome(r[0], r[6], states.SUCCESS, result="2") for r in rows]
        assert store.complete(conn, outcome_params(outcomes, worker), []) == []
        return [h.kind for p in _payloads(spy) for h in _hints(p)]

    with spy:
        assert cycle(3) == []
        assert not any(store._reporting.values())
        with psycopg.connect(dsn, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s, 0)", (lock_classes(schema)["events"],))
            assert cycle(3) == ["started"] * 3 + ["succeeded"] * 3  # each refused, then redone
            assert store._reporting == {"job_claim": True, "job_complete_many": True}
            assert cycle(2) == ["started"] * 2 + ["succeeded"] * 2
        assert cycle(2) == []  # the _events forms, which find nobody listening...
        assert store._reporting == {"job_claim": False, "job_complete_many": False}
        assert cycle(2) == []  # ...and back to the forms without events
