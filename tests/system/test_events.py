"""Events (jobqueue/events): ``jobqueue events --json`` run as a user would,
watching real workers; the Python API where the test needs the listener's
insides (its connections); and the promise that nobody listening means no
NOTIFY on the events channel at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobqueue import states
from jobqueue.events.hints import DATA, parse, parse_data
from jobqueue.roles import grant
from jobqueue.sql import channels, lock_classes
from tests.conftest import ROOT, wait_for
from tests.system.test_roles import make_role  # noqa: F401 (a fixture)


class EventsCommand:
    """``jobqueue events --json [options]`` in a subprocess; threads collect
    its events (stdout) and its messages (stderr)."""

    def __init__(self, dsn: str, schema: str, *options: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JOBQUEUE_DSN", None)
        command = [sys.executable, "-m", "jobqueue", "--dsn", dsn, "--schema", schema, "events"]
        self.proc = subprocess.Popen(
            [*command, "--json", *options],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        wait_for(self._listening, 30, "jobqueue events to listen")

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"jobqueue events exited: {''.join(self.stderr)}")
        return any("listening" in line for line in self.stderr)

    def of(self, job_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("uuid") == job_id]

    def types_of(self, job_id: str) -> list[str]:
        return [e["type"] for e in self.of(job_id)]

    def wait_types(self, job_id: str, *types: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Until the job's events include ``types`` in that order."""

        def seen() -> bool:
            have = iter(self.types_of(job_id))
            return all(t in have for t in types)  # a subsequence, in order

        wait_for(seen, timeout, f"events {types} of job {job_id} (got {self.types_of(job_id)})")
        return self.of(job_id)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def events_command(dsn: str, schema: str) -> Iterator[Callable[..., EventsCommand]]:
    started: list[EventsCommand] = []

    def start(*options: str) -> EventsCommand:
        command = EventsCommand(dsn, schema, *options)
        started.append(command)
        return command

    yield start
    for command in started:
        command.stop()


