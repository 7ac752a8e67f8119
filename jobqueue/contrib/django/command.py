"""``manage.py jobqueue ...``: jobqueue's command line, on the project's app."""

from __future__ import annotations

from ...app import JobQueue
from ...exceptions import ConfigurationError
from ...loader import load_app

#: The Django setting naming the app, as ``-A`` would: "proj.jobs:app".
APP_SETTING = "JOBQUEUE_APP"


def app_spec(required: bool = True) -> str | None:
    """``settings.JOBQUEUE_APP``, checked to be a string; None if unset and not required."""
    from django.conf import settings

    spec = getattr(settings, APP_SETTING, None)
    if spec is None:
        if required:
            raise ConfigurationError(
                f"set {APP_SETTING} in Django's settings to the module and name of your "
                f'JobQueue (for example {APP_SETTING} = "proj.jobs:app"), or pass -A'
            )
        return None
    if not isinstance(spec, str) or not spec:
        raise ConfigurationError(f'{APP_SETTING} must be a string such as "proj.jobs:app"')
    return spec


def configured_app(required: bool = True) -> JobQueue | None:
    """The app ``JOBQUEUE_APP`` names, imported (None if unset and not required)."""
    spec = app_spec(required)
    return load_app(spec) if spec is not None else None
