"""The Django app ``jobqueue.contrib.django``: add it to INSTALLED_APPS."""

from __future__ import annotations

from django.apps import AppConfig


class JobQueueConfig(AppConfig):
    name = "jobqueue.contrib.django"
    label = "jobqueue"
    verbose_name = "jobqueue"

    def ready(self) -> None:
        """Every app's models are loaded: task modules may be imported. Load
        the project's app (``JOBQUEUE_APP``) so its ``autodiscover_tasks()``
        runs in every Django process, not only in workers."""
        from . import provide_installed_apps
        from .command import configured_app

        provide_installed_apps()
        configured_app()
