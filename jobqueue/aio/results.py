"""Waiting for results from async code: ``await result.aget()``.

The async twin of ``jobqueue.result.ResultWaiter``, one per app and event
loop: one LISTEN connection (an ``AsyncConnection``, read by a task on the
loop) on ``<schema>_done`` wakes the waiters of the ids a completion names; a
waiter then re-reads its row, so a notification is only a hint, confirmed in
SQL. Waiters also re-read every ``result_recheck_interval`` seconds in case a
notification was lost, and behind a transaction pooler with no
``listen_dsn`` they poll, 5 ms doubling up to that interval, as the sync
waiter does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from .. import states
from ..result import collect_ready, none_ready, not_ready, until_deadline
from ..sql import channels

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..result import AsyncResult
    from .store import AsyncStore

log = logging.getLogger(__name__)


class AsyncResultWaiter:
    """One LISTEN connection on one event loop, fanning finished-job notices
    out to the waiters on that loop."""

    def __init__(self, app: JobQueue, store: AsyncStore) -> None:
        self.app = app
        self.store = store
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.polling = False

    async def wait(
        self, result: AsyncResult, timeout: float | None, interval: float | None
    ) -> dict[str, Any]:
        """The row of ``result``'s job once it is finished (``ResultWaiter.wait``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        recheck = interval or self.app.conf.result_recheck_interval
        looks = 0
        event = asyncio.Event()
        await self._start()
        self._waiters[result.id].add(event)
        try:
            while True:
                row = result._row
                if row is None or row["state"] not in states.READY_STATES:
                    found = await self.store.get_job(result.id)
                    row = None if found is None else result._remember(found)
                if row is not None and row["state"] in states.READY_STATES:
                    return row
                pause, looks = self._pause(recheck, looks), looks + 1
                pause = until_deadline(pause, deadline, partial(not_ready, result.id, timeout, row))
                await _woken(event, pause)
        finally:
            self._forget(result.id, event)

    async def wait_many(
        self, ids: list[str], timeout: float | None, interval: float | None
    ) -> dict[str, dict[str, Any]]:
        """The rows of every job in ``ids`` once all are finished
        (``ResultWaiter.wait_many``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        recheck = interval or self.app.conf.result_recheck_interval
        looks = 0
        event = asyncio.Event()
        await self._start()
        for job_id in ids:
            self._waiters[job_id].add(event)
        done: dict[str, dict[str, Any]] = {}
        try:
            while True:
                pending = [i for i in ids if i not in done]
                if collect_ready(await self.store.get_jobs(pending), done, ids):
                    return done
                pause, looks = self._pause(recheck, looks), looks + 1
                pause = until_deadline(pause, deadline, partial(none_ready, timeout, done, ids))
                await _woken(event, pause)
        finally:
            for job_id in ids:
                self._forget(job_id, event)

    def _forget(self, job_id: str, event: asyncio.Event) -> None:
        waiting = self._waiters.get(job_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self._waiters[job_id]

    def _pause(self, recheck: float, looks: int) -> float:
        return min(recheck, 0.005 * 2 ** min(looks, 20)) if self.polling else recheck

    async def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="jobqueue-results"
            )
        if not self._listening.is_set():
            # Waiters re-check on a timer anyway; don't block forever on a bad server.
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._listening.wait(), 5.0)

    async def _listen(self) -> None:
        channel = channels(self.app.conf.schema)["done"]
        backoff = 0.1
        while True:
            try:
                await self.store.db.ready()
                dsn = self._listen_dsn()
                if dsn is None:  # poll-only (a transaction pooler, no listen_dsn)
                    self.polling = True
                    self._listening.set()
                    return
                conn = await psycopg.AsyncConnection.connect(
                    dsn, autocommit=True, application_name="jobqueue-results"
                )
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._listening.set()
                    backoff = 0.1
                    self._wake_all()  # anything finished while we were (re)connecting
                    async for notice in conn.notifies():
                        self._wake(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the listener must outlive anything: waiters re-check
                self._listening.set()
                log.warning("result listener lost its connection (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _listen_dsn(self) -> str | None:
        """``Database.listen_connect``'s choice: the DSN unless it goes through
        a transaction pooler, else ``listen_dsn``; None: poll."""
        db = self.app.db
        if not db.transaction_pooled:
            return db.dsn()
        return self.app.conf.listen_dsn or None

    def _wake(self, payload: str) -> None:
        for job_id in payload.split(","):
            for event in self._waiters.get(job_id, ()):
                event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


async def _woken(event: asyncio.Event, pause: float) -> None:
    """Until ``event`` is set or ``pause`` seconds pass; then clear it."""
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), pause)
    event.clear()
