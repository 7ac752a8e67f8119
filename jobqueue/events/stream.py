"""``app.events``: the live stream of events, as an iterator or with handlers.

    with app.events.stream(queues=["emails"]) as events:
        for event in events:
            print(event["type"], event.get("uuid"))

    app.events.Receiver(handlers={"task-failed": alert, "*": count}).capture()

``stream()`` returns once listening: from then on no event is missed, except
across a lost connection, after which the stream reconnects (with backoff)
and yields an ``events-missed`` event saying since when. Each event is a
plain dict, JSON-ready.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg

from ..db import transient
from .hints import MISSED, TYPES
from .lines import _ENCODE
from .listener import Listener
from .reading import Event, Reader

if TYPE_CHECKING:
    from ..app import JobQueue

log = logging.getLogger(__name__)

_RECONNECT_FIRST, _RECONNECT_MAX = 0.1, 5.0
_SLICE = 0.5  # longest wait before looking at stop() again
# Notifications made into events at a time: a take under load is about a
# second of them, and made all at once (30,000 jobs' events, 20 MB of text)
# they cost the listener 3.7 us a job, in slices of 100 2.3: the memory of
# a slice is reused for the next instead of taken anew from the system.
# Their senders are checked once a take (a query per slice was a sixth of
# the listener's time).
_READ_SLICE = 100


def _checked_types(types: Iterable[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    chosen = frozenset([types] if isinstance(types, str) else types)
    unknown = sorted(chosen - set(TYPES))
    if unknown:
        raise ValueError(f"unknown event type(s): {', '.join(unknown)} (types: {', '.join(TYPES)})")
    return chosen


def _names(values: str | Iterable[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    names = [values] if isinstance(values, str) else list(values)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{what}: give names (non-empty strings), or None for all")
    return names


class EventStream:
    """Events as they happen, in commit order; an iterator and a context
    manager (``close()`` at exit). ``timeout``: stop iterating after that many
    seconds without an event (None: never)."""

    def __init__(
        self,
        app: JobQueue,
        queues: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        types: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self._reader = Reader(app.store, queues, tasks, types)
        self._listener = Listener(app)
        self._pending: deque[str] = deque()  # events as JSON (lines.py says why)
        self._unread: deque[tuple[str, int]] = deque()  # notifications (see _READ_SLICE)
        self._unread_at = 0.0  # when the oldest of them came
        self._believed: set[int] = set()  # their senders believed (Reader.believed)
        self._closed = False
        self._lost_at: float | None = None  # when the connection was lost
        self._retry = _RECONNECT_FIRST
        try:
            self._connect()
        except BaseException:
            self._listener.close()
            raise

    @property
    def pending(self) -> int:
        """Events already read and not yet yielded (0: the next may wait)."""
        return len(self._pending)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if not self._pending and not self._wait():
            raise StopIteration
        event: Event = json.loads(self._pending.popleft())
        return event

    def batch(self) -> list[Event]:
        """The events read and not yet yielded, or the next ones to come (as
        ``next()`` waits); empty when the stream ends. Cheaper than one
        ``next()`` per event when events come by the thousand."""
        return [json.loads(line) for line in self.batch_json()]

    def batch_json(self) -> list[str]:
        """As ``batch()``, each event as its JSON text (one line, no newline):
        for passing events on, which then costs no dict and no encoding."""
        if not self._pending and not self._wait():
            return []
        out = list(self._pending)
        self._pending.clear()
        return out

    def _wait(self) -> bool:
        """Until events are pending (True), or the stream ends (False)."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not self._pending:
            if self._closed:
                return False
            if self._unread:
                self._fill(0)
                continue
            wait = _SLICE
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return False
            self._fill(wait)
        return True

    def close(self) -> None:
        """Stop listening (safe from another thread: the stream ends at its
        next look, within half a second)."""
        self._closed = True

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        self._listener.close()

    # -- inside ----------------------------------------------------------------------

    def _connect(self) -> None:
        self._listener.open()
        conn = self._listener.conn
        assert conn is not None
        self._reader.remember_workers(conn)

    def _fill(self, wait: float) -> None:
        """Events from the next slice of notifications received, or from
        those that come within ``wait``."""
        try:
            if self._lost_at is not None:
                self._reconnect(wait)
                return
            if not self._unread:
                received = self._listener.receive(wait)
                if received:
                    # Kept first: if the check fails, the gap reported starts
                    # when they came.
                    self._unread.extend(received)
                    self._unread_at = time.time()
                    conn = self._listener.conn
                    assert conn is not None
                    self._believed = self._reader.believed(conn, received)
            if self._unread:
                self._read()
        except (psycopg.Error, OSError) as exc:
            if isinstance(exc, psycopg.Error) and not transient(exc):
                raise
            self._lost(exc)

    def _read(self) -> None:
        conn = self._listener.conn
        assert conn is not None
        unread = self._unread
        payloads = [unread.popleft() for _ in range(min(len(unread), _READ_SLICE))]
        self._pending.extend(self._reader.read(conn, payloads, self._believed))

    def _lost(self, exc: BaseException) -> None:
        self._listener.close()
        # Notifications not made into events yet are missed too.
        self._lost_at = self._unread_at if self._unread else time.time()
        self._unread.clear()
        log.warning(
            "events: connection lost (%s: %s); reconnecting, events meanwhile are missed",
            type(exc).__name__,
            str(exc).strip(),
        )

    def _reconnect(self, wait: float) -> None:
        time.sleep(min(self._retry, max(wait, 0)))
        try:
            self._connect()
        except (psycopg.Error, OSError) as exc:
            if isinstance(exc, psycopg.Error) and not transient(exc):
                raise
            self._listener.close()
            log.warning("events: reconnect failed (%s); retrying", str(exc).strip())
            self._retry = min(self._retry * 2, _RECONNECT_MAX)
            return
        since, self._lost_at = self._lost_at, None
        self._retry = _RECONNECT_FIRST
        until = time.time()
        log.warning("events: listening again; events between the loss and now were missed")
        if self._reader.types is None or MISSED in self._reader.types:
            self._pending.append(_ENCODE({"type": MISSED, "timestamp": until, "since": since}))


