"""Believed data (hints.py): a claim's and a completion's items made into
their events without reading a row.

A claim's items, when all of them go into JSON as they are, are checked by
one regular expression and made with f-strings; a success's take the task
and queue this listener kept from the job's claim (``Believed.running``), and
one whose claim it did not see (before it listened, or sent as a hint) goes
back as a hint, to be read. Anything else is checked item by item.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from operator import itemgetter
from typing import NamedTuple, cast

from .hints import _DATA_KINDS, _ID, Data, Hint, MalformedHint, parse
from .lines import _JSON, _RESULT_CHARS, _STRING

log = logging.getLogger(__name__)


class Item(NamedTuple):
    """One job's event of believed data, checked item by item (Believed.items)."""

    kind: str  # started or succeeded
    id: str
    attempt: int
    task: str
    queue: str
    worker: str
    at: str  # a JSON number
    root: str | None
    parent: str | None
    runtime: str | None
    result: str | None  # the result's JSON, its first 201 characters


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_ID_RE = _ID
_UUID = re.compile(_ID_RE)
# Jobs whose claim this listener saw as data, with their task and queue,
# which a success's data does not repeat (cleared past this many: the
# successes of those still running are then read as hints).
RUNNING_KEPT = 100_000


_RETRIES = re.compile(r"\d{1,9}")


def _checked(fields: list[str], started: bool) -> bool:
    """Whether a data item's fields are as the statements write them: id,
    retries, then task, queue, root and parent ids ('' for none) of a claim,
    or run time and result of a success."""
    if len(fields) != (6 if started else 4):
        return False
    if not _UUID.fullmatch(fields[0]) or not _RETRIES.fullmatch(fields[1]):
        return False
    if started:
        return all(not field or _UUID.fullmatch(field) for field in fields[4:])
    return _NUMBER.fullmatch(fields[2]) is not None


# The fast way for a claim's believed data: its items checked by one regular
# expression (C), then made into their events with f-strings, what the items
# share (hostname, worker, time) put in once. Only items whose names go into
# JSON as they are (printable ASCII without quotes or backslashes); any other
# is done item by item (_items). About 0.5 us a job: a re.sub template cost 5
# (Python 3.11 expands templates in Python), one str.format of a payload's
# items 2, re.split 0.75.
_NAME = r"[ !#-\[\]-~]*"
_S_ITEM = rf"{_ID_RE}\x1f\d{{1,9}}\x1f{_NAME}\x1f{_NAME}\x1f(?:{_ID_RE})?\x1f(?:{_ID_RE})?"
S_BODY = re.compile(rf"{_S_ITEM}(?:\x1e{_S_ITEM})*")
# A completion's: id, retries, run time, the result's JSON (which holds no
# separator: JSON escapes control characters).
_C_ITEM = rf"{_ID_RE}\x1f\d{{1,9}}\x1f{_NUMBER.pattern}\x1f[^\x1e\x1f]*"
C_BODY = re.compile(rf"{_C_ITEM}(?:\x1e{_C_ITEM})*")


# Names kept from a claim's data may have come item by item (Believed.items),
# so they go through JSON (remembered: _JSON).
_json = _JSON.__getitem__
_first = itemgetter(0)
_second = itemgetter(1)


def _each(*parts: Iterable[str]) -> Iterator[str]:
    """One text a job: its values (and the constant parts, repeated) joined,
    every loop in C. A claim's two events cost about 0.5 us a job this way,
    an f-string each 1.5 us; one text of a payload split into lines, or
    str.replace over it, cost more than the lines."""
    return map("".join, zip(*parts, strict=False))  # the constant parts never end


def _ids(values: list[str]) -> Iterable[str]:
    """Root or parent ids (uuids, or '' for none: S_BODY) as JSON."""
    if not any(values):
        return repeat("null")
    return [f'"{value}"' if value else "null" for value in values]


