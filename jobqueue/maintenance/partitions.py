"""Partitions: the history partitions of the coming periods exist before their jobs."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..store import Store

log = logging.getLogger("jobqueue.worker")


class Partitions:
    """Creates the partitions of jobs and job_attempts for the next periods
    (``history_plan``: a day each, three ahead by default), so a day's jobs
    land in their own partition and retention can drop it whole. Nothing
    depends on it running in time: ids no partition covers go to the default
    partition, and the next creation moves them into their own
    (docs/retention.md). Nearly always a catalog read that creates nothing."""

    name = "partitions"

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(self, conn: psycopg.Connection[Any]) -> None:
        created = self.store.history_partitions_ahead(conn)
        if created:
            log.info("history: created %d partition(s) ahead", created)
