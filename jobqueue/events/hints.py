"""What a NOTIFY on the events channel says, read and checked.

Two kinds of payload:

* hints (``events_notify`` in queries.sql), ``kind:item,kind:item,...``:
  task kinds name a ``job id/attempt``, worker kinds a worker id. ``parse``
  accepts exactly that grammar, and raises ``MalformedHint`` for anything
  else, so the caller can log and skip it. The listener reads the rows.
* data (job_claim's ``event`` in queries.sql), sent by the claim and the
  completion, which hold every column their events tell: a header and
  items (``Data``). Anyone who can connect may NOTIFY on the channel, so
  data is believed only from a server process whose role may claim jobs
  (event_senders), and is otherwise taken as the hints it names
  (``Data.hints``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: The event types a task kind stands for, in the order they happened: the
#: claim is when a job is received and recorded started (STARTED, started_at).
TASK_KINDS: dict[str, tuple[str, ...]] = {
    "started": ("task-received", "task-started"),
    "succeeded": ("task-succeeded",),
    "failed": ("task-failed",),
    "retried": ("task-retried",),
    "revoked": ("task-revoked",),
}
WORKER_KINDS: dict[str, str] = {
    "online": "worker-online",
    "heartbeat": "worker-heartbeat",
    "offline": "worker-offline",
}
#: Said by the listener itself after a lost connection: events between
#: ``since`` and ``until`` were not seen.
MISSED = "events-missed"

TASK_TYPES = tuple(t for types in TASK_KINDS.values() for t in types)
WORKER_TYPES = tuple(WORKER_KINDS.values())
TYPES = (*TASK_TYPES, *WORKER_TYPES, MISSED)

MAX_PAYLOAD = 8000  # PostgreSQL's limit: anything longer was not sent by jobqueue

# PostgreSQL writes uuids in lower case; an attempt fits an int4. A payload is
# checked with one match and split with one findall (a regex per item was a
# fifth of the listener's time at 50,000 events/s).
_ITEM = r"([a-z]+):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:/(\d{1,9}))?"
_PAYLOAD = re.compile(rf"{_ITEM}(?:,{_ITEM})*")
_ITEMS = re.compile(_ITEM)


#: The first character of a data payload: no hint starts so.
DATA = "\x1d"
_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# \x1d, S (a claim's started jobs) or C (a completion's outcomes), the worker,
# the statement's time (float8's text of epoch seconds), then the items.
_HEADER = re.compile(rf"\x1d([SC])\x1f({_ID})\x1f(\d{{1,12}}(?:\.\d{{1,9}})?)\x1e")
_DATA_KINDS = {"S": "started", "C": "succeeded"}
_DATA_ITEM = re.compile(rf"({_ID})\x1f(\d{{1,9}})\x1f")


class MalformedHint(ValueError):
    """A payload jobqueue did not write."""


class Hint(NamedTuple):
    kind: str  # a key of TASK_KINDS or WORKER_KINDS
    id: str  # job id, or worker id
    attempt: int  # the job's attempt; 0 for worker kinds


def parse(payload: str) -> list[Hint]:
    """The hints of one payload, in its order; MalformedHint if it is not one
    jobqueue writes (nothing of it is then used)."""
    if not payload or len(payload) > MAX_PAYLOAD:
        raise MalformedHint(f"payload of {len(payload)} characters")
    if not _PAYLOAD.fullmatch(payload):
        raise MalformedHint(f"{payload[:60]!r} is not kind:id[/attempt],...")
    hints: list[Hint] = []
    append = hints.append
    make = tuple.__new__  # Hint(...) goes through a Python-level __new__: twice as dear
    for kind, item, attempt in _ITEMS.findall(payload):
        if attempt:
            if kind not in TASK_KINDS:
                raise MalformedHint(f"{kind[:40]!r} with an attempt is not an event we send")
            append(make(Hint, (kind, item, int(attempt))))
        elif kind in WORKER_KINDS:
            append(make(Hint, (kind, item, 0)))
        else:
            raise MalformedHint(f"{kind[:40]!r} without an attempt is not an event we send")
    return hints


class Data(NamedTuple):
    """A data payload: ``kind`` "S", a claim's (items: ``id, retries, task,
    queue, root_id, parent_id``, the ids '' for none) or "C", a
    completion's successes (``id, retries, runtime, result``: the result's
    JSON, its first 201 characters; task and queue are the claim's), the
    fields split by \\x1f and the items by \\x1e. An item may instead be a
    hint (``kind:id/attempt``: an outcome other than success, or an item
    too long to send). ``at`` is the time of every event, ``pid`` the server
    process that sent it."""

    kind: str
    worker: str
    at: str
    body: str
    pid: int

    def hints(self) -> list[Hint]:
        """The hints this data names, for reading the rows instead."""
        out: list[Hint] = []
        kind = _DATA_KINDS[self.kind]
        for item in self.body.split("\x1e"):
            if (match := _DATA_ITEM.match(item)) is not None:
                out.append(Hint(kind, match[1], int(match[2]) + 1))
            else:
                out.extend(parse(item))
        return out


def parse_data(payload: str, pid: int) -> Data:
    """A data payload's parts (MalformedHint if its header is not one
    jobqueue writes; the items are checked as they are used)."""
    if len(payload) > MAX_PAYLOAD:
        raise MalformedHint(f"payload of {len(payload)} characters")
    match = _HEADER.match(payload)
    if match is None or match.end() == len(payload):
        raise MalformedHint(f"{payload[:60]!r} is not a data payload")
    kind, worker, at = match.groups()
    return Data(kind, worker, at, payload[match.end() :], pid)


def kinds_for(types: frozenset[str] | None) -> frozenset[str] | None:
    """The hint kinds worth reading for these event types (None: all)."""
    if types is None:
        return None
    wanted = {kind for kind, made in TASK_KINDS.items() if types.intersection(made)}
    wanted.update(kind for kind, made in WORKER_KINDS.items() if made in types)
    return frozenset(wanted)
