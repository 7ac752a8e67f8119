"""Signal handlers that do their work on a thread of their own.

Python runs a signal handler on the main thread, between two of its
bytecodes, so a handler that takes a lock the main thread may be holding at
that moment waits for itself forever. A worker's SIGTERM handler did: it
woke the claim loop (``Wakeup.set``, under a lock) while the claim loop was
inside ``Wakeup.clear``, under the same lock, and the worker never stopped
(tests/system/test_fencing.py caught it about once in 50 runs under load).
``Event.set`` has the same window against the main thread's ``Event.wait``.
So a handler here only starts a thread, which takes its locks as any other
thread does: it waits until the main thread lets go.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType


def handle(
    signums: Iterable[signal.Signals], work: Callable[[signal.Signals], None], name: str
) -> None:
    """Install handlers for ``signums`` that run ``work(signum)`` on a new
    daemon thread called ``name`` (main thread only, as signal.signal)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        thread = threading.Thread(
            target=work, args=(signal.Signals(signum),), name=name, daemon=True
        )
        thread.start()  # its bookkeeping lock is reentrant: safe from a handler

    for signum in signums:
        signal.signal(signum, handler)
