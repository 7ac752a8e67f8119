"""The events listener's two connections, straight to PostgreSQL.

The listening connection LISTENs on the events channel and runs the reads
that confirm what the notifications hint at. The hold connection asks for the
lock that makes statements report events (``events_wanted`` in queries.sql)
and is then only watched: granted or waiting behind another listener, the
lock makes every statement NOTIFY; once this process's connections are gone
(closed, crashed), nothing does unless another listener remains.

Failure contract: ``open`` returns once no event can be missed from then on
(or, after ``READY_WAIT`` seconds of transactions older than the listener
still open, logs that a few may be); ``receive`` raises ``psycopg.Error`` (or
``OSError``) when either connection is lost: the caller closes, reconnects
and reports the gap.

A listener must not hold the server's notification queue back: the queue is
shared by every channel of the cluster, its tail is the slowest listener's
place, and once it is full every NOTIFY fails at commit (claims and
completions among them). So the connections are dropped (``Lagging``, then
the caller reconnects at the head and reports the gap) when the queue is
more than ``QUEUE_LIMIT`` full while this listener reads, or when whoever
consumes the events has not come back for ``STALL_LIMIT`` seconds (a paused
pager, a slow handler): a watchdog thread closes them.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import psycopg

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..app import JobQueue

log = logging.getLogger(__name__)

READY_WAIT = 5.0  # seconds to wait for transactions that started before us to end
QUEUE_LIMIT = 0.25  # of the notification queue (8 GB by default)
STALL_LIMIT = 60.0  # seconds the consumer may keep us from reading
_QUEUE_CHECK = 5.0  # seconds between looks at the queue
_BATCH = 1000  # notifications read before the caller enriches them
# Notifications are taken at most this often (seconds) while they keep
# coming: one take that follows another sooner first sleeps until then, and
# what comes meanwhile waits in the socket. An event after a quiet spell is
# taken at once. Under load each take is one batch: a job's started and
# finished hints share one read of its row, and the drain is interrupted
# less. benchmarks/events.py, drain with a listener over drain without (one
# series of 6 interleaved runs each, 2 cores): 0.90 at 0.05 s, 0.91 at
# 0.25, 0.92 at 0.5, 0.94 at 1 and at 2.
LINGER = 1.0


class Lagging(psycopg.OperationalError):
    """This listener holds the notification queue back: its connections go."""


class Listener:
    def __init__(
        self, app: JobQueue, stall_limit: float = STALL_LIMIT, linger: float = LINGER
    ) -> None:
        self.app = app
        self.linger = linger
        self._returned_at = 0.0  # when receive() last returned payloads
        self.conn: psycopg.Connection[Any] | None = None  # LISTEN, and the reads
        self._hold: psycopg.Connection[Any] | None = None
        # Each payload with the server process that sent it (see Reader.read).
        self._received: deque[tuple[str, int]] = deque()
        self._queue_checked = 0.0
        self.stall_limit = stall_limit
        self._away_since: float | None = None  # the consumer has the events, not us
        self._lock = threading.Lock()  # the watchdog's close against ours
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None

    def open(self) -> None:
        """Connect, LISTEN, ask for the lock, and wait until nothing is missed."""
        db = self.app.db
        options = {**db.worker_socket_options(), "application_name": "jobqueue-events"}
        conn = db.listen_connect(**options)
        if conn is None:
            raise ConfigurationError(
                "jobqueue events needs a connection that can LISTEN: the DSN goes through "
                "a transaction pooler, so set app.conf.listen_dsn ($JOBQUEUE_LISTEN_DSN) to "
                "a direct DSN"
            )
        self.conn = conn
        conn.add_notify_handler(lambda n: self._received.append((n.payload, n.pid)))
        store = self.app.store
        store.events_listen(conn)
        hold = db.listen_connect(**{**options, "application_name": "jobqueue-events-hold"})
        assert hold is not None  # as for conn
        self._hold = hold
        store.events_hold(hold)
        pid = hold.info.backend_pid
        deadline = time.monotonic() + READY_WAIT
        pause = 0.002
        while not store.events_ready(conn, pid):
            self._check_hold()
            if time.monotonic() > deadline:
                log.warning(
                    "events: transactions that began before this listener are still open "
                    "after %.0fs; the events of those still open may be missed",
                    READY_WAIT,
                )
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
        self._closed.clear()
        self._away_since = time.monotonic()
        if self._watchdog is None or not self._watchdog.is_alive():
            self._watchdog = threading.Thread(
                target=self._watch, name="jobqueue-events-watchdog", daemon=True
            )
            self._watchdog.start()

    def receive(self, timeout: float) -> list[tuple[str, int]]:
        """Payloads received, each with its sender's process id, waiting up
        to ``timeout`` for the first one."""
        self._away_since = None
        try:
            return self._receive(timeout)
        finally:
            self._away_since = time.monotonic()

    def _receive(self, timeout: float) -> list[tuple[str, int]]:
        conn, hold = self.conn, self._hold
        if conn is None or hold is None:
            raise psycopg.OperationalError("the events connections were closed")
        if time.monotonic() - self._queue_checked > _QUEUE_CHECK:
            self._queue_checked = time.monotonic()
            usage = self.app.store.events_queue_usage(conn)
            if usage > QUEUE_LIMIT:
                raise Lagging(
                    f"the server's notification queue is {usage:.0%} full and this listener "
                    "holds it back"
                )
        if not self._received:
            ready, _, _ = select.select([conn.fileno(), hold.fileno()], [], [], max(timeout, 0))
            if hold.fileno() in ready:
                self._check_hold()
            if conn.fileno() in ready:
                self._read(conn)
        if self._received:
            # The last batch went out less than `linger` ago: wait for more
            # until then (see LINGER), asleep: what comes meanwhile waits in
            # the socket. Woken for each notification instead, the listener
            # took a core from the workers a thousand times a second.
            left = self._returned_at + self.linger - time.monotonic()
            if left > 0:
                time.sleep(left)
            if self._readable(hold):
                self._check_hold()
        # More may have come meanwhile: take what is there, up to a batch.
        while self._received and len(self._received) < _BATCH and self._readable(conn):
            if not self._read(conn):
                break
        out = list(self._received)
        self._received.clear()
        if out:
            self._returned_at = time.monotonic()
        return out

    def _read(self, conn: psycopg.Connection[Any]) -> int:
        pgconn = conn.pgconn
        pgconn.consume_input()  # raises if the connection is gone
        before = len(self._received)
        while (notice := pgconn.notifies()) is not None:
            self._received.append((notice.extra.decode(errors="replace"), notice.be_pid))
        return len(self._received) - before

    @staticmethod
    def _readable(conn: psycopg.Connection[Any]) -> bool:
        return bool(select.select([conn.fileno()], [], [], 0)[0])

    def _check_hold(self) -> None:
        """The hold connection spoke: the lock granted (fine), or it is gone."""
        hold = self._hold
        assert hold is not None
        pgconn = hold.pgconn
        pgconn.consume_input()
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError("the events hold connection is closed")
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                return
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                message = (result.error_message or b"").decode(errors="replace").strip()
                raise psycopg.OperationalError(f"the events hold connection failed: {message}")

    def _watch(self) -> None:
        """Drop the connections when the consumer stays away too long."""
        while not self._closed.wait(1.0):
            away = self._away_since
            if away is not None and time.monotonic() - away > self.stall_limit:
                log.warning(
                    "events: not read for %.0fs (the consumer is stalled): listening stops, "
                    "so the server's notification queue is not held back; it resumes, "
                    "reporting the gap, when the consumer comes back",
                    self.stall_limit,
                )
                self.close()
                return

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            self._close()

    def _close(self) -> None:
        for conn in (self._hold, self.conn):
            if conn is None:
                continue
            try:
                if conn is self._hold and conn.pgconn.is_busy():
                    conn.cancel_safe(timeout=2.0)  # still waiting for the lock: stop waiting
            except Exception as exc:  # closing anyway
                log.debug("events: cancelling the hold request failed: %s", exc)
            try:
                conn.close()
            except Exception as exc:
                log.debug("events: closing a connection failed: %s", exc)
        self.conn = self._hold = None
        self._received.clear()
