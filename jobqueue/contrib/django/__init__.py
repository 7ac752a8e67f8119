"""jobqueue in a Django project (docs/django.md).

Where the app is made (``proj/jobs.py``, Celery's ``proj/celery.py``)::

    import os

    from jobqueue import JobQueue
    from jobqueue.contrib.django import use_django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

    app = use_django(JobQueue())
    app.autodiscover_tasks()

and in ``settings.py``: ``"jobqueue.contrib.django"`` in ``INSTALLED_APPS``
(the ``manage.py jobqueue`` command; task discovery once the apps are loaded),
and ``JOBQUEUE_APP = "proj.jobs:app"`` (the app that command runs) unless the
project package imports its app, as Celery's layout does.

``use_django`` makes four promises: the DSN is ``DATABASES["default"]``'s,
read when first needed (not when the app is made, when Django's settings may
still be loading); an enqueue inside ``transaction.atomic()`` that names no
``connection=`` is written in that transaction (rolled back, the job never
existed); a worker or beat started outside ``manage.py`` (``jobqueue -A
proj.jobs:app worker``, a process-pool child) sets Django up before it runs;
and a worker treats each task as Django treats a request (old or broken
connections closed around it). Nothing here is imported by jobqueue's core.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ... import discovery, signals
from ...app import JobQueue
from ...exceptions import ConfigurationError
from ...joined import django_driver
from ...redact import redact
from . import command

__all__ = ["django_dsn", "use_django"]

_App = TypeVar("_App", bound=JobQueue)

#: The libpq connection keywords: what of Django's connection parameters a DSN
#: can carry (Django's own, such as cursor_factory or isolation_level, cannot).
_LIBPQ = frozenset(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def django_dsn(alias: str = "default") -> str:
    """A libpq DSN for ``DATABASES[alias]``: Django's own connection
    parameters (NAME, USER, PASSWORD, HOST, PORT and OPTIONS, as its backend
    reads them), those libpq knows. A database that is not PostgreSQL is a
    ConfigurationError."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections
    from django.db.utils import ConnectionDoesNotExist

    try:
        wrapper = connections[alias]
    except ConnectionDoesNotExist as exc:
        raise ConfigurationError(f"jobqueue: Django has no database {alias!r}: {exc}") from exc
    if wrapper.vendor != "postgresql":
        engine = wrapper.settings_dict.get("ENGINE")
        raise ConfigurationError(
            f"jobqueue needs PostgreSQL, but DATABASES[{alias!r}] uses {engine!r}: "
            "use_django(app, alias=...) naming a PostgreSQL database, or give "
            "JobQueue() a DSN of its own"
        )
    try:
        params = wrapper.get_connection_params()
    except ImproperlyConfigured as exc:  # no NAME, a NAME too long...
        raise ConfigurationError(f"jobqueue: DATABASES[{alias!r}]: {exc}") from exc
    return make_conninfo(
        "",
        **{
            key: value
            for key, value in params.items()
            if key in _LIBPQ and isinstance(value, (str, int)) and value != ""
        },
    )


