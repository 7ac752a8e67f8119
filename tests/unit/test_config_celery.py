"""Settings: one resolution for every way they are given, Celery's names, and
config_from_object. Pure: an app made with a DSN does not connect."""

from __future__ import annotations

import json
import logging
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jobqueue import ConfigurationError, JobQueue, UnknownSettingError, celeryconf
from jobqueue.beat import Beat
from jobqueue.config import Settings
from jobqueue.options import resolve
from jobqueue.schedules import crontab
from jobqueue.worker import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
DSN = "postgresql://nobody@127.0.0.1:1/none"

#: The production configuration Celery users paste (issue 23).
PASTED = {
    "broker_url": "redis://:s3cret@redis.example:6379/0",
    "result_backend": "db+postgresql://app:s3cret@db/app",
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_track_started": True,
    "task_time_limit": 300,
    "task_soft_time_limit": 240,
    "worker_prefetch_multiplier": 1,
    "task_acks_late": True,
}
#: Which of them are accepted with a line rather than set.
PASTED_LOGGED = {
    "broker_url",
    "result_backend",
    "task_serializer",
    "result_serializer",
    "accept_content",
    "task_track_started",
    "task_acks_late",
}


@pytest.fixture(autouse=True)
def fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the once-per-process lines as a new process would."""
    monkeypatch.setattr(celeryconf, "_logged", set())


@pytest.fixture
def app() -> Iterator[JobQueue]:
    application = JobQueue(DSN, schema="s", auto_migrate=False)
    yield application
    application.close()


def _config_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "jobqueue.config"]


# -- one resolution for every way ---------------------------------------------------------


def _by_constructor(name: str, value: Any) -> Settings:
    return JobQueue(DSN, **{name: value}).conf


def _by_assignment(name: str, value: Any) -> Settings:
    app = JobQueue(DSN)
    setattr(app.conf, name, value)
    return app.conf


def _by_update(name: str, value: Any) -> Settings:
    app = JobQueue(DSN)
    app.conf.update({name: value})
    return app.conf


def _by_object(name: str, value: Any) -> Settings:
    app = JobQueue(DSN)
    app.config_from_object({name: value})
    return app.conf


WAYS = [_by_constructor, _by_assignment, _by_update, _by_object]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    ("celery", "value", "setting", "expected"),
    [
        ("task_default_queue", "work", "default_queue", "work"),
        ("task_default_priority", 5, "default_priority", 5),
        ("task_time_limit", 60, "default_time_limit", 60),
        ("task_soft_time_limit", timedelta(seconds=30), "default_soft_time_limit", 30.0),
        ("task_always_eager", True, "eager", True),
        ("result_expires", timedelta(hours=1), "result_expires", 3600.0),
        ("timezone", ZoneInfo("Europe/Paris"), "timezone", "Europe/Paris"),
        ("worker_concurrency", 3, "worker_concurrency", 3),
        ("worker_prefetch_multiplier", 1, "worker_prefetch_multiplier", 1),
        ("task_routes", {"a.*": "q"}, "task_routes", {"a.*": "q"}),
    ],
)
def test_celery_names_set_the_same_setting_whichever_way_they_are_given(
    way: Callable[[str, Any], Settings], celery: str, value: Any, setting: str, expected: Any
) -> None:
    assert getattr(way(celery, value), setting) == expected


def test_a_celery_alias_reads_its_setting(app: JobQueue) -> None:
    app.conf.eager = True
    conf: Any = app.conf
    assert conf.task_always_eager is True and conf.task_default_queue == "default"
    with pytest.raises(AttributeError):
        conf.broker_url  # not a setting here: nothing to read  # noqa: B018


@pytest.mark.parametrize("way", WAYS)
def test_an_unknown_name_raises_naming_the_closest_setting(
    way: Callable[[str, Any], Settings],
) -> None:
    with pytest.raises(UnknownSettingError, match="did you mean 'task_default_queue'") as info:
        way("task_defualt_queue", "x")
    assert "'default_queue'" in str(info.value)  # and what it sets here
    assert isinstance(info.value, ConfigurationError)
    with pytest.raises(UnknownSettingError, match="did you mean 'poll_interval'"):
        way("poll_intervall", 2)


def test_unknown_setting_error_is_also_what_python_raises_for_the_same_mistake() -> None:
    app = JobQueue(DSN)
    with pytest.raises(AttributeError, match="unknown setting 'polling'"):
        app.conf.polling = 3  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="JobQueue\\(\\) got an unknown setting 'polling'"):
        JobQueue(DSN, polling=3)
    assert not hasattr(app.conf, "polling")  # nothing was set


def test_a_name_with_nothing_close_points_at_the_docs() -> None:
    with pytest.raises(UnknownSettingError, match=r"see docs/configuration\.md"):
        JobQueue(DSN).conf.update(zzz=1)


# -- the pasted production configuration ------------------------------------------------


def test_the_pasted_celery_production_config_loads_with_one_line_per_accepted_setting(
    app: JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobqueue.config")
    app.config_from_object(PASTED)
    conf = app.conf
    assert (conf.default_time_limit, conf.default_soft_time_limit) == (300, 240)
    assert conf.worker_prefetch_multiplier == 1
    lines = _config_lines(caplog)
    assert len(lines) == len(PASTED_LOGGED)
    for name in PASTED_LOGGED:
        assert sum(line.startswith(f"Celery setting {name}") for line in lines) == 1, name
    assert any("broker_url is not used" in line and "dsn" in line for line in lines)
    assert any("task_acks_late=True accepted" in line and "lease" in line for line in lines)
    assert "s3cret" not in caplog.text and "redis.example" not in caplog.text

    caplog.clear()  # once per process: loading it again (another app, say) says nothing
    JobQueue(DSN).config_from_object(PASTED)
    assert _config_lines(caplog) == []


def test_the_pasted_config_also_loads_from_django_style_settings(
    app: JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobqueue.config")
    django_settings = {f"CELERY_{k.upper()}": v for k, v in PASTED.items()}
    django_settings |= {"DEBUG": True, "INSTALLED_APPS": ["x"]}
    app.config_from_object(django_settings, namespace="CELERY")
    assert app.conf.default_time_limit == 300
    assert len(_config_lines(caplog)) == len(PASTED_LOGGED)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("task_serializer", "pickle", "JSON in PostgreSQL"),
        ("result_serializer", "yaml", "JSON in PostgreSQL"),
        ("accept_content", ["json", "pickle"], "JSON in PostgreSQL"),
        ("accept_content", ["application/x-python-serialize"], "JSON in PostgreSQL"),
        ("task_compression", "gzip", "TOAST"),
        ("task_acks_late", False, "reject_on_worker_lost=False"),
        ("task_reject_on_worker_lost", False, "reject_on_worker_lost=False"),
        ("task_ignore_result", True, "ignore_result=True"),
        ("task_default_delivery_mode", "transient", "durable"),
        ("imports", ["proj.tasks"], "import them from the module that creates the app"),
        ("task_default_rate_limit", "10/m", "rate_limit"),
        ("worker_pool", "prefork", "jobqueue worker -P"),
    ],
)
def test_what_jobqueue_cannot_honour_raises_with_the_reason(
    app: JobQueue, name: str, value: Any, reason: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(reason)) as info:
        app.config_from_object({name: value})
    assert name in str(info.value)


def test_a_refused_value_changes_nothing_given_with_it(app: JobQueue) -> None:
    with pytest.raises(ConfigurationError, match="cannot be honoured"):
        app.conf.task_serializer = "pickle"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="task_serializer='pickle'"):
        app.conf.update(task_default_queue="work", task_serializer="pickle")
    with pytest.raises(ConfigurationError, match="poll_interval must be a positive"):
        app.config_from_object({"task_default_queue": "work", "poll_interval": 0})
    assert app.conf.default_queue == "default" and app.conf.poll_interval == 5.0


def test_accepted_values_that_say_what_jobqueue_does_anyway(app: JobQueue) -> None:
    app.conf.update(
        accept_content=("application/json",),
        result_accept_content=None,
        enable_utc=False,
        task_track_started=False,
        result_extended=True,
        task_default_delivery_mode=2,
        broker_connection_retry_on_startup=True,
    )
    assert app.conf.default_queue == "default"  # nothing else changed


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("worker_prefetch_multiplier", 0, "Celery's 0, no limit, has no equivalent"),
        ("worker_concurrency", 0, "worker_concurrency must be a positive integer"),
        ("timezone", "Mars/Olympus", "IANA time zone"),
        ("task_default_priority", 40000, "default_priority must be an integer"),
        ("task_time_limit", -1, "default_time_limit must be a positive number"),
        ("task_always_eager", "yes", "eager must be True or False"),
    ],
)
def test_mapped_values_are_checked(app: JobQueue, name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        app.conf.update({name: value})


def test_default_soft_limit_may_not_exceed_the_hard_one(app: JobQueue) -> None:
    with pytest.raises(ConfigurationError, match="must not exceed"):
        app.conf.update(task_soft_time_limit=20, task_time_limit=10)


# -- config_from_object ------------------------------------------------------------------


@pytest.fixture
def config_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], str]:
    """Write a module on sys.path; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write


