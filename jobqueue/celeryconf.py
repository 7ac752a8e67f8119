"""Celery's setting names, and what each means to jobqueue: the table as data.

``app.conf``, ``JobQueue(**settings)``, ``config_from_object`` and
``conf.update`` all resolve names through ``jobqueue.config.resolve_setting``,
which looks here for any name that is not a jobqueue setting. Each entry is
one of four kinds:

- ``alias``: the same meaning under another name; sets that jobqueue setting.
- ``guaranteed``: what jobqueue always does (JSON only, STARTED recorded,
  acknowledgement after execution through leases). Accepted with a line
  logged once per process; a value asking for something else raises.
- ``ignored``: no meaning here (a broker's URL, an exchange); accepted with a
  line logged once per process saying what takes its place.
- ``raises``: a behaviour jobqueue cannot honour app-wide; the error says why
  and what to do instead.

Celery names that are jobqueue settings under the same name (``task_routes``,
``beat_schedule``...) are plain settings, listed in ``SAME_NAME`` for the docs.
docs/configuration.md's Celery table is checked against this module by
tests/unit/test_config_celery.py, so the two cannot drift apart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .exceptions import ConfigurationError

log = logging.getLogger("jobqueue.config")

Kind = Literal["alias", "guaranteed", "ignored", "raises"]


@dataclass(frozen=True)
class Entry:
    """What one Celery setting means here."""

    kind: Kind
    #: alias: the jobqueue setting it sets.
    setting: str | None = None
    #: guaranteed/ignored: the line logged once; raises: the reason.
    note: str = ""
    #: guaranteed/ignored: the values accepted (None: any); others raise with ``refusal``.
    accepts: Callable[[Any], bool] | None = None
    refusal: str = ""
    #: The level of ``note`` (a difference the user may not expect: WARNING).
    level: int = logging.INFO


def _alias(setting: str) -> Entry:
    return Entry("alias", setting=setting)


def _guaranteed(
    note: str, accepts: Callable[[Any], bool] | None = None, refusal: str = ""
) -> Entry:
    return Entry("guaranteed", note=note, accepts=accepts, refusal=refusal)


def _ignored(note: str, level: int = logging.INFO) -> Entry:
    return Entry("ignored", note=note, level=level)


def _raises(reason: str) -> Entry:
    return Entry("raises", note=reason)


def _is(*values: Any) -> Callable[[Any], bool]:
    # ``is`` for True/False (1 == True), ``==`` for the rest.
    def accepts(value: Any) -> bool:
        return any(
            value is v if isinstance(v, bool) else (not isinstance(value, bool) and value == v)
            for v in values
        )

    return accepts


_JSON_TYPES = frozenset({"json", "application/json"})


def _json_only(value: Any) -> bool:
    """accept_content: a content type or a list of them, all JSON."""
    if value is None:
        return True
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    try:
        types = list(items)
    except TypeError:
        return False
    return bool(types) and all(isinstance(t, str) and t.lower() in _JSON_TYPES for t in types)


_JSON = (
    "jobqueue stores arguments, results and errors as JSON in PostgreSQL (readable "
    "from SQL, safe to decode: nothing is executed when a job is read)"
)
_WORKER_OPTION = "a worker's own option: give it on the command line (jobqueue worker {flag})"

#: Every Celery setting jobqueue knows, by its lowercase name.
CELERY_SETTINGS: dict[str, Entry] = {
    # -- aliases ------------------------------------------------------------------
    "task_default_queue": _alias("default_queue"),
    "task_default_priority": _alias("default_priority"),
    "task_time_limit": _alias("default_time_limit"),
    "task_soft_time_limit": _alias("default_soft_time_limit"),
    "task_always_eager": _alias("eager"),
    "task_eager_propagates": _alias("eager_propagates"),
    # -- what jobqueue always does -----------------------------------------------------
    "task_serializer": _guaranteed(
        "jobqueue encodes every job as JSON", _is("json"), f"{_JSON}; use 'json'"
    ),
    "result_serializer": _guaranteed(
        "jobqueue stores every result as JSON", _is("json"), f"{_JSON}; use 'json'"
    ),
    "event_serializer": _guaranteed(
        "jobqueue's events are JSON", _is("json"), "jobqueue's events are JSON; use 'json'"
    ),
    "accept_content": _guaranteed(
        "jobqueue accepts JSON only", _json_only, f"{_JSON}; use ['json']"
    ),
    "result_accept_content": _guaranteed(
        "jobqueue accepts JSON results only", _json_only, f"{_JSON}; use ['json'] or None"
    ),
    "task_compression": _guaranteed(
        "jobqueue does not compress messages (PostgreSQL compresses large values itself)",
        _is(None),
        "jobqueue stores JSON in PostgreSQL, which compresses large values itself (TOAST)",
    ),
    "result_compression": _guaranteed(
        "jobqueue does not compress results (PostgreSQL compresses large values itself)",
        _is(None),
        "jobqueue stores JSON in PostgreSQL, which compresses large values itself (TOAST)",
    ),
    "task_track_started": _guaranteed(
        "jobqueue always records STARTED when a worker claims a job",
        _is(True, False),
    ),
    "task_acks_late": _guaranteed(
        "jobqueue acknowledges a job after it ran: a worker holds it under a lease, "
        "and a lost worker's jobs go back to the queue",
        _is(True),
        "jobqueue acknowledges a job after it ran (leases); for at most one run when a "
        "worker is lost, give the tasks that need it reject_on_worker_lost=False "
        "(or acks_late=False)",
    ),
    "task_acks_on_failure_or_timeout": _guaranteed(
        "jobqueue records a failed or timed-out job FAILURE (or retries it as its "
        "retry policy says); it is never redelivered as is",
        _is(True),
        "jobqueue records a failed or timed-out job FAILURE, or retries it as the task's "
        "retry policy says (autoretry_for, max_retries)",
    ),
    "task_reject_on_worker_lost": _guaranteed(
        "jobqueue sends a lost worker's jobs back to the queue (tasks may say "
        "reject_on_worker_lost=False)",
        _is(True),
        "jobqueue sends a lost worker's jobs back to the queue by default; give "
        "reject_on_worker_lost=False to the tasks that must fail instead",
    ),
    "task_ignore_result": _guaranteed(
        "jobqueue stores results (tasks may say ignore_result=True)",
        _is(False),
        "give ignore_result=True to the tasks whose results are not wanted",
    ),
    "result_extended": _guaranteed(
        "a job's row always holds its task name, arguments, queue, worker and retries",
        _is(True, False),
    ),
    "task_create_missing_queues": _guaranteed(
        "a queue is a name: nothing to declare before use",
        _is(True),
        "a queue is a name in the job's row; there is nothing to declare",
    ),
    "task_default_delivery_mode": _guaranteed(
        "jobs are rows in PostgreSQL: every job is persistent",
        _is("persistent", 2),
        "jobs are rows in PostgreSQL, as durable as its commits",
    ),
    "enable_utc": _guaranteed(
        "jobqueue stores every moment as timestamptz; crontabs are read in "
        "app.conf.timezone (UTC unless set)",
        _is(True, False),
    ),
    "task_publish_retry": _guaranteed(
        "enqueueing retries transient database errors for app.conf.db_retry_seconds",
        _is(True, False),
    ),
    "broker_connection_retry": _guaranteed(
        "connections are retried for app.conf.db_retry_seconds", _is(True, False)
    ),
    "broker_connection_retry_on_startup": _guaranteed(
        "a first connection is retried for app.conf.db_retry_seconds", _is(True, False)
    ),
    "worker_send_task_events": _guaranteed(
        "task events are always available (app.events, jobqueue events)", _is(True, False)
    ),
    "task_send_sent_event": _guaranteed(
        "task events are always available (app.events, jobqueue events)", _is(True, False)
    ),
    # -- no meaning here ------------------------------------------------------------
    "broker_url": _ignored(
        "jobqueue's broker is the PostgreSQL database of app.conf.dsn (else $JOBQUEUE_DSN)"
    ),
    "result_backend": _ignored(
        "jobqueue keeps results in the PostgreSQL database of app.conf.dsn (else $JOBQUEUE_DSN)"
    ),
    "broker_transport_options": _ignored(
        "leases (app.conf.lease_ttl) replace a broker's visibility timeout"
    ),
    "result_backend_transport_options": _ignored("results are rows of the job table"),
    "broker_pool_limit": _ignored("app.conf.pool_max_size sizes the connection pool"),
    "broker_connection_timeout": _ignored("the DSN's connect_timeout applies"),
    "broker_connection_max_retries": _ignored(
        "connections are retried for app.conf.db_retry_seconds"
    ),
    "broker_heartbeat": _ignored("workers renew a lease every app.conf.heartbeat_interval"),
    "result_persistent": _ignored("results are rows, as durable as the database"),
    "task_queues": _ignored("queues need no declaration; a worker consumes those named with -Q"),
    "task_default_exchange": _ignored("a job names its queue, with no exchange"),
    "task_default_exchange_type": _ignored("a job names its queue, with no exchange"),
    "task_default_routing_key": _ignored("app.conf.task_routes routes by task name"),
    "task_queue_max_priority": _ignored(
        "priorities are integers in [-32768, 32767], highest first"
    ),
    "beat_schedule_filename": _ignored("the beat keeps its state in PostgreSQL"),
    "worker_hijack_root_logger": _ignored(
        "jobqueue worker configures the root logger (--loglevel, --log-format)"
    ),
    "worker_log_format": _ignored("app.conf.log_format chooses text or JSON lines"),
    "worker_task_log_format": _ignored("app.conf.log_format chooses text or JSON lines"),
    # -- cannot be honoured app-wide ----------------------------------------------
    "imports": _raises(
        "jobqueue imports no task modules for you: import them from the module that "
        "creates the app (the one -A names), so producers and workers know the same tasks"
    ),
    "include": _raises(
        "jobqueue imports no task modules for you: import them from the module that "
        "creates the app (the one -A names), so producers and workers know the same tasks"
    ),
    "task_annotations": _raises("give the options to the tasks themselves: @app.task(...)"),
    "task_default_rate_limit": _raises(
        "give rate_limit to the tasks that need it: @app.task(rate_limit=...)"
    ),
    "task_inherit_parent_priority": _raises(
        "a job's priority is its call's, its task's or app.conf.default_priority"
    ),
    "beat_scheduler": _raises("the beat keeps its schedules in PostgreSQL: there is one scheduler"),
    "worker_pool": _raises(_WORKER_OPTION.format(flag="-P threads|processes")),
    "worker_max_tasks_per_child": _raises(_WORKER_OPTION.format(flag="--max-tasks-per-child N")),
    "worker_max_memory_per_child": _raises(
        "jobqueue has no memory limit per child; --max-tasks-per-child replaces children"
    ),
    "worker_autoscaler": _raises(
        "jobqueue has no autoscaler: app.control.pool_grow/pool_shrink resize a worker"
    ),
}

#: Celery names that are jobqueue settings under the same name, and how they differ.
SAME_NAME: dict[str, str] = {
    "task_routes": "Celery's shapes (a mapping, a function, a list of them); queue only",
    "beat_schedule": "Celery's entries, crontab or seconds or timedelta",
    "result_expires": "seconds or a timedelta; None keeps results",
    "timezone": "the time zone crontabs are read in (default UTC)",
    "worker_concurrency": "jobqueue worker -c wins over it",
    "worker_prefetch_multiplier": "jobqueue worker --prefetch-multiplier wins over it; "
    "at least 1 (Celery's 0, no limit, is refused)",
}

_logged: set[str] = set()
_logged_lock = threading.Lock()


def celery_setting(name: str, value: Any, where: str) -> tuple[str | None, str | None]:
    """What Celery's setting ``name`` set to ``value`` means: ``(setting, None)``
    for an alias (set ``setting`` to the value), ``(None, name)`` for a value
    accepted as is (to log once: ``log_once``). Raises ConfigurationError
    for a value jobqueue cannot honour. ``name`` must be in CELERY_SETTINGS."""
    entry = CELERY_SETTINGS[name]
    if entry.kind == "alias":
        return entry.setting, None
    if entry.kind == "raises":
        raise ConfigurationError(f"{where}: Celery's {name} is not supported: {entry.note}")
    if entry.accepts is not None and not entry.accepts(value):
        raise ConfigurationError(
            f"{where}: {name}={value!r} cannot be honoured: {entry.refusal or entry.note}"
        )
    return None, name


def log_once(name: str, value: Any) -> None:
    """Log an accepted Celery setting's line, once per process per setting."""
    entry = CELERY_SETTINGS[name]
    if entry.kind == "ignored":  # its value is never shown: a URL has credentials
        _log_once(name, entry.level, f"Celery setting {name} is not used: {entry.note}")
    else:
        _log_once(name, entry.level, f"Celery setting {name}={value!r} accepted: {entry.note}")


