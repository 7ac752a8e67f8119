"""A process pool's child: it loads the app, then runs the jobs its slot
hands it over a pipe, in order, replying with each one's outcome. Jobs handed
to it while it runs one wait in its inbox; a skip message for one of them
(sent after the job) is read before the next job starts, and that job is
answered ``Skipped`` instead of run (``processes._Slot.skip``)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections import deque
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ... import signals
from ...exceptions import SoftTimeLimitExceeded
from ...logs import configure as configure_logging
from ..executor import JOB_LOGGER, broken, execute, precheck
from ..job import Job
from ..outcome import Outcome

if TYPE_CHECKING:
    from ...app import JobQueue

log = logging.getLogger("jobqueue.worker.pools.processes")  # the pool's, as before the split

# setitimer() refuses a time_t overflow; a soft limit this long (31 years) is none.
_LONGEST_TIMER = 1e9


class Skipped:
    """A child's reply for a job it was asked to skip before it started it."""

    __slots__ = ("job_id",)

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


def _die_with_parent() -> None:
    """If the worker is killed (kill -9), its children must not finish jobs that
    are about to be rescued and run elsewhere. Linux only (prctl)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        log.debug("prctl unavailable: children outlive a killed worker")


def child_main(conn: Connection, settings: dict[str, Any]) -> None:
    """A pool child: load the app, then run jobs from the pipe until told to stop."""
    # Signals are the parent's business; it stops children itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    configure_logging(settings["log_level"] or logging.WARNING, settings.get("log_format", "text"))
    logging.getLogger(JOB_LOGGER).setLevel(settings.get("job_log_level", logging.NOTSET))
    from ...loader import load_app

    app = load_app(settings["spec"])
    app.conf.dsn, app.conf.schema = settings["dsn"], settings["schema"]
    for name in (
        "pooler",
        "listen_dsn",
        "prepared_statements",
        "task_pool_max_size",
        "lease_ttl",
        "heartbeat_interval",
    ):
        setattr(app.conf, name, settings[name])
    # Its tasks' connections: a small pool, emptied when idle, whose sockets
    # drop what they hold if the child is killed (a fenced worker kills it).
    app.db.for_worker(killable=True)

    def soft_limit(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded("soft time limit exceeded")

    signal.signal(signal.SIGALRM, soft_limit)
    signals.worker_process_init.send(None)
    try:
        _child_loop(app, conn, settings)
    finally:
        signals.worker_process_shutdown.send(None, pid=os.getpid(), exitcode=0)


def _child_loop(app: JobQueue, conn: Connection, settings: dict[str, Any]) -> None:
    done = 0
    inbox: deque[Job | None] = deque()  # jobs handed over, in order
    skip: set[str] = set()  # ids of jobs in the inbox not to start

    def take(message: Any) -> None:
        if isinstance(message, tuple):  # ("skip", job_id): a job handed ahead
            skip.add(message[1])
        else:
            inbox.append(message)

    while True:
        try:
            if not inbox:
                skip.clear()  # a skip comes after its job: any left named a job run already
                take(conn.recv())
            while conn.poll():  # read on: a skip comes after the job it names
                take(conn.recv())
        except EOFError:
            return
        if not inbox:
            continue
        job = inbox.popleft()
        if job is None:
            return
        if job.id in skip:
            skip.discard(job.id)
            conn.send(Skipped(job.id))
            continue
        outcome: Outcome | None = None
        try:
            task = app.tasks.get(job.task)
            # The parent checked; a child never trusts a pipe.
            outcome = precheck(job, task=task)
            if outcome is None:
                soft, _ = job.limits(task)
                if soft is not None:
                    signal.setitimer(signal.ITIMER_REAL, min(soft, _LONGEST_TIMER))
                try:
                    outcome = execute(app, job, settings["hostname"])
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException as exc:  # no fault around a job may end the child
            if outcome is None:  # (a soft limit landing just after the task keeps its outcome)
                outcome = broken(job, exc)
        conn.send(outcome)
        done += 1
        if settings["max_tasks"] and done >= settings["max_tasks"]:
            return
