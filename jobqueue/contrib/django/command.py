"""Which app ``manage.py jobqueue ...`` runs: ``settings.JOBQUEUE_APP``, else
the one app made with ``use_django`` in a module Django imported."""

from __future__ import annotations

import sys
import threading
import weakref

from ...app import JobQueue
from ...exceptions import ConfigurationError
from ...loader import load_app

#: The Django setting naming the app, as ``-A`` would: "proj.jobs:app".
APP_SETTING = "JOBQUEUE_APP"

_lock = threading.Lock()
# Apps made with use_django, and the module that made each.
_made: list[tuple[weakref.ref[JobQueue], str]] = []


def remember(app: JobQueue, module: object) -> None:
    """``use_django(app)`` was called in ``module`` (its ``__name__``)."""
    if isinstance(module, str):
        with _lock:
            _made.append((weakref.ref(app), module))


def app_spec(required: bool = True) -> str | None:
    """``settings.JOBQUEUE_APP``, else ``module:name`` of the one app made
    with ``use_django`` (the project package imported it: Celery's layout);
    None if neither and not required."""
    from django.conf import settings

    spec = getattr(settings, APP_SETTING, None)
    if spec is not None:
        if not isinstance(spec, str) or not spec:
            raise ConfigurationError(f'{APP_SETTING} must be a string such as "proj.jobs:app"')
        return spec
    found = _found()
    if len(found) == 1:
        return found[0]
    if not required:
        return None
    several = f" (use_django made several: {', '.join(found)})" if found else ""
    raise ConfigurationError(
        f"set {APP_SETTING} in Django's settings to the module and name of your JobQueue "
        f'(for example {APP_SETTING} = "proj.jobs:app"), or pass -A{several}'
    )


def _found() -> list[str]:
    """``module:name`` of each app made with use_django that its module holds."""
    with _lock:
        made = list(_made)
    specs = []
    for ref, module_name in made:
        app, module = ref(), sys.modules.get(module_name)
        if app is None or module is None:
            continue
        names = [name for name, value in vars(module).items() if value is app]
        if names:
            specs.append(f"{module_name}:{'app' if 'app' in names else names[0]}")
    return sorted(set(specs))


def configured_app() -> JobQueue | None:
    """The app ``JOBQUEUE_APP`` names, imported; None without the setting."""
    from django.conf import settings

    if getattr(settings, APP_SETTING, None) is None:
        return None
    return load_app(str(app_spec()))
