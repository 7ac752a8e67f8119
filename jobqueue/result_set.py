"""Sets of results: ``ResultSet`` (any results, waited on together) and
``GroupResult`` (a group's, with the group's id), as in Celery."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import states
from .current import current_app
from .ids import check_id
from .result import AsyncResult, _value

if TYPE_CHECKING:
    from .app import JobQueue


class ResultSet:
    """Several results handled as one (Celery's ResultSet): wait for them all,
    ask whether they are all done, revoke them together. Members may be
    ``AsyncResult``s or result sets (a ``GroupResult``), whose values nest."""

    app: JobQueue

    def __init__(
        self, results: Iterable[AsyncResult | ResultSet], app: JobQueue | None = None
    ) -> None:
        self.results: list[AsyncResult | ResultSet] = list(results)
        #: The result before this one in its workflow (see ``AsyncResult.parent``).
        self._parent: AsyncResult | ResultSet | None = None
        if app is None:
            app = self.results[0].app if self.results else current_app()
        self.app = app

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(str(r.id) for r in self.results)}]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult | ResultSet]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult | ResultSet:
        return self.results[index]

    # -- membership --------------------------------------------------------------

    def add(self, result: AsyncResult | ResultSet) -> None:
        """Add ``result`` unless it is a member already."""
        if result not in self.results:
            self.results.append(result)

    def update(self, results: Iterable[AsyncResult | ResultSet]) -> None:
        for result in results:
            self.add(result)

    def remove(self, result: AsyncResult | ResultSet | str) -> None:
        """Remove a member (or the member with that id); KeyError if absent."""
        if isinstance(result, str):
            result = AsyncResult(result, app=self.app)
        try:
            self.results.remove(result)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: AsyncResult | ResultSet | str) -> None:
        """Remove a member if it is one."""
        with contextlib.suppress(KeyError):
            self.remove(result)

    def clear(self) -> None:
        self.results.clear()

    @property
    def children(self) -> list[AsyncResult | ResultSet]:
        return self.results

    @property
    def parent(self) -> AsyncResult | ResultSet | None:
        return self._parent

    @parent.setter
    def parent(self, value: AsyncResult | ResultSet | None) -> None:
        self._parent = value

    def leaves(self) -> list[AsyncResult]:
        out: list[AsyncResult] = []
        for r in self.results:
            out.extend(r.leaves() if isinstance(r, ResultSet) else [r])
        return out

    # -- state -------------------------------------------------------------------

    def _states(self) -> list[str]:
        """The members' states, read in one query."""
        ids = [r.id for r in self.leaves()]
        found = {str(r[0]): r[1] for r in self.app.store.get_jobs(ids)} if ids else {}
        return [found.get(i, states.PENDING) for i in ids]

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(s == states.SUCCESS for s in self._states())

    def ready(self) -> bool:
        return all(s in states.READY_STATES for s in self._states())

    def successful(self) -> bool:
        return all(s == states.SUCCESS for s in self._states())

    def failed(self) -> bool:
        return any(s == states.FAILURE for s in self._states())

    def waiting(self) -> bool:
        return not self.ready()

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Revoke every member (``signal`` accepted for Celery compatibility)."""
        ids = [r.id for r in self.leaves()]
        if ids:
            self.app.revoke(ids, terminate=terminate)

    # -- waiting -----------------------------------------------------------------

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float | None = None,
        callback: Callable[[str, Any], Any] | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """Wait for every member; their results in order (nested sets nest).
        One LISTEN wake-up and one query per round for all of them. With
        ``callback``, it is called with ``(id, value)`` for each member, in
        order, instead of returning the list (Celery's join)."""
        ids = [r.id for r in self.leaves()]
        rows = self.app.results.wait_many(ids, timeout, interval) if ids else {}
        values = self._values(rows, propagate)
        if callback is None:
            return values
        for result, value in zip(self.results, values, strict=True):
            callback(str(result.id), value)
        return []

    join = get
    join_native = get

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> list[Any]:
        """``get`` for async code: waits on the event loop (``jobqueue.aio``)."""
        ids = [r.id for r in self.leaves()]
        rows = await self.app.aio.waiter().wait_many(ids, timeout, interval) if ids else {}
        return self._values(rows, propagate)

    def _values(self, rows: dict[str, dict[str, Any]], propagate: bool) -> list[Any]:
        return [
            r._values(rows, propagate)
            if isinstance(r, ResultSet)
            else _value(r.id, rows[r.id], propagate, self.app)
            for r in self.results
        ]

    @property
    def id(self) -> str | None:
        return None  # a set of results has no id of its own (a GroupResult has)


class GroupResult(ResultSet):
    """The results of a group, in the group's order (Celery's GroupResult)."""

    def __init__(
        self, id: str, results: Iterable[AsyncResult | ResultSet], app: JobQueue | None = None
    ) -> None:
        super().__init__(results, app if app is not None else current_app())
        self._id = check_id(id, "id")

    @property
    def id(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(str(r.id) for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    @classmethod
    def restore(cls, id: str, app: JobQueue | None = None) -> GroupResult | None:
        """The group saved under ``id`` when its canvas was enqueued, or None."""
        if app is None:
            app = current_app()
        members = app.store.group_members(check_id(id, "id"))
        if members is None:
            return None
        return cls(id, [AsyncResult(m, app=app) for m in members], app=app)

    def save(self) -> GroupResult:
        return self  # groups are saved when their canvas is enqueued
