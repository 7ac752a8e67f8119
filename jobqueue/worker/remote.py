"""A worker's side of remote control (``app.control.inspect()``, ``jobqueue
inspect|control``; the caller's side is ``jobqueue.control.remote``).

A request is a row (``control_send``); the NOTIFY that announces it is only a
hint that makes the claim loop look, and the heartbeat looks too (a lost
NOTIFY, a poll-only worker behind a transaction pooler): so a request is
answered within a heartbeat at worst. Requests run on the claim loop's
thread, the only one that changes the worker's queues and pool size, and each
is answered once (``control_reply``). A request that fails is answered with
``{"error": ...}``; a worker never dies of one.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .. import __version__
from .job import Job

if TYPE_CHECKING:
    from .runner import Worker

log = logging.getLogger(__name__)

_ARGUMENTS_SHOWN = 4096  # characters of a job's arguments in active/reserved


def job_info(job: Job, hostname: str, started: float | None = None) -> dict[str, Any]:
    """A job as Celery's inspect shows a request (``Request.info()``)."""
    try:
        args: Any = job.args
        kwargs: Any = job.kwargs
    except Exception as exc:  # a malformed payload: shown, not fatal to the answer
        args, kwargs = f"<undecodable: {exc}>", {}
    if len(json.dumps(args, default=repr)) + len(json.dumps(kwargs, default=repr)) > (
        _ARGUMENTS_SHOWN
    ):
        args, kwargs = repr(args)[:_ARGUMENTS_SHOWN] + "...", {}
    return {
        "id": job.id,
        "name": job.task,
        "type": job.task,
        "args": args,
        "kwargs": kwargs,
        "hostname": hostname,
        "time_start": started,
        "acknowledged": True,  # claimed in SQL: the job's row says so
        "delivery_info": {
            "routing_key": job.queue,
            "redelivered": job.attempt > 1,
            "attempt": job.attempt,
        },
        "worker_pid": os.getpid(),
    }


