"""Every tunable in one place, with its default and what it does.

``app.conf`` is a ``Settings``; change fields before starting workers. Values
are validated by ``Settings.validate()`` when the app is created and again
when it first connects.

Every way a setting is given (``JobQueue(**settings)``, ``app.conf.x = v``,
``app.conf.update()``, ``app.config_from_object()``) resolves its name in one
function, ``resolve_setting``: a jobqueue setting, else a Celery name
(``jobqueue.celeryconf``), else an ``UnknownSettingError`` naming the closest
known setting.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .celeryconf import CELERY_SETTINGS, celery_setting, log_once
from .conf_objects import import_object, settings_of
from .exceptions import ConfigurationError, UnknownSettingError
from .logs import env_format
from .sql import validate_schema

DSN_ENV = "JOBQUEUE_DSN"
LISTEN_DSN_ENV = "JOBQUEUE_LISTEN_DSN"
POOLER_ENV = "JOBQUEUE_POOLER"
POOLERS = ("auto", "none", "session", "transaction")
DATA_DIR_ENV = "JOBQUEUE_DATA_DIR"
EMBEDDED_ENV = "JOBQUEUE_EMBEDDED"
DATA_DIR_NAME = ".jobqueue"

_YES = frozenset({"1", "true", "yes", "on"})
_NO = frozenset({"0", "false", "no", "off"})


def embedded_allowed_by_env() -> bool:
    """``$JOBQUEUE_EMBEDDED``: unset or empty allows the embedded fallback, ``0`` forbids it."""
    value = os.environ.get(EMBEDDED_ENV, "").strip().lower()
    if value in _NO:
        return False
    if value in _YES or not value:
        return True
    raise ConfigurationError(
        f"${EMBEDDED_ENV} must be 0 (no embedded fallback: a DSN is required) or 1, "
        f"got {os.environ[EMBEDDED_ENV]!r}"
    )


def default_data_dir(module: str | None = None, file: str | None = None) -> Path:
    """Where the embedded server lives when neither ``data_dir=`` nor
    ``$JOBQUEUE_DATA_DIR`` says: ``.jobqueue`` in the directory the app's module
    is imported from (for ``proj/tasks.py`` imported as ``proj.tasks``, the
    directory that holds ``proj/``), so the worker, the producers and
    ``-A proj.tasks:app`` reach one server whatever their working directory.
    Without a module file (a REPL, ``python -c``), the current directory.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().absolute()
    root = _import_root(module, file) if module and file else None
    return (root or Path.cwd()) / DATA_DIR_NAME


def _import_root(module: str, file: str) -> Path | None:
    """The ``sys.path`` entry ``module`` was imported from (``file`` is its file)."""
    path = Path(file).absolute()
    if not path.suffix.startswith(".py"):
        return None
    packages = module.split(".")[:-1]
    if path.stem == "__init__":  # a package: its directory is the last part
        packages = module.split(".")
    directory = path.parent
    for name in reversed(packages):
        if directory.name != name:  # an unusual loader: its own directory will do
            return path.parent
        directory = directory.parent
    return directory


