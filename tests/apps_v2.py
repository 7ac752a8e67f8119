"""The next release of the test app: every task of tests.apps, plus one more
(``-A tests.apps_v2:app``), to play a rolling deploy."""

from __future__ import annotations

from jobqueue import JobQueue
from tests.apps import build

app = JobQueue()
tasks = build(app)


@app.task(name="v2.only")
def only_in_v2(x: int) -> int:
    return x * 10
