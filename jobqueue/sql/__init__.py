"""Loads the named statements of ``queries.sql`` for one schema.

Python never assembles SQL: it picks a statement by name and binds parameters.
The only substitutions are the schema name (validated, then quoted), the
NOTIFY channel names and advisory lock classes derived from it, the
``wake_wanted`` expression, written once and used by every single enqueue,
the ``events_wanted`` expression and ``events_notify`` subquery, written
once and used by every statement that reports events (jobqueue/events), and
the ends of the claim and the completion (``events_end``: each comes as a
statement without events and one with them, ``<name>_events``), and the
claim's candidates (``claim_candidate``: in claim order, or round-robin
across fair keys in ``job_claim_fair``), and ``job_insert_plain``: the single
enqueue with its optional values as constants (``PLAIN_CONSTANTS``).
"""

from __future__ import annotations

import re
import zlib
from functools import cache
from importlib import resources

from ..exceptions import ConfigurationError

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PARAMETER = re.compile(r"%\((\w+)\)s")
#: job_insert's optional parameters and the constants job_insert_plain has
#: in their place: what each is when a call sets nothing (``store.base.insert_statement``).
PLAIN_CONSTANTS = {
    "rate_key": "NULL",
    "concurrency_key": "NULL",
    "fair_key": "NULL",
    "eta": "NULL",
    "countdown": "0",
    "expires_at": "NULL",
    "expires_in": "NULL",
}


def validate_schema(schema: str) -> str:
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: use lowercase letters, digits and underscores "
            "(at most 41 characters, not starting with a digit)"
        )
    return schema


def channels(schema: str) -> dict[str, str]:
    """NOTIFY channels: new due jobs (payload: queue), finished jobs (payload:
    ids), control messages to workers (revocations, remote control requests),
    workers' replies to remote control (payload: the request's id), and events
    (jobqueue/events; sent only while someone listens)."""
    return {
        "jobs": f"{schema}_jobs",
        "done": f"{schema}_done",
        "control": f"{schema}_control",
        "reply": f"{schema}_reply",
        "events": f"{schema}_events",
    }


def lock_classes(schema: str) -> dict[str, int]:
    """First keys of the advisory locks behind conditional wake-ups (see
    ``wake_wanted`` in queries.sql) and conditional events (``events_wanted``),
    and the seed of unique keys' lock hashes: signed 32-bit, distinct per
    schema, so tenants of one database never share a lock."""
    out = {}
    for role in ("waiting", "enqueuing", "unique", "events"):
        key = zlib.crc32(f"jobqueue:{schema}:{role}".encode())
        out[role] = key - 2**32 if key >= 2**31 else key
    return out


@cache
def queries(schema: str) -> dict[str, str]:
    """This release's statements for ``schema``, by name."""
    return load(resources.files(__package__).joinpath("queries.sql").read_text(), schema)


def load(text: str, schema: str) -> dict[str, str]:
    """The named statements of a queries file (this release's, or an earlier
    release's kept by the tests to play an old worker) for ``schema``."""
    validate_schema(schema)
    names = _NAME_LINE.findall(text)
    bodies = _NAME_LINE.split(text)[2::2]
    chans = channels(schema)
    locks = lock_classes(schema)
    out: dict[str, str] = {}
    for name, body in zip(names, bodies, strict=True):
        statement = (
            "\n".join(
                line for line in body.strip().splitlines() if not line.lstrip().startswith("--")
            )
            .rstrip()
            .rstrip(";")
        )
        out[name] = (
            statement.replace("{schema}", f'"{schema}"')
            .replace("{channel_jobs}", chans["jobs"])
            .replace("{channel_done}", chans["done"])
            .replace("{channel_control}", chans["control"])
            .replace("{channel_reply}", chans["reply"])
            .replace("{channel_events}", chans["events"])
            .replace("{lock_waiting}", str(locks["waiting"]))
            .replace("{lock_enqueuing}", str(locks["enqueuing"]))
            .replace("{lock_unique}", str(locks["unique"]))
            .replace("{lock_events}", str(locks["events"]))
        )
    # The claim takes its candidates in claim order, or round-robin across
    # fair keys (<name>_fair): one text, two forms (see job_claim_fair).
    for name in [n for n, text in out.items() if "{claim_candidate}" in text]:
        text = out[name]
        out[name] = text.replace("{claim_candidate}", out[f"{name}_in_order"])
        out[f"{name}_fair"] = text.replace("{claim_candidate}", out[f"{name}_fair"])
    # The claim and the completion come in two forms, which differ only in
    # their ends: without events, and <name>_events (see events_end).
    for name in [n for n, text in out.items() if n != "events_end" and "{events_end}" in text]:
        text, base = out[name], name.removesuffix("_fair")
        out[name] = text.replace("{events_end}", "\n" + out[f"{base}_without_events"])
        out[f"{name}_events"] = text.replace("{events_end}", "\n" + out[f"{base}_with_events"])
    # A job with none of the optional values, as most delay() calls are
    # (job_insert_plain): job_insert with those values as the constants they
    # stand for, so it binds 7 parameters instead of 16; through libpq, one
    # job per transaction, it ran 4.7 % faster (medians of 4 runs of 4 s).
    if "job_insert" in out:
        out["job_insert_plain"] = _PARAMETER.sub(
            lambda m: PLAIN_CONSTANTS.get(m.group(1), m.group(0)), out["job_insert"]
        )
    # An expression, not a statement: kept under its name for tools that
    # compose statements from it (benchmarks/enqueue_ceiling.py).
    wake_wanted = out["wake_wanted"]
    # Older releases' files (tests/migrations/releases) have no events.
    events_notify = out.get("events_notify", "").replace(
        "{events_wanted}", out.get("events_wanted", "")
    )
    events_wanted = out.get("events_wanted", "")
    events_plain = out.get("events_plain", "")
    walk_page = out.get("dashboard_walk_page", "")
    return {
        name: text.replace("{wake_wanted}", wake_wanted)
        .replace("{events_notify}", events_notify)
        .replace("{events_wanted}", events_wanted)
        .replace("{events_plain}", events_plain)
        .replace("{dashboard_walk_page}", walk_page)
        for name, text in out.items()
    }
