"""Celery's remote control and inspect, over SQL and NOTIFY.

``broadcast`` writes one request row (``control_send``: the schema checks the
command and its arguments), which NOTIFYs the workers; each live worker it is
meant for answers with a row (``control_reply``), which NOTIFYs the caller.
The caller knows whom to wait for (the workers whose lease holds, by
``destination``), so it returns as soon as they all answered, and at the
latest after ``timeout``: a worker that is down was not expected, and one
that hangs is simply missing from the answer. Behind a transaction pooler
without ``listen_dsn`` the caller polls for the answers.

Replies have Celery's shapes: ``inspect()`` methods return a dict keyed by
worker hostname (None when nobody answered); control commands with
``reply=True`` a list of ``{hostname: reply}``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from ..sql import channels

if TYPE_CHECKING:
    from ..app import JobQueue

DEFAULT_TIMEOUT = 1.0  # seconds, as Celery's
_POLL = 0.05  # seconds between looks for replies when nothing can LISTEN


def _destination(destination: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if destination is None:
        return None
    names = [destination] if isinstance(destination, str) else list(destination)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"destination must be worker hostnames, got {destination!r}")
    return names


def broadcast(
    app: JobQueue,
    command: str,
    arguments: dict[str, Any] | None = None,
    *,
    destination: str | list[str] | tuple[str, ...] | None = None,
    reply: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Send ``command`` to the workers (``destination``: hostnames; None: all)
    and collect their replies: a list of ``{hostname: reply}``, in the order
    they came. ``reply=False`` sends and returns ``[]`` at once. Raises
    ``ValueError`` for a command or arguments the schema refuses (JQ002)."""
    if not timeout >= 0:  # also false for NaN
        raise ValueError(f"timeout must be 0 or more seconds, got {timeout!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be 1 or more, got {limit!r}")
    names = _destination(destination)
    store, db = app.store, app.db
    name = "jobqueue-control"
    conn = db.listen_connect(application_name=name) if reply else None
    listening = conn is not None
    if conn is None:  # no reply wanted, or behind a transaction pooler: poll
        conn = db.connect(application_name=name)
    with conn:
        if listening:
            conn.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(channels(app.conf.schema)["reply"]))
            )
        expected = {worker: host for worker, host in store.control_expected(conn, names)}
        # The request outlives the wait: a worker that hears of it only at its
        # next heartbeat (a lost NOTIFY, poll-only) still acts on a shutdown.
        ttl = max(timeout, 2 * app.conf.heartbeat_interval + 1)
        try:
            request = store.control_send(
                conn, command, json.dumps(arguments or {}), names, min(ttl, 3600)
            )
        except psycopg.Error as exc:
            if exc.sqlstate == "JQ002":
                raise ValueError(exc.diag.message_primary or str(exc)) from None
            raise
        if not reply:
            return []
        return _collect(app, conn, request, expected, timeout, limit, listening)


