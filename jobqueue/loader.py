"""Finding an app from ``package.module:attribute`` (the CLI's ``-A``; pool children)."""

from __future__ import annotations

import importlib
import os
import shlex
import sys

from .app import JobQueue
from .exceptions import ConfigurationError


def load_app(spec: str) -> JobQueue:
    """Import ``package.module:attribute`` (or ``package.module``, finding its one app)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise ConfigurationError(f"{spec!r} is not of the form package.module:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`, find modules where we stand
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    if attribute:
        app = getattr(module, attribute, None)
    else:
        found = [v for v in vars(module).values() if isinstance(v, JobQueue)]
        app = found[0] if len(found) == 1 else None
    if not isinstance(app, JobQueue):
        what = f"attribute {attribute!r}" if attribute else "exactly one JobQueue instance"
        raise ConfigurationError(f"module {module_name!r} has no {what}")
    app.main_spec = spec
    app.conf.cli_options = f"-A {shlex.quote(spec)}"
    return app