def test_a_config_module_is_imported_by_path_and_its_non_settings_left_alone(
    app: JobQueue, config_module: Callable[[str, str], str]
) -> None:
    name = config_module(
        "cfg_plain",
        """
        from __future__ import annotations

        import logging
        import os
        from datetime import timedelta

        log = logging.getLogger(__name__)
        DEBUG = True  # uppercase: not read without a namespace
        _HOURS = 2


        def route(name, args, kwargs):  # a helper
            return "routed"


        class Helper:
            pass


        task_default_queue = "work"
        result_expires = timedelta(hours=_HOURS)
        task_routes = route
        default_priority = 3
        """,
    )
    app.config_from_object(name)
    conf = app.conf
    assert (conf.default_queue, conf.result_expires, conf.default_priority) == ("work", 7200.0, 3)
    assert callable(conf.task_routes) and conf.task_routes("x", (), {}) == "routed"


def test_a_misspelt_setting_in_a_config_module_raises(
    app: JobQueue, config_module: Callable[[str, str], str]
) -> None:
    name = config_module("cfg_typo", "task_default_queu = 'work'\n")
    with pytest.raises(UnknownSettingError, match="did you mean 'task_default_queue'"):
        app.config_from_object(name)


def test_namespaced_names_without_a_namespace_say_to_pass_one(
    app: JobQueue, config_module: Callable[[str, str], str]
) -> None:
    name = config_module("cfg_django", "DEBUG = True\nCELERY_TASK_DEFAULT_QUEUE = 'work'\n")
    with pytest.raises(ConfigurationError, match="pass namespace='CELERY'"):
        app.config_from_object(name)
    app.config_from_object(name, namespace="CELERY")
    assert app.conf.default_queue == "work"


