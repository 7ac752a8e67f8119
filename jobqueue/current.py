"""The current app: the JobQueue made last in this process.

A leaf module (it imports nothing of jobqueue at run time), so results,
signatures and tasks can find the app without importing app.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import JobQueue

_current: JobQueue | None = None


def current_app() -> JobQueue:
    if _current is None:
        raise ConfigurationError("no JobQueue app exists yet; pass app= explicitly")
    return _current


def set_current(app: JobQueue) -> None:
    global _current
    _current = app