class _Ambient:
    """``Database.ambient`` for Django: inside ``atomic()`` on ``alias`` (or
    with its autocommit off), the psycopg connection Django's transaction is
    open on; else None (the pool:
    in autocommit, Django's connection would commit the job at once anyway,
    and the pool's connection is not the one a request is using)."""

    def __init__(self, app: JobQueue, alias: str) -> None:
        from django.db import connections  # Django's settings need not be loaded yet

        self.app, self.alias, self.connections = app, alias, connections
        self._checked = False

    def __call__(self) -> psycopg.Connection[Any] | None:
        wrapper = self.connections[self.alias]
        # In atomic(), or a transaction opened by set_autocommit(False); not
        # get_autocommit(), which would open a connection just to answer.
        if not wrapper.in_atomic_block and (wrapper.connection is None or wrapper.autocommit):
            return None
        if not self._checked:
            self._check_same_database()
        return django_driver(wrapper)

    def _check_same_database(self) -> None:
        """Jobs written on Django's connection land in Django's database: if
        the app's DSN was given another way (``JobQueue(dsn)``, ``--dsn``), it
        must name the same one, or the jobs go where no worker looks."""
        if self.app.conf.dsn:
            ours, theirs = self.app.conf.dsn, django_dsn(self.alias)
            if _database(ours) != _database(theirs):
                raise ConfigurationError(
                    f"jobqueue's DSN {redact(ours)} is not Django's database "
                    f"{redact(theirs)} (DATABASES[{self.alias!r}]): an enqueue inside "
                    "atomic() would write the job to Django's; drop the app's own DSN, or "
                    "use_django(app, share_connection=False)"
                )
        self._checked = True


def _database(dsn: str) -> tuple[str, str, str]:
    params = conninfo_to_dict(dsn)
    return (
        str(params.get("host") or ""),
        str(params.get("port") or "5432"),
        str(params.get("dbname") or params.get("user") or ""),
    )


def use_django(app: _App, *, alias: str = "default", share_connection: bool = True) -> _App:
    """Make ``app`` a Django project's (returns it):

    - its DSN is ``DATABASES[alias]``'s unless one is given (``JobQueue(dsn)``,
      ``--dsn``), read at first use; ``$JOBQUEUE_DSN`` is not consulted;
    - ``share_connection``: an enqueue (``delay``, ``apply_async``, canvas,
      ``enqueue_many``, ``revoke``) inside ``transaction.atomic(using=alias)``
      with no ``connection=`` is written in that transaction;
    - a worker, beat or process-pool child of it calls ``django.setup()`` first
      if the process has not (``$DJANGO_SETTINGS_MODULE`` must be set);
    - before and after each task, a worker closes Django's connections that a
      request would have closed (``close_old_connections``).
    """
    app.conf.dsn_source = lambda: django_dsn(alias)
    command.remember(app, sys._getframe(1).f_globals.get("__name__"))
    app.db.ambient = _Ambient(app, alias) if share_connection else None
    for signal in (signals.worker_init, signals.worker_process_init, signals.beat_init):
        signal.connect(_setup_django, weak=False, dispatch_uid="jobqueue.contrib.django")
    for signal in (signals.task_prerun, signals.task_postrun):
        signal.connect(_close_old_connections, weak=False, dispatch_uid="jobqueue.contrib.django")
    from django.apps import apps

    if apps.ready:  # made after setup (a shell, a test): discovery need not wait
        provide_installed_apps()
    return app


_setup_lock = threading.Lock()


def _setup_django(*_: Any, **__: Any) -> None:
    """Before a worker, beat or pool child runs: Django's apps loaded (its
    tasks may use the ORM) and their task modules discovered."""
    import django
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured

    with _setup_lock:
        if not apps.ready:
            try:
                django.setup()
            except ImproperlyConfigured as exc:
                raise ConfigurationError(
                    f"cannot set Django up for jobqueue ({exc}): set $DJANGO_SETTINGS_MODULE "
                    "where the app is made, as in docs/django.md"
                ) from exc
    provide_installed_apps()


def _close_old_connections(*_: Any, **__: Any) -> None:
    """Around each task, in the thread that runs it: what Django does around
    each request (its connections past CONN_MAX_AGE, or broken by an error,
    are closed, and the next query opens a new one). Without it a worker
    thread's connection lives forever, and once broken (a database restart)
    fails every later task of that thread."""
    from django.db import close_old_connections

    close_old_connections()


def provide_installed_apps() -> None:
    """Django's apps are loaded: ``autodiscover_tasks()`` without packages
    means theirs (those waiting are imported now)."""
    from django.apps import apps

    discovery.provide_packages(lambda: [config.name for config in apps.get_app_configs()])
