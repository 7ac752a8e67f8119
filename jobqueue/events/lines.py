"""The JSON text of events: one object a line, made from templates.

A listener makes three task events per job, and building a dict of each and
encoding it cost it about 6 us an event, more than all the rest of its work;
a template of each type with the values put in costs a fifth of that, and
there is one place that says what an event holds. ``jobqueue events --json``
writes the lines as they are; the stream's dicts are their ``json.loads``.
"""

from __future__ import annotations

import json
from typing import Any

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