def test_a_namespace_reads_only_its_names_and_each_must_be_a_setting(app: JobQueue) -> None:
    settings = {
        "JOBQUEUE_DEFAULT_QUEUE": "work",
        "JOBQUEUE_TASK_TIME_LIMIT": 60,
        "CELERY_TASK_DEFAULT_QUEUE": "other",
        "DATABASES": {},
        "jobqueue_default_queue": "lowercase: another prefix",
        "JOBQUEUE_APP": "proj.jobs:app",  # jobqueue.contrib.django's pointer, not a setting
    }
    app.config_from_object(settings, namespace="JOBQUEUE")
    assert (app.conf.default_queue, app.conf.default_time_limit) == ("work", 60)
    with pytest.raises(UnknownSettingError, match=r"'JOBQUEUE_POLL_INTERVALL'.*'poll_interval'"):
        app.config_from_object({"JOBQUEUE_POLL_INTERVALL": 1}, namespace="JOBQUEUE")


def test_classes_objects_and_attribute_paths(
    app: JobQueue, config_module: Callable[[str, str], str]
) -> None:
    class Config:
        task_default_queue = "from-class"

        def helper(self) -> None:
            pass

    app.config_from_object(Config)
    assert app.conf.default_queue == "from-class"
    name = config_module(
        "cfg_holder",
        """
        class Production:
            task_default_queue = "prod"

        class Staging:
            task_default_queue = "staging"
        """,
    )
    app.config_from_object(f"{name}:Production")
    assert app.conf.default_queue == "prod"
    app.config_from_object(f"{name}.Staging")
    assert app.conf.default_queue == "staging"


