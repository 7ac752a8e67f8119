"""Finding tasks: ``app.autodiscover_tasks()`` imports the ``tasks`` module of
each package, so their ``@app.task`` / ``@shared_task`` decorators run.

With a list of packages it imports them at once. Without one, the packages are
a framework's (Django's installed apps): the request waits until an
integration provides them (``provide_packages``, called by
``jobqueue.contrib.django`` once Django's app registry is ready), since
importing an app's tasks before its models are loaded fails. A worker or beat
that starts with a request still waiting stops with a ConfigurationError
(``check_settled``) rather than run without the tasks it was meant to have.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import JobQueue

log = logging.getLogger(__name__)

_lock = threading.RLock()
_source: Callable[[], list[str]] | None = None
_waiting: list[tuple[JobQueue, str]] = []


def import_task_modules(packages: Iterable[str], related_name: str = "tasks") -> list[str]:
    """Import ``<package>.<related_name>`` for each package that has one; the
    names of the modules imported. A package without the module is skipped; a
    package that does not exist, or a module that fails to import, raises."""
    imported = []
    for package in packages:
        if not isinstance(package, str) or not package:
            raise ConfigurationError(f"autodiscover_tasks(): {package!r} is not a package name")
        name = f"{package}.{related_name}"
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError as exc:  # the package itself is missing
            raise ConfigurationError(
                f"autodiscover_tasks(): cannot import package {package!r}: {exc}"
            ) from exc
        if found is None:
            continue
        importlib.import_module(name)
        imported.append(name)
    if imported:
        log.debug("discovered task modules: %s", ", ".join(imported))
    return imported


def autodiscover(
    app: JobQueue,
    packages: Iterable[str] | Callable[[], Iterable[str]] | None,
    related_name: str,
) -> None:
    """``app.autodiscover_tasks``: at once given packages (or a function
    returning them), else once an integration provides its packages."""
    if packages is not None:
        import_task_modules(packages() if callable(packages) else packages, related_name)
        return
    with _lock:
        source = _source
        if source is None:
            _waiting.append((app, related_name))
            return
    import_task_modules(source(), related_name)


def provide_packages(source: Callable[[], list[str]]) -> None:
    """A framework's packages are known (``source`` lists them): import the
    task modules that ``autodiscover_tasks()`` calls without packages asked
    for, now and from then on at once."""
    global _source
    with _lock:
        _source = source
        waiting, _waiting[:] = list(_waiting), []
    for _app, related_name in waiting:
        import_task_modules(source(), related_name)


def check_settled(app: JobQueue) -> None:
    """Refuse to start a worker or beat of ``app`` whose ``autodiscover_tasks()``
    still waits for a framework's packages: it would run without those tasks."""
    with _lock:
        waiting = any(waiter is app for waiter, _ in _waiting)
    if waiting:
        raise ConfigurationError(
            "app.autodiscover_tasks() was called without packages, which means Django's "
            "installed apps, but Django was never set up in this process: call "
            "jobqueue.contrib.django.use_django(app) where the app is made and add "
            "'jobqueue.contrib.django' to INSTALLED_APPS, or pass the packages: "
            'app.autodiscover_tasks(["proj.billing", ...])'
        )
