"""The application object: settings, the task registry and enqueueing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, Literal, overload

from .config import Settings
from .db import Database
from .exceptions import ConfigurationError
from .ids import check_id, new_id
from .limits import route
from .result import AsyncResult, GroupResult, ResultWaiter
from .serialization import dump_arguments, dumps
from .tasks import TASK_OPTIONS, P, R, Task, check_time_limits

log = logging.getLogger(__name__)

_current: JobQueue | None = None


def current_app() -> JobQueue:
    if _current is None:
        raise ConfigurationError("no JobQueue app exists yet; pass app= explicitly")
    return _current


class JobQueue:
    """A jobqueue application.

    ``JobQueue(dsn=None, *, schema="jobqueue")``: the DSN comes from the
    argument, else ``$JOBQUEUE_DSN``, else an embedded PostgreSQL started under
    ``data_dir`` (default ``./.jobqueue``, or ``$JOBQUEUE_DATA_DIR``).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "jobqueue",
        data_dir: str | Path | None = None,
        auto_migrate: bool | None = None,
        **settings: Any,
    ) -> None:
        global _current
        self.conf = Settings(dsn=dsn, schema=schema, auto_migrate=auto_migrate)
        if data_dir is not None:
            self.conf.data_dir = Path(data_dir)
        for key, value in settings.items():
            if not hasattr(self.conf, key):
                raise TypeError(f"JobQueue() got an unknown setting {key!r}")
            setattr(self.conf, key, value)
        self.conf.validate()
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: How a worker's child processes find this app (set by ``-A``).
        self.main_spec: str | None = None
        self.db = Database(self.conf)
        self.results = ResultWaiter(self)
        self._register_builtins()
        _current = self

    def __repr__(self) -> str:
        return f"<JobQueue schema={self.conf.schema!r} tasks={len(self.tasks)}>"

    def GroupResult(self, id: str) -> GroupResult | None:
        return GroupResult.restore(id, app=self)

    # -- tasks -----------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        bind: Literal[True],
        name: str | None = ...,
        queue: str | None = ...,
        priority: int = ...,
        ignore_result: bool = ...,
        **options: Any,
    ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = ...,
        queue: str | None = ...,
        priority: int = ...,
        bind: Literal[False] = ...,
        ignore_result: bool = ...,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``."""
        unknown = set(options) - TASK_OPTIONS
        if unknown:
            raise TypeError(
                f"@app.task got unknown option(s) {sorted(unknown)}; "
                f"known options: {sorted(TASK_OPTIONS)}"
            )

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            settings = dict(options)
            name = settings.pop("name", None) or f"{func.__module__}.{func.__qualname__}"
            settings["priority"] = _check_priority(settings.get("priority", 0))
            task: Task[Any, Any] = Task(self, func, name=name, **settings)
            self.tasks[name] = task
            return task

        return register(fn) if fn is not None else register

    def _register_builtins(self) -> None:
        """``task.map`` / ``task.starmap`` run as one job of these."""

        @self.task(name="jobqueue.map", max_retries=0)
        def map_(task: str, items: list[Any]) -> list[Any]:
            fn = self.tasks[task]
            return [fn(item) for item in items]

        @self.task(name="jobqueue.identity", max_retries=0)
        def identity(value: Any) -> Any:
            return value

        @self.task(name="jobqueue.starmap", max_retries=0)
        def starmap(task: str, items: list[list[Any]]) -> list[Any]:
            fn = self.tasks[task]
            return [fn(*item) for item in items]

    # -- enqueueing -----------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        task_id: str | None = None,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        connection: Any = None,
    ) -> AsyncResult:
        """Enqueue task ``name`` (it need not be registered in this process).

        Queue: the call's, else ``app.conf.task_routes``, else the task's, else
        the default queue. A task with ``unique`` returns the job already holding
        its key (and writes nothing) when there is one.
        """
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        params = self.job_params(
            name,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            countdown=countdown,
            eta=eta,
            expires=expires,
            task_id=task_id,
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
        )
        job_id = params["id"]
        registered = self.tasks.get(name)
        unique = registered.flow if registered is not None else None
        key = unique.unique_for(name, args, kwargs) if unique is not None else None
        if unique is None or key is None:
            if task_id is None:
                self.db.execute("job_insert", params, connection)
                return AsyncResult.trusted(job_id, self)
            # A caller's id may be taken, by a record or by an uncommitted
            # insert it then waits for: both tables' keys must see it.
            self.db.execute("job_insert_recorded", params, connection, may_wait=True)
            return AsyncResult(job_id, app=self)
        params.update(
            unique_key=key,
            unique_states=list(unique.unique_states),
            unique_window=unique.unique_window,
        )
        with self.db.transaction(connection) as conn:
            self.db.run(conn, "unique_lock", {"unique_keys": [key]})
            rows = self.db.run(conn, "job_insert_unique", params)
        holder = rows[0][0] if rows else None
        return AsyncResult(str(holder) if holder is not None else job_id, app=self)

    def job_params(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        task_id: str | None = None,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
    ) -> dict[str, Any]:
        """The validated parameters of one job row (job_insert and relatives)."""
        args_json, kwargs_json = dump_arguments(name, args, kwargs)
        registered = self.tasks.get(name)
        if registered is not None:
            options, keys = registered.stored_options(soft_time_limit, time_limit, args, kwargs)
            priority = priority if priority is not None else registered.priority
        else:
            options, keys = dumps(_unregistered_options(soft_time_limit, time_limit)), {}
        return {
            "id": check_id(task_id) if task_id is not None else new_id(),
            "task": name,
            "args": args_json,
            "kwargs": kwargs_json,
            "queue": self.queue_for(name, queue, args, kwargs),
            "priority": _check_priority(priority or 0),
            "options": options,
            "root_id": None,
            "parent_id": None,
            "rate_key": keys.get("rate_key"),
            "concurrency_key": keys.get("concurrency_key"),
            **_timing(countdown, eta, expires),
        }

    def add_periodic_task(
        self, schedule: Any, sig: Any, name: str | None = None, **entry: Any
    ) -> None:
        """Celery's ``add_periodic_task``: run ``sig`` (a signature or a task) on
        ``schedule`` (crontab, cron string, timedelta or seconds)."""
        from .canvas import Signature

        if isinstance(sig, Signature):
            entry.setdefault("args", list(sig.args))
            entry.setdefault("kwargs", dict(sig.kwargs))
            task_name = sig.task_name
        else:
            task_name = getattr(sig, "name", sig)
        key = name or task_name  # one schedule per task unless named
        self.conf.beat_schedule[key] = {"task": task_name, "schedule": schedule, **entry}

    def periodic(
        self, schedule: Any, name: str | None = None, **entry: Any
    ) -> Callable[[Task[P, R]], Task[P, R]]:
        """Decorate a task to run it on ``schedule``: ``@app.periodic(crontab(minute=0))``."""

        def register(task: Task[P, R]) -> Task[P, R]:
            self.add_periodic_task(schedule, task, name=name or task.name, **entry)
            return task

        return register

    def queue_for(
        self,
        name: str,
        queue: str | None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        if queue:
            return queue
        if self.conf.task_routes:
            routed = route(self.conf.task_routes, name, args, kwargs or {})
            if routed:
                return routed
        registered = self.tasks.get(name)
        return (registered.queue if registered else None) or self.conf.default_queue

    def enqueue_many(
        self,
        task: Task[Any, Any] | str,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        connection: Any = None,
    ) -> list[AsyncResult]:
        """Enqueue one job per item in a single statement. An item is the tuple
        of positional arguments, or a mapping of keyword arguments. For a
        ``unique`` task, items whose key is taken (or repeated) get the holder's
        result and write nothing."""
        name = task if isinstance(task, str) else task.name
        registered = self.tasks.get(name) if isinstance(task, str) else task
        ids: list[str] = []
        rows: dict[str, list[Any]] = {
            "args": [],
            "kwargs": [],
            "options": [],
            "rate_keys": [],
            "concurrency_keys": [],
            "unique_keys": [],
        }
        # Options depend on the arguments only through key functions: else once.
        flow = registered.flow if registered is not None else None
        unique = flow is not None and flow.unique
        per_item_options = flow is not None and (
            flow.rate_limit_key is not None or flow.concurrency_key is not None
        )
        options: dict[str, Any] = registered.job_options() if registered else {}
        options_json = dumps(options)
        for index, item in enumerate(items):
            if isinstance(item, (str, bytes)):
                raise TypeError(
                    f"item {index} of enqueue_many must be a tuple of arguments "
                    f"or a mapping of keyword arguments, got {item!r}"
                )
            args, kwargs = ((), dict(item)) if isinstance(item, Mapping) else (tuple(item), {})
            try:
                a, k = dump_arguments(name, args, kwargs)
            except TypeError as exc:
                raise TypeError(f"item {index}: {exc}") from exc.__cause__
            if per_item_options:
                options = registered.job_options(args=args, kwargs=kwargs) if registered else {}
                options_json = dumps(options)
            ids.append(new_id())
            rows["args"].append(a)
            rows["kwargs"].append(k)
            rows["options"].append(options_json)
            rows["rate_keys"].append(options.get("rate_key"))
            rows["concurrency_keys"].append(options.get("concurrency_key"))
            rows["unique_keys"].append(
                flow.unique_for(name, args, kwargs) if unique and flow else None
            )
        if not ids:
            return []
        default_priority = registered.priority if registered is not None else 0
        params = {
            "task": name,
            "ids": ids,
            **rows,
            "queue": self.queue_for(name, queue),
            "priority": _check_priority(priority if priority is not None else default_priority),
            **_timing(countdown, eta, expires),
        }
        if registered is None or not registered.flow.unique:
            del params["unique_keys"]
            if not self.db.copy_jobs(params, connection):
                self.db.execute("job_insert_many", params, connection)
            return [AsyncResult.trusted(job_id, self) for job_id in ids]
        return self._enqueue_many_unique(registered, ids, params, connection)

    def _enqueue_many_unique(
        self, task: Task[Any, Any], ids: list[str], params: dict[str, Any], connection: Any
    ) -> list[AsyncResult]:
        # A key repeated within the batch goes to its first item.
        first: dict[str, str] = {}
        holder_of = []
        for job_id, key in zip(ids, params["unique_keys"], strict=True):
            holder_of.append(first.setdefault(key, job_id))
        keep = [
            i
            for i, (job_id, holder) in enumerate(zip(ids, holder_of, strict=True))
            if job_id == holder
        ]
        for column in (
            "ids",
            "args",
            "kwargs",
            "options",
            "rate_keys",
            "concurrency_keys",
            "unique_keys",
        ):
            params[column] = [params[column][i] for i in keep]
        params.update(
            unique_states=list(task.flow.unique_states), unique_window=task.flow.unique_window
        )
        with self.db.transaction(connection) as conn:
            self.db.run(conn, "unique_lock", {"unique_keys": params["unique_keys"]})
            rows = self.db.run(conn, "job_insert_many_unique", params)
        holders = {str(key): str(job) for key, job in rows}
        by_id = {
            job_id: holders.get(key, job_id)
            for job_id, key in zip(params["ids"], params["unique_keys"], strict=True)
        }
        return [AsyncResult(by_id[h], app=self) for h in holder_of]

    def revoke(
        self, ids: str | Iterable[str], terminate: bool = False, connection: Any = None
    ) -> int:
        """Revoke jobs by id (see ``AsyncResult.revoke``); returns how many were
        still unfinished."""
        if isinstance(ids, str):
            id_list = [check_id(ids, "id")]
        else:
            id_list = [check_id(i, "id") for i in ids]
        params = {"ids": id_list, "terminate": bool(terminate)}
        with self.db.transaction(connection) as conn:
            self.db.run(conn, "job_revoke_lock", {"ids": id_list})
            revoked, _, _, finished = self.db.run(conn, "job_revoke", params)[0]
            if finished:  # their callbacks and chords learn of it in the same transaction
                self.db.run(conn, "job_advance", {"ids": finished})
        return int(revoked)

    def AsyncResult(self, id: str) -> AsyncResult:
        return AsyncResult(id, app=self)

    # -- lifecycle ---------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision (``jobqueue db upgrade``)."""
        from .migrate import upgrade

        upgrade(self.db.dsn(), self.conf.schema)

    def close(self) -> None:
        self.results.stop()
        self.db.close()


