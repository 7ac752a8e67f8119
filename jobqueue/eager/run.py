"""One eager run: jobs executed in this process, as workers and SQL would run them.

What a worker and the database do for each job (claim, execute, complete,
advance), done here over tables in memory:

- every attempt goes through the worker's own executor
  (``executor.run_attempt``): the same ``self.request`` (``is_eager`` set),
  signals, retry decisions (``self.retry()``, ``autoretry_for``,
  ``max_retries``) and JSON encoding of arguments, results and errors;
- a RETRY outcome runs the next attempt at once: its countdown is not waited
  for (nor is a job's own ``countdown``/``eta``), as in Celery's eager mode;
- what follows a finished job is what SQL's ``advance()`` creates (migration
  0003; ``spawn``, ``fail_tree``, ``fail_chord`` in sql/schema.sql), ported
  line for line: link callbacks get the result, error callbacks the failed
  job's id, a chord's body the header's results in group order, and work
  that can no longer run is recorded FAILURE with the same errors. A canvas
  is the JSON tree ``canvas.Freezer`` makes for the database, so the two
  cannot disagree on its shape.

Jobs run one at a time, first in first out, like one worker with one slot.
No connection is opened.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..exceptions import TaskNotRegistered
from ..serialization import dump_error, dumps, loads
from ..worker.executor import SNOOZED, run_attempt
from ..worker.job import Job
from ..worker.outcome import Outcome
from .result import EagerGroupResult, EagerResult

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..canvas import Signature
    from ..options import JobSpec

#: Attempts of one job before eager mode gives up on it: a task that retries
#: without limit (max_retries=None) would otherwise never return, since no
#: time passes between its attempts.
MAX_ATTEMPTS = 1000

_HOSTNAME = f"eager@{socket.gethostname()}"


@dataclass
class Record:
    """One job's row, as ``AsyncResult`` reads it, and what only this process has."""

    row: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    #: What the task raised (FAILURE), with its own traceback.
    exception: BaseException | None = None


@dataclass
class Chord:
    remaining: int
    body: dict[str, Any]
    root: str | None
    state: str = "PENDING"  # DONE, FAILED