def _one(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, (kind, events)
    return found[0]


def test_the_command_reports_jobs_and_workers(
    jq: Any, conn: Any, start_worker: Any, events_command: Any
) -> None:
    watch = events_command()
    worker = start_worker("-n", "events-w1", "--heartbeat-interval", "0.3", "--concurrency", "4")
    ok = jq.add.delay(1, 2)
    bad = jq.boom.delay("bad news")
    flaky = jq.flaky.delay(1)  # fails once (retried after 0.5 s), then succeeds
    later = jq.add.apply_async((5, 5), countdown=300)
    later.revoke()  # waiting: revoked at once
    running = jq.ticking.delay(60)

    events = watch.wait_types(ok.id, "task-received", "task-started", "task-succeeded")
    assert [e["type"] for e in events] == ["task-received", "task-started", "task-succeeded"]
    succeeded = events[-1]
    assert succeeded["name"] == "add" and succeeded["queue"] == "default"
    assert succeeded["hostname"] == "events-w1" and succeeded["result"] == "3"
    assert succeeded["retries"] == 0 and 0 <= succeeded["runtime"] < 30
    assert succeeded["timestamp"] >= events[0]["timestamp"]

    failed = _one(watch.wait_types(bad.id, "task-failed"), "task-failed")
    assert failed["exception"] == "CustomError: bad news"
    assert "Traceback" in failed["traceback"] and failed["runtime"] >= 0

    events = watch.wait_types(
        flaky.id, "task-started", "task-retried", "task-started", "task-succeeded"
    )
    retried = _one(events, "task-retried")
    assert retried["exception"] == "OSError: transient failure 1" and retried["retries"] == 0
    # The time of the next attempt, while the job still waits for it.
    assert retried.get("eta") is None or retried["eta"] > retried["timestamp"]
    assert events[-1]["retries"] == 1 and events[-1]["result"] == '"ok after 1 retries"'

    revoked = _one(watch.wait_types(later.id, "task-revoked"), "task-revoked")
    assert revoked["terminated"] is False and revoked["hostname"] is None

    watch.wait_types(running.id, "task-started")
    running.revoke(terminate=True)
    revoked = _one(watch.wait_types(running.id, "task-revoked"), "task-revoked")
    assert revoked["terminated"] is True and revoked["hostname"] == "events-w1"

    def worker_events(kind: str) -> list[dict[str, Any]]:
        return [e for e in watch.events if e["type"] == kind and e["hostname"] == "events-w1"]

    wait_for(lambda: len(worker_events("worker-heartbeat")) >= 2, 30, "heartbeats")
    beat = worker_events("worker-heartbeat")[0]
    assert beat["pid"] == worker.proc.pid and beat["queues"] == ["default"]
    assert beat["sw_ident"] == "jobqueue" and isinstance(beat["active"], int)
    assert len(worker_events("worker-online")) == 1
    worker.terminate()
    offline = wait_for(lambda: worker_events("worker-offline"), 30, "worker-offline")
    assert offline[0]["worker_id"] == beat["worker_id"] and offline[0]["pid"] == worker.proc.pid
    assert watch.proc.poll() is None


def test_filters_by_queue_task_and_type(jq: Any, start_worker: Any, events_command: Any) -> None:
    everything = events_command()
    q1_add = events_command("--queue", "q1", "--task", "add")
    failures = events_command("--type", "task-failed", "--queue", "q1", "--queue", "q2")
    start_worker("-Q", "q1,q2", "--heartbeat-interval", "0.5")
    wanted = jq.add.apply_async((1, 1), queue="q1")
    other_queue = jq.add.apply_async((2, 2), queue="q2")
    other_task = jq.echo.apply_async((3,), queue="q1")
    failing = jq.boom.apply_async(("x",), queue="q2")
    for job in (wanted, other_queue, other_task, failing):
        everything.wait_types(job.id, "task-started")
    everything.wait_types(failing.id, "task-failed")
    last = jq.add.apply_async((4, 4), queue="q1")  # after everything else, on q1
    q1_add.wait_types(last.id, "task-succeeded")
    everything.wait_types(last.id, "task-succeeded")

    assert q1_add.types_of(wanted.id) == ["task-received", "task-started", "task-succeeded"]
    assert {e.get("uuid") for e in q1_add.events if e["type"].startswith("task-")} == {
        wanted.id,
        last.id,
    }
    # Workers serving q1 still show (the task filter is about tasks).
    wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in q1_add.events), 20, "a heartbeat")
    wait_for(lambda: failures.events, 20, "the failure")
    assert [(e["type"], e["uuid"]) for e in failures.events] == [("task-failed", failing.id)]


def test_a_malformed_or_false_notification_is_skipped(
    jq: Any, dsn: str, schema: str, start_worker: Any, events_command: Any
) -> None:
    watch = events_command()
    channel = channels(schema)["events"]
    gone = str(uuid.uuid4())
    waiting = jq.add.apply_async((1, 1), countdown=300)  # never started: nothing to confirm
    payloads = [
        "nonsense",
        "started:not-a-uuid/1",
        f"exploded:{gone}/1",
        f"started:{gone.upper()}/1",
        f"online:{gone}/1",
        "x" * 7999,
        f"started:{gone}/1",  # well formed, but no such job: skipped quietly
        f"succeeded:{waiting.id}/1",  # a job that did not succeed: not borne out
        f"offline:{gone}",  # a worker never seen and not registered: reported, unnamed
    ]
    with psycopg.connect(dsn, autocommit=True) as sender:
        for payload in payloads:
            sender.execute("SELECT pg_notify(%s, %s)", (channel, payload))
    start_worker()
    result = jq.add.delay(20, 22)
    assert result.get(timeout=30) == 42
    watch.wait_types(result.id, "task-received", "task-started", "task-succeeded")
    assert watch.proc.poll() is None
    skipped = [line for line in watch.stderr if "did not send" in line]
    assert len(skipped) == 6, watch.stderr
    assert not watch.of(gone) and not watch.of(waiting.id)
    offline = [e for e in watch.events if e["type"] == "worker-offline"]
    assert [(e["worker_id"], e["hostname"]) for e in offline] == [(gone, None)]


