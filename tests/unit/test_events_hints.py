"""Events without a database: what a NOTIFY payload may say, and the
readable line of each kind of event."""

from __future__ import annotations

import pytest

from jobqueue.events.cli import describe
from jobqueue.events.hints import Hint, MalformedHint, kinds_for, parse, parse_data

JOB = "01a24b31-4bee-7ae3-a9bd-22c2b3e02bd0"
WORKER = "01a24b31-43e4-73ec-bdfc-4823f882bea4"


def test_a_payload_is_read_in_order() -> None:
    payload = f"offline:{WORKER},retried:{JOB}/2,started:{JOB}/3"
    assert parse(payload) == [
        Hint("offline", WORKER, 0),
        Hint("retried", JOB, 2),
        Hint("started", JOB, 3),
    ]


def test_a_job_revoked_before_its_first_attempt_is_a_task_hint() -> None:
    # Attempt 0: the revocation of a job that was never started.
    assert parse(f"revoked:{JOB}/0") == [Hint("revoked", JOB, 0)]


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "nonsense",
        f"started:{JOB}",  # a task kind needs its attempt
        f"online:{WORKER}/1",  # a worker kind has none
        f"exploded:{JOB}/1",
        f"started:{JOB.upper()}/1",
        f"started:{JOB}/1,",
        f"started:{JOB}/1;succeeded:{JOB}/1",
        f"started:{JOB}/1234567890",  # past an int4
        f"started:{JOB}/1," * 200,  # longer than PostgreSQL sends
    ],
)
def test_anything_else_is_refused_whole(payload: str) -> None:
    with pytest.raises(MalformedHint):
        parse(payload)


def test_only_the_kinds_behind_the_wanted_types_are_read() -> None:
    assert kinds_for(None) is None
    assert kinds_for(frozenset({"task-received"})) == {"started"}
    assert kinds_for(frozenset({"task-failed", "worker-offline"})) == {"failed", "offline"}


def test_readable_lines() -> None:
    failed = {
        "type": "task-failed",
        "uuid": JOB,
        "name": "boom",
        "queue": "default",
        "hostname": "w1",
        "retries": 2,
        "runtime": 0.25,
        "exception": "CustomError: bad",
        "timestamp": 0.0,
    }
    line = describe(failed)
    assert f"task-failed      boom[{JOB}] queue=default worker=w1 retries=2" in line
    assert line.endswith("runtime=0.250s exception=CustomError: bad")
    beat = {
        "type": "worker-heartbeat",
        "hostname": "w1",
        "pid": 7,
        "queues": ["a", "b"],
        "active": 3,
        "timestamp": 0.0,
    }
    assert describe(beat).endswith("worker-heartbeat w1 pid=7 queues=a,b active=3")
    missed = describe({"type": "events-missed", "timestamp": 10.0, "since": 5.0})
    assert "were missed" in missed


def test_data_names_its_hints_and_a_bad_header_is_refused() -> None:
    claim = f"\x1dS\x1f{WORKER}\x1f1796625603.5\x1e{JOB}\x1f2\x1fadd\x1fdefault\x1f\x1f"
    data = parse_data(claim, 42)
    assert (data.kind, data.worker, data.at, data.pid) == ("S", WORKER, "1796625603.5", 42)
    assert data.hints() == [Hint("started", JOB, 3)]
    # A completion's success as data, then an outcome that goes as a hint.
    done = f"\x1dC\x1f{WORKER}\x1f1796625603.5\x1e{JOB}\x1f0\x1f0.01\x1f3\x1efailed:{JOB}/1"
    assert parse_data(done, 42).hints() == [Hint("succeeded", JOB, 1), Hint("failed", JOB, 1)]
    for bad in (
        f"\x1dX\x1f{WORKER}\x1f1.5\x1e{JOB}",  # no such kind
        f"\x1dS\x1f{WORKER.upper()}\x1f1.5\x1e{JOB}",
        f"\x1dS\x1f{WORKER}\x1fsoon\x1e{JOB}",
        f"\x1dS\x1f{WORKER}\x1f1.5\x1e",  # no items
        "\x1d" + "x" * 8000,
    ):
        with pytest.raises(MalformedHint):
            parse_data(bad, 42)
