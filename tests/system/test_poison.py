"""Jobs a worker cannot run, and what a slot does with them.

A job whose stored payload cannot be decoded or validated, one that expired
while it waited for a slot, and any fault around a job in a pool must end
that job (reported exactly once) and leave the slot running the next one.
The pool tests drive the pools directly (no database); the worker tests write
the bad rows with SQL and run a real worker.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from jobqueue import JobQueue, SoftTimeLimitExceeded, states
from jobqueue.exceptions import MalformedJob
from jobqueue.serialization import MAX_NESTING, dump_arguments, loads
from jobqueue.worker.executor import precheck
from jobqueue.worker.job import Job
from jobqueue.worker.outcome import Outcome
from jobqueue.worker.pools.local import LocalQueue
from jobqueue.worker.pools.threads import ThreadPool
from tests.conftest import wait_for


def _row(job_id: str, task: str, args: str = "[]", options: str = "{}", **extra: Any) -> Any:
    """A job_claim row: 12 columns, or 13 when ``expires_in`` is given."""
    head = (job_id, task, "default", args, "{}", options, 1, None, None, None, False, False)
    return head + ((extra["expires_in"],) if "expires_in" in extra else ())


class _Pool:
    """A ThreadPool on an app that never connects, collecting what it reports."""

    def __init__(self, app: JobQueue, size: int = 1) -> None:
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.pool = ThreadPool(app, size=size, hostname="test", report=self.outcomes.put)
        self.pool.start()

    def next(self, timeout: float = 10.0) -> Outcome:
        return self.outcomes.get(timeout=timeout)

    def nothing_more(self) -> bool:
        return self.outcomes.empty()


@pytest.fixture
def app() -> Any:
    # No DSN is ever used: the pools do not touch the database.
    application = JobQueue("postgresql://unused.invalid/none", auto_migrate=False)
    yield application


# -- D: the claim's expiry, and taking back a prefetched job --------------------------


def test_a_claim_row_with_or_without_expires_in_gives_a_monotonic_deadline() -> None:
    plain = Job.from_row(_row("a", "t"))
    assert plain.expires_deadline is None and not plain.has_expired()
    unbounded = Job.from_row(_row("b", "t", expires_in=None))
    assert unbounded.expires_deadline is None
    before = time.monotonic()
    soon = Job.from_row(_row("c", "t", expires_in=60.0))
    assert soon.expires_deadline is not None
    assert before + 60.0 <= soon.expires_deadline <= time.monotonic() + 60.0
    assert not soon.has_expired()
    assert Job.from_row(_row("d", "t", expires_in=-0.5)).has_expired()


def test_local_queue_remove_takes_back_only_a_job_not_yet_started() -> None:
    local = LocalQueue()
    first, second, third = (Job.from_row(_row(i, "t")) for i in ("1", "2", "3"))
    for job in (first, second, third):
        local.put(job)
    local.close(1)
    assert local.remove("2") is second
    assert local.remove("2") is None  # already taken back
    assert local.get() is first  # started: no longer in the queue
    assert local.remove("1") is None
    assert local.remove("unknown") is None
    assert local.get() is third
    assert local.get() is None  # the slot's stop marker is kept


def test_the_thread_pool_discards_a_prefetched_job(app: JobQueue) -> None:
    gate = threading.Event()
    ran: list[str] = []

    @app.task(name="wait_gate")
    def wait_gate(tag: str) -> str:
        ran.append(tag)
        gate.wait(10)
        return tag

    pool = _Pool(app)
    pool.pool.submit(Job.from_row(_row("busy", "wait_gate", '["busy"]')))
    wait_for(lambda: ran == ["busy"], what="the slot to start the first job")
    revoked = Job.from_row(_row("prefetched", "wait_gate", '["prefetched"]'))
    pool.pool.submit(revoked)
    pool.pool.submit(Job.from_row(_row("next", "wait_gate", '["next"]')))
    assert pool.pool.discard("prefetched") is revoked
    assert pool.pool.discard("busy") is None  # running: not the pool's to take back
    gate.set()
    assert [pool.next().job_id, pool.next().job_id] == ["busy", "next"]
    assert ran == ["busy", "next"]
    assert pool.nothing_more()


def test_a_job_that_expires_while_it_waits_for_a_slot_is_revoked_unrun(app: JobQueue) -> None:
    gate = threading.Event()
    ran: list[str] = []

    @app.task(name="wait_gate")
    def wait_gate(tag: str) -> str:
        ran.append(tag)
        gate.wait(10)
        return tag

    pool = _Pool(app)
    pool.pool.submit(Job.from_row(_row("busy", "wait_gate", '["busy"]')))
    wait_for(lambda: ran == ["busy"], what="the slot to start the first job")
    # Not expired when claimed; it expires while the only slot is busy.
    stale = Job.from_row(_row("stale", "wait_gate", '["stale"]', expires_in=0.2))
    fresh = Job.from_row(_row("fresh", "wait_gate", '["fresh"]', expires_in=3600.0))
    pool.pool.submit(stale)
    pool.pool.submit(fresh)
    wait_for(stale.has_expired, what="the prefetched job's expiry")
    gate.set()
    outcomes = {o.job_id: o for o in (pool.next(), pool.next(), pool.next())}
    assert outcomes["busy"].state == states.SUCCESS
    assert outcomes["fresh"].state == states.SUCCESS
    assert outcomes["stale"].state == states.REVOKED
    error = loads(outcomes["stale"].error or "null")
    assert error["type"] == "TaskRevokedError" and "expired" in error["message"]
    assert ran == ["busy", "fresh"]  # the expired job never ran
    assert pool.nothing_more()


# -- A: jobs no attempt could run, and faults around a job in a slot --------------------


def _deep(levels: int) -> str:
    """A JSON array nested ``levels`` deep."""
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("args", "kwargs", "options", "says"),
    [
        (_deep(3000), "{}", "{}", "too deeply to decode"),
        ('{"a": 1}', "{}", "{}", "args must be a JSON array, got an object"),
        ("[]", "[1]", "{}", "kwargs must be a JSON object, got an array"),
        ("[]", "{}", "[]", "options must be a JSON object, got an array"),
        ("[]", "{}", '"x"', "options must be a JSON object, got a string"),
        ("[]", "{}", '{"soft_time_limit": "abc"}', "soft_time_limit must be a positive finite"),
        ("[]", "{}", '{"time_limit": 0}', "time_limit must be a positive finite"),
        ("[]", "{}", '{"time_limit": -1.5}', "time_limit must be a positive finite"),
        ("[]", "{}", '{"time_limit": true}', "time_limit must be a positive finite"),
        ("[]", "{}", '{"time_limit": 1e400}', "time_limit must be a positive finite"),
        ("[]", "{}", '{"soft_time_limit": 1' + "0" * 400 + "}", "soft_time_limit must be"),
        ("[1,]", "{}", "{}", "not valid JSON"),
    ],
)
def test_a_payload_no_attempt_could_run_is_refused_before_it_runs(
    args: str, kwargs: str, options: str, says: str
) -> None:
    row = ("bad", "echo", "default", args, kwargs, options, 1, None, None, None, False, False)
    job = Job.from_row(row)
    outcome = precheck(job)
    assert outcome is not None and outcome.state == states.FAILURE and outcome.delay is None
    error = loads(outcome.error or "null")
    assert (error["module"], error["type"]) == ("jobqueue.exceptions", "MalformedJob")
    assert says in error["message"] and "job bad of task 'echo' cannot" in error["message"]
    with pytest.raises(MalformedJob, match="cannot"):
        job.limits(None)  # anything else that reads it is refused the same way


def test_a_sound_payload_passes_the_check() -> None:
    options = '{"soft_time_limit": 1, "time_limit": 2.5, "queue": "q"}'
    row = ("ok", "echo", "default", "[1, [2]]", '{"k": {}}', options, 1, None, None, None)
    job = Job.from_row((*row, False, False))
    assert precheck(job) is None
    assert (job.args, job.kwargs, job.limits(None)) == ([1, [2]], {"k": {}}, (1, 2.5))


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")


class _LimitsFail(Job):
    """A job whose limits cannot be read: a fault in the slot's path, not the task's."""

    def limits(self, task: Any) -> tuple[float | None, float | None]:
        raise _Unprintable("limits")


def test_no_fault_around_a_job_ends_a_thread_pool_slot(app: JobQueue) -> None:
    """One slot, seven jobs that used to kill it (or jam it STARTED forever): each
    is reported exactly once, as a FAILURE of its own, and the job after them runs."""
    ran: list[str] = []

    @app.task(name="echo")
    def echo(*args: Any) -> list[Any]:
        ran.append("echo")
        return list(args)

    @app.task(name="unprintable")
    def unprintable() -> None:
        raise _Unprintable("x")

    @app.task(name="deep_result")
    def deep_result() -> Any:
        value: Any = 1
        for _ in range(5000):
            value = [value]
        return value  # too deep for the JSON encoder: RecursionError

    def job(job_id: str, task: str, args: str = "[]", options: str = "{}") -> Job:
        return Job.from_row(_row(job_id, task, args, options))

    bad = [
        job("options-array", "echo", options="[]"),
        job("soft-abc", "echo", options='{"soft_time_limit": "abc"}'),
        job("deep-args", "echo", args=_deep(3000)),
        job("args-object", "echo", args='{"a": 1}'),
        job("unprintable", "unprintable"),
        job("deep-result", "deep_result"),
        _LimitsFail("limits-fail", "echo", "default", "[[],{},{}]", 1, None, None, None),
    ]
    pool = _Pool(app)
    for item in bad:
        pool.pool.submit(item)
    pool.pool.submit(job("good", "echo", args="[1, 2]"))
    outcomes: list[Outcome] = []
    while not outcomes or outcomes[-1].job_id != "good":
        outcomes.append(pool.next())
    assert pool.nothing_more()
    assert [o.job_id for o in outcomes] == [j.id for j in bad] + ["good"]  # each exactly once
    assert outcomes[-1].state == states.SUCCESS and loads(outcomes[-1].result or "") == [1, 2]
    assert ran == ["echo"]  # none of the malformed echo jobs ran
    errors = {o.job_id: loads(o.error or "null") for o in outcomes[:-1]}
    assert all(o.state == states.FAILURE and o.delay is None for o in outcomes[:-1])
    for job_id in ("options-array", "soft-abc", "deep-args", "args-object"):
        assert errors[job_id]["type"] == "MalformedJob", errors[job_id]
    assert errors["unprintable"]["type"] == "_Unprintable"
    assert "str() failed" in errors["unprintable"]["message"]
    assert errors["deep-result"]["type"] == "TypeError"
    assert "not JSON serializable" in errors["deep-result"]["message"]
    assert errors["limits-fail"]["type"] == "_Unprintable"  # the safety net's FAILURE


def test_a_time_limit_of_centuries_leaves_the_other_limits_working(app: JobQueue) -> None:
    """Waiting for a limit centuries away overflowed the watchdog's wait and killed
    its thread: no soft or hard limit fired again in that worker."""

    @app.task(name="spin")
    def spin(seconds: float) -> str:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:  # checkpoints for the interrupt
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            return "interrupted"
        return "not interrupted"

    pool = _Pool(app)
    pool.pool.submit(Job.from_row(_row("centuries", "spin", "[0.3]", '{"time_limit": 1e12}')))
    assert loads(pool.next().result or "") == "not interrupted"
    pool.pool.submit(Job.from_row(_row("soft", "spin", "[10]", '{"soft_time_limit": 0.2}')))
    outcome = pool.next(timeout=20)
    assert (outcome.job_id, loads(outcome.result or "")) == ("soft", "interrupted")


def _job_row(conn: Any, schema: str, job_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT state, attempts, error ->> 'type', error ->> 'message' "
        f'FROM "{schema}".jobs WHERE id = %s',
        (job_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_malformed_rows_fail_at_once_and_the_worker_goes_on(
    pool: str, jq: Any, start_worker: Any, conn: Any, schema: str
) -> None:
    """Rows written by SQL that no worker can run: arguments nested 3,000 or 990
    deep, args that are not an array, options that are not an object or hold a
    time limit that is not a number. Each fails on its first attempt, without
    retries, and the worker's only slot goes on to the next job."""
    s = f'"{schema}"'
    # One-row jobs (their payload waits in job_queue) and jobs with a record.
    one_row = {"deep-3000": _deep(3000), "deep-990": _deep(990), "args-object": '{"a": 1}'}
    ids: dict[str, str] = {}
    for name, args in one_row.items():
        ids[name] = jq.echo.delay(name).id
        conn.execute(
            f"UPDATE {s}.job_queue SET args = %s::jsonb WHERE job_id = %s", (args, ids[name])
        )
    recorded = {"options-array": "[]", "soft-abc": '{"soft_time_limit": "abc"}'}
    for name, options in recorded.items():
        (job_id,) = conn.execute(
            f"SELECT {s}.enqueue('echo', %s::jsonb)::text", (f'["{name}"]',)
        ).fetchone()
        conn.execute(f"UPDATE {s}.jobs SET options = %s::jsonb WHERE id = %s", (options, job_id))
        ids[name] = job_id

    worker = start_worker("--pool", pool, "--concurrency", "1")
    assert jq.add.delay(1, 2).get(timeout=60) == 3  # the only slot still serves
    for name, job_id in ids.items():
        state, attempts, error_type, message = _job_row(conn, schema, job_id)
        assert (state, attempts, error_type) == (states.FAILURE, 1, "MalformedJob"), (name, message)
        assert f"job {job_id} of task 'echo' cannot" in message
    assert worker.proc.poll() is None


