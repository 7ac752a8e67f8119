"""Vacuum: the tables on the claim path, kept free of dead rows."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from ..store import Store

log = logging.getLogger("jobqueue.worker")

# Dead rows before a table is vacuumed (or more dead than live rows), and
# changed rows before it is analyzed (or a fifth of the live ones).
_VACUUM_MIN_DEAD = {"job_queue": 20_000, "job_lease": 20_000, "jobs": 200_000}
_ANALYZE_MIN_CHANGED = 50_000


class Vacuum:
    """Keep dead rows off the claim path even where autovacuum is off or slow:
    every claim deletes from job_queue and every completion from job_lease,
    and their dead index entries would pile up in front of the claim. Both
    tables hold only live work, so vacuuming them is cheap. Statistics are
    refreshed when much has changed: ANALYZE also makes every session re-plan
    its prepared claims and completions, which would otherwise keep plans made
    when the tables were small. One worker at a time (a try-lock)."""

    name = "vacuum"

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(self, conn: psycopg.Connection[Any]) -> None:
        due: list[tuple[str, bool]] = []  # (table, analyze only)
        for table, dead, live, changed in self.store.hot_tables(conn):
            if dead > max(_VACUUM_MIN_DEAD[table], live):
                due.append((table, False))
            elif changed > max(_ANALYZE_MIN_CHANGED, live // 5):
                due.append((table, True))
        if not due or not self.store.vacuum_lock(conn):
            return
        try:
            for table, analyze_only in due:
                started = time.monotonic()
                self.store.vacuum(conn, table, analyze_only)
                what = "analyze" if analyze_only else "vacuum"
                log.info("%s %s (%.2fs)", what, table, time.monotonic() - started)
        finally:
            self.store.vacuum_unlock(conn)
