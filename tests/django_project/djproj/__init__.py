"""Celery's layout: the project package imports its app, so every Django
process has it, and ``manage.py jobqueue`` finds it without JOBQUEUE_APP."""

import os

if os.environ.get("JQ_DJANGO_LAZY") != "1":  # a test of the command with neither
    from .jobs import app as jobqueue_app

    __all__ = ["jobqueue_app"]
