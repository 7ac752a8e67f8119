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
from typing import NamedTuple

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
        success's data."""
        received = types is None or "task-received" in types
        started = types is None or "task-started" in types
        shared = f'"hostname": {host}, "worker_id": "{data.worker}"'
        at = data.at
        append = lines.append
        running = self.running
        if len(running) > RUNNING_KEPT:
            running.clear()
        fields = iter(data.body.replace("\x1e", "\x1f").split("\x1f"))
        # Six fields an item: id, retries, task, queue, root and parent ids.
        for job, retries, task, queue, root, parent in zip(*[fields] * 6, strict=True):
            running[job] = (task, queue)
            common = (
                f'"uuid": "{job}", "name": "{task}", "queue": "{queue}", {shared}, '
                f'"retries": {retries}, "timestamp": {at}'
            )
            if received:
                root = f'"{root}"' if root else "null"
                parent = f'"{parent}"' if parent else "null"
                append(
                    f'{{"type": "task-received", {common}, '
                    f'"root_id": {root}, "parent_id": {parent}}}'
                )
            if started:
                append(f'{{"type": "task-started", {common}}}')

    def succeeded_lines(
        self, data: Data, host: str, types: frozenset[str] | None
    ) -> list[str | Hint]:
        """The events of a completion's believed data whose items are as
        written (C_BODY), and as hints the successes of jobs whose claim
        this listener did not see (it needs their task and queue)."""
        out: list[str | Hint] = []
        append = out.append
        running = self.running
        wanted = types is None or "task-succeeded" in types
        shared = f'"hostname": {host}, "worker_id": "{data.worker}"'
        at = data.at
        fields = iter(data.body.replace("\x1e", "\x1f").split("\x1f"))
        for job, retries, runtime, result in zip(*[fields] * 4, strict=True):
            known = running.pop(job, None)
            if known is None:
                append(Hint("succeeded", job, int(retries) + 1))
            elif wanted:
                if len(result) > _RESULT_CHARS:
                    result = result[:_RESULT_CHARS] + "…"
                append(
                    f'{{"type": "task-succeeded", "uuid": "{job}", "name": {_JSON[known[0]]}, '
                    f'"queue": {_JSON[known[1]]}, {shared}, "retries": {retries}, '
                    f'"timestamp": {at}, "runtime": {runtime}, "result": {_STRING(result)}}}'
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
