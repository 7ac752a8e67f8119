"""A worker's lease: the heartbeat that renews it, the fence that stops the
worker from acting on a lease it may have lost, and what rides on the beat
(maintenance on the elected leader, the health file, NOTIFY's cover for
revocations and remote control).

The contract: while ``may_start()`` is true, no other worker can have
rescued this worker's jobs (the last beat that got through renewed their
leases less than ``lease_ttl`` ago). Past that, or once the database says
the worker's row is gone, the worker is fenced: no claims, prefetched jobs
dropped unstarted, running ones stopped where the pool can, outcomes
refused by the database for jobs that were rescued. A beat that gets
through again lifts the fence; a worker whose row was deleted comes back
under a new id, so nothing done under the old one can count.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import psycopg

from ..db import transient
from ..ids import uuid7
from ..maintenance import Maintenance

if TYPE_CHECKING:
    from .runner import Worker

log = logging.getLogger("jobqueue.worker.runner")  # as the completer: the worker's lines

_RETRY_MAX = 5.0  # seconds between tries of a failing beat, at most


class Lease:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.conf = worker.app.conf
        # Until this monotonic time the lease surely holds; past it (no beat
        # got through) or with its row gone, the worker is fenced.
        self.deadline = 0.0
        self.fenced = False
        self.leader = False  # holds the maintenance lease (see beat)
        self._maintenance = Maintenance.for_app(worker.app)
        self._maintenance_conn: psycopg.Connection[Any] | None = None  # the leader's

    def start(self) -> None:
        """The lease is as good as a beat now (the worker just registered)."""
        self.deadline = time.monotonic() + self.conf.lease_ttl

    def loop(self) -> None:
        """Beat until the last running job is settled (or other workers would
        rescue it); a failed beat is retried sooner, with backoff."""
        interval = self.conf.heartbeat_interval
        wait, retry = interval, 0.1
        while not self.worker._exiting.wait(wait):
            try:
                self.beat()
                wait, retry = interval, 0.1
            except Exception as exc:
                log.warning(
                    "heartbeat failed (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    str(exc).strip(),
                    min(retry, interval),
                )
                wait, retry = min(retry, interval), min(retry * 2, _RETRY_MAX)

    def beat(self) -> None:
        w, conf = self.worker, self.conf
        # The maintenance lease lasts three heartbeats (at most the worker
        # lease): a dead leader is replaced that soon, a slow one may lose it
        # for a round (two leaders at once are harmless, only wasteful).
        leader_ttl = min(conf.lease_ttl, 3 * conf.heartbeat_interval)
        with w._work as conn:
            sent = time.monotonic()
            alive, leader = w._store.heartbeat(conn, w.id, conf.lease_ttl, leader_ttl)
            if not alive:
                if w._exiting.is_set():  # unregistered by a clean exit, not presumed dead
                    return
                # Presumed dead: its jobs were rescued and may run elsewhere. Drop
                # what has not started, and come back as a new worker, so nothing
                # done under the old id (late outcomes) can count.
                self.fence("its workers row is gone: presumed dead, its jobs rescued")
                old, w.id = w.id, str(uuid7())
                log.warning("worker %s registers again as a new worker, id %s", old, w.id)
                w._store.register_worker(conn, w._registration())
            self.deadline = sent + conf.lease_ttl
            self.touch_health()
            w._remote.hint()  # NOTIFY's cover: the claim loop looks for requests
            if self.fenced:
                self.fenced = False
                log.warning("worker %s holds a lease again: claiming resumes", w.hostname)
                w._wakeup.set()
            if leader != self.leader:
                self.leader = leader
                log.info(
                    "worker %s %s the maintenance leader (rescue, retention, vacuum)",
                    w.hostname,
                    "is now" if leader else "is no longer",
                )
            # This worker's own checks: each on its own, so one failing never
            # stops the heartbeat (that would get this live worker's jobs rescued).
            for step in (w._check_revocations, w._release_orphans):
                try:
                    step(conn)
                except psycopg.Error as exc:
                    if transient(exc):
                        raise
                    log.exception("step %s failed; the heartbeat goes on", step.__name__)
        if self.leader:
            self._run_maintenance()
        else:
            self.close_maintenance()

    def _run_maintenance(self) -> None:
        """Maintenance for everyone, on the leader's own connection: a vacuum
        or a retention batch never holds up this worker's claims."""
        try:
            if self._maintenance_conn is None or self._maintenance_conn.closed:
                self._maintenance_conn = self.worker.app.db.connect(
                    application_name=f"jobqueue-maintenance {self.worker.id[-12:]}"
                )
            self._maintenance.run(self._maintenance_conn)
        except psycopg.Error as exc:
            log.warning("maintenance round failed (%s); next heartbeat tries again", exc)
            self.close_maintenance()

    def close_maintenance(self) -> None:
        if self._maintenance_conn is not None:
            self._maintenance_conn.close()
            self._maintenance_conn = None

    # -- the health file -----------------------------------------------------------

    def touch_health(self) -> None:
        """The health file's age is the time since the last heartbeat that got
        through: a probe that finds it older than the lease sees a worker the
        others take for dead (fenced, or stuck)."""
        path = self.worker.settings.health_file
        if path:
            try:
                with open(path, "a"):
                    os.utime(path)
            except OSError as exc:
                log.warning("could not touch the health file %s: %s", path, exc)

    def remove_health(self) -> None:
        if self.worker.settings.health_file:
            with suppress(OSError):
                os.unlink(self.worker.settings.health_file)

    # -- fencing ---------------------------------------------------------------------

    def may_start(self) -> bool:
        """Whether a slot may start a job now: not while fenced, nor once the
        lease may have lapsed (a slot can be quicker than the lease watch: a
        worker resumed after a pause starts its next job at once)."""
        return not self.fenced and time.monotonic() <= self.deadline

    def watch(self) -> None:
        """Fence the worker once its lease may have lapsed: no heartbeat got
        through for lease_ttl (the database away, the network cut, a stalled
        statement). Its own thread, so a hung connection cannot delay it."""
        while not self.worker._exiting.wait(min(1.0, self.conf.heartbeat_interval)):
            if not self.fenced and time.monotonic() > self.deadline:
                self.fence(f"no heartbeat got through for {self.conf.lease_ttl:g}s")

    def fence(self, reason: str) -> None:
        """Stop acting on leases this worker may have lost: other workers may
        already run its jobs. Claims stop; prefetched jobs are dropped unstarted
        (rescued elsewhere, or released by this worker once it is back, as
        orphaned leases); running jobs are stopped where the pool can (the
        process pool kills their children and reports them lost), the others
        finish; outcomes are refused (and logged) if their jobs were rescued."""
        w = self.worker
        with w._lock:
            if self.fenced:
                return
            self.fenced = True
            dropped = w._pool.drain()
            for job in dropped:
                w._in_flight.pop(job.id, None)
                w._canvas.discard(job.id)
            running = len(w._in_flight)
        stopped = w._pool.fence()  # after fenced: no slot starts a job it misses
        log.error(
            "worker %s fenced (%s): no more claims; %d prefetched job(s) dropped unstarted; "
            "%d running job(s) stopped, %d finish; outcomes refused if their jobs were rescued",
            w.hostname,
            reason,
            len(dropped),
            stopped,
            running - stopped,
        )