class RemoteControl:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._due = threading.Event()  # a request may be waiting: look in SQL
        # request id -> (monotonic time answered, the reply as JSON text): a
        # request runs once; a reply that did not commit is sent again as is.
        self._answered: dict[int, tuple[float, str]] = {}
        self._started = time.time()
        self._commands: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": lambda a: {"ok": "pong"},
            "active": self._active,
            "reserved": self._reserved,
            "scheduled": lambda a: [],  # ETA jobs wait in the database, not in workers
            "registered": lambda a: sorted(self.worker.app.tasks),
            "stats": self._stats,
            "active_queues": self._active_queues,
            "shutdown": self._shutdown,
            "pool_grow": self._pool_grow,
            "pool_shrink": self._pool_shrink,
            "add_consumer": self._add_consumer,
            "cancel_consumer": self._cancel_consumer,
        }
        self._after: list[Callable[[], None]] = []  # run once the replies are written
        self._conn: psycopg.Connection[Any] | None = None  # the working session, during take()
        self._changed = False  # pool size or queues: the workers row must say so

    def hint(self) -> None:
        """A NOTIFY or the heartbeat says a request may be waiting."""
        self._due.set()

    @property
    def due(self) -> bool:
        return self._due.is_set()

    def take(self, conn: psycopg.Connection[Any]) -> int:
        """Answer the requests waiting for this worker; how many."""
        if not self._due.is_set():
            return 0
        self._due.clear()
        w = self.worker
        pending = w.app.store.control_pending(conn, w.id)
        answered = 0
        self._conn = conn
        try:
            for request, command, arguments in pending:
                if request not in self._answered:
                    reply = self._answer(command, arguments if isinstance(arguments, dict) else {})
                    text = json.dumps(reply, default=str)
                    self._answered[request] = (time.monotonic(), text)
                    if self._changed:  # the table says so before the caller hears back
                        w.app.store.update_worker(conn, w.id, w.concurrency, list(w.queues))
                        self._changed = False
                at, text = self._answered[request]
                if text:  # empty: written already
                    w.app.store.control_reply(conn, request, w.id, text)
                    self._answered[request] = (at, "")
                    answered += 1
        finally:
            self._conn = None
        self._forget_old()
        after, self._after = self._after, []
        for action in after:
            action()
        return answered

    def _answer(self, command: str, arguments: dict[str, Any]) -> Any:
        handler = self._commands.get(command)
        if handler is None:  # a newer release's command
            return {"error": f"unknown command {command!r} (jobqueue {__version__})"}
        try:
            return handler(arguments)
        except Exception as exc:
            log.exception("remote control %s failed", command)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _forget_old(self) -> None:
        # Requests expire within an hour (control_send's timeout); past that,
        # control_pending no longer returns them.
        horizon = time.monotonic() - 3700
        for request in [r for r, (at, _) in self._answered.items() if at < horizon]:
            del self._answered[request]

    # -- inspect ----------------------------------------------------------------

    def _active(self, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        w = self.worker
        return [job_info(job, w.hostname, started) for job, started in w._pool.running()]

    def _reserved(self, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        w = self.worker
        return [job_info(job, w.hostname) for job in w._pool.reserved()]

    def _active_queues(self, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"name": q, "routing_key": q} for q in self.worker.queues]

    def _stats(self, arguments: dict[str, Any]) -> dict[str, Any]:
        w = self.worker
        usage = resource.getrusage(resource.RUSAGE_SELF)
        try:
            where = conninfo_to_dict(w.app.db.dsn())
        except psycopg.Error:
            where = {}
        return {
            "id": w.id,
            "hostname": w.hostname,
            "pid": os.getpid(),
            "version": __version__,
            "uptime": round(time.time() - self._started, 3),
            "queues": list(w.queues),
            "pool": {
                "implementation": w.pool_kind,
                "max-concurrency": w.concurrency,
                "processes": w._pool.processes(),
                "max-tasks-per-child": w.settings.max_tasks_per_child,
                "running": len(w._pool.running()),
                "reserved": len(w._pool.reserved()),
            },
            "prefetch_count": w._capacity(),
            "total": dict(w.totals),
            "processed": w.processed,
            "leader": w.leader,
            "fenced": w.lease.fenced,
            "wakeups": w.wakeups,
            "rusage": {"utime": usage.ru_utime, "stime": usage.ru_stime, "maxrss": usage.ru_maxrss},
            # Where it connects, never who as (no user, no password).
            "broker": {
                "transport": "postgresql",
                "hostname": where.get("host") or where.get("hostaddr"),
                "port": where.get("port"),
                "database": where.get("dbname"),
                "schema": w.app.conf.schema,
            },
        }

    # -- control ----------------------------------------------------------------

    def _shutdown(self, arguments: dict[str, Any]) -> dict[str, str]:
        log.warning("remote control: shutdown requested; warm shutdown")
        self._after.append(self.worker.stop)  # after the reply is written
        return {"ok": "shutting down"}

    def _pool_grow(self, arguments: dict[str, Any]) -> dict[str, str]:
        size = self.worker.resize_pool(int(arguments["n"]))
        self._changed = True
        return {"ok": f"pool will grow to {size}"}

    def _pool_shrink(self, arguments: dict[str, Any]) -> dict[str, str]:
        size = self.worker.resize_pool(-int(arguments["n"]))
        self._changed = True
        return {"ok": f"pool will shrink to {size}"}

    def _add_consumer(self, arguments: dict[str, Any]) -> dict[str, str]:
        queue = str(arguments["queue"])
        assert self._conn is not None
        if not self.worker.change_queues(self._conn, add=queue):
            return {"ok": f"already consuming from {queue!r}"}
        self._changed = True
        return {"ok": f"add consumer {queue}"}

    def _cancel_consumer(self, arguments: dict[str, Any]) -> dict[str, str]:
        queue = str(arguments["queue"])
        assert self._conn is not None
        if not self.worker.change_queues(self._conn, remove=queue):
            return {"ok": f"not consuming from {queue!r}"}
        self._changed = True
        return {"ok": f"no longer consuming from {queue!r}"}
