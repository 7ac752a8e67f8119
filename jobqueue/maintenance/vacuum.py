"""Vacuum: the tables on the claim path, kept free of dead rows."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import psycopg
from psycopg.errors import Diagnostic

from ..store import Store

log = logging.getLogger("jobqueue.worker")

# Dead rows before a table is vacuumed (or more dead than live rows), and
# changed rows before it is analyzed (or a fifth of the live ones).
_VACUUM_MIN_DEAD = {"job_queue": 20_000, "job_lease": 20_000, "jobs": 200_000}
_ANALYZE_MIN_CHANGED = 50_000

# VACUUM and ANALYZE do not fail on a table the role may not maintain: they
# skip it with a WARNING ("skipping "jobs" --- only table or database owner
# can vacuum it" on PostgreSQL 15, "permission denied to vacuum "jobs",
# skipping it" on 18). That warning carries no SQLSTATE of its own (01000,
# the generic warning; a table skipped because it was locked has 55P03), and
# its text is translated, but it always names the table. (A role whose
# client_min_messages hides warnings hides this one too: its worker then goes
# on sending VACUUMs that do nothing, as before.)
_GENERIC_WARNING = "01000"


class Vacuum:
    """Keep dead rows off the claim path even where autovacuum is off or slow:
    every claim deletes from job_queue and every completion from job_lease,
    and their dead index entries would pile up in front of the claim. Both
    tables hold only live work, so vacuuming them is cheap. Statistics are
    refreshed when much has changed: ANALYZE also makes every session re-plan
    its prepared claims and completions, which would otherwise keep plans made
    when the tables were small. Only the maintenance leader runs it: no
    session lock (it would leak through a transaction pooler), and should a
    second leader overlap for a moment, SKIP_LOCKED skips a table the other
    is vacuuming.

    VACUUM and ANALYZE need the table's owner, or the MAINTAIN privilege
    (PostgreSQL 17+; ``jobqueue db grant --worker`` grants it there). A worker
    whose role may not maintain a table says so once, at WARNING, and leaves
    that table to autovacuum for the rest of its life (docs/deployment.md)."""

    name = "vacuum"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.refused: set[str] = set()  # tables this worker's role may not vacuum

    def run(self, conn: psycopg.Connection[Any]) -> None:
        due: list[tuple[str, bool]] = []  # (table, analyze only)
        for table, dead, live, changed in self.store.hot_tables(conn):
            if table in self.refused:
                continue
            if dead > max(_VACUUM_MIN_DEAD[table], live):
                due.append((table, False))
            elif changed > max(_ANALYZE_MIN_CHANGED, live // 5):
                due.append((table, True))
        for table, analyze_only in due:
            what = "analyze" if analyze_only else "vacuum"
            started = time.monotonic()
            if self._maintain(conn, table, analyze_only):
                log.info("%s %s (%.2fs)", what, table, time.monotonic() - started)
                continue
            self.refused.add(table)
            log.warning(
                "%s %s.%s skipped: this worker's database role may not vacuum or analyze "
                "it (it needs the table's owner, or the MAINTAIN privilege on "
                "PostgreSQL 17+); this worker leaves it to autovacuum from now on "
                "(see docs/deployment.md, Roles and privileges)",
                what,
                self.store.db.schema,
                table,
            )

    def _maintain(self, conn: psycopg.Connection[Any], table: str, analyze_only: bool) -> bool:
        """VACUUM or ANALYZE ``table``; False if PostgreSQL skipped it for want
        of privilege (it says so only in a warning, which we listen for)."""
        named = re.compile(rf"(?<!\w){re.escape(table)}(?!\w)")
        skipped: list[str] = []

        def notice(diag: Diagnostic) -> None:
            message = diag.message_primary or ""
            if (
                diag.severity_nonlocalized == "WARNING"
                and diag.sqlstate == _GENERIC_WARNING
                and named.search(message)
            ):
                skipped.append(message)

        conn.add_notice_handler(notice)
        try:
            self.store.vacuum(conn, table, analyze_only)
        finally:
            conn.remove_notice_handler(notice)
        return not skipped
