"""From hints to events: what the rows confirm, in Celery's shape.

One read of the jobs and at most one of the workers per batch of
notifications, whatever its size. A hint the rows do not bear out (a job
that is gone, an attempt that did not end that way, a worker still registered
that is said to be offline) makes no event: jobs pruned since are skipped
quietly, anything else is logged at debug level.

Events are made as JSON text, one object a line, and only that: ``jobqueue
events --json`` writes them as they are, and the stream's dicts are their
``json.loads``. A listener makes three task events per job, and building a
dict of each and encoding it cost it about 6 us an event, more than all the
rest of its work; a template of each type with the values put in costs a
fifth of that, and there is one place that says what an event holds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .hints import TASK_KINDS, WORKER_KINDS, Hint

if TYPE_CHECKING:
    import psycopg

    from ..store import Store

log = logging.getLogger(__name__)

Event = dict[str, Any]

_WORKERS_KEPT = 10_000  # workers remembered for offline events and hostnames
_RESULT_CHARS = 200  # of a result's JSON (event_jobs reads one more, to know it was cut)
_ENCODE = json.JSONEncoder(check_circular=False).encode
_STRING: Any = json.encoder.encode_basestring_ascii  # C


class _JsonStrings(dict[Any, str]):
    """The JSON of a string or None, remembered: task names, queues,
    hostnames and worker ids come back again and again."""

    def __missing__(self, key: str | None) -> str:
        text = "null" if key is None else str(_STRING(key))
        if len(self) < 10_000:
            self[key] = text
        return text


_JSON = _JsonStrings()


def _uuid(value: str | None) -> str:
    """A uuid's text (as PostgreSQL writes it: nothing to escape), or null."""
    return "null" if value is None else f'"{value}"'


def _number(text: str | None) -> str:
    """A number as float8 wrote it, or null (also for infinity and NaN)."""
    return text if text and text[-1].isdigit() else "null"


def _text(value: str | None) -> str:
    return "null" if value is None else str(_STRING(value))


class WorkerInfo(NamedTuple):
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    version: str


