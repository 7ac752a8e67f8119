"""Rescue: jobs of workers whose lease expired go back to their queue."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..store import Store

log = logging.getLogger("jobqueue.worker")


class Rescue:
    """Workers whose lease expired (no heartbeat for their TTL) are removed, and
    their jobs go back as RETRY with a WorkerLostError, or fail, as the SQL of
    job_rescue decides (docs/reliability.md, leases and rescue)."""

    name = "rescue"

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(self, conn: psycopg.Connection[Any]) -> None:
        workers, jobs = self.store.rescue(conn)
        if workers or jobs:
            log.warning("rescued %d job(s) from %d worker(s) whose lease expired", jobs, workers)
