"""An example app: `jobqueue -A examples.app:app worker` (see compose.yaml)."""

from __future__ import annotations

import time

from jobqueue import JobQueue, Task

app = JobQueue()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(queue="email", priority=5)
def send_welcome_email(address: str) -> str:
    time.sleep(0.1)  # stands in for talking to a mail server
    return f"welcome email sent to {address}"


@app.task(bind=True)
def report(self: Task[..., dict[str, str]], day: str) -> dict[str, str]:
    return {"day": day, "job": self.request.id}
