"""The beat: enqueues periodic tasks. Run as many as you like.

Each beat, in a loop: take the due schedules (``FOR UPDATE SKIP LOCKED``, so
two beats never plan the same schedule at once), insert a tick row per fire
time together with its job in one transaction (the (schedule, fire time) key
makes a second insert a no-op), and plan the next fire time. Killing a beat
loses nothing: its transaction rolls back and another beat does the work.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from . import discovery, interrupts, signals
from .limits import route
from .options import resolve, schedule_options
from .schedules import Schedule, Timing, fires_due
from .serialization import dumps, loads

if TYPE_CHECKING:
    from .app import JobQueue
    from .options import JobSpec

log = logging.getLogger(__name__)

_MAX_SLEEP = 1.0  # re-read schedules at least this often (changes made in SQL)
NEEDS_PYTHON = "JQ006"  # enqueue(): a key or route only a Python function gives


class Beat:
    def __init__(self, app: JobQueue, max_sleep: float = _MAX_SLEEP) -> None:
        self.app = app
        self.max_sleep = max_sleep
        self._stop = threading.Event()
        self._store = app.store
        self.fired = 0

    def schedules(self) -> list[Schedule]:
        conf = self.app.conf
        return [
            Schedule.from_entry(name, entry, conf.timezone)
            for name, entry in conf.beat_schedule.items()
        ]

    def run(self) -> None:
        """Run until ``stop()`` or SIGTERM/SIGINT (when started in the main thread)."""
        if threading.current_thread() is threading.main_thread():
            interrupts.handle((signal.SIGTERM, signal.SIGINT), self._on_signal, "jobqueue-signal")
        signals.beat_init.send(self)  # its receivers may set a framework up
        discovery.check_settled(self.app)
        declared = self.schedules()
        log.info("beat ready: %d schedule(s) declared in code", len(declared))
        delay = 0.1
        while not self._stop.is_set():
            try:
                with self.app.db.connect(application_name="jobqueue-beat") as conn:
                    self.sync(conn, declared)
                    delay = 0.1
                    while not self._stop.is_set():
                        self.tick(conn)
                        self._stop.wait(self._sleep_for(conn))
            except psycopg.OperationalError as exc:
                log.warning("beat lost its connection (%s); reconnecting in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        log.info("beat stopped after enqueueing %d job(s)", self.fired)

    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: signal.Signals) -> None:
        """On a thread of its own (``interrupts``): Event.set from the handler
        itself could wait forever on the main thread's Event.wait."""
        log.info("%s received: beat stopping", signum.name)
        self.stop()

    def sync(self, conn: psycopg.Connection[Any], declared: list[Schedule]) -> None:
        removed = self._store.schedule_prune_code(conn, [s.name for s in declared])
        if removed:
            log.info("removed schedules no longer declared in code: %s", ", ".join(removed))
        for s in declared:
            self._store.schedule_sync_code(
                conn,
                {
                    "name": s.name,
                    "task": s.task,
                    "args": dumps(s.args),
                    "kwargs": dumps(s.kwargs),
                    "options": dumps(s.options),
                    "cron": s.cron,
                    "interval": s.interval,
                    "timezone": s.timezone,
                    "catch_up": s.catch_up,
                    "catch_up_limit": s.catch_up_limit,
                    "code_hash": s.code_hash,
                },
            )

    def tick(self, conn: psycopg.Connection[Any]) -> int:
        """Enqueue every due tick; returns how many jobs this beat enqueued."""
        fired = 0
        with conn.transaction():
            for row in self._store.schedules_due(conn):
                try:
                    with conn.transaction():  # a savepoint: one bad schedule spoils nothing
                        fired += self._fire(conn, *row)
                except (
                    ValueError,
                    TypeError,
                    KeyError,
                    psycopg.DataError,
                    psycopg.ProgrammingError,
                ):
                    log.exception("schedule %r cannot be planned; retrying in a minute", row[0])
                    self._store.schedule_postpone(conn, row[0])
                except psycopg.Error as exc:
                    if exc.sqlstate != NEEDS_PYTHON:
                        raise
                    # enqueue() cannot compute a key or a route of a task this
                    # beat does not have registered: said, not skipped.
                    log.error(
                        "schedule %r cannot be enqueued from SQL: %s (%s); run the beat "
                        "with the app that registers the task (-A); retrying in a minute",
                        row[0],
                        exc.diag.message_primary,
                        exc.diag.message_hint,
                    )
                    self._store.schedule_postpone(conn, row[0])
        self.fired += fired
        return fired

    def _fire(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        task: str,
        args: list[Any],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        cron: str | None,
        interval: float | None,
        tz: str,
        catch_up: str,
        limit: int,
        next_run_at: datetime | None,
        now: datetime,
    ) -> int:
        timing = Timing(cron, interval, tz)
        fired, last = 0, None
        registered = self.app.tasks.get(task)
        if next_run_at is not None:
            for fire_at in fires_due(timing, next_run_at, now, catch_up, limit):
                call = schedule_options(options)
                spec = resolve(self.app, task, registered, args, kwargs, call)
                spec = self.app._publishing(spec, args, kwargs)
                tick = {"schedule": name, "fire_at": fire_at}
                if registered is None:  # SQL knows the task's settings, if a worker does
                    params = self._sql_params(spec, call, args, kwargs) | tick
                    holder = self._store.schedule_fire_holding(conn, params, sql=True)
                elif registered.flow.unique:
                    params = self.app._insert_params(spec, registered, args, kwargs) | tick
                    holder = self._store.schedule_fire_holding(conn, params)
                else:
                    written = self._store.schedule_fire(conn, spec.params() | tick)
                    holder = spec.id if written else None
                if holder == spec.id:  # else another beat enqueued this tick, or a key is held
                    self.app._published(spec, args, kwargs)
                    fired += 1
                last = fire_at
        self._store.schedule_plan(conn, name, timing.next_after(max(now, last or now)), last)
        if fired:
            log.debug("schedule %s: enqueued %d job(s)", name, fired)
        return fired

    def _sql_params(
        self, spec: JobSpec, call: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """schedule_fire_sql's parameters for a task this beat does not have
        registered: the queue only when the schedule or the beat's routes give
        one (else the task's settings, else ``default_queue``), the priority
        only when the schedule gives one, and the options of the call alone
        (the task's own come from task_settings)."""
        conf = self.app.conf
        routed = call.get("queue")
        if routed is None and conf.task_routes:
            routed = route(conf.task_routes, spec.task, args, kwargs)
        options = {k: v for k, v in loads(spec.options).items() if k != "max_retries"}
        return spec.params() | {
            "queue": spec.queue if routed else None,
            "default_queue": spec.queue,
            "priority": call.get("priority"),
            "default_priority": spec.priority,
            "options": dumps(options),
        }

    def _sleep_for(self, conn: psycopg.Connection[Any]) -> float:
        due_in = self._store.schedules_next(conn)
        if due_in is None:
            return self.max_sleep
        return min(max(due_in.total_seconds(), 0.005), self.max_sleep)
