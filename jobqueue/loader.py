"""Finding an app from ``package.module:attribute`` (the CLI's ``-A``; pool children)."""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from types import ModuleType

from .app import JobQueue
from .exceptions import ConfigurationError
from .tasks import Task

#: Without ``:attribute``, the names looked at first, as Celery's ``-A proj`` does.
_USUAL_NAMES = ("app", "celery")


def load_app(spec: str) -> JobQueue:
    """Import ``package.module:attribute``, or ``package.module`` alone: then its
    ``app`` (or ``celery``) attribute, else the one JobQueue it holds."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise ConfigurationError(f"{spec!r} is not of the form package.module:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`, find modules where we stand
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    app = _named(module, attribute) if attribute else _found(module)
    app.main_spec = spec
    app.conf.cli_options = f"-A {shlex.quote(spec)}"
    return app


def _named(module: ModuleType, attribute: str) -> JobQueue:
    value = getattr(module, attribute, None)
    if isinstance(value, JobQueue):
        return value
    name = module.__name__
    if isinstance(value, Task):
        # The commonest slip: -A proj.tasks:add for -A proj.tasks:app.
        raise ConfigurationError(
            f"{name}:{attribute} is a task ({value.name}), not the app: pass the JobQueue "
            f"it belongs to, {_spec_of(value.app, module)}"
        )
    apps = _apps(module)
    hint = f": pass {' or '.join(f'-A {name}:{a}' for a in apps)}" if apps else ""
    if value is None:
        raise ConfigurationError(f"module {name!r} has no attribute {attribute!r}{hint}")
    raise ConfigurationError(
        f"{name}:{attribute} is a {type(value).__name__}, not a JobQueue app{hint}"
    )


def _found(module: ModuleType) -> JobQueue:
    for attribute in _USUAL_NAMES:
        value = getattr(module, attribute, None)
        if isinstance(value, JobQueue):
            return value
    apps = _apps(module)
    name = module.__name__
    if len(apps) == 1:
        app: JobQueue = getattr(module, apps[0])
        return app
    if apps:
        raise ConfigurationError(
            f"module {name!r} holds {len(apps)} JobQueue apps: pass one, "
            + " or ".join(f"-A {name}:{a}" for a in apps)
        )
    raise ConfigurationError(
        f"module {name!r} has no JobQueue app (no 'app' attribute, nor any JobQueue): "
        f"pass -A {name}:ATTRIBUTE, the JobQueue() your tasks are registered on"
    )


def _apps(module: ModuleType) -> list[str]:
    """The names of the JobQueue instances a module holds."""
    return [k for k, v in vars(module).items() if isinstance(v, JobQueue)]


def _spec_of(app: JobQueue, module: ModuleType) -> str:
    """``-A module:attribute`` for ``app``: where the task's module holds it,
    else where any imported module does."""
    for candidate in (module, *list(sys.modules.values())):
        if isinstance(candidate, ModuleType):
            for key, value in list(vars(candidate).items()):
                if value is app:
                    return f"-A {candidate.__name__}:{key}"
    return "-A module:app (the JobQueue() it was registered on)"