def test_a_module_that_cannot_be_imported(app: JobQueue) -> None:
    with pytest.raises(ModuleNotFoundError):
        app.config_from_object("no_such_config_module_here")
    app.config_from_object("no_such_config_module_here", silent=True)
    assert app.conf.default_queue == "default"


def test_update_takes_a_mapping_pairs_and_keywords(app: JobQueue) -> None:
    app.conf.update({"default_queue": "a"}, poll_interval=2)
    app.conf.update([("task_default_priority", 4)])
    assert (app.conf.default_queue, app.conf.poll_interval, app.conf.default_priority) == (
        "a",
        2,
        4,
    )


# -- the task options ----------------------------------------------------------------------


def test_track_started_and_acks_late_are_accepted_with_the_settings_line(
    app: JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobqueue.config")

    @app.task(track_started=True, acks_late=True)
    def one() -> None: ...

    @app.task(track_started=True, acks_late=True)
    def two() -> None: ...

    app.conf.update(task_acks_late=True)
    lines = _config_lines(caplog)
    assert len(lines) == 2  # once each, the tasks' and the setting's together
    assert one.reject_on_worker_lost and two.reject_on_worker_lost


def test_acks_late_false_asks_for_at_most_one_run(app: JobQueue) -> None:
    @app.task(acks_late=False)
    def once() -> None: ...

    assert once.reject_on_worker_lost is False
    assert json.loads(once.stored_options()[0])["reject_on_worker_lost"] is False
    with pytest.raises(ConfigurationError, match="contradicts"):
        app.task(acks_late=False, reject_on_worker_lost=True)(lambda: None)
    with pytest.raises(TypeError, match="acks_late must be True or False"):
        app.task(acks_late="yes")(lambda: None)


def test_celery_task_options_as_class_attributes_mean_the_same(app: JobQueue) -> None:
    class AtMostOnce(app.Task):  # type: ignore[name-defined,misc]
        acks_late = False
        track_started = True

        def run(self) -> None: ...

    task = app.register_task(AtMostOnce)
    assert task.reject_on_worker_lost is False


# -- where the defaults apply ----------------------------------------------------------------


def test_default_priority_applies_when_neither_call_nor_task_names_one(app: JobQueue) -> None:
    app.conf.task_default_priority = 5

    @app.task
    def plain() -> None: ...

    @app.task(priority=1)
    def low() -> None: ...

    def priority(name: str, task: Any, **call: Any) -> int:
        return resolve(app, name, task, (), {}, call).priority

    assert priority(plain.name, plain) == 5
    assert priority(low.name, low) == 1
    assert priority(plain.name, plain, priority=9) == 9
    assert priority("not.registered.here", None) == 5
    assert app.enqueue_many is not None  # enqueue_many resolves through priority_for too


def test_default_time_limits_fill_in_and_yield_to_explicit_ones(app: JobQueue) -> None:
    app.conf.update(task_time_limit=60, task_soft_time_limit=50)

    @app.task
    def plain() -> None: ...

    @app.task(soft_time_limit=120)
    def long_soft() -> None: ...

    @app.task(time_limit=10)
    def short() -> None: ...

    def limits(task: Any, **call: Any) -> tuple[Any, Any]:
        options = json.loads(resolve(app, task.name, task, (), {}, call).options)
        return options.get("soft_time_limit"), options.get("time_limit")

    assert limits(plain) == (50, 60)
    assert limits(plain, time_limit=100) == (50, 100)
    # A default hard limit below the task's soft one would contradict it: not applied.
    assert limits(long_soft) == (120, None)
    # A default soft limit above the task's hard one: not applied.
    assert limits(short) == (None, 10)
    app.conf.update(task_time_limit=None, task_soft_time_limit=None)
    assert limits(plain) == (None, None)  # the stored options follow the settings


def test_worker_defaults_a_flag_wins_over_the_setting_over_the_built_in(app: JobQueue) -> None:
    built_in = WorkerSettings().resolve(app)
    assert built_in.prefetch_multiplier == 128
    app.conf.update(worker_concurrency=3, worker_prefetch_multiplier=1)
    from_app = WorkerSettings().resolve(app)
    assert (from_app.concurrency, from_app.prefetch_multiplier) == (3, 1)
    flags = WorkerSettings().with_options(concurrency=5, prefetch_multiplier=4).resolve(app)
    assert (flags.concurrency, flags.prefetch_multiplier) == (5, 4)


def test_crontabs_are_read_in_the_app_timezone_unless_their_entry_names_one(
    app: JobQueue,
) -> None:
    app.conf.update(
        timezone="Europe/Paris",
        beat_schedule={
            "morning": {"task": "t", "schedule": crontab(minute=0, hour=9)},
            "tokyo": {"task": "t", "schedule": crontab(minute=0), "timezone": "Asia/Tokyo"},
        },
    )
    zones = {s.name: s.timezone for s in Beat(app).schedules()}
    assert zones == {"morning": "Europe/Paris", "tokyo": "Asia/Tokyo"}


# -- the docs agree with the code -------------------------------------------------------------

DOC = (ROOT / "docs" / "configuration.md").read_text()
_KIND_WORDS = {
    "alias": "mapped",
    "guaranteed": "accepted",
    "ignored": "not used",
    "raises": "raises",
}


def _section(title: str) -> str:
    start = DOC.index(f"## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else None]


def _table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[1:]  # without the header


def test_the_celery_table_in_the_docs_is_the_one_in_the_code() -> None:
    documented: dict[str, tuple[str, str]] = {}
    for row in _table_rows(_section("Celery settings")):
        for name in re.findall(r"`([a-z_]+)`", row[0]):
            documented[name] = (row[1], row[2])
    for name, entry in celeryconf.CELERY_SETTINGS.items():
        assert name in documented, f"{name} is missing from docs/configuration.md"
        kind, target = documented[name]
        assert kind == _KIND_WORDS[entry.kind], name
        if entry.kind == "alias":
            assert target == f"`{entry.setting}`", name
    for name in celeryconf.SAME_NAME:
        assert documented.get(name, ("", ""))[0] == "same name", name
        assert name in Settings.__dataclass_fields__
    assert set(documented) == set(celeryconf.CELERY_SETTINGS) | set(celeryconf.SAME_NAME)


def test_every_alias_names_a_setting() -> None:
    for name, entry in celeryconf.CELERY_SETTINGS.items():
        assert (entry.kind == "alias") == (entry.setting is not None), name
        if entry.setting is not None:
            assert entry.setting in Settings.__dataclass_fields__, name


def test_every_setting_is_in_the_docs() -> None:
    documented = set()
    for section in ("Fields", "Failure notifications"):
        for row in _table_rows(_section(section)):
            documented |= set(re.findall(r"`([a-z_]+)`", row[0]))
    fields = {f.name for f in Settings.__dataclass_fields__.values() if f.init}
    assert fields <= documented, fields - documented


def test_every_environment_variable_the_code_reads_is_in_the_docs_table() -> None:
    table = _section("Environment variables")
    documented = {row[0].strip("`") for row in _table_rows(table)}
    read = set()
    for path in (ROOT / "jobqueue").rglob("*.py"):
        read |= set(re.findall(r"\"(JOBQUEUE_[A-Z][A-Z_]*)\"", path.read_text()))
    assert read, "the scan found nothing: the pattern is wrong"
    assert read <= documented, read - documented
