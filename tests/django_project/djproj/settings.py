"""Settings of the test project: its database is the test rig's ($JQ_DJANGO_DSN)."""

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ["JQ_DJANGO_DSN"])

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "jobqueue.contrib.django",
    "shop",
    "reusable",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        # Persistent connections, so a test can break one a worker holds.
        "CONN_MAX_AGE": None if os.environ.get("JQ_DJANGO_PERSISTENT") == "1" else 0,
        "OPTIONS": {"application_name": os.environ.get("JQ_DJANGO_APP_NAME", "djproj")},
    }
}
if os.environ.get("JQ_DJANGO_NO_APP") != "1":  # a test of the command's error without it
    JOBQUEUE_APP = "djproj.jobs:app"
