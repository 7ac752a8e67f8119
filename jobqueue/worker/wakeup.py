"""The claim loop's wake-up: a ``threading.Event`` that can also be waited on
with a socket, so an idle claim loop sleeps in one ``select()`` on its own
LISTENing connection and on local wake-ups (slots freed, a stop, a reconnect).

A separate listener thread on a shared connection cost the drain a fifth of
its rate: every reply the completer read woke it too, and it then queued for
the connection and the GIL on the critical path (benchmarks/ab_drain.py,
6fcf41a against a505cd0: 0.84x with one worker, 0.75x with two). Here only
the claim loop waits, and only while it has nothing to claim.
"""

from __future__ import annotations

import os
import select
import threading
from contextlib import suppress


class Wakeup:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()
        self._set = False
        self._closed = False

    def set(self) -> None:
        # Under the lock, so close() cannot pass in between: once closed, the
        # pipe's numbers may belong to another file (a late heartbeat that
        # reconnects after the worker stopped must not write into it).
        with self._lock:
            if self._set or self._closed:
                return  # already pending: one byte in the pipe is enough
            self._set = True
            with suppress(BlockingIOError):
                os.write(self._write, b"!")

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        with self._lock:
            self._set = False
            if self._closed:
                return
            with suppress(BlockingIOError):
                while os.read(self._read, 4096):
                    pass

    def wait(self, timeout: float, fd: int | None = None) -> bool:
        """Until set, or ``fd`` is readable, or ``timeout``; True if ``fd`` is."""
        if self._set or self._closed:
            return False
        watched = [self._read] if fd is None else [self._read, fd]
        ready, _, _ = select.select(watched, [], [], max(timeout, 0.0))
        return fd is not None and fd in ready

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._read, self._write):
                with suppress(OSError):
                    os.close(fd)
