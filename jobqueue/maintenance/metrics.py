"""Metrics: the counter rows of closed sessions folded into one."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from ..store import Store

log = logging.getLogger("jobqueue.worker")

_EVERY = 60.0  # seconds between folds: rows of closed sessions only cost the reader a little


class MetricsFold:
    """``job_metrics`` (revision 0015) takes one row per (queue, task, bucket)
    per writing session, so that completions never wait on each other; every
    restarted worker leaves its sessions' rows behind. Once a minute the
    leader adds the rows of sessions that have closed into one (one
    statement: readers of ``metrics()`` see the same totals before and
    after), so the table stays as small as the live sessions make it."""

    name = "metrics fold"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._last = -_EVERY

    def run(self, conn: psycopg.Connection[Any]) -> None:
        if time.monotonic() - self._last < _EVERY:
            return
        self._last = time.monotonic()
        folded = self.store.fold_metrics(conn)
        if folded:
            log.debug("metrics: folded %d row(s) of closed sessions", folded)
