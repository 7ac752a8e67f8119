"""The docs' proj/tasks.py, for a page that imports from it without writing
it (``<!-- setup: harness.example_tasks() -->``): the app, and the tasks of
quickstart.md and canvas.md, which the other pages' examples call."""

import time

from jobqueue import JobQueue

app = JobQueue()


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def identity(value):
    return value


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(max_retries=0)
def fail_if(value, bad):
    if value == bad:
        raise ValueError(f"{value} is bad")
    return value


@app.task
def record_error(failed_job_id, tag):
    return f"{tag}: {failed_job_id}"


@app.task(queue="emails", priority=5)
def send_email(to, subject): ...


@app.task(bind=True)
def whoami(self):
    return {"id": self.request.id, "queue": self.request.queue}
