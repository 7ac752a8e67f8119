"""Batches in COPY's text format (``enqueue_many``): the rows of
``job_queue_copy``, built in bulk, for the sync and the async store alike."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

Params = Mapping[str, Any]


def copy_chunks(
    params: Params, run_at: datetime, expires_at: datetime | None, created_at: datetime
) -> Iterator[str]:
    """The rows of ``job_queue_copy`` for a batch (``insert_jobs``'
    parameters; the times from ``db_times``), in COPY's text format, a chunk
    at a time (the async path writes the same)."""
    task, queue, priority = params["task"], params["queue"], params["priority"]
    # COPY's text format, built in bulk: far cheaper than a row at a time.
    head = "\t".join(_copy_text(v) for v in (queue, priority, run_at, task))
    tail = "\t".join(_copy_text(v) for v in (expires_at, created_at))
    rows = list(
        zip(
            params["ids"],
            params["args"],
            params["kwargs"],
            params["options"],
            params["rate_keys"],
            params["concurrency_keys"],
            params["fair_keys"],
            strict=True,
        )
    )
    return (
        "".join(
            f"{i}\t{head}\t{_copy_text(r)}\t{_copy_text(c)}\t{_copy_text(f)}\t"
            f"{_copy_json(a)}\t{_copy_json(k)}\t{_copy_json(o)}\t{tail}\n"
            for i, a, k, o, r, c, f in rows[start : start + _COPY_CHUNK]
        )
        for start in range(0, len(rows), _COPY_CHUNK)
    )


_COPY_CHUNK = 5000
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    """A value in COPY's text format (NULL is \\N)."""
    if value is None:
        return "\\N"
    return str(value).translate(_COPY_ESCAPES)


def _copy_json(text: str) -> str:
    # json.dumps never emits raw tabs or newlines; only backslashes need doubling.
    return text.replace("\\", "\\\\") if "\\" in text else text
