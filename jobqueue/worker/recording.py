"""Recording outcomes: what the completer writes for a batch of finished attempts.

One statement per batch (``job_complete_many``, guarded by lease and attempt),
in one transaction with ``job_advance`` when some of the jobs start a canvas
step. When the database refuses a batch, it is split, so one outcome it
cannot store neither loses the others nor stops the completer.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from .. import states
from ..db import transient
from ..serialization import dump_error
from ..store import Store
from .outcome import Outcome, outcome_params

log = logging.getLogger("jobqueue.worker")


def record_or_split(
    conn: psycopg.Connection[Any],
    store: Store,
    worker_id: str,
    batch: list[Outcome],
    advance: list[str],
) -> None:
    """Record a batch of outcomes, and start what follows them, in one
    transaction. Should the database refuse it (an error that retrying cannot
    cure: see ``db.transient``), split it. A canvas step refused on its own
    is dropped (its job's outcome stands); an outcome refused on its own fails
    its job, naming why. Transient errors propagate: the caller keeps the
    batch until the database takes it."""
    try:
        record(conn, store, worker_id, batch, advance)
        return
    except psycopg.Error as exc:
        if transient(exc):
            raise
        refused = exc
    if len(batch) > 1:
        log.warning("database refused %d outcomes (%s); one by one", len(batch), refused)
        for outcome in batch:
            alone = [job_id for job_id in advance if job_id == outcome.job_id]
            record_or_split(conn, store, worker_id, [outcome], alone)
        return
    job_id = batch[0].job_id
    if advance:
        log.error("could not start what follows job %s (%s); outcome only", job_id, refused)
        record_or_split(conn, store, worker_id, batch, [])
        return
    log.error("database refused the outcome of job %s: %s", job_id, refused)
    error = RuntimeError(f"the database refused this job's outcome: {refused}")
    refused_outcome = batch[0]
    failure = Outcome(
        job_id,
        refused_outcome.attempt,
        states.FAILURE,
        error=dump_error(error),
        task=refused_outcome.task,
        queue=refused_outcome.queue,
    )
    try:
        record(conn, store, worker_id, [failure], [])
    except psycopg.Error as exc:
        if transient(exc):
            raise
        # Not even a failure can be stored (the schema changed under us?). The
        # lease stays; the worker releases it as an orphan (lease_orphans).
        log.error("database refused the failure of job %s too (%s); it is released", job_id, exc)


def record(
    conn: psycopg.Connection[Any],
    store: Store,
    worker_id: str,
    batch: list[Outcome],
    advance: list[str],
) -> None:
    refused = store.complete(conn, outcome_params(batch, worker_id), advance)
    if refused:  # a line each: a job that may have run twice must be findable
        attempts = {o.job_id: o for o in batch}
        for job_id in refused:
            outcome = attempts.get(job_id)
            log.warning(
                "outcome %s of job %s (attempt %s) refused: worker %s no longer holds its "
                "lease (presumed dead and rescued, or a duplicate)",
                outcome.state if outcome else "?",
                job_id,
                outcome.attempt if outcome else "?",
                worker_id,
            )
