"""A worker's connection shared by threads: the working session (claim loop
and heartbeat) and the recording session (the completer, and the working
session's fallback), each one per worker process, whatever its concurrency.

Threads take turns on one, each for one statement (or one short group of
them) at a time. A worker used to hold one connection per thread (3-4 in
all): under ``max_connections=100`` about 24 busy workers fitted, and a
worker whose completer could not connect kept heartbeating with its jobs'
outcomes stuck. Two sessions make the budget two per worker, and the
completer falls back to the working session when its own fails: a worker
that can heartbeat can record, and one that can do neither is fenced and
its jobs rescued, never leased behind a healthy-looking heartbeat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import psycopg

Connection = psycopg.Connection[Any]

log = logging.getLogger("jobqueue.worker.runner")


class Session:
    """A connection opened on first use, reopened after it broke; ``with
    session as conn:`` holds it for the block."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], Connection],
        on_connect: Callable[[Connection], None],
    ) -> None:
        self.name = name  # for the log: "working", "recording"
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
                if self.generation > 1:
                    log.info("%s connection re-established", self.name)
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
                log.warning("%s connection lost (%s); reconnecting", self.name, exc)
                self._conn.close()
                self._conn = None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
