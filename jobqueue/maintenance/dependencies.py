"""Dependencies: what the completions could not count (depends_on)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..store import Store

log = logging.getLogger("jobqueue.worker")


class Dependencies:
    """Jobs waiting on others (``depends_on``) are counted where their
    dependencies finish; two cases escape that, and this round counts them
    (``dependencies_sweep()``): a dependency that finished while the
    transaction adding its dependent was still open (neither side could see
    the other), and one finished by a worker of an earlier release."""

    name = "dependencies"

    def __init__(self, store: Store) -> None:
        self.store = store
        # Each round looks at a bounded slice (10,000 dependencies), going on
        # from here: a million waiting edges cost a round no more than that.
        self.from_id: str | None = None

    def run(self, conn: psycopg.Connection[Any]) -> None:
        counted, self.from_id = self.store.sweep_dependencies(conn, self.from_id)
        if counted:
            log.info("counted %d finished dependencies the completions had missed", counted)