def _collect(
    app: JobQueue,
    conn: psycopg.Connection[Any],
    request: int,
    expected: dict[str, str],
    timeout: float,
    limit: int | None,
    listening: bool,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    got: dict[str, tuple[str, Any]] = {}
    while True:
        for worker, host, answer in app.store.control_answers(conn, request):
            got.setdefault(worker, (host, answer))
        if set(expected) <= set(got) or (limit is not None and len(got) >= limit):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if listening:  # a reply NOTIFYs; its payload is only a hint to look
            for _ in conn.notifies(timeout=min(left, 1.0), stop_after=1):
                pass
        else:
            time.sleep(min(left, _POLL))
    return _by_hostname(got, limit)


def _by_hostname(got: dict[str, tuple[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """[{hostname: reply}]; two workers under one hostname are told apart by
    the end of their ids (Celery would let one hide the other)."""
    hosts = [host for host, _ in got.values()]
    out = []
    for worker, (host, answer) in got.items():
        name = host if hosts.count(host) == 1 else f"{host}#{worker[-8:]}"
        out.append({name: answer})
    return out[:limit] if limit is not None else out


class Inspect:
    """``app.control.inspect(destination=None, timeout=1.0)``: each method asks
    the live workers and returns ``{hostname: reply}``, or None if none
    answered (as Celery's)."""

    def __init__(
        self,
        app: JobQueue,
        destination: str | list[str] | tuple[str, ...] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        limit: int | None = None,
    ) -> None:
        self.app = app
        self.destination = _destination(destination)
        self.timeout = timeout
        self.limit = limit

    def _ask(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = broadcast(
            self.app,
            command,
            arguments,
            destination=self.destination,
            timeout=self.timeout,
            limit=self.limit,
        )
        merged = {host: answer for one in replies for host, answer in one.items()}
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._ask("ping")

    def active(self) -> dict[str, Any] | None:
        """The jobs each worker is running."""
        return self._ask("active")

    def reserved(self) -> dict[str, Any] | None:
        """The jobs each worker has claimed ahead (prefetched), not started."""
        return self._ask("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        """Jobs a worker holds for a later time: none. Jobs with an ETA wait in
        the database, not in a worker (``app.control.jobs(state="PENDING")``,
        ``jobqueue jobs list --scheduled``); each worker answers ``[]``."""
        return self._ask("scheduled")

    def registered(self) -> dict[str, Any] | None:
        """The task names each worker knows (also in SQL: ``workers.tasks``)."""
        return self._ask("registered")

    registered_tasks = registered

    def stats(self) -> dict[str, Any] | None:
        return self._ask("stats")

    def active_queues(self) -> dict[str, Any] | None:
        return self._ask("active_queues")


class RemoteControl:
    """Celery's ``app.control`` broadcast commands (mixed into ``Control``)."""

    app: JobQueue

    def inspect(
        self,
        destination: str | list[str] | tuple[str, ...] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        limit: int | None = None,
    ) -> Inspect:
        return Inspect(self.app, destination, timeout, limit)

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: str | list[str] | tuple[str, ...] | None = None,
        reply: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        return broadcast(
            self.app,
            command,
            arguments,
            destination=destination,
            reply=reply,
            timeout=timeout,
            limit=limit,
        )

    def ping(
        self,
        destination: str | list[str] | tuple[str, ...] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]]:
        return self.broadcast("ping", destination=destination, timeout=timeout)

    def shutdown(
        self,
        destination: str | list[str] | tuple[str, ...] | None = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]]:
        """Warm shutdown of the workers (running jobs finish)."""
        return self.broadcast("shutdown", {}, destination, reply, timeout)

    def pool_grow(
        self,
        n: int = 1,
        destination: str | list[str] | tuple[str, ...] | None = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]]:
        return self.broadcast("pool_grow", {"n": n}, destination, reply, timeout)

    def pool_shrink(
        self,
        n: int = 1,
        destination: str | list[str] | tuple[str, ...] | None = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]]:
        return self.broadcast("pool_shrink", {"n": n}, destination, reply, timeout)

    def add_consumer(
        self,
        queue: str,
        destination: str | list[str] | tuple[str, ...] | None = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]]:
        """Workers start claiming from ``queue`` too (until they restart)."""
        return self.broadcast("add_consumer", {"queue": queue}, destination, reply, timeout)

    def cancel_consumer(
        self,
        queue: str,
        destination: str | list[str] | tuple[str, ...] | None = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]]:
        """Workers stop claiming from ``queue`` (until they restart); what they
        hold of it finishes."""
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, reply, timeout)

    # -- limits: durable, in SQL (no worker needs to answer) ----------------------

    def rate_limit(
        self, task_name: str, rate_limit: str | float | None, burst: float | None = None
    ) -> dict[str, Any]:
        """Set ``task_name``'s rate limit for every worker at once ("10/s",
        "100/m", "1000/h", a number per second; None or 0: none). Durable: it
        stands across worker restarts until ``reset_limits``."""
        rate = None if rate_limit is None else str(rate_limit)
        per_second = self._sql_call(lambda: self.app.store.set_rate_limit(task_name, rate, burst))
        return {"ok": "new rate limit set successfully", "rate_per_second": per_second}

    def concurrency_limit(self, task_name: str, max_running: int | None) -> dict[str, Any]:
        """At most ``max_running`` jobs of ``task_name`` at once across the
        cluster (None: no limit). The task must declare a concurrency limit."""
        value = self._sql_call(lambda: self.app.store.set_concurrency_limit(task_name, max_running))
        return {"ok": "new concurrency limit set successfully", "concurrency_limit": value}

    def reset_limits(self, task_name: str) -> bool:
        """Back to the limits ``task_name`` declares in code; False if it had none."""
        return bool(self._sql_call(lambda: self.app.store.reset_task_limit(task_name)))

    def limits(self) -> list[dict[str, Any]]:
        """Every task limit in force, with what the task declares and who set it."""
        names = (
            "task",
            "rate_per_second",
            "burst",
            "concurrency_limit",
            "declared_rate",
            "declared_concurrency",
            "rate_set_by",
            "concurrency_set_by",
            "updated_at",
        )
        return [dict(zip(names, row, strict=True)) for row in self.app.store.task_limits()]

    @staticmethod
    def _sql_call(call: Any) -> Any:
        """``call()``, with what the SQL function refuses as a ValueError: bad
        input (JQ002, and 22023 from enqueue(), as run_schedule() calls it), a
        state it cannot act on (JQ003), a key or route only Python computes
        (JQ006, from enqueue())."""
        try:
            return call()
        except psycopg.Error as exc:
            if exc.sqlstate in ("JQ002", "JQ003", "JQ006", "22023"):
                message, hint = exc.diag.message_primary or str(exc), exc.diag.message_hint
                raise ValueError(message + (f" ({hint})" if hint else "")) from None
            raise
