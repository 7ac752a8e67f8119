"""The project's jobqueue app (Celery's proj/celery.py)."""

import os

from jobqueue import JobQueue
from jobqueue.contrib.django import use_django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")

# The schema is the test's own; a real project leaves it at its default.
app = use_django(JobQueue(schema=os.environ.get("JQ_DJANGO_SCHEMA", "jobqueue")))
app.autodiscover_tasks()
