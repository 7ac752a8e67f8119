"""Pure parts, no database: SQL loading, ids, serialization, settings, app loading."""

from __future__ import annotations

import uuid

import click
import pytest

from jobqueue import ConfigurationError, JobQueue, TaskError
from jobqueue.cli import load_app
from jobqueue.exceptions import RemoteTraceback
from jobqueue.ids import check_id, uuid7
from jobqueue.redact import redact
from jobqueue.serialization import dump_arguments, dump_error, loads, rebuild_error
from jobqueue.sql import queries, validate_schema


def test_every_statement_is_loaded_with_the_schema_quoted() -> None:
    sql = queries("my_schema")
    assert {
        "job_insert",
        "job_insert_many",
        "job_claim",
        "job_complete_many",
        "job_release_many",
        "job_get",
        "worker_register",
    } <= set(sql)
    for name, text in sql.items():
        assert "{schema}" not in text and "{channel" not in text, name
    assert '"my_schema".job_queue' in sql["job_claim"]
    assert "FOR UPDATE SKIP LOCKED" in sql["job_claim"]


@pytest.mark.parametrize("bad", ["", "Upper", "1abc", "a-b", 'x"; drop table', "a" * 60])
def test_invalid_schema_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        validate_schema(bad)


def test_uuid7_is_a_time_ordered_uuid() -> None:
    ids = [uuid7() for _ in range(1000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 1000
    assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)
    assert check_id(str(ids[0]).upper()) == str(ids[0])


def test_arguments_encode_as_compact_json() -> None:
    assert dump_arguments("t", (1, "é", [None]), {"k": 1.5}) == ('[1,"é",[null]]', '{"k":1.5}')


def test_error_round_trip_rebuilds_known_types() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        stored = loads(dump_error(exc))
    rebuilt = rebuild_error(stored)
    assert type(rebuilt) is KeyError and rebuilt.args == ("missing",)
    assert isinstance(rebuilt.__cause__, RemoteTraceback)
    assert "KeyError: 'missing'" in rebuilt.__cause__.tb


def test_unknown_error_types_become_named_task_errors() -> None:
    rebuilt = rebuild_error(
        {
            "type": "PaymentDeclined",
            "module": "billing.not_imported",
            "message": "card expired",
            "traceback": None,
        }
    )
    assert isinstance(rebuilt, TaskError)
    assert type(rebuilt).__name__ == "PaymentDeclined" and str(rebuilt) == "card expired"


def test_rebuild_never_instantiates_non_exceptions() -> None:
    rebuilt = rebuild_error({"type": "system", "module": "os", "message": "rm -rf /"})
    assert isinstance(rebuilt, TaskError)


def test_redact_hides_passwords() -> None:
    assert "s3cret" not in redact("postgresql://u:s3cret@h:5432/db")
    assert "s3cret" not in redact("host=h user=u password=s3cret")


def test_settings_are_validated_with_actionable_messages() -> None:
    with pytest.raises(ConfigurationError, match="poll_interval must be a positive number"):
        JobQueue("postgresql://x", poll_interval=0)
    with pytest.raises(ConfigurationError, match="lease_ttl must be longer"):
        JobQueue("postgresql://x", lease_ttl=1, heartbeat_interval=2)
    with pytest.raises(TypeError, match="unknown setting 'polling'"):
        JobQueue("postgresql://x", polling=3)


def test_load_app_finds_the_app_or_says_why_not() -> None:
    assert isinstance(load_app("tests.apps:app"), JobQueue)
    assert isinstance(load_app("tests.apps"), JobQueue)
    with pytest.raises(click.BadParameter, match="no attribute 'tasks_app'"):
        load_app("tests.apps:tasks_app")


def test_calling_a_task_runs_it_locally() -> None:
    app = JobQueue("postgresql://unused")

    @app.task
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(bind=True, name="who")
    def who(self: object) -> bool:
        return mul.request.called_directly

    assert mul(6, 7) == 42
    assert who() is True
    assert mul.name.endswith("test_calling_a_task_runs_it_locally.<locals>.mul")
    assert app.tasks["who"] is who


def test_rates_parse_to_tokens_per_second() -> None:
    from jobqueue.limits import parse_rate

    assert parse_rate("10/s") == 10 and parse_rate("120/m") == 2 and parse_rate("36/h") == 0.01
    assert parse_rate(5) == 5
    for bad in ("10", "10/d", "-1/s", "0/s", "fast"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_schedule_fire_times_and_catch_up_policies() -> None:
    from datetime import datetime, timedelta, timezone

    from jobqueue.schedules import Schedule, Timing, crontab, fires_due

    utc = timezone.utc
    every = Timing(None, 60.0)
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=utc)
    planned = datetime(2026, 1, 1, 12, 0, tzinfo=utc)
    assert fires_due(every, planned, now, "once", 10) == [planned]  # on time
    down = datetime(2026, 1, 1, 11, 50, tzinfo=utc)  # ten minutes of downtime
    assert fires_due(every, down, now, "once", 10) == [planned]
    assert fires_due(every, down, now, "skip", 10) == []  # the newest is 30 s late
    assert len(fires_due(every, down, now, "all", 100)) == 11
    assert fires_due(every, down, now, "all", 3)[-1] == planned
    assert fires_due(every, now + timedelta(seconds=5), now, "once", 10) == []
    paris = Timing(crontab(minute=0, hour=9).expression, None, "Europe/Paris")
    assert paris.next_after(now) == datetime(2026, 1, 2, 8, 0, tzinfo=utc)  # 09:00 CET
    entry = Schedule.from_entry("x", {"task": "add", "schedule": timedelta(minutes=5)})
    assert entry.interval == 300 and entry.cron is None
    with pytest.raises(ValueError, match="invalid cron"):
        Schedule.from_entry("y", {"task": "add", "schedule": "every tuesday"})
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule(name="z", task="add", interval=1, timezone="Mars/Olympus")


def test_routes_match_names_globs_and_callables() -> None:
    from jobqueue.limits import route

    routes = [{"a.exact": "q1", "b.*": {"queue": "q2"}}, lambda n, a, k: "q3" if a else None]
    assert route(routes, "a.exact", (), {}) == "q1"
    assert route(routes, "b.thing", (), {}) == "q2"
    assert route(routes, "c", (1,), {}) == "q3"
    assert route(routes, "c", (), {}) is None


def test_prefetch_is_bounded_by_time_and_by_the_multiplier() -> None:
    from jobqueue.worker import Worker

    app = JobQueue("postgresql://unused")
    worker = Worker(app, concurrency=8)
    worker._avg_runtime = 1.0  # slow jobs: nothing claimed ahead
    assert worker._capacity() == 8
    worker._avg_runtime = 0.01  # 10 ms jobs: about 0.1 s of work ahead on 8 slots
    assert worker._capacity() == 8 + 80
    worker._avg_runtime = 1e-6  # no-op jobs: the multiplier caps it
    assert worker._capacity() == 8 * 128
    assert Worker(app, concurrency=8, prefetch_multiplier=1)._capacity() == 8


def test_ids_from_one_process_always_increase() -> None:
    from jobqueue.ids import new_id

    ids = [new_id() for _ in range(20_000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:100])


def test_ids_made_in_bulk_increase_with_those_made_one_at_a_time() -> None:
    from jobqueue.ids import new_id, new_ids

    before = new_id()
    batch = new_ids(50_000)  # all in one or two milliseconds: the low bits count up
    after = new_id()
    assert [before, *batch, after] == sorted([before, *batch, after])
    assert len(set(batch)) == len(batch)
    for made in (batch[0], batch[-1], batch[12_345]):
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, made)
    assert new_ids(0) == []


def test_worker_settings_fill_defaults_from_the_app_and_check_values() -> None:
    from jobqueue.worker import WorkerSettings

    app = JobQueue("postgresql://nobody@127.0.0.1:1/none", schema="s", auto_migrate=False)
    app.conf.poll_interval = 2.5
    resolved = WorkerSettings(queues=("a", "b", "a")).with_options(concurrency=3).resolve(app)
    assert (resolved.queues, resolved.concurrency, resolved.poll_interval) == (("a", "b"), 3, 2.5)
    assert resolved.hostname and resolved.hostname.startswith("jobqueue@")
    assert WorkerSettings().resolve(app).queues == ("default",)
    for bad, message in [
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"pool": "gevent"}, "unknown pool 'gevent'"),
        ({"max_tasks_per_child": 5}, "only the process pool"),
        ({"prefetch_multiplier": 0}, "prefetch_multiplier must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            WorkerSettings().with_options(**bad).resolve(app)
