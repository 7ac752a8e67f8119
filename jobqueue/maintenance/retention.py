"""Retention: finished jobs and bookkeeping past their age are deleted."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from ..config import Settings
from ..store import Store

log = logging.getLogger("jobqueue.worker")

_BUDGET = 1.0  # seconds of deleting per run: many workers share the work


class Retention:
    """Drops the history partitions whose every job expired, then deletes the
    other expired finished jobs in small batches (``retention_batch_size``),
    for about a second per run, then the canvas, schedule, unique-key and
    limit bookkeeping past the longest age (docs/retention.md)."""

    name = "retention"

    def __init__(self, store: Store, conf: Settings) -> None:
        self.store, self.conf = store, conf

    def run(self, conn: psycopg.Connection[Any]) -> None:
        self.prune(conn)

    def prune(self, conn: psycopg.Connection[Any]) -> int:
        """How many finished jobs were deleted."""
        conf = self.conf
        ages = [a for a in (conf.result_expires, conf.failed_result_expires) if a is not None]
        if not ages:
            return 0
        params = {
            "oldest": min(ages),
            "success_age": conf.result_expires,
            "failure_age": conf.failed_result_expires,
            "batch": conf.retention_batch_size,
        }
        # Whole partitions first: a day of 5 M jobs goes in well under a second,
        # with no dead rows to vacuum; a day held back only by failures younger
        # than their age keeps those alone. What a partition holding an
        # unfinished job holds, and the default partition, is deleted row by
        # row below, a partition period late (job_prune).
        for name, kept in self.store.history_prune(
            conn, conf.result_expires, conf.failed_result_expires
        ):
            if kept:
                log.info("retention: compacted history partition %s (%d failures kept)", name, kept)
            else:
                log.info("retention: dropped history partition %s", name)
        deleted, started = 0, time.monotonic()
        while time.monotonic() - started < _BUDGET:
            count = self.store.prune_jobs(conn, params)
            deleted += count
            if count < conf.retention_batch_size:
                break
        self.store.prune_meta(conn, max(ages), conf.retention_batch_size)
        if deleted:
            log.info("retention: deleted %d finished job(s)", deleted)
        return deleted