def _log_once(key: str, level: int, message: str) -> None:
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    log.log(level, "%s", message)


#: Celery's task options that jobqueue accepts (``@app.task(acks_late=True)``):
#: each is its app-wide setting (``task_<option>``) for one task.
TASK_OPTIONS = ("track_started", "acks_late")
_ACKS_EARLY = (
    "acks_late=False: a job of this task whose worker is lost is recorded FAILURE "
    "instead of running again (jobqueue's reject_on_worker_lost=False): at most one run"
)


def task_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """``options`` of ``@app.task`` without Celery's ``track_started`` and
    ``acks_late``: each is accepted as its setting is (logged once as
    ``task_track_started``/``task_acks_late``), except ``acks_late=False``,
    Celery's acknowledgement before running: jobqueue still holds the job
    under a lease, but a lost worker's job is recorded FAILURE rather than run
    again (``reject_on_worker_lost=False``), which is what at-most-once asks."""
    given = dict(options)
    for option in TASK_OPTIONS:
        if option not in given:
            continue
        value = given.pop(option)
        if not isinstance(value, bool):
            raise TypeError(f"{where}: {option} must be True or False, got {value!r}")
        if option == "acks_late" and value is False:
            if given.get("reject_on_worker_lost") is True:
                raise ConfigurationError(
                    f"{where}: acks_late=False (at most one run) contradicts "
                    "reject_on_worker_lost=True (run again when the worker is lost)"
                )
            given["reject_on_worker_lost"] = False
            _log_once("acks_late=False", logging.INFO, _ACKS_EARLY)
            continue
        name = f"task_{option}"
        celery_setting(name, value, where)
        log_once(name, value)
    return given