@dataclass
class EagerRun:
    """The jobs of one eager call and of everything they cause."""

    app: JobQueue
    records: dict[str, Record] = field(default_factory=dict)
    chords: dict[str, Chord] = field(default_factory=dict)
    chord_members: set[str] = field(default_factory=set)
    groups: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    due: deque[str] = field(default_factory=deque)
    #: Jobs whose task failed, in the order they ran (what ``throw`` raises).
    failures: list[Record] = field(default_factory=list)

    # -- the database's side: spawn, fail_tree, fail_chord, advance ---------------

    def spawn(
        self, sig: dict[str, Any], prepend: list[Any] | None, parent: str | None, root: str | None
    ) -> None:
        kind = sig.get("type", "task")
        if kind == "group":
            for member in sig["tasks"]:
                self.spawn(member, prepend, parent, root)
            return
        if kind == "chord":
            if sig["id"] in self.chords:
                return
            chord = self.chords[sig["id"]] = Chord(len(sig["header"]), sig["body"], root)
            if not sig["header"]:
                chord.state = "DONE"
                self.spawn(sig["body"], [[]], parent, root)
                return
            for member in sig["header"]:
                self.spawn(member, prepend, parent, root)
            return
        job_id = sig["id"]
        if job_id in self.records:
            return  # spawned before: spawning is idempotent
        args = list(sig.get("args") or [])
        if prepend is not None and not sig.get("immutable"):
            args = prepend + args
        record = self._record(sig, args, parent, root)
        if record.options.get("chord"):
            self.chord_members.add(job_id)
        self.due.append(job_id)

    def fail_chord(self, chord_id: str, failed: str, err: dict[str, Any]) -> None:
        chord = self.chords.get(chord_id)
        if chord is None or chord.state != "PENDING":
            return
        chord.state = "FAILED"
        error = {
            "type": "ChordError",
            "module": "jobqueue.exceptions",
            "traceback": None,
            "failed_job": failed,
            "message": f"Dependency {failed} raised {err.get('type') or 'an error'}: "
            f"{err.get('message') or ''}",
        }
        self.fail_tree(chord.body, error, failed, chord.root)

    def fail_tree(
        self, sig: dict[str, Any], err: dict[str, Any], parent: str | None, root: str | None
    ) -> None:
        kind = sig.get("type", "task")
        if kind == "group":
            for member in sig["tasks"]:
                self.fail_tree(member, err, parent, root)
            return
        if kind == "chord":
            self.chords.setdefault(sig["id"], Chord(0, sig["body"], root, "FAILED"))
            for member in sig["header"]:
                self.fail_tree(member, err, parent, root)
            self.fail_tree(sig["body"], err, parent, root)
            return
        job_id = sig["id"]
        if job_id in self.records:
            return
        record = self._record(sig, list(sig.get("args") or []), parent, root)
        record.row.update(state=states.FAILURE, error=err, finished_at=_now())
        options = record.options
        if options.get("chord"):  # a member of a chord: that chord fails too
            self.fail_chord(options["chord"], job_id, err)
        for errback in options.get("link_error") or ():
            self.spawn(errback, [job_id], job_id, root)
        for callback in options.get("link") or ():
            self.fail_tree(callback, err, job_id, root)

    def advance(self, record: Record) -> None:
        row, options = record.row, record.options
        job_id, root = row["id"], row["root_id"]
        if row["state"] == states.SUCCESS:
            for callback in options.get("link") or ():
                self.spawn(callback, [row["result"]], job_id, root)
        else:
            err = {**(row["error"] or {}), "failed_job": job_id}
            # Error callbacks first: one shared by later steps fires with this id.
            for errback in options.get("link_error") or ():
                self.spawn(errback, [job_id], job_id, root)
            for callback in options.get("link") or ():
                self.fail_tree(callback, err, job_id, root)
        chord_id = options.get("chord")
        if not chord_id or job_id not in self.chord_members:
            return
        self.chord_members.discard(job_id)
        if row["state"] != states.SUCCESS:
            self.fail_chord(chord_id, job_id, row["error"] or {"type": row["state"]})
            return
        chord = self.chords.get(chord_id)
        if chord is None or chord.state != "PENDING":
            return
        chord.remaining -= 1
        if chord.remaining == 0:
            chord.state = "DONE"
            members = sorted(self.groups.get(chord_id, []))
            results = [self.records[member].row["result"] for _, member in members]
            self.spawn(chord.body, [results], job_id, chord.root)

    def _record(
        self, sig: dict[str, Any], args: list[Any], parent: str | None, root: str | None
    ) -> Record:
        job_id = sig["id"]
        row = {
            "id": job_id,
            "task": sig["task"],
            "queue": sig.get("queue") or self.app.conf.default_queue,
            "state": states.PENDING,
            "result": None,
            "error": None,
            "attempts": 0,
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
            "worker_id": None,
            "root_id": root or job_id,
            "parent_id": parent,
            "group_id": sig.get("group_id"),
            "group_index": sig.get("group_index"),
            "progress_state": None,
            "progress": None,
        }
        record = Record(row, args, dict(sig.get("kwargs") or {}), dict(sig.get("options") or {}))
        self.records[job_id] = record
        if row["group_id"] is not None:
            self.groups.setdefault(row["group_id"], []).append((row["group_index"], job_id))
        return record

    def replace(self, record: Record, replacement: dict[str, str]) -> None:
        """``self.replace()``: what job_replace and job_replace_spawn do. The
        job gives its callbacks and chord membership to its replacement."""
        row = record.row
        job_id = row["id"]
        in_chord = bool(record.options.get("chord"))
        for key in ("link", "link_error", "chord"):
            record.options.pop(key, None)
        if row["group_id"] is not None and in_chord:
            members = self.groups.get(row["group_id"], [])
            members.remove((row["group_index"], job_id))
            row["group_id"] = row["group_index"] = None
        self.chord_members.discard(job_id)
        self.spawn(loads(replacement["canvas"]), None, job_id, replacement["root"])

    # -- the worker's side ------------------------------------------------------------

    def drain(self) -> None:
        """Run every job due, and what they cause, until none is left."""
        while self.due:
            record = self.records[self.due.popleft()]
            self._execute(record)
            self.advance(record)

    def _execute(self, record: Record) -> None:
        row = record.row
        # The JSON round trip a stored job makes: what the task gets is what a
        # worker's would get (a tuple arrives as a list...).
        payload = f"[{dumps(record.args)},{dumps(record.kwargs)},{dumps(record.options)}]"
        job = Job(
            id=row["id"],
            task=row["task"],
            queue=row["queue"],
            payload=payload,
            attempt=1,
            run_at=None,
            root_id=row["root_id"],
            parent_id=row["parent_id"],
            eager=True,
        )
        if row["group_id"] is not None:
            job.membership = (row["group_id"], row["group_index"])
        row["started_at"] = _now()
        exc: BaseException | None
        if row["task"] not in self.app.tasks:
            exc = TaskNotRegistered(
                f"task {row['task']!r} is not registered in this process: eager mode "
                "(app.conf.eager, apply()) runs only tasks registered here"
            )
            outcome = Outcome(job.id, 1, states.FAILURE, error=dump_error(exc))
        else:
            while True:
                outcome, _, exc = run_attempt(self.app, job, _HOSTNAME, _run_coroutine)
                if outcome.state == SNOOZED:  # again at once, its retries untouched
                    _snoozed(job)
                elif outcome.state != states.RETRY:
                    break
                if job.attempt >= MAX_ATTEMPTS:
                    exc = RuntimeError(
                        f"eager mode stopped job {job.id} of task {job.task!r} after "
                        f"{MAX_ATTEMPTS} attempts (each retry runs at once: no time passes)"
                    )
                    outcome = Outcome(job.id, job.attempt, states.FAILURE, error=dump_error(exc))
                    break
                job.attempt += 1
        row.update(attempts=job.attempt, state=outcome.state, finished_at=_now())
        if outcome.state == states.SUCCESS:
            row["result"] = None if outcome.result is None else loads(outcome.result)
            if outcome.replacement is not None:
                self.replace(record, outcome.replacement)
        else:
            row["error"] = None if outcome.error is None else loads(outcome.error)
            # The task's own exception, unless the executor failed the job with
            # another (a retry delay it cannot store...): then the stored one.
            if exc is not None and (row["error"] or {}).get("type") == type(exc).__qualname__:
                record.exception = exc
            self.failures.append(record)

    # -- results ------------------------------------------------------------------------

    def result(self, job_id: str) -> EagerResult:
        return EagerResult(job_id, self)

    def children(self, job_id: str) -> Iterator[str]:
        return (i for i, r in self.records.items() if r.row["parent_id"] == job_id)

    def finish(self, throw: bool | None) -> None:
        """Run everything; then with ``throw`` (None: app.conf.eager_propagates)
        raise the exception of the first job that failed, if one did."""
        self.drain()
        if throw is None:
            throw = bool(self.app.conf.eager_propagates)
        if throw and self.failures:
            failed = self.failures[0]
            raise failed.exception or EagerResult(failed.row["id"], self).result

    def eager(self, result: Any) -> EagerResult | EagerGroupResult:
        """The frozen canvas's result (AsyncResult or GroupResult), read from this run."""
        from ..result import GroupResult

        if isinstance(result, GroupResult):
            members: list[Any] = [self.eager(r) for r in result.results]
            return EagerGroupResult(result.id, members, app=self.app)
        return self.result(result.id)


