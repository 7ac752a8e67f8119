"""Batches: members the completions could not count (app.batch())."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..store import Store

log = logging.getLogger("jobqueue.worker")


class Batches:
    """Batch members are counted where they finish; what escapes that is
    counted here (``batches_sweep()``): a member that finished while the
    transaction adding it was still open (a job enqueued earlier), one
    finished by a worker of an earlier release, one deleted."""

    name = "batches"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.from_id: str | None = None  # a bounded slice per round, as Dependencies

    def run(self, conn: psycopg.Connection[Any]) -> None:
        counted, self.from_id = self.store.sweep_batches(conn, self.from_id)
        if counted:
            log.info("counted %d finished batch members the completions had missed", counted)