def _unregistered_options(soft: float | None, hard: float | None) -> dict[str, Any]:
    soft, hard = check_time_limits(soft, hard)
    return {k: v for k, v in (("soft_time_limit", soft), ("time_limit", hard)) if v is not None}


def _check_priority(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -32768 <= value <= 32767:
        raise ValueError(f"priority must be an integer in [-32768, 32767], got {value!r}")
    return value


def _timing(
    countdown: float | None, eta: datetime | None, expires: float | datetime | None
) -> dict[str, Any]:
    """When a job becomes due and when it stops being worth running; the
    database clock decides relative times, so producers' clocks don't matter."""
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    if countdown is not None and (
        isinstance(countdown, bool) or not isinstance(countdown, (int, float))
    ):
        raise TypeError(f"countdown must be a number of seconds, got {countdown!r}")
    if eta is not None and not isinstance(eta, datetime):
        raise TypeError(f"eta must be a datetime, got {eta!r}")
    timing: dict[str, Any] = {
        "countdown": float(countdown or 0),
        "eta": _aware(eta),
        "expires_at": None,
        "expires_in": None,
    }
    if isinstance(expires, datetime):
        timing["expires_at"] = _aware(expires)
    elif expires is not None:
        if isinstance(expires, bool) or not isinstance(expires, (int, float)):
            raise TypeError(f"expires must be seconds or a datetime, got {expires!r}")
        timing["expires_in"] = float(expires)
    return timing


def _aware(moment: datetime | None) -> datetime | None:
    """Naive datetimes are taken as local time, as ``datetime.now()`` makes them."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.astimezone()


__all__ = ["JobQueue", "current_app"]
