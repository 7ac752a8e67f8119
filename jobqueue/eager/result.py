"""Results of eager runs: Celery's ``EagerResult``, finished when you get it.

``EagerResult`` is an ``AsyncResult`` whose row is in memory (the run's), so
``state``, ``result``, ``info``, ``traceback``, ``retries``, ``ready()``,
``successful()``, ``failed()`` and ``get()`` read it exactly as they read a
stored job, and nothing reaches the database. ``get()`` raises the task's
own exception object (with its traceback); for work that never ran (a chord
body after a failed header...) the stored error rebuilt, as a worker's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..result import AsyncResult, _exception
from ..result_set import GroupResult, ResultSet
from ..serialization import replaced_by

if TYPE_CHECKING:
    from .run import EagerRun


class EagerResult(AsyncResult):
    """A job run by ``apply()`` or in eager mode (``app.conf.eager``)."""

    def __init__(self, id: str, run: EagerRun) -> None:
        super().__init__(id, app=run.app)
        self._run = run
        record = run.records.get(self.id)
        self._row = None if record is None else record.row

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

    def _fetch(self) -> dict[str, Any] | None:
        return self._row

    def _exception(self, row: dict[str, Any]) -> BaseException:
        record = self._run.records.get(self.id)
        if record is not None and record.exception is not None:
            return record.exception
        return _exception(self.id, row, self.app, self._lookup)

    def _lookup(self, job_id: str) -> tuple[str, dict[str, Any] | None, str | None] | None:
        """A job of this run, for a chord's error (its failed header job)."""
        record = self._run.records.get(job_id)
        if record is None:
            return None
        row = record.row
        return row["state"], row.get("error"), row.get("task")

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> Any:
        """The result, or the task's exception raised (``propagate=False``:
        returned). Never waits: the job is finished."""
        row = self._row
        if row is not None and row["state"] == "SUCCESS":
            replacement = replaced_by(row["result"], self.app)
            if replacement is not None:  # self.replace(): its replacement's outcome
                return self._run.eager(replacement).get(propagate=propagate)
        if row is None or row["state"] == "SUCCESS":
            return None if row is None else row["result"]
        exc = self._exception(row)
        if propagate:
            raise exc
        return exc

    wait = get

    @property
    def children(self) -> list[AsyncResult]:
        """The jobs this one started when it finished (callbacks, next chain steps)."""
        return [EagerResult(child, self._run) for child in self._run.children(self.id)]

    @property
    def parent(self) -> AsyncResult | ResultSet | None:
        """The job that started this one (the previous chain step...), or None."""
        if self._parent is None and self._row is not None and self._row["parent_id"]:
            self._parent = EagerResult(str(self._row["parent_id"]), self._run)
        return self._parent

    @parent.setter
    def parent(self, value: AsyncResult | ResultSet | None) -> None:
        self._parent = value

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Nothing to do: the job is finished (as revoking a finished job is)."""

    def retry(self, reset_retries: bool = False) -> bool:
        raise RuntimeError(
            f"job {self.id} ran eagerly and has no row to run again: call apply() again"
        )


class EagerGroupResult(GroupResult):
    """The results of a group run eagerly, in the group's order."""

    def _states(self) -> list[str]:
        return [leaf.state for leaf in self.leaves()]

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Nothing to do: every member is finished."""

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float | None = None,
        callback: Callable[[str, Any], Any] | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """Every member's result, in order (nested groups nest); the first
        failure raised unless ``propagate=False``. With ``callback``, called
        with ``(id, value)`` for each member instead (Celery's join)."""
        values = [r.get(propagate=propagate) for r in self.results]
        if callback is None:
            return values
        for result, value in zip(self.results, values, strict=True):
            callback(str(result.id), value)
        return []

    join = get
