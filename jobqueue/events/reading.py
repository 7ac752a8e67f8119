"""From notifications to events, in Celery's shape: data believed from a
worker's role (see hints.py), and hints confirmed by the rows.

Believed data becomes its events with no read: a claim's items in one
regular-expression check and f-strings; a success's with the task and queue
this listener kept from the job's claim (a success whose claim it did not
see, before it listened, is read as a hint): data.py. For hints, one read
of the jobs and at most one of the workers per batch of notifications,
whatever its size. A hint the rows do not bear out (a job that is gone, an
attempt that did not end that way, a worker still registered that is said
to be offline) makes no event: jobs pruned since are skipped quietly,
anything else is logged at debug level. Events are JSON text (lines.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .data import C_BODY, S_BODY, Believed, Item
from .hints import DATA, TASK_KINDS, WORKER_KINDS, Data, Hint, MalformedHint, parse, parse_data
from .lines import _ENCODE, _JSON, _exception, _number, _started, _succeeded, _text

if TYPE_CHECKING:
    import psycopg

    from ..store import Store

log = logging.getLogger(__name__)

Event = dict[str, Any]

_WORKERS_KEPT = 10_000  # workers remembered for offline events and hostnames


class _Rows(NamedTuple):
    """What the hints of a batch read: jobs by id, older attempts by (id,
    attempt), present workers by id, and the time of the reads."""

    jobs: dict[str, tuple[Any, ...]]
    attempts: dict[tuple[str, int], tuple[Any, ...]]
    present: dict[str, tuple[Any, ...]]
    now: float


def _runs(items: list[Any]) -> list[list[Any]]:
    """Items in runs of one type (hints, lines made, or Item), in order."""
    runs: list[list[Any]] = []
    for item in items:
        if runs and type(runs[-1][0]) is type(item):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


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
        self._believed = Believed()

    def remember_workers(self, conn: psycopg.Connection[Any]) -> None:
        """Every registered worker, so its offline event can name it."""
        self._worker_rows(conn, None)

    def believed(self, conn: psycopg.Connection[Any], payloads: list[tuple[str, int]]) -> set[int]:
        """Which of the processes that sent these notifications' data are
        believed (event_senders): asked once they have come, so a process
        that has gone since is not (its pid may be someone else's now)."""
        senders = {pid for payload, pid in payloads if payload[:1] == DATA}
        return self.store.event_senders(conn, sorted(senders)) if senders else set()

    def read(
        self,
        conn: psycopg.Connection[Any],
        payloads: list[tuple[str, int]],
        believed: set[int] | None = None,
    ) -> list[str]:
        """The events of these notifications (payload, sender's pid) that
        are believed or borne out by the rows, in order: one JSON object
        (text, no newline) each. ``believed``: the senders believed, asked
        (``believed()``) once these notifications had come, or None to ask."""
        pieces: list[Data | list[Hint]] = []
        for payload, pid in payloads:
            try:
                if payload[:1] == DATA:
                    pieces.append(parse_data(payload, pid))
                else:
                    pieces.append(parse(payload))
            except MalformedHint as exc:
                log.warning("events: skipped a notification jobqueue did not send (%s)", exc)
        if believed is None:
            believed = self.believed(conn, payloads)
        # The workers that believed data names, if new to us (rare): their
        # hostnames go into its events.
        new = {p.worker for p in pieces if isinstance(p, Data) and p.pid in believed}
        new.difference_update(self.workers)
        if new:
            self._worker_rows(conn, sorted(new))
        # In order: lines made already, or hints and items (made once the
        # hints' rows are read).
        parts: list[tuple[bool, list[Any]]] = []
        for piece in pieces:
            if not isinstance(piece, Data):
                parts.append((False, piece))
            elif piece.pid not in believed:
                log.debug("events: data from process %s, not a worker's: read as hints", piece.pid)
                try:
                    parts.append((False, piece.hints()))
                except MalformedHint as exc:
                    log.warning("events: skipped a notification jobqueue did not send (%s)", exc)
            elif self.queues is None and self.tasks is None and piece.kind == "S":
                if S_BODY.fullmatch(piece.body):
                    made: list[str] = []
                    self._believed.started_lines(piece, self._host(piece.worker), self.types, made)
                    parts.append((True, made))
                else:
                    parts.append((False, self._believed.items(piece, self.queues, self.tasks)))
            elif self.queues is None and self.tasks is None and C_BODY.fullmatch(piece.body):
                host = self._host(piece.worker)
                parts.append((False, self._believed.succeeded_lines(piece, host, self.types)))
            else:
                parts.append((False, self._believed.items(piece, self.queues, self.tasks)))
        hints = [h for ready, p in parts if not ready for h in p if isinstance(h, Hint)]
        self._believed.forget(hints)
        rows = self._fetch(conn, hints)
        lines: list[str] = []
        for ready, part in parts:
            if ready:
                lines.extend(part)
                continue
            for run in _runs(part):
                if isinstance(run[0], Hint):
                    self._hint_lines(run, rows, lines)
                elif isinstance(run[0], str):
                    lines.extend(run)
                else:
                    self._item_lines(run, lines)
        return lines

    def _fetch(self, conn: psycopg.Connection[Any], hints: list[Hint]) -> _Rows:
        """Every row the hints' events need, in at most three reads: the
        jobs, the older attempts, the workers."""
        types = self.types
        if types is not None:
            hints = [h for h in hints if self._wanted(h.kind, types)]
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
        return _Rows(jobs, attempts, present, time.time())

    def _hint_lines(self, hints: list[Hint], rows: _Rows, lines: list[str]) -> None:
        """The events of hints that the rows bear out, in the hints' order."""
        types = self.types
        if types is not None:
            hints = [h for h in hints if self._wanted(h.kind, types)]
        jobs, attempts, present, now = rows
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

    # -- data ------------------------------------------------------------------------

    def _item_lines(self, items: list[Item], lines: list[str]) -> None:
        types = self.types
        received = types is None or "task-received" in types
        started = types is None or "task-started" in types
        succeeded = types is None or "task-succeeded" in types
        for item in items:
            key = (item.task, item.queue, item.worker, item.attempt)
            middle = self._middles.get(key) or self._middle(key)
            common = f'"uuid": "{item.id}", {middle}'
            if item.kind == "started":
                _started(lines, common, item.at, item.root, item.parent, received, started)
            elif succeeded:
                lines.append(_succeeded(common, item.at, item.runtime, item.result))

    def _host(self, worker: str) -> str:
        """A worker's hostname as JSON (null when not registered)."""
        info = self.workers.get(worker)
        return _JSON[info.hostname if info is not None else None]

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
