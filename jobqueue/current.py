"""The current app: the JobQueue made last in this process; and every app
made (``shared_task`` registers its tasks with each).

A leaf module (it imports nothing of jobqueue at run time), so results,
signatures and tasks can find the app without importing app.py.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import JobQueue

_current: JobQueue | None = None
# Weak: an app dropped by its owner (a test's) is not kept alive by this list.
_apps: weakref.WeakSet[JobQueue] = weakref.WeakSet()


def current_app() -> JobQueue:
    if _current is None:
        raise ConfigurationError("no JobQueue app exists yet; pass app= explicitly")
    return _current


def set_current(app: JobQueue) -> None:
    global _current
    _current = app
    _apps.add(app)


def all_apps() -> list[JobQueue]:
    """Every app of this process still in use."""
    return list(_apps)