class Reader:
    def __init__(
        self,
        store: Store,
        queues: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        types: Iterable[str] | None = None,
    ) -> None:
        self.store = store
        self.queues = sorted(set(queues)) if queues else None
        self.tasks = sorted(set(tasks)) if tasks else None
        self.types = frozenset(types) if types else None
        self.workers: dict[str, WorkerInfo] = {}
        self._middles: dict[tuple[str, str, str | None, int], str] = {}

    def remember_workers(self, conn: psycopg.Connection[Any]) -> None:
        """Every registered worker, so its offline event can name it."""
        self._worker_rows(conn, None)

    def read(self, conn: psycopg.Connection[Any], hints: list[Hint]) -> list[str]:
        """The events the rows bear out, in the hints' order: one JSON object
        (text, no newline) each."""
        types = self.types
        if types is not None:
            hints = [h for h in hints if self._wanted(h.kind, types)]
        if not hints:
            return []
        jobs: dict[str, tuple[Any, ...]] = {}
        ids = {h.id for h in hints if h.kind in TASK_KINDS}
        if ids:
            # In key order: the lookups then walk the index's pages in order
            # (about a fifth less server time than in hint order).
            rows = self.store.event_jobs(conn, sorted(ids), self.queues, self.tasks)
            jobs = {row[0]: row for row in rows}
        # The records of attempts the job's row no longer describes (rare).
        attempts: dict[tuple[str, int], tuple[Any, ...]] = {}
        older = set()
        for kind, job_id, attempt in hints:
            if kind == "succeeded" or kind not in TASK_KINDS:
                continue  # a success is always the row's own attempt
            row = jobs.get(job_id)
            if row is not None and (row[1] != attempt or (row[4] == "RETRY" and kind != "started")):
                older.add((job_id, attempt))
        if older:
            attempts = {(r[0], r[1]): r for r in self.store.event_attempts(conn, list(older))}
        # Workers to read: those an event is about, and those running a job
        # we cannot name yet.
        wanted = {h.id for h in hints if h.kind in WORKER_KINDS}
        known = self.workers
        ran = [row[5] for row in jobs.values()] + [row[3] for row in attempts.values()]
        wanted.update(w for w in ran if w is not None and w not in known)
        present = self._worker_rows(conn, sorted(wanted)) if wanted else {}
        now = time.time()
        lines: list[str] = []
        append = lines.append
        middles = self._middles
        received = types is None or "task-received" in types
        started = types is None or "task-started" in types
        for hint in hints:
            kind, job_id, attempt = hint
            row = jobs.get(job_id)
            if row is not None and row[1] == attempt and (kind == "started" or kind == "succeeded"):
                # The drain's events, all but a few: the row describes the
                # hinted attempt, and there is no record to look at.
                key = (row[2], row[3], row[5], attempt)
                middle = middles.get(key) or self._middle(key)
                common = f'"uuid": "{job_id}", {middle}'
                if kind == "started":
                    at = _number(row[6]) if row[6] is not None else repr(now)
                    _started(lines, common, at, row[15], row[16], received, started)
                elif row[4] == "SUCCESS":
                    append(_succeeded(common, _number(row[7]), row[8], row[12]))
                else:
                    log.debug("events: succeeded of job %s (attempt %s) not borne out", *hint[1:])
            elif kind in TASK_KINDS:
                if row is not None:
                    self._task_events(hint, row, attempts.get((job_id, attempt)), now, lines)
            else:
                event = self._worker_event(hint, present, now)
                if event is not None:
                    append(_ENCODE(event))
        return lines

    @staticmethod
    def _wanted(kind: str, types: frozenset[str]) -> bool:
        made = TASK_KINDS.get(kind)
        return bool(types.intersection(made)) if made else WORKER_KINDS[kind] in types

    def _worker_rows(
        self, conn: psycopg.Connection[Any], ids: list[str] | None
    ) -> dict[str, tuple[Any, ...]]:
        rows = self.store.event_workers(conn, ids)
        if len(self.workers) + len(rows) > _WORKERS_KEPT:
            self.workers.clear()
        found = {}
        for row in rows:
            worker_id, hostname, pid, queues, concurrency, version = row[:6]
            self.workers[worker_id] = WorkerInfo(hostname, pid, list(queues), concurrency, version)
            found[worker_id] = row
        return found

    # -- tasks -----------------------------------------------------------------------

    def _middle(self, key: tuple[str, str, str | None, int]) -> str:
        task, queue, worker, attempt = key
        info = self.workers.get(worker) if worker is not None else None
        middle = (
            f'"name": {_JSON[task]}, "queue": {_JSON[queue]}, '
            f'"hostname": {_JSON[info.hostname if info is not None else None]}, '
            f'"worker_id": {_JSON[worker]}, "retries": {attempt - 1 if attempt > 1 else 0}, '
            '"timestamp": '
        )
        if info is not None or worker is None:  # else: named once we know the worker
            if len(self._middles) >= _WORKERS_KEPT:
                self._middles.clear()
            self._middles[key] = middle
        return middle

    def _task_events(
        self,
        hint: Hint,
        row: tuple[Any, ...],
        older: tuple[Any, ...] | None,
        now: float,
        lines: list[str],
    ) -> None:
        """Append the events of one task hint that its rows bear out: the
        job's row, and the record of the hinted attempt when the row no
        longer describes it (``older``, read only then: see _needs_attempt)."""
        (
            _, attempts, task, queue, state, worker, started, finished, runtime,
            error_type, error_message, traceback, result, run_at, terminate, root, parent,
        ) = row  # fmt: skip
        if older is None:
            a_state = a_worker = a_started = a_finished = a_runtime = None
            a_type = a_message = a_traceback = None
        else:
            (
                _, _, a_state, a_worker, a_started, a_finished, a_runtime,
                a_type, a_message, a_traceback,
            ) = older  # fmt: skip
        attempt = hint.attempt
        kind = hint.kind
        current = attempts == attempt  # the job's row is about this attempt
        if kind == "started":
            confirmed = 1 <= attempt <= attempts
            use_row = current
        elif kind == "succeeded":
            confirmed = use_row = current and state == "SUCCESS"
        else:
            ended = {"failed": "FAILURE", "retried": "RETRY", "revoked": "REVOKED"}[kind]
            use_row = a_state != ended and current and state == ended and kind != "retried"
            confirmed = a_state == ended or use_row
        if not confirmed:
            log.debug("events: %s of job %s (attempt %s) not borne out", kind, hint.id, attempt)
            return
        if not use_row:
            worker, started, finished, runtime = a_worker, a_started, a_finished, a_runtime
            error_type, error_message, traceback = a_type, a_message, a_traceback
        # What every task event says after its uuid, the same for all the
        # jobs of a task, queue, worker and attempt number: made once.
        key = (task, queue, worker, attempt)
        middle = self._middles.get(key)
        if middle is None:
            middle = self._middle(key)
        # The uuid as PostgreSQL wrote it (the hint's pattern allows nothing to escape).
        common = f'"uuid": "{hint.id}", {middle}'
        types = self.types
        if kind == "started":
            at = _number(started) if started is not None else repr(now)
            received = types is None or "task-received" in types
            started_wanted = types is None or "task-started" in types
            _started(lines, common, at, root, parent, received, started_wanted)
            return
        at = _number(finished) if finished is not None else repr(now)
        if kind == "succeeded":
            lines.append(_succeeded(common, at, runtime, result))
        elif kind in ("failed", "retried"):
            exception = _exception(error_type, error_message)
            line = (
                f'{{"type": "task-{kind}", {common}{at}, "runtime": {_number(runtime)}, '
                f'"exception": {_text(exception)}, "traceback": {_text(traceback)}'
            )
            if kind == "retried":
                # The time of the next attempt, while the job still waits for it.
                eta = _number(run_at) if current and state == "RETRY" else "null"
                line += f', "eta": {eta}'
            lines.append(line + "}")
        else:  # revoked
            expired = error_message == "expired before it started"
            lines.append(
                f'{{"type": "task-revoked", {common}{at}, '
                f'"terminated": {"true" if terminate else "false"}, '
                f'"expired": {"true" if expired else "false"}}}'
            )

    # -- workers ---------------------------------------------------------------------

    def _worker_event(
        self, hint: Hint, present: dict[str, tuple[Any, ...]], now: float
    ) -> Event | None:
        row = present.get(hint.id)
        if hint.kind == "offline":
            if row is not None:
                log.debug("events: worker %s said offline but still registered", hint.id)
                return None
            # Kept: its jobs' events (a rescue's, just after) still name it.
            info = self.workers.get(hint.id)
            active = None
            timestamp = now
        else:
            if row is None:
                log.debug("events: worker %s said %s but not registered", hint.id, hint.kind)
                return None
            info = self.workers[hint.id]
            started, beat, active = row[6:9]
            timestamp = started if hint.kind == "online" else beat
        if self.queues is not None and info is not None and not set(info.queues) & set(self.queues):
            return None
        event: Event = {
            "type": WORKER_KINDS[hint.kind],
            "hostname": info.hostname if info else None,
            "worker_id": hint.id,
            "timestamp": timestamp,
            "pid": info.pid if info else None,
            "sw_ident": "jobqueue",
            "sw_ver": info.version if info else None,
            "queues": info.queues if info else None,
            "concurrency": info.concurrency if info else None,
        }
        if active is not None:
            event["active"] = active
        return event


def _started(
    lines: list[str],
    common: str,
    at: str,
    root: str | None,
    parent: str | None,
    received: bool,
    started: bool,
) -> None:
    """A claim's events (those of the wanted types): ``common`` is what every
    task event says from its uuid to its timestamp's key, ``at`` the time."""
    if received:
        lines.append(
            f'{{"type": "task-received", {common}{at}, '
            f'"root_id": {_uuid(root)}, "parent_id": {_uuid(parent)}}}'
        )
    if started:
        lines.append(f'{{"type": "task-started", {common}{at}}}')


def _succeeded(common: str, at: str, runtime: str | None, result: str | None) -> str:
    if result is not None and len(result) > _RESULT_CHARS:
        result = result[:_RESULT_CHARS] + "…"
    return (
        f'{{"type": "task-succeeded", {common}{at}, "runtime": {_number(runtime)}, '
        f'"result": {_text(result)}}}'
    )


def _exception(kind: str | None, message: str | None) -> str | None:
    if kind is None:
        return message
    return f"{kind}: {message}" if message else kind
