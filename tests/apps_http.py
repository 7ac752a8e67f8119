"""The app that the HTTP task tests' workers load: ``tests.apps_http:app``.

Its ``http_allow_private`` comes from ``$JOBQUEUE_TEST_HTTP_ALLOW_PRIVATE``
(JSON: false, true, or a list of networks), so one test starts a worker that
refuses the loopback test server and another one that allows it.
"""

from __future__ import annotations

import json
import os

from jobqueue import JobQueue

app = JobQueue()
app.conf.http_allow_private = json.loads(
    os.environ.get("JOBQUEUE_TEST_HTTP_ALLOW_PRIVATE", "false")
)