def test_nothing_is_sent_on_the_events_channel_when_nobody_listens(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    """A plain LISTEN does not count as a listener (only one holding the
    events lock does): with none, claims, completions (success, failure,
    retry, revoke), revocations, heartbeats and a worker's start and stop
    send nothing; once the lock is held, the same work does."""
    channel = channels(schema)["events"]
    with psycopg.connect(dsn, autocommit=True) as spy:
        spy.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        worker = start_worker("--heartbeat-interval", "0.2", "--concurrency", "2")
        results = [jq.add.delay(1, 1), jq.boom.delay("x"), jq.flaky.delay(1)]
        running = jq.ticking.delay(60)
        jq.add.apply_async((1, 2), countdown=300).revoke()
        for result in results:
            wait_for(lambda r=result: r.state in states.READY_STATES, 30, "the jobs to finish")
        wait_for(lambda: running.state == states.STARTED, 20, "the long job to start")
        running.revoke(terminate=True)
        wait_for(lambda: running.state == states.REVOKED, 20, "the revocation")
        heartbeats = f'SELECT heartbeat_at FROM "{schema}".workers'
        first = conn.execute(heartbeats).fetchone()[0]
        wait_for(lambda: conn.execute(heartbeats).fetchone()[0] > first, 10, "a heartbeat")
        worker.terminate()
        spy.execute("SELECT 1")  # notifications delivered meanwhile arrive with a reply
        assert list(spy.notifies(timeout=0.5)) == []

        # The control: with the lock held, the same kind of work notifies.
        with psycopg.connect(dsn, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s, 0)", (lock_classes(schema)["events"],))
            start_worker()
            assert jq.add.delay(2, 2).get(timeout=30) == 4
            kinds: set[str] = set()

            def heard() -> bool:
                for notice in spy.notifies(timeout=0.1):
                    if notice.payload.startswith(DATA):  # a claim's or a completion's
                        made = parse_data(notice.payload, notice.pid).hints()
                    else:
                        made = parse(notice.payload)
                    kinds.update(hint.kind for hint in made)
                return {"online", "started", "succeeded"} <= kinds

            wait_for(heard, 20, "events once the lock is held")


def test_the_stream_survives_a_dropped_connection(jq: Any, conn: Any, start_worker: Any) -> None:
    start_worker()
    with jq.app.events.stream(types=["task-succeeded", "events-missed"], timeout=30) as stream:
        first = jq.add.delay(1, 1)
        assert next(stream)["uuid"] == first.id
        # Both of the listener's connections are cut by the server.
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'jobqueue-events%%'"
        ).fetchone()[0]
        assert killed == 2
        missed = next(stream)
        assert missed["type"] == "events-missed" and missed["since"] <= missed["timestamp"]
        second = jq.add.delay(2, 2)
        assert next(stream)["uuid"] == second.id


def test_a_stalled_consumer_lets_go_of_the_notification_queue(
    jq: Any, conn: Any, start_worker: Any
) -> None:
    """Whoever reads the events stays away (a paused pager): the listener
    closes its connections rather than hold the server's notification queue
    back, and says so when the reader comes back."""
    start_worker()
    listeners = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'jobqueue-events%%'"
    )
    with jq.app.events.stream(types=["task-succeeded", "events-missed"], timeout=30) as stream:
        stream._listener.stall_limit = 0.5  # instead of a minute
        assert conn.execute(listeners).fetchone()[0] == 2
        wait_for(lambda: conn.execute(listeners).fetchone()[0] == 0, 20, "the listener to let go")
        stream._listener.stall_limit = 60.0
        assert next(stream)["type"] == "events-missed"
        result = jq.add.delay(3, 4)
        assert next(stream)["uuid"] == result.id


