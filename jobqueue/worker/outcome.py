"""What happened to one attempt (``Outcome``), as every part of the worker
hands it on (pools, the completer, hooks), and how a batch of them is bound
to the completion statement (``outcome_params``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import states
from .job import Job


@dataclass(slots=True)
class Outcome:
    """What happened to one attempt, ready to be written by the completer."""

    job_id: str
    attempt: int
    state: str
    result: str | None = None  # JSON text
    error: str | None = None  # JSON text
    delay: float | None = None  # seconds until the next attempt (state RETRY)
    runtime: float = 0.0  # seconds the task ran (the worker sizes its prefetch on it)
    unknown_task: str | None = None  # handed back: this worker does not know the task
    # Whose outcome, for the hooks' subscribers (notifications, logs): not written.
    task: str = ""
    queue: str = ""
    # Recorded already, with the task's writes, by its atomic transaction
    # (worker/atomic.py): the completer only settles it.
    recorded: bool = False
    # self.replace(): job_replace's parameters (JSON text), written with the outcome.
    replacement: dict[str, str] | None = None


def _outcome(job: Job, state: str, **fields: Any) -> Outcome:
    return Outcome(job.id, job.attempt, state, task=job.task, queue=job.queue, **fields)


def outcome_params(batch: Sequence[Outcome], worker_id: str) -> dict[str, Any]:
    """job_complete_many's parameters: one text per column, so binding costs a
    few joins instead of six list adaptations (results and errors are already
    JSON text; json.dumps quotes them, and None becomes SQL NULL again)."""
    params: dict[str, Any] = {
        "ids": ",".join([o.job_id for o in batch]),
        "attempts": ",".join([str(o.attempt) for o in batch]),
        "states": ",".join([o.state for o in batch]),
        "results": json.dumps([o.result for o in batch]),
        "errors": json.dumps([o.error for o in batch]),
        "delays": json.dumps([o.delay for o in batch]),
        "worker_id": worker_id,
    }
    replacements = [
        {**o.replacement, "id": o.job_id, "attempt": o.attempt, "worker_id": worker_id}
        for o in batch
        if o.replacement is not None and o.state == states.SUCCESS
    ]
    if replacements:  # written by Store.complete before the outcomes
        params["replacements"] = replacements
    return params