def run_spec(
    app: JobQueue, spec: JobSpec, args: Any, kwargs: Any, throw: bool | None = None
) -> EagerResult:
    """One job resolved by ``app.enqueue`` (``delay``, ``apply_async``, ``send_task``)."""
    app._published(spec, args, kwargs)
    run = EagerRun(app)
    tree = {
        "type": "task",
        "id": spec.id,
        "task": spec.task,
        "args": loads(spec.args),
        "kwargs": loads(spec.kwargs),
        "options": loads(spec.options),
        "queue": spec.queue,
        "priority": spec.priority,
    }
    run.spawn(tree, None, spec.parent_id, spec.root_id)
    run.finish(throw)
    return run.result(spec.id)


def run_canvas(
    app: JobQueue, sig: Signature, root: str, throw: bool | None = None
) -> EagerResult | EagerGroupResult:
    """A signature, chain, group or chord, frozen as for the database (with its root id)."""
    from ..freezer import Freezer

    freezer = Freezer(app, root)
    tree, result = freezer.freeze(sig, member=None)
    tree = loads(dumps(tree))  # what the database would be given
    for spec, step_args, step_kwargs in freezer.specs:
        app._published(spec, step_args, step_kwargs)
    run = EagerRun(app)
    run.spawn(tree, None, None, root)
    run.finish(throw)
    return run.eager(result)


def run_many(
    app: JobQueue,
    params: dict[str, Any],
    sent: list[tuple[str, Any, Any, dict[str, Any] | None]],
) -> list[EagerResult]:
    """``enqueue_many``'s jobs, encoded and published as for its statement."""
    task, queue = params["task"], params["queue"]
    if signals.after_task_publish.receivers:
        for job_id, args, kwargs, headers in sent:
            signals.send_after_publish(task, job_id, args, kwargs, queue, headers)
    run = EagerRun(app)
    for job_id, args, kwargs, options in zip(
        params["ids"], params["args"], params["kwargs"], params["options"], strict=True
    ):
        tree = {
            "type": "task",
            "id": job_id,
            "task": task,
            "args": loads(args),
            "kwargs": loads(kwargs),
            "options": loads(options),
            "queue": queue,
            "priority": params["priority"],
        }
        run.spawn(tree, None, None, None)
    run.finish(None)
    return [run.result(job_id) for job_id in params["ids"]]


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """An ``async def`` task's coroutine, run to its end: on a fresh event loop,
    in a thread of its own when the caller already runs one (an async test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((asyncio.run(coro), None))
        except BaseException as exc:  # re-raised in the caller's thread
            outcome.append((None, exc))

    thread = threading.Thread(target=run, name="jobqueue-eager-async")
    thread.start()
    thread.join()
    value, exc = outcome[0]
    if exc is not None:
        raise exc
    return value


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _snoozed(job: Job) -> None:
    """What job_complete_many does to a snoozed job's options: one more run
    that used no retry (retries_base + 1)."""
    args, kwargs, options = job._decode()
    options = {**options, "retries_base": int(options.get("retries_base") or 0) + 1}
    job.payload = f"[{dumps(args)},{dumps(kwargs)},{dumps(options)}]"
    job._decoded = None
