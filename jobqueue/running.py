"""What a task does while it runs a job (``bind=True``'s ``self``): its
request, an atomic task's transaction, retrying and snoozing, progress, and
growing its workflow (replacing itself, adding to its group or chord).
A base of ``Task``.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn

from .exceptions import (
    AtomicError,
    ChordMembershipError,
    MaxRetriesExceededError,
    Replaced,
    Retry,
    Snooze,
)
from .request import Request
from .serialization import dumps

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.orm import Session

    from .app import JobQueue
    from .atomic import Transaction
    from .canvas import Signature
    from .result import AsyncResult
    from .retry import RetryPolicy

#: retry()'s "not given" (None is a value: no limit).
_UNSET: Any = object()


class RunningTask:
    """The running job's side of a task (``Task`` sets these attributes)."""

    if TYPE_CHECKING:
        name: str
        app: JobQueue
        atomic: bool
        max_retries: int | None
        policy: RetryPolicy
        _request: ContextVar[Request | None]

    @property
    def request(self) -> Request:
        """The job being run by this thread (set by the worker)."""
        current = self._request.get()
        if current is None:
            return Request(id="", task=self.name, args=[], kwargs={}, called_directly=True)
        return current

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """An atomic task's connection (``@app.task(atomic=True, bind=True)``),
        in the transaction that commits its writes with its job's completion
        when the task returns (or rolls both back if it raises)."""
        return self._transaction().connection

    @property
    def session(self) -> Session:
        """A SQLAlchemy ``Session`` in an atomic task's transaction (over
        ``self.connection``): its pending changes are written when the task
        returns, and commit with the job; its ``commit()`` releases a
        savepoint, its ``rollback()`` rolls back to it."""
        return self._transaction().session

    def _transaction(self) -> Transaction:
        transaction = self.request.transaction
        if transaction is None:
            if not self.atomic:
                raise AtomicError(
                    f"task {self.name!r} has no transaction of its own: declare it "
                    "@app.task(atomic=True) to get self.connection and self.session"
                )
            raise AtomicError(
                f"task {self.name!r} is not running as a job: its transaction exists "
                "only while a worker (or apply(), or eager mode) runs it"
            )
        return transaction

    def _push_request(self, request: Request | None) -> None:
        self._request.set(request)

    def snooze(self, seconds: float) -> Snooze:
        """``raise self.snooze(seconds)``: end this run and run the job again in
        ``seconds``, without using one of its retries (``return Snooze(s)``
        does the same). The run is kept in the job's history as SNOOZED;
        ``self.request.retries`` is unchanged in the next run."""
        return Snooze(seconds)

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = _UNSET,
        **options: Any,
    ) -> NoReturn:
        """End this attempt and schedule another (``bind=True`` tasks): ``raise self.retry(...)``.

        With no retries left, re-raises ``exc`` (or ``MaxRetriesExceededError``),
        so the job fails with it. ``args``/``kwargs`` are accepted for Celery
        compatibility; the retry runs with the job's original arguments.
        """
        request = self.request
        if request.called_directly:
            raise (
                exc
                if exc is not None
                else RuntimeError(f"{self.name}.retry() called outside a worker")
            )
        override = max_retries is not _UNSET
        if self.policy.exhausted(
            request.retries, max_retries if override else None, override=override
        ):
            if exc is not None:
                raise exc
            limit = max_retries if override else self.max_retries
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{request.id}]: max retries ({limit}) exceeded"
            )
        if eta is not None:
            moment = eta if eta.tzinfo else eta.astimezone()
            countdown = max((moment - datetime.now(timezone.utc)).total_seconds(), 0.0)
        if countdown is None:
            countdown = self.policy.countdown(request.retries, exc)
        raise Retry(exc=exc, countdown=countdown, eta=eta)

    def update_state(
        self, task_id: str | None = None, state: str = "PROGRESS", meta: Any = None
    ) -> None:
        """Publish progress while running: ``AsyncResult.state`` shows ``state``
        and ``.info`` shows ``meta`` until the job finishes."""
        from .states import ALL_STATES

        request = self.request
        if request.called_directly:
            return
        if state in ALL_STATES:
            raise ValueError(f"update_state() takes a custom state, not {state!r}")
        if request.is_eager:
            # Nothing can watch an eager job while it runs (its caller is
            # running it, and it has no row): checked, then dropped.
            dumps(meta)
            return
        # Only our own attempt may write our row; another job's, any.
        attempt = request.retries + 1 if task_id in (None, request.id) else None
        self.app.store.set_progress(task_id or request.id, state, dumps(meta), attempt)

    def replace(self, sig: Signature) -> NoReturn:
        """Replace this job with ``sig`` (a task signature, chain, group or
        chord), as Celery's ``self.replace``: ``sig`` is enqueued in the job's
        place and takes over its callbacks (``link``, a chain's next steps,
        ``link_error``) and its chord membership. Raises ``Replaced``, which
        ends this attempt; the job records ``SUCCESS`` and its result points to
        the replacement (``AsyncResult.get()`` follows it). The replacement is
        written in the transaction that records the job's outcome."""
        from .canvas import Signature

        if not isinstance(sig, Signature):
            raise TypeError(f"replace() takes a signature, got {type(sig).__name__}")
        request = self.request
        if request.called_directly:
            raise RuntimeError(f"{self.name}.replace() called outside a worker")
        if self.atomic:
            raise RuntimeError(
                f"{self.name}.replace(): an atomic task cannot be replaced (its "
                "transaction commits its writes with its own success)"
            )
        raise Replaced(sig)

    def add_to_chord(self, sig: Signature, lazy: bool = False) -> AsyncResult:
        """Add ``sig`` to the chord this job is a header member of, as Celery's
        ``self.add_to_chord``: the chord's body waits for it too and receives
        its result after the header's. The chord's counter is raised in the
        statement that writes the new member. Returns its ``AsyncResult``.
        Raises ``ChordMembershipError`` if this job is not in a chord's header
        (a member of a plain group is not), or if the chord already failed.
        ``lazy`` is accepted for Celery and ignored."""
        request = self._member_request(sig, "add_to_chord", "chord's")
        if not request.chord:
            raise ChordMembershipError(
                f"{self.name}[{request.id}] is not a member of a chord's header: "
                "add_to_chord() needs a chord whose body waits for the new member "
                "(a plain group has no body to give its result to: use add_to_group())"
            )
        from .freezer import add_to_chord

        result: AsyncResult = add_to_chord(self.app, request, sig)
        return result

    def add_to_group(self, sig: Signature) -> AsyncResult:
        """Add ``sig`` to the group this job is a member of (a plain group; in a
        chord's header use ``add_to_chord``): it is listed in the group, so
        ``GroupResult.restore(group_id)`` and the dashboard see it, and runs
        at once. Returns its ``AsyncResult``. Raises ``ChordMembershipError``
        if this job is in no group."""
        request = self._member_request(sig, "add_to_group", "group's")
        from .freezer import add_to_group

        result: AsyncResult = add_to_group(self.app, request, sig)
        return result

    def _member_request(self, sig: Signature, method: str, row: str) -> Request:
        """The running job's request, for ``method`` adding ``sig`` to its group
        or chord: a signature, run by a worker (not directly, not eagerly)."""
        from .canvas import Signature

        if not isinstance(sig, Signature):
            raise TypeError(f"{method}() takes a signature, got {type(sig).__name__}")
        request = self.request
        if request.called_directly:
            raise RuntimeError(f"{self.name}.{method}() called outside a worker")
        if request.is_eager:
            raise ChordMembershipError(
                f"{self.name}.{method}() is not supported in eager mode (apply(), "
                f"app.conf.eager): it needs the {row} row in the database"
            )
        return request