def test_receiver_calls_handlers_and_a_rescue_reports_the_lost_worker(
    jq: Any, start_worker: Any
) -> None:
    fast_lease = ("--lease-ttl", "2", "--heartbeat-interval", "0.5")
    victim = start_worker("-n", "victim", *fast_lease)
    start_worker("-n", "rescuer", "-Q", "elsewhere", *fast_lease)  # rescues, runs nothing
    seen: dict[str, list[dict[str, Any]]] = {"started": [], "retried": [], "offline": []}
    stuck: list[Any] = []

    def kill_when_started() -> None:
        wait_for(lambda: stuck[0].state == states.STARTED, 20, "the job to start")
        victim.kill()

    def on_heartbeat(event: dict[str, Any]) -> None:
        if not stuck:  # listening for sure: enqueue the job, kill its worker once it runs
            stuck.append(jq.sleep.delay(5))
            threading.Thread(target=kill_when_started, daemon=True).start()

    def on_retried(event: dict[str, Any]) -> None:
        seen["retried"].append(event)
        receiver.stop()  # after the worker's offline: the rescue reports it first

    receiver = jq.app.events.Receiver(
        handlers={
            "worker-heartbeat": on_heartbeat,
            "task-started": seen["started"].append,
            "task-retried": on_retried,
            "worker-offline": seen["offline"].append,
        }
    )
    handled = receiver.capture(timeout=30)
    assert handled >= 4
    assert [e["uuid"] for e in seen["started"]] == [stuck[0].id]
    assert [e["uuid"] for e in seen["retried"]] == [stuck[0].id]
    assert seen["retried"][0]["exception"].startswith("WorkerLostError")
    assert seen["retried"][0]["hostname"] == "victim"
    assert [e["hostname"] for e in seen["offline"]] == ["victim"]


def test_unknown_types_and_empty_filters_are_refused(jq: Any) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        jq.app.events.stream(types=["task-exploded"])
    with pytest.raises(ValueError, match="queues"):
        jq.app.events.stream(queues=[""])
    with pytest.raises(ValueError, match="unknown event type"):
        jq.app.events.Receiver(handlers={"task-sent": print})


