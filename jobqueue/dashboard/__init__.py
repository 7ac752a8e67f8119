"""The web dashboard: ``jobqueue dashboard`` (jobqueue/dashboard/cli.py), or
``create_app(app)`` to mount in a Starlette or FastAPI application
(docs/dashboard.md). Server-rendered pages over the operations layer: what it
shows is read with SELECTs designed for 10 M finished jobs, and every action
is one of the schema's operation functions.

Needs Starlette, Jinja2, uvicorn and python-multipart (``pip install
'jobqueue[dashboard]'``). The core never imports this package; this module
imports them only on first use of ``create_app``/``Auth``, so the CLI loads
without them and says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

INSTALL_HINT = "pip install 'jobqueue[dashboard]'"

if TYPE_CHECKING:
    from .app import create_app
    from .auth import Auth

_EXPORTS = {"create_app": "app", "Auth": "auth"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == "app":
        from importlib.util import find_spec

        # python-multipart reads the forms (its module was "multipart" before 0.0.13).
        for needed in ("starlette", "jinja2", ("python_multipart", "multipart")):
            names = (needed,) if isinstance(needed, str) else needed
            if not any(find_spec(n) for n in names):
                raise ImportError(f"jobqueue.dashboard needs {names[0]}: {INSTALL_HINT}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = ["INSTALL_HINT", "Auth", "create_app"]