class Believed:
    """Believed data to events, with the claims seen (``running``)."""

    def __init__(self) -> None:
        self.running: dict[str, tuple[str, str]] = {}  # see RUNNING_KEPT

    def forget(self, hints: list[Hint]) -> None:
        """Jobs whose outcome came as a hint (they are read) are not running."""
        for hint in hints:
            if hint.kind != "started":
                self.running.pop(hint.id, None)

    def started_lines(
        self, data: Data, host: str, types: frozenset[str] | None, lines: list[str]
    ) -> None:
        """The events of a claim's believed data whose items all go into
        JSON as they are (S_BODY); each job's task and queue kept for its
        success's data. Made a payload at a time (see _each)."""
        received = types is None or "task-received" in types
        started = types is None or "task-started" in types
        running = self.running
        if len(running) > RUNNING_KEPT:
            running.clear()
        fields = data.body.replace("\x1e", "\x1f").split("\x1f")
        # Six fields an item: id, retries, task, queue, root and parent ids.
        jobs, retries, tasks, queues = fields[0::6], fields[1::6], fields[2::6], fields[3::6]
        running.update(zip(jobs, zip(tasks, queues, strict=True), strict=True))
        if not (received or started):
            return
        tail = f'", "hostname": {host}, "worker_id": "{data.worker}", "retries": '
        at = f', "timestamp": {data.at}'
        made: list[Iterator[str]] = []
        if received:
            made.append(
                _each(
                    repeat('{"type": "task-received", "uuid": "'), jobs,
                    repeat('", "name": "'), tasks, repeat('", "queue": "'), queues,
                    repeat(tail), retries, repeat(f'{at}, "root_id": '), _ids(fields[4::6]),
                    repeat(', "parent_id": '), _ids(fields[5::6]), repeat("}"),
                )
            )  # fmt: skip
        if started:
            made.append(
                _each(
                    repeat('{"type": "task-started", "uuid": "'), jobs,
                    repeat('", "name": "'), tasks, repeat('", "queue": "'), queues,
                    repeat(tail), retries, repeat(f"{at}}}"),
                )
            )  # fmt: skip
        lines += chain.from_iterable(zip(*made, strict=True))  # each job's received, then started

    def succeeded_lines(
        self, data: Data, host: str, types: frozenset[str] | None
    ) -> list[str | Hint]:
        """The events of a completion's believed data whose items are as
        written (C_BODY), and as hints the successes of jobs whose claim
        this listener did not see (it needs their task and queue)."""
        fields = data.body.replace("\x1e", "\x1f").split("\x1f")
        # Four fields an item: id, retries, run time, the result's JSON.
        jobs, retries, results = fields[0::4], fields[1::4], fields[3::4]
        known = list(map(self.running.pop, jobs, repeat(None)))
        if None in known or max(map(len, results)) > _RESULT_CHARS:
            return self._succeeded_each(data, host, types, jobs, known, fields)
        if types is not None and "task-succeeded" not in types:
            return []
        names = cast("list[tuple[str, str]]", known)
        tail = f', "hostname": {host}, "worker_id": "{data.worker}", "retries": '
        return list(
            _each(
                repeat('{"type": "task-succeeded", "uuid": "'), jobs,
                repeat('", "name": '), map(_json, map(_first, names)), repeat(', "queue": '),
                map(_json, map(_second, names)), repeat(tail), retries,
                repeat(f', "timestamp": {data.at}, "runtime": '), fields[2::4],
                repeat(', "result": '), map(_STRING, results), repeat("}"),
            )
        )  # fmt: skip

    def _succeeded_each(
        self,
        data: Data,
        host: str,
        types: frozenset[str] | None,
        jobs: list[str],
        known: list[tuple[str, str] | None],
        fields: list[str],
    ) -> list[str | Hint]:
        """succeeded_lines job by job: some of these jobs' claims were not
        seen (they go as hints), or a result is cut short."""
        out: list[str | Hint] = []
        wanted = types is None or "task-succeeded" in types
        shared = f'"hostname": {host}, "worker_id": "{data.worker}"'
        for i, job in enumerate(jobs):
            names = known[i]
            retries, runtime, result = fields[4 * i + 1 : 4 * i + 4]
            if names is None:
                out.append(Hint("succeeded", job, int(retries) + 1))
            elif wanted:
                if len(result) > _RESULT_CHARS:
                    result = result[:_RESULT_CHARS] + "…"
                out.append(
                    f'{{"type": "task-succeeded", "uuid": "{job}", "name": {_JSON[names[0]]}, '
                    f'"queue": {_JSON[names[1]]}, {shared}, "retries": {retries}, '
                    f'"timestamp": {data.at}, "runtime": {runtime}, "result": {_STRING(result)}}}'
                )
        return out

    def items(
        self, data: Data, queues: list[str] | None, tasks: list[str] | None
    ) -> list[Item | Hint]:
        """Believed data item by item: its items checked and filtered (by
        queue and task), its hints, and a success's item as a hint when
        this listener did not see the job's claim (it needs the rows)."""
        out: list[Item | Hint] = []
        started = data.kind == "S"
        kind = _DATA_KINDS[data.kind]
        running = self.running
        if len(running) > RUNNING_KEPT:
            running.clear()
        for text in data.body.split("\x1e"):
            fields = text.split("\x1f")
            if len(fields) == 1:
                try:
                    out.extend(parse(text))
                except MalformedHint as exc:
                    log.debug("events: skipped an item of process %s (%s)", data.pid, exc)
                continue
            if not _checked(fields, started):
                log.debug("events: skipped an item of process %s: %r", data.pid, text[:60])
                continue
            job, attempt = fields[0], int(fields[1]) + 1
            if started:
                task, queue, root, parent = fields[2:]
                running[job] = (task, queue)
                runtime = result = None
            else:
                known = running.pop(job, None)
                if known is None:  # claimed before we listened, or as a hint
                    out.append(Hint(kind, job, attempt))
                    continue
                (task, queue), root, parent = known, "", ""
                runtime, result = fields[2], fields[3]
            if (queues is None or queue in queues) and (tasks is None or task in tasks):
                out.append(
                    Item(
                        kind,
                        job,
                        attempt,
                        task,
                        queue,
                        data.worker,
                        data.at,
                        root or None,
                        parent or None,
                        runtime,
                        result,
                    )
                )
        return out
