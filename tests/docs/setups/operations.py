"""docs/operations.md: the app, jobs and schedule its examples act on.

The page's examples name ``proj.tasks.sync`` and ``proj.tasks.report``, a
schedule ``nightly``, a failed job ``job_id`` and two more, ``id1``/``id2``,
and two workers, ``worker-a`` and ``worker-b``, that answer inspect.
"""

from jobqueue import JobQueue

app = JobQueue()


@app.task
def sync():
    raise TimeoutError("the partner did not answer")


@app.task
def report():
    return "done"


harness.worker(app, hostname="worker-a", queues=["default", "reports"])  # noqa: F821
harness.worker(app, hostname="worker-b")  # noqa: F821
harness.sql(  # noqa: F821
    "INSERT INTO jobqueue.schedules (name, task, interval_secs) "
    "VALUES ('nightly', 'proj.tasks.report', 86400)"
)
failed = sync.delay()
failed.get(timeout=30, propagate=False)
job_id = failed.id
id1, id2 = report.apply_async(countdown=3600).id, report.apply_async(countdown=3600).id