@dataclass
class Settings:
    #: PostgreSQL connection string; None means $JOBQUEUE_DSN, else embedded.
    dsn: str | None = None
    #: PostgreSQL schema holding every jobqueue object.
    schema: str = "jobqueue"
    #: Where the embedded PostgreSQL keeps its data when no DSN is configured
    #: ($JOBQUEUE_DATA_DIR, else ``.jobqueue`` beside the app's package: JobQueue()
    #: passes its module to ``default_data_dir``; here, the current directory).
    data_dir: Path = field(default_factory=default_data_dir)
    #: Whether a missing DSN falls back to the embedded server; False makes it a
    #: ConfigurationError. Default: $JOBQUEUE_EMBEDDED (unset: True, 0: False).
    embedded: bool = field(default_factory=embedded_allowed_by_env)
    #: Apply migrations on first connection. None: only for the embedded server.
    auto_migrate: bool | None = None
    #: Queue for tasks that name none.
    default_queue: str = "default"
    #: Priority of jobs whose call and task name none (higher runs first).
    default_priority: int = 0
    #: Time limits (seconds) of jobs whose call and task set none (None: no limit).
    #: A default yields to a limit given explicitly it would contradict.
    default_time_limit: float | None = None
    default_soft_time_limit: float | None = None
    #: Producer-side connection pool size (delay(), get(), enqueue_many()).
    pool_max_size: int = 10
    #: In a worker process (and each process-pool child): connections shared by
    #: its tasks when they enqueue or report progress, opened on demand and
    #: closed after a minute idle; the worker's own work needs none of them.
    task_pool_max_size: int = 2
    #: What sits between us and PostgreSQL ($JOBQUEUE_POOLER): "none", a pooler
    #: in "session" or "transaction" mode (PgBouncer), or "auto": look at the
    #: first connection (a pooler hands out a backend pid of its own) and treat
    #: a pooler found as transaction mode, the one that shares server sessions.
    pooler: str = field(default_factory=lambda: os.environ.get(POOLER_ENV) or "auto")
    #: A DSN that reaches PostgreSQL directly, for what must LISTEN when ``dsn``
    #: goes through a transaction pooler ($JOBQUEUE_LISTEN_DSN): a worker's
    #: working session (claims, heartbeat, wake-ups) and get(). Without it,
    #: workers behind one poll.
    listen_dsn: str | None = field(default_factory=lambda: os.environ.get(LISTEN_DSN_ENV) or None)
    #: Server-side prepared statements: None decides (on unless behind a
    #: transaction pooler); True for PgBouncer >= 1.21 with max_prepared_statements.
    prepared_statements: bool | None = None
    #: Worker: seconds between polls when no NOTIFY arrives (lost-notification cover).
    poll_interval: float = 5.0
    #: Worker: seconds between heartbeats; a worker silent for `lease_ttl` is presumed dead.
    heartbeat_interval: float = 5.0
    lease_ttl: float = 30.0
    #: Worker: a job of a task this worker does not know is handed back (for a
    #: worker that knows it: a rolling deploy) until this many seconds after it
    #: was enqueued, then fails with TaskNotRegistered.
    unknown_task_grace: float = 300.0
    #: Worker: most outcomes written by one completion statement.
    complete_batch_size: int = 500
    #: Producer side: keep retrying a statement that failed transiently (connection
    #: lost, serialization failure, deadlock) for this many seconds.
    db_retry_seconds: float = 10.0
    #: AsyncResult.get(): seconds between state re-checks if no NOTIFY arrives.
    result_recheck_interval: float = 1.0
    #: Eager mode (Celery's task_always_eager; jobqueue.eager): delay(), apply_async(),
    #: send_task(), enqueue_many() and canvases run here and now, with no database.
    #: (testing branch; the config branch declares it too, with its alias: keep one.)
    eager: bool = False
    #: Eager mode: the call raises a failed job's exception (Celery's
    #: task_eager_propagates) instead of returning a FAILURE result.
    eager_propagates: bool = False
    #: Where tasks go when a call names no queue: a mapping of task names or
    #: globs to queue names, a callable ``(task, args, kwargs) -> queue``, or a list.
    task_routes: Any = None
    #: Periodic tasks: ``{name: {"task", "schedule", "args", "kwargs", "options"}}``.
    beat_schedule: dict[str, Any] = field(default_factory=dict)
    #: The IANA time zone crontabs are read in when their entry names none.
    timezone: str = "UTC"
    #: ``jobqueue worker`` defaults, below its -c and --prefetch-multiplier
    #: (None: 4 slots per CPU, at most 32; 128).
    worker_concurrency: int | None = None
    worker_prefetch_multiplier: int | None = None
    #: Finished jobs are deleted this many seconds after they finish (None: keep).
    result_expires: float | None = 86400.0
    #: ... and failed ones after this many (None: keep).
    failed_result_expires: float | None = 7 * 86400.0
    #: Rows deleted per retention statement (small, so locks stay short).
    retention_batch_size: int = 1000
    # -- Failure notifications (jobqueue.notify; docs/operations.md). ``jobqueue
    # worker`` mails failures if notify_admins is set and posts them if
    # notify_webhook_url is; the notify_* settings without email_/webhook_
    # apply to both.
    #: Celery's ADMINS: addresses (or (name, address) pairs) to mail failures to.
    notify_admins: list[Any] = field(default_factory=list)
    #: Celery's SERVER_EMAIL: the From address (None: jobqueue@<this host>).
    notify_email_sender: str | None = None
    #: The SMTP server (Celery's EMAIL_HOST, EMAIL_PORT; None: 25, 587 with
    #: "starttls", 465 with "ssl"), its login (EMAIL_HOST_USER,
    #: EMAIL_HOST_PASSWORD) and security: "none", "starttls" (EMAIL_USE_TLS)
    #: or "ssl" (EMAIL_USE_SSL); seconds before a send gives up (EMAIL_TIMEOUT).
    notify_email_host: str = "localhost"
    notify_email_port: int | None = None
    notify_email_user: str | None = None
    notify_email_password: str | None = field(default=None, repr=False)
    notify_email_security: str = "none"
    notify_email_timeout: float = 10.0
    #: Subject template: {task}, {exception_type}, {state}, {count}, {hostname},
    #: {queue}, {job_id} (a digest's: of its most frequent failure, and it adds
    #: "(and N more failures)").
    notify_email_subject: str = "[jobqueue] {task} failed: {exception_type}"
    #: POST failures as JSON here (a Slack-compatible incoming webhook will do).
    notify_webhook_url: str | None = field(default=None, repr=False)
    #: Headers added to the POST (e.g. Authorization).
    notify_webhook_headers: dict[str, str] = field(default_factory=dict, repr=False)
    #: Sign the POST with HMAC-SHA256 (X-Jobqueue-Signature) using this secret.
    notify_webhook_secret: str | None = field(default=None, repr=False)
    notify_webhook_timeout: float = 10.0
    #: After a message, the next waits this many seconds and counts every
    #: failure in between (per worker process; 0: no rate limit).
    notify_window: float = 300.0
    #: Further attempts at a message that could not be sent (1, 2, 4 s... apart).
    notify_retries: int = 3
    #: Also notify attempts that will be retried (by default only jobs that
    #: failed for good).
    notify_on_retry: bool = False
    #: Task names or globs to notify (empty: all) and not to notify.
    notify_tasks: list[str] = field(default_factory=list)
    notify_exclude_tasks: list[str] = field(default_factory=list)
    #: Exception type names or globs, bare or with their module ("TimeoutError",
    #: "requests.exceptions.*"), to notify (empty: all) and not to notify.
    notify_exceptions: list[str] = field(default_factory=list)
    notify_exclude_exceptions: list[str] = field(default_factory=list)
    #: Failures described in full in a digest (the rest are counted).
    notify_examples: int = 5
    #: How ``jobqueue worker`` and ``jobqueue beat`` write their logs: "text",
    #: or "json" (one object per line). Default: $JOBQUEUE_LOG_FORMAT, else
    #: "text"; their ``--log-format`` wins over both. Checked by them, not by
    #: validate(): a typo meant for workers must not stop producers.
    log_format: str = field(default_factory=env_format)
    # -- HTTP tasks (jobqueue.http; docs/http-tasks.md): read by the worker that
    # makes the request, when it makes it.
    #: Addresses that are not public (private, loopback, link-local, shared,
    #: reserved...) that a URL may reach: False none, True all, or a list of
    #: networks ("10.0.5.0/24", "127.0.0.1"). Off, a user-supplied URL cannot
    #: reach internal services.
    http_allow_private: bool | list[str] = False
    #: If not empty, the only hosts a URL may name: names or globs
    #: ("api.example.com", "*.example.com").
    http_allowed_hosts: list[str] = field(default_factory=list)
    #: The most of a response's body read and stored in the result; the rest
    #: is dropped and the result says "truncated".
    http_max_body_bytes: int = 65_536
    #: Not a setting: the global options of a ``jobqueue`` command that reaches
    #: this app's database (``-A proj.tasks:app``, set by ``-A``; the CLI adds
    #: ``--dsn``/``--schema`` when it replaces the app's own), for error messages.
    cli_options: str | None = field(default=None, init=False, repr=False, compare=False)
    #: Not a setting: where the DSN comes from when ``dsn`` is not set, asked
    #: at first use and before $JOBQUEUE_DSN (an integration's: jobqueue.contrib.
    #: django's reads DATABASES, which may not be loaded when the app is made).
    dsn_source: Callable[[], str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    if not TYPE_CHECKING:  # so type checkers still flag a misspelt setting read

        def __getattr__(self, name: str) -> Any:
            """Only for names that are not fields: a Celery alias reads its setting
            (``app.conf.task_always_eager`` is ``app.conf.eager``)."""
            entry = CELERY_SETTINGS.get(name)
            if entry is not None and entry.setting is not None:
                return getattr(self, entry.setting)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN:  # the dataclass's own __init__ and most assignments
            object.__setattr__(self, name, value)
        else:
            self._apply([(name, value, name)], "app.conf", check=False)

    def update(
        self, mapping: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), /, **settings: Any
    ) -> None:
        """Celery's ``conf.update``: set several settings (jobqueue's names or
        Celery's). They are resolved and checked (``validate()``) together
        before any is set, so a bad one changes nothing."""
        items = [*dict(mapping).items(), *settings.items()]
        self._apply([(k, v, k) for k, v in items], "app.conf.update()")

    def config_from_object(
        self, obj: Any, namespace: str | None = None, *, silent: bool = False
    ) -> None:
        """Celery's ``config_from_object``: the settings of ``obj``, a module
        path (``"proj.settings"``, ``"proj.settings:Config"``), a module, a class
        or object with attributes, or a mapping; with ``namespace="X"``, only
        its ``X_*`` names, as Celery reads Django's ``CELERY_*`` settings
        (``jobqueue.conf_objects.settings_of`` says which names are read: a
        config module's imports and helpers are not, a misspelt setting
        raises). Checked together, as ``update()``. ``silent``: a module that
        cannot be imported leaves the settings as they are."""
        label = obj if isinstance(obj, str) else getattr(obj, "__name__", type(obj).__name__)
        if isinstance(obj, str):
            try:
                obj = import_object(obj)
            except ImportError:
                if silent:
                    return
                raise
        where = f"config_from_object({label!r})"
        self._apply(list(settings_of(obj, namespace, where, _is_setting)), where)

    def _apply(self, items: list[tuple[str, Any, str]], where: str, check: bool = True) -> None:
        """Set ``items`` (name, value, the name as the user wrote it), each
        resolved by ``resolve_setting``; with ``check``, only if the result
        passes ``validate()``. Accepted Celery settings are logged once."""
        resolved: list[tuple[str, Any]] = []
        notes: list[tuple[str, Any]] = []
        for name, value, shown in items:
            setting, note = resolve_setting(name, value, where, shown)
            if setting is not None:
                resolved.append(setting)
            if note is not None:
                notes.append((note, value))
        if check:
            trial = copy.copy(self)
            for name, value in resolved:
                object.__setattr__(trial, name, value)
            trial.validate()
        for name, value in resolved:
            object.__setattr__(self, name, value)
        for name, value in notes:
            log_once(name, value)

    def resolved_dsn(self) -> str | None:
        if self.dsn:
            return self.dsn
        if self.dsn_source is not None:
            return self.dsn_source()
        return os.environ.get(DSN_ENV) or None

    def validate(self) -> None:
        validate_schema(self.schema)
        if not isinstance(self.embedded, bool):
            raise ConfigurationError(
                f"app.conf.embedded must be True or False, got {self.embedded!r}"
            )
        for name in ("poll_interval", "heartbeat_interval", "lease_ttl", "result_recheck_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(
                    f"app.conf.{name} must be a positive number, got {value!r}"
                )
        grace = self.unknown_task_grace
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise ConfigurationError(
                f"app.conf.unknown_task_grace must be a number of seconds >= 0, got {grace!r}"
            )
        if self.lease_ttl <= self.heartbeat_interval:
            raise ConfigurationError(
                "app.conf.lease_ttl must be longer than app.conf.heartbeat_interval "
                f"({self.lease_ttl} <= {self.heartbeat_interval})"
            )
        for name in ("result_expires", "failed_result_expires"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ConfigurationError(
                    f"app.conf.{name} must be a positive number of seconds or None, got {value!r}"
                )
        if self.pooler not in POOLERS:
            raise ConfigurationError(
                f"app.conf.pooler must be one of {', '.join(POOLERS)}, got {self.pooler!r}"
            )
        if self.prepared_statements not in (None, True, False):
            raise ConfigurationError(
                "app.conf.prepared_statements must be None, True or False, "
                f"got {self.prepared_statements!r}"
            )
        for name in (
            "pool_max_size",
            "task_pool_max_size",
            "complete_batch_size",
            "retention_batch_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"app.conf.{name} must be a positive integer, got {value!r}"
                )
        self._validate_defaults()

    def _validate_defaults(self) -> None:
        """The task defaults, the beat's time zone and the worker defaults."""
        priority = self.default_priority
        if (
            not isinstance(priority, int)
            or isinstance(priority, bool)
            or not (-32768 <= priority <= 32767)
        ):
            raise ConfigurationError(
                f"app.conf.default_priority must be an integer in [-32768, 32767], got {priority!r}"
            )
        for name in ("default_soft_time_limit", "default_time_limit"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                raise ConfigurationError(
                    f"app.conf.{name} must be a positive number of seconds or None, got {value!r}"
                )
        soft, hard = self.default_soft_time_limit, self.default_time_limit
        if soft is not None and hard is not None and soft > hard:
            raise ConfigurationError(
                f"app.conf.default_soft_time_limit ({soft}s) must not exceed "
                f"app.conf.default_time_limit ({hard}s)"
            )
        if not isinstance(self.eager, bool):
            raise ConfigurationError(f"app.conf.eager must be True or False, got {self.eager!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigurationError(
                f"app.conf.timezone must be an IANA time zone name such as 'Europe/Paris', "
                f"got {self.timezone!r}"
            ) from None
        for name in ("worker_concurrency", "worker_prefetch_multiplier"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                hint = (
                    " (Celery's 0, no limit, has no equivalent: a worker holds at most "
                    "this many times its slots)"
                    if name == "worker_prefetch_multiplier" and value == 0
                    else ""
                )
                raise ConfigurationError(
                    f"app.conf.{name} must be a positive integer or None, got {value!r}{hint}"
                )


#: Settings given in seconds that also take a timedelta, as Celery's do.
_SECONDS = frozenset(
    ("result_expires", "failed_result_expires", "default_time_limit", "default_soft_time_limit")
)
_FIELDS = frozenset(f.name for f in fields(Settings))
#: Fields set as given (no conversion): ``Settings.__setattr__``'s fast path.
_PLAIN = _FIELDS - _SECONDS - {"timezone", "data_dir"}


def _is_setting(name: str) -> bool:
    return name in _FIELDS or name in CELERY_SETTINGS


def resolve_setting(
    name: str, value: Any, where: str = "app.conf", shown: str | None = None
) -> tuple[tuple[str, Any] | None, str | None]:
    """What setting ``name`` to ``value`` means, the one place names are
    resolved: ``((setting, value), None)`` to set a jobqueue setting (``name``
    itself or the one a Celery alias names, the value converted: a timedelta to
    seconds, a tzinfo to its name), or ``(None, celery_name)`` for a Celery
    setting accepted as it is (to log once). Raises ConfigurationError for a
    Celery value jobqueue cannot honour and UnknownSettingError (naming the
    closest known setting) for any other name; ``where`` and ``shown`` (the
    name as the user wrote it) are for the message."""
    if name in _FIELDS:
        return (name, _converted(name, value)), None
    if name in CELERY_SETTINGS:
        setting, note = celery_setting(name, value, where)
        return ((setting, _converted(setting, value)) if setting else None), note
    raise UnknownSettingError(f"{where} got an unknown setting {shown or name!r}{_hint(name)}")


def _hint(name: str) -> str:
    known = sorted(_FIELDS | CELERY_SETTINGS.keys())
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    if not close:
        return "; see docs/configuration.md for every setting"
    entry = CELERY_SETTINGS.get(close[0])
    if entry is not None and entry.setting:
        return f"; did you mean {close[0]!r} (jobqueue's {entry.setting!r})?"
    return f"; did you mean {close[0]!r}?"


def _converted(name: str, value: Any) -> Any:
    if name in _SECONDS and isinstance(value, timedelta):
        return value.total_seconds()
    if name == "data_dir" and isinstance(value, str):
        return Path(value)
    if name == "timezone":
        if value is dt_timezone.utc:
            return "UTC"
        return getattr(value, "key", None) or getattr(value, "zone", None) or value
    return value