Handler = Callable[[Event], Any]


class Receiver:
    """Celery's ``app.events.Receiver(connection, handlers={...})``: calls the
    handler of each event's type (``"*"``: any other) until ``stop()``, a
    ``limit`` of events, or a ``timeout`` without one."""

    def __init__(
        self,
        app: JobQueue,
        handlers: Mapping[str, Handler] | None = None,
        *,
        queues: str | Iterable[str] | None = None,
        tasks: str | Iterable[str] | None = None,
    ) -> None:
        self.app = app
        self.handlers = dict(handlers or {})
        _checked_types(set(self.handlers) - {"*"})
        self.queues = _names(queues, "queues")
        self.tasks = _names(tasks, "tasks")
        self._stream: EventStream | None = None
        self._stopped = False

    def capture(self, limit: int | None = None, timeout: float | None = None) -> int:
        """Listen and dispatch; returns how many events were handled."""
        # Only the types someone handles are read at all.
        types = None if "*" in self.handlers else set(self.handlers)
        handled = 0
        self._stopped = False
        with EventStream(self.app, self.queues, self.tasks, types, timeout) as stream:
            self._stream = stream
            try:
                for event in stream:
                    handler = self.handlers.get(event["type"]) or self.handlers.get("*")
                    if handler is not None:
                        handler(event)
                    handled += 1
                    if self._stopped or (limit is not None and handled >= limit):
                        break
            finally:
                self._stream = None
        return handled

    def stop(self) -> None:
        """Make ``capture`` return (from a handler, or from another thread)."""
        self._stopped = True
        stream = self._stream
        if stream is not None:
            stream.close()


class Events:
    """``app.events``."""

    def __init__(self, app: JobQueue) -> None:
        self.app = app

    def stream(
        self,
        *,
        queues: str | Iterable[str] | None = None,
        tasks: str | Iterable[str] | None = None,
        types: str | Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> EventStream:
        """Events of these queues and tasks (None: all), of these types (None:
        all of ``jobqueue.events.TYPES``); ``timeout``: stop iterating after
        that many seconds without an event. Returns once listening."""
        return EventStream(
            self.app,
            _names(queues, "queues"),
            _names(tasks, "tasks"),
            _checked_types(types),
            timeout,
        )

    def Receiver(  # Celery's spelling
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        queues: str | Iterable[str] | None = None,
        tasks: str | Iterable[str] | None = None,
    ) -> Receiver:
        return Receiver(self.app, handlers, queues=queues, tasks=tasks)
