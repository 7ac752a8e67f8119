"""Job ids: UUIDv7 (time-ordered), so new rows land at the right edge of the
primary key index instead of at random pages."""

from __future__ import annotations

import os
import time
import uuid


def uuid7(at: float | None = None) -> uuid.UUID:
    """A new UUIDv7; ``at`` (Unix seconds) backdates it, for tests and imports."""
    ms = time.time_ns() // 1_000_000 if at is None else int(at * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 68) << 64 & 0x0FFF << 64  # 12 random bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # 62 random bits
    return uuid.UUID(int=value)


def new_id() -> str:
    return str(uuid7())


def check_id(value: object, what: str = "task_id") -> str:
    """Normalise a caller-supplied id; jobs are keyed by UUID."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{what} must be a UUID string, got {value!r}") from None