# -- the producer's side: arguments nested deeper than a worker decodes ---------------


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_the_producer_refuses_arguments_nested_deeper_than_max_nesting() -> None:
    inside = MAX_NESTING - 1  # the args array itself is the first level
    args_text, _ = dump_arguments("t", (_nested(inside),), {})
    assert args_text.count("[") == MAX_NESTING
    for args, kwargs, culprit in [
        ((1, _nested(inside + 1)), {}, "argument 1"),
        ((), {"deep": {"a": _nested(988)}}, "keyword argument 'deep'"),
        ((_nested(3000),), {}, "argument 0"),  # deeper than Python's own encoder goes
    ]:
        with pytest.raises(ValueError, match="nests lists and dicts too deeply") as raised:
            dump_arguments("proj.deep", args, kwargs)
        assert f"{culprit} of task 'proj.deep'" in str(raised.value)
        assert "MAX_NESTING" in str(raised.value)
    # Brackets inside strings are text, and wide is not deep.
    dump_arguments("t", ("[" * 5000, {"k": "]" * 5000}), {"s": "{[" * 3000})
    dump_arguments("t", ([{"id": i, "tags": ["a", "[b"]} for i in range(2000)],), {})


def test_delay_refuses_deep_arguments_and_writes_nothing(jq: Any, conn: Any, schema: str) -> None:
    with pytest.raises(ValueError, match="argument 0 of task 'echo' nests lists and dicts"):
        jq.echo.delay(_nested(988))
    assert conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone() == (0,)
