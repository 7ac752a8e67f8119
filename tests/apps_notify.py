"""The test app with failure notifications configured from ``$JQ_TEST_NOTIFY``
(a JSON object of ``app.conf.notify_*`` settings), for worker subprocesses:
``-A tests.apps_notify:app``."""

from __future__ import annotations

import json
import os

from jobqueue import JobQueue
from tests.apps import build

app = JobQueue()
tasks = build(app)


@app.task(name="notify.keyerror")
def keyerror(key: str) -> None:
    raise KeyError(key)


for name, value in json.loads(os.environ.get("JQ_TEST_NOTIFY", "{}")).items():
    if not hasattr(app.conf, name):
        raise AttributeError(f"no setting {name!r}")
    setattr(app.conf, name, value)