def test_a_listener_that_opens_mid_drain_misses_no_job_still_waiting(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """The listener's promise against claims and completions in flight: a
    worker drains while producers keep enqueueing, and the stream opens in
    the middle. The statements try the events lock only as they aggregate
    their events (events_notify, migration 0016), at any point of the
    listener's request; still every job waiting once the stream is open, or
    enqueued later, gets its started and then its succeeded event."""
    start_worker("--concurrency", "4")
    stop = threading.Event()
    enqueued: list[tuple[float, str]] = []  # (monotonic time after its commit, id)

    def produce() -> None:
        while not stop.is_set():
            for result in jq.app.enqueue_many(jq.add, [(1, 1)] * 20):
                enqueued.append((time.monotonic(), result.id))

    producers = [threading.Thread(target=produce, daemon=True) for _ in range(2)]
    for thread in producers:
        thread.start()
    done = f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'SUCCESS'"
    wait_for(lambda: conn.execute(done).fetchone()[0] >= 200, 30, "the drain to get going")
    types = ["task-started", "task-succeeded"]
    seen: dict[str, list[str]] = {}
    with jq.app.events.stream(types=types, timeout=30) as stream:
        opened = time.monotonic()
        waiting = {str(row[0]) for row in conn.execute(f'SELECT job_id FROM "{schema}".job_queue')}
        wait_for(lambda: len(enqueued) > 0 and enqueued[-1][0] > opened + 0.5, 30, "enqueues")
        stop.set()
        for thread in producers:
            thread.join(30)
        promised = waiting | {job_id for at, job_id in enqueued if at > opened}
        assert len(promised) >= 40  # the drain was running when the stream opened

        def all_seen() -> bool:
            for event in stream.batch():
                seen.setdefault(event["uuid"], []).append(event["type"])
            return all(seen.get(job_id) == types for job_id in promised)

        try:
            wait_for(all_seen, 60, "started then succeeded for every promised job")
        except AssertionError:
            missed = {j: seen.get(j) for j in promised if seen.get(j) != types}
            some = dict(list(missed.items())[:5])
            raise AssertionError(f"{len(missed)} of {len(promised)} missed, e.g. {some}") from None


def _data(kind: str, worker: str, *items: tuple[str, ...]) -> str:
    """A data payload as the claim (S) or the completion (C) sends it."""
    body = "\x1e".join("\x1f".join(item) for item in items)
    return f"\x1d{kind}\x1f{worker}\x1f{time.time():.6f}\x1e{body}"


def test_data_is_believed_from_a_role_that_may_claim_and_is_hints_from_anyone_else(
    jq: Any,
    dsn: str,
    schema: str,
    conn: Any,
    start_worker: Any,
    events_command: Any,
    make_role: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """The claim and the completion send their events as data, which the
    listener believes without reading a row when the sender's role may claim
    jobs. Here it runs as a least-privilege monitor: a real worker's jobs
    are reported; data naming a job that never ran is believed from the
    schema owner's session (as a worker's would be); from a role that may
    not claim it is only hints, which the rows do not bear out."""
    monitor, forger = make_role(), make_role()
    grant(dsn, schema, monitor=monitor.name)
    watch = EventsCommand(monitor.dsn, schema)
    try:
        channel = channels(schema)["events"]
        waiting = jq.add.apply_async((1, 1), countdown=300)  # never started
        invented, nobody = str(uuid.uuid4()), str(uuid.uuid4())
        for target in (waiting.id, invented):
            started = (target, "0", "add", "default", "", "")
            succeeded = (target, "0", "0.25", "7")
            garbage = _data("C", nobody, ("not an item",))  # a well-made header only
            with psycopg.connect(forger.dsn, autocommit=True) as sender:
                for payload in (
                    _data("S", nobody, started),
                    _data("C", nobody, succeeded),
                    garbage,
                ):
                    sender.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        believed = str(uuid.uuid4())
        started = (believed, "2", "add", "default", "", waiting.id)
        succeeded = (believed, "2", "0.25", "7")
        for payload in (_data("S", nobody, started), _data("C", nobody, succeeded)):
            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        conn.commit()
        start_worker("-n", "events-data")
        real = jq.add.delay(20, 22)
        events = watch.wait_types(real.id, "task-received", "task-started", "task-succeeded")
        assert {e["hostname"] for e in events} == {"events-data"}
        assert events[-1]["result"] == "42" and events[-1]["runtime"] >= 0

        made = watch.of(believed)
        assert [e["type"] for e in made] == ["task-received", "task-started", "task-succeeded"]
        assert {(e["name"], e["queue"], e["retries"], e["worker_id"]) for e in made} == {
            ("add", "default", 2, nobody)
        }
        assert made[0]["parent_id"] == waiting.id and made[0]["root_id"] is None
        assert made[-1]["result"] == "7" and made[-1]["runtime"] == 0.25
        assert made[0]["hostname"] is None  # no such worker registered
        assert not watch.of(waiting.id) and not watch.of(invented)
        skipped = [line for line in watch.stderr if "did not send" in line]
        assert len(skipped) == 2 and watch.proc.poll() is None, watch.stderr  # the garbage
    finally:
        watch.stop()


def test_names_and_results_that_need_escaping_or_are_long(
    jq: Any, start_worker: Any, events_command: Any
) -> None:
    """Data whose names are not plain ASCII go item by item (the queue
    filter too); a result too long to send goes as a hint and is read."""
    queue = 'fila-ção "q"'
    everything = events_command()
    filtered = events_command("--queue", queue)
    start_worker("-Q", f"default,{queue}")
    quoted = jq.add.delay('x"', "y")
    long = jq.add.delay("a" * 300, "b")
    elsewhere = jq.add.apply_async((1, 2), queue=queue)
    assert elsewhere.get(timeout=30) == 3
    events = everything.wait_types(quoted.id, "task-received", "task-started", "task-succeeded")
    assert events[-1]["result"] == '"x\\"y"'
    events = everything.wait_types(long.id, "task-received", "task-started", "task-succeeded")
    assert events[-1]["result"] == ('"' + "a" * 300 + 'b"')[:200] + "…"
    for watch in (everything, filtered):
        events = watch.wait_types(elsewhere.id, "task-received", "task-started", "task-succeeded")
        assert {e["queue"] for e in events} == {queue} and events[-1]["result"] == "3"
    assert not filtered.of(quoted.id) and not filtered.of(long.id)
