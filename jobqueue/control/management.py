"""``app.control``: manage jobs and queues (retry, cancel, delete, move,
purge, pause) through the schema's SQL functions, which the CLI and plain SQL
call too: the three faces do exactly the same thing.

Batches and transactions. Each SQL function touches at most ``max_jobs``
rows per call, in one short transaction, so a bulk operation never locks a
whole table under running workers. An operation runs batch after batch,
each committed on its own, and returns the total: a failure half-way leaves
the batches already done done (run it again: it acts on what still
matches). So bulk operations are **not** part of the caller's transaction;
only ``revoke`` (``connection=``) is, as ``AsyncResult.revoke`` has always
been.

Jobs that come back into the filter while an operation runs are acted on
once, not again: ``retry``, ``cancel`` and ``move`` walk the matching jobs
by id (keyset pages of ``find_jobs``) and act on each page's ids, so a
retried job that fails again at once, or a running job that stays STARTED
after being marked revoked, is not counted twice. ``purge`` and ``delete``
simply call their function until it returns 0: what they touch never
matches again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..limits import check_fair_key
from ..options import check_queue
from .filters import FINISHED, RETRYABLE, UNFINISHED, WAITING, Filters
from .jobs import Attempt, FairKey, Job, QueueStats
from .remote import RemoteControl

if TYPE_CHECKING:
    from ..app import JobQueue

#: Jobs per SQL call (the functions' own default ``max_jobs``).
BATCH_SIZE = 10_000


def _queue_name(name: Any, what: str = "queue") -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty name, got {name!r}")
    return name


class Control(RemoteControl):
    """Job and queue management for one app (``app.control``), and Celery's
    remote control and inspect (``remote.RemoteControl``)."""

    def __init__(self, app: JobQueue, batch_size: int = BATCH_SIZE) -> None:
        self.app = app
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"<Control of {self.app!r}>"

    # -- queues ---------------------------------------------------------------------

    def pause_queue(self, name: str, reason: str | None = None) -> bool:
        """Stop every worker from claiming jobs of queue ``name`` (durable, in
        SQL; jobs keep arriving). False if it was already paused."""
        name = _queue_name(name)
        return bool(self.app.store.pause_queue(name, reason))

    def resume_queue(self, name: str) -> bool:
        """Let workers claim from ``name`` again. False if it was not paused."""
        name = _queue_name(name)
        return bool(self.app.store.resume_queue(name))

    # -- schedules --------------------------------------------------------------------

    def pause_schedule(self, name: str) -> bool:
        """Stop periodic schedule ``name`` from firing (pause_schedule()).
        False if it was paused already; ValueError if there is none."""
        name = _queue_name(name, "schedule")
        return bool(self._sql_call(lambda: self.app.store.pause_schedule(name)))

    def resume_schedule(self, name: str) -> bool:
        """Let it fire again, planned from now (resume_schedule()): the ticks
        missed while paused are not run. False if it was not paused."""
        name = _queue_name(name, "schedule")
        return bool(self._sql_call(lambda: self.app.store.resume_schedule(name)))

    def run_schedule(self, name: str) -> str:
        """Enqueue one job of the schedule now, paused or not (run_schedule());
        its planned fire times do not move. The job's id."""
        name = _queue_name(name, "schedule")
        return str(self._sql_call(lambda: self.app.store.run_schedule(name)))

    def queues(self) -> list[QueueStats]:
        """Every queue of the ``queue_stats`` view, with ``paused``."""
        return [QueueStats.from_row(row) for row in self.app.store.queue_stats()]

    def set_fair_weight(self, key: str, weight: int) -> int:
        """Jobs of fair key ``key`` get ``weight`` turns a round (1 to 1000; 1,
        the default, removes the setting), for every worker at its next claim
        (set_fair_weight()). Returns the weight."""
        key = check_fair_key(key, "fair key")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 1000:
            raise ValueError(f"a fair key's weight must be an integer 1 to 1000, got {weight!r}")
        return self.app.store.set_fair_weight(key, weight)

    def fair_keys(self) -> list[FairKey]:
        """Waiting jobs per queue and fair key (the ``fair_keys`` view), most first."""
        return [FairKey.from_row(row) for row in self.app.store.fair_keys()]

    def purge(self, queue: str | None = None, *, limit: int | None = None) -> int:
        """Revoke every waiting job of ``queue`` (None: of every queue), so none
        is left PENDING; how many. Celery's ``app.control.purge()``. Running
        jobs are left alone (``cancel(terminate=True)`` stops them)."""
        name = None if queue is None else _queue_name(queue)
        Filters(limit=limit)  # checks limit
        return self._until_zero(lambda size: self.app.store.purge_queue(name, max_jobs=size), limit)

    # -- jobs -----------------------------------------------------------------------

    def revoke(
        self, task_id: str | Iterable[str], terminate: bool = False, *, connection: Any = None
    ) -> int:
        """Celery's ``app.control.revoke(task_id, terminate=False)``: one id or
        several; how many were still unfinished. In the caller's transaction
        with ``connection=``."""
        return self.app.revoke(task_id, terminate=terminate, connection=connection)

    def retry(
        self,
        ids: str | Iterable[str] | None = None,
        *,
        queue: str | None = None,
        task: str | None = None,
        state: str | None = None,
        exception: str | None = None,
        enqueued_after: datetime | None = None,
        enqueued_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int | None = None,
        reset_retries: bool = False,
    ) -> int:
        """Put FAILURE and REVOKED jobs back in their queue as a new attempt
        (their attempt history is kept; ``retries`` counts on unless
        ``reset_retries``); how many."""
        filters = Filters(
            _ids(ids), queue, task, state, exception,
            enqueued_after, enqueued_before, finished_after, finished_before, limit,
        )  # fmt: skip
        filters.restrict(RETRYABLE, "retry")

        def act(params: dict[str, Any], size: int) -> int:
            return self.app.store.retry_jobs(
                **params, max_jobs=size, reset_retries=bool(reset_retries)
            )

        return self._act(filters, RETRYABLE, act)

    def cancel(
        self,
        ids: str | Iterable[str] | None = None,
        *,
        queue: str | None = None,
        task: str | None = None,
        state: str | None = None,
        exception: str | None = None,
        enqueued_after: datetime | None = None,
        enqueued_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int | None = None,
        terminate: bool = False,
    ) -> int:
        """Revoke unfinished jobs as ``AsyncResult.revoke`` does (waiting ones
        never run; running ones are stopped with ``terminate``, else left to
        finish and never retried); how many."""
        filters = Filters(
            _ids(ids), queue, task, state, exception,
            enqueued_after, enqueued_before, finished_after, finished_before, limit,
        )  # fmt: skip
        filters.restrict(UNFINISHED, "cancel")

        def act(params: dict[str, Any], size: int) -> int:
            return self.app.store.cancel_jobs(**params, max_jobs=size, terminate=bool(terminate))

        return self._act(filters, UNFINISHED, act)

    def delete(
        self,
        ids: str | Iterable[str] | None = None,
        *,
        queue: str | None = None,
        task: str | None = None,
        state: str | None = None,
        exception: str | None = None,
        enqueued_after: datetime | None = None,
        enqueued_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete finished jobs (SUCCESS, FAILURE, REVOKED) and their attempts
        now, before retention would; how many."""
        filters = Filters(
            _ids(ids), queue, task, state, exception,
            enqueued_after, enqueued_before, finished_after, finished_before, limit,
        )  # fmt: skip
        filters.restrict(FINISHED, "delete")
        params = filters.params()
        return self._until_zero(
            lambda size: self.app.store.delete_jobs(**params, max_jobs=size), filters.limit
        )

    def move(
        self,
        ids: str | Iterable[str] | None = None,
        *,
        queue: str | None = None,
        task: str | None = None,
        state: str | None = None,
        exception: str | None = None,
        enqueued_after: datetime | None = None,
        enqueued_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int | None = None,
        to_queue: str | None = None,
        to_priority: int | None = None,
        to_eta: datetime | None = None,
    ) -> int:
        """Give waiting jobs another queue, priority or due time (``to_eta``);
        how many. At least one ``to_`` is required."""
        filters = Filters(
            _ids(ids), queue, task, state, exception,
            enqueued_after, enqueued_before, finished_after, finished_before, limit,
        )  # fmt: skip
        filters.restrict(WAITING, "move")
        if to_queue is None and to_priority is None and to_eta is None:
            raise ValueError("move needs a destination: to_queue, to_priority or to_eta")
        if to_queue is not None:
            check_queue(to_queue, "to_queue")  # a queue jobs go to: one a worker can consume
        if to_priority is not None:
            from ..options import check_priority

            to_priority = check_priority(to_priority)
        if to_eta is not None:
            Filters(enqueued_after=to_eta)  # the same check: an aware datetime

        def act(params: dict[str, Any], size: int) -> int:
            return self.app.store.move_jobs(
                **params, max_jobs=size, to_queue=to_queue, to_priority=to_priority, to_eta=to_eta
            )

        return self._act(filters, WAITING, act)

    def jobs(
        self,
        ids: str | Iterable[str] | None = None,
        *,
        queue: str | None = None,
        task: str | None = None,
        state: str | None = None,
        exception: str | None = None,
        enqueued_after: datetime | None = None,
        enqueued_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Iterator[Job]:
        """The matching jobs in id order (creation order for generated ids),
        fetched a page at a time (keyset: no OFFSET, no count), from the one
        after ``after`` on."""
        filters = Filters(
            _ids(ids), queue, task, state, exception,
            enqueued_after, enqueued_before, finished_after, finished_before, limit,
        )  # fmt: skip
        if after is not None:
            Filters(ids=(after,))  # checks it is an id
        return self._pages(filters, after)

    def job(self, id: str) -> Job | None:
        """One job by id, or None."""
        return next(self._pages(Filters(ids=(id,)), None), None)

    def history(self, id: str) -> list[Attempt]:
        """Every attempt of job ``id`` (the ``job_history`` view), oldest first."""
        job_id = Filters(ids=(id,)).ids[0]  # type: ignore[index]
        return [Attempt.from_row(row) for row in self.app.store.job_history(str(job_id))]

    def count(self, filters: Filters, states: frozenset[str]) -> int:
        """How many jobs match ``filters`` and are in one of ``states`` (what a
        bulk operation would act on now): the CLI's confirmation."""
        return sum(1 for job in self._pages(filters, None) if job.state in states)

    # -- the batches ---------------------------------------------------------------

    def _size(self, limit: int | None, done: int = 0) -> int:
        return self.batch_size if limit is None else min(self.batch_size, limit - done)

    def _until_zero(self, call: Callable[[int], Any], limit: int | None) -> int:
        total = 0
        while (size := self._size(limit, total)) > 0:
            done = int(call(size))
            if done == 0:
                break
            total += done
        return total

    def _pages(self, filters: Filters, after: str | None) -> Iterator[Job]:
        params = filters.params()
        seen = 0
        while (size := self._size(filters.limit, seen)) > 0:
            rows = self.app.store.find_jobs(**params, after=after, max_jobs=size)
            if not rows:
                return
            for row in rows:
                job = Job.from_row(row)
                yield job
            seen += len(rows)
            after = str(job.id)
            if len(rows) < size:
                return

    def _act(
        self,
        filters: Filters,
        states: frozenset[str],
        act: Callable[..., Any],
    ) -> int:
        """Run ``act`` (a bulk SQL function) over the jobs of ``filters`` in
        ``states``, page by page of their ids."""
        params = filters.params()
        total = 0
        page: list[str] = []
        for job in self._pages(replace(filters, limit=None), None):  # every match...
            if job.state in states:  # ...acting on those the function would take
                page.append(str(job.id))
            if len(page) >= self._size(filters.limit, total):
                total += int(act({**params, "ids": page}, len(page)))
                page = []
                if filters.limit is not None and total >= filters.limit:
                    return total
        if page:
            total += int(act({**params, "ids": page}, len(page)))
        return total


def _ids(ids: str | Iterable[str] | None) -> Any:
    """One id or several, as ``Filters`` takes them (it checks them)."""
    return (ids,) if isinstance(ids, str) else ids


__all__ = ["BATCH_SIZE", "Control"]
