"""Job ids: UUIDv7 (time-ordered), so new rows land at the right edge of the
primary key index instead of at random pages."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

# Ids must be unique, not secret: a generator seeded from the OS (and reseeded
# in forked children, or two processes would repeat each other) is ~10x
# cheaper than os.urandom per id, which matters for bulk enqueue.
_random = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(16)))
# Ids made by one process only ever increase, even within one millisecond, so
# ORDER BY id is the order this process enqueued in.
_last = 0
_lock = threading.Lock()


def _uuid7_int(at: float | None = None) -> int:
    global _last
    if at is not None:
        return _compose(int(at * 1000))
    with _lock:
        value = _compose(time.time_ns() // 1_000_000)
        if value <= _last:  # same millisecond (or the clock stepped back)
            value = _last + 1  # the low random bits count up
        _last = value
        return value


def _compose(ms: int) -> int:
    rand = _random.getrandbits(80)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 68) << 64 & 0x0FFF << 64  # 12 random bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # 62 random bits
    return value


def uuid7(at: float | None = None) -> uuid.UUID:
    """A new UUIDv7; ``at`` (Unix seconds) backdates it, for tests and imports."""
    return uuid.UUID(int=_uuid7_int(at))


def new_id() -> str:
    """A new UUIDv7 as text (formatted directly: bulk enqueue makes many)."""
    return _text(_uuid7_int())


def _text(value: int) -> str:
    """A UUID's canonical text, formatted directly (uuid.UUID costs more)."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_ids(count: int) -> list[str]:
    """``count`` new UUIDv7s as text, increasing, for a bulk enqueue: one
    clock read and one lock for all of them."""
    global _last
    if count <= 0:
        return []
    draw = _random.getrandbits
    with _lock:
        ms = time.time_ns() // 1_000_000
        start = _compose(ms)
        if start <= _last:
            start = _last + 1
        # The first id is a new_id(); each next one keeps its millisecond and
        # its 12 high random bits and draws the 62 low ones anew, plus one so
        # it is above the one before (carrying into the 12 bits if need be).
        values = [start]
        low_mask = 0x3FFF_FFFF_FFFF_FFFF
        value = start
        for _ in range(1, count):
            fresh = (value & ~low_mask) | draw(62)
            value = fresh if fresh > value else value + 1
            values.append(value)
        _last = value
    return [_text(value) for value in values]


def check_id(value: object, what: str = "task_id") -> str:
    """Normalise a caller-supplied id; jobs are keyed by UUID."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{what} must be a UUID string, got {value!r}") from None
