"""Celery's layout: the project package imports its app, so every Django
process has it (here jobqueue.contrib.django's JOBQUEUE_APP would load it too)."""

from .jobs import app as jobqueue_app

__all__ = ["jobqueue_app"]
