"""A worker's working connection: one per worker process, whatever its concurrency.

The claim loop and the heartbeat take turns on it, each for
one statement (or one short group of them) at a time. A worker used to hold
one connection per thread (3-4 in all): under ``max_connections=100`` about
24 busy workers fitted, and a worker whose completer could not connect kept
heartbeating with its jobs' outcomes stuck. Sharing one connection makes the
budget two per worker (this one and the listener's), and a worker that cannot
record its outcomes cannot heartbeat either, so it is fenced and its jobs are
rescued instead of staying leased behind a healthy-looking heartbeat.

What sharing costs: the claim and the completion no longer overlap on the
server (measured in benchmarks/workers.py and docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import psycopg

Connection = psycopg.Connection[Any]


class Session:
    """A connection opened on first use, reopened after it broke; ``with
    session as conn:`` holds it for the block."""

    def __init__(
        self, connect: Callable[[], Connection], on_connect: Callable[[Connection], None]
    ) -> None:
        self._connect = connect
        self._on_connect = on_connect  # session settings; forgetting the old session's locks
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self.generation = 0  # how many connections it has opened

    def __enter__(self) -> Connection:
        self._lock.acquire()
        try:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    conn.close()
                self._conn = None
                conn = self._connect()
                try:
                    self._on_connect(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
                self.generation += 1
            return conn
        except BaseException:
            self._lock.release()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, psycopg.OperationalError) and self._conn is not None:
                # Lost, or in an unknown state: the next user opens a new one.
                self._conn.close()
                self._conn = None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
