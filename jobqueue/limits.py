"""Flow-control options of a task: global rate and concurrency limits, unique
jobs, fair keys.

Pure parsing and key computation; the enforcement is SQL (``admit_at()`` in the
claim for limits, the ``unique_keys`` table at enqueue for uniqueness, the
claim's round-robin across fair keys, ``job_claim_fair``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import states
from .keys import Arg, canonical_arguments, key_spec

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PERIOD = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
DEFAULT_UNIQUE_STATES = (states.PENDING, states.STARTED, states.RETRY)

KeyFunction = Callable[..., Any]


def parse_rate(value: str | float | int) -> float:
    """``"100/m"`` (also ``/s``, ``/h``) or a number per second → tokens per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    else:
        match = _RATE.match(str(value))
        if not match:
            raise ValueError(
                f"rate_limit must look like '10/s', '100/m' or '1000/h', got {value!r}"
            )
        rate = float(match.group(1)) / _PERIOD[match.group(2)]
    if rate <= 0:
        raise ValueError(f"rate_limit must be positive, got {value!r}")
    return rate


#: A unique task's duplicate while its key's holder waits: dropped ("keep",
#: the default), or changing the holder in place: its arguments ("replace"),
#: its arguments and due time ("debounce"). A holder that no longer waits (it
#: runs) hands the key to the duplicate, which is enqueued.
ON_DUPLICATE = ("keep", "replace", "debounce")


@dataclass(frozen=True)
class FlowControl:
    rate_per_second: float | None = None
    burst: float = 1.0
    rate_limit_key: KeyFunction | None = None
    concurrency_limit: int | None = None
    concurrency_key: KeyFunction | None = None
    unique: bool = False
    unique_key: KeyFunction | str | None = None
    unique_window: float | None = None
    unique_states: tuple[str, ...] = DEFAULT_UNIQUE_STATES
    #: What a duplicate does while the key's holder still waits: "keep" (it is
    #: dropped, the holder returned), "replace" (the holder takes its
    #: arguments), "debounce" (and its due time). See ON_DUPLICATE.
    on_duplicate: str = "keep"
    #: Jobs are claimed round-robin across the values of this key (a function
    #: of the task's arguments, or one string for all its jobs): one key's
    #: backlog does not hold up another key's jobs. Not scoped by task, so
    #: tasks that name the same key (a tenant, say) share its turns.
    fair_key: KeyFunction | str | None = None

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, Any],
        fn: Callable[..., Any] | None = None,
        task: str = "",
        skip_self: bool = False,
    ) -> FlowControl:
        """The task's options checked; a key given as ``arg(name)`` is bound
        to ``fn``'s parameters (``skip_self``: a bound task's first one)."""
        rate = options.get("rate_limit")
        burst = float(options.get("rate_limit_burst", 1))
        if burst < 1:
            raise ValueError(f"rate_limit_burst must be at least 1, got {burst!r}")
        limit = options.get("concurrency_limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"concurrency_limit must be a positive integer, got {limit!r}")
        unique_states = tuple(options.get("unique_states", DEFAULT_UNIQUE_STATES))
        unknown = set(unique_states) - states.ALL_STATES
        if unknown:
            raise ValueError(f"unique_states has unknown states {sorted(unknown)}")
        window = options.get("unique_window")
        if window is not None and (isinstance(window, bool) or window <= 0):
            raise ValueError(f"unique_window must be a positive number of seconds, got {window!r}")
        keys: dict[str, Any] = {}
        for name in ("rate_limit_key", "concurrency_key", "unique_key"):
            key = options.get(name)
            if name != "unique_key" and key is not None and not callable(key):
                raise TypeError(
                    f"{name} must be a function of the task's arguments, or arg(name) "
                    "for one of them"
                )
            if isinstance(key, Arg) and fn is not None:
                key = key.bound(fn, task, skip_self)
            keys[name] = key
        unique_key = keys["unique_key"]
        fair_key = options.get("fair_key")
        if fair_key is not None and not callable(fair_key):
            fair_key = check_fair_key(fair_key, "fair_key")
        on_duplicate = options.get("on_duplicate", "keep")
        if on_duplicate not in ON_DUPLICATE:
            raise ValueError(
                f"on_duplicate must be one of {', '.join(ON_DUPLICATE)}, got {on_duplicate!r}"
            )
        if on_duplicate != "keep" and not (options.get("unique") or unique_key is not None):
            raise ValueError(f"on_duplicate={on_duplicate!r} needs unique=True (or a unique_key)")
        return cls(
            rate_per_second=None if rate is None else parse_rate(rate),
            burst=burst,
            rate_limit_key=keys["rate_limit_key"],
            concurrency_limit=limit,
            concurrency_key=keys["concurrency_key"],
            unique=bool(options.get("unique") or unique_key is not None),
            unique_key=unique_key,
            unique_window=None if window is None else float(window),
            unique_states=unique_states,
            on_duplicate=on_duplicate,
            fair_key=fair_key,
        )

    def keys(
        self,
        task: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        prepended: bool = False,
    ) -> dict[str, str]:
        """The limit keys a job of ``task`` with these arguments carries.
        ``prepended``: a canvas step that will be given a value in front of
        its arguments; a key taken from an argument (``arg()``) is then left
        to SQL, which computes it from the step's final arguments."""
        keys: dict[str, str] = {}
        if self.rate_per_second is not None and not (
            prepended and isinstance(self.rate_limit_key, Arg)
        ):
            keys["rate_key"] = _scoped(task, self.rate_limit_key, args, kwargs)
        if self.concurrency_limit is not None and not (
            prepended and isinstance(self.concurrency_key, Arg)
        ):
            keys["concurrency_key"] = _scoped(task, self.concurrency_key, args, kwargs)
        fair = self.fair_key
        if fair is not None:
            if callable(fair):
                value = fair(*args, **kwargs)
                if value is not None:  # a job the function gives no key: unkeyed
                    keys["fair_key"] = check_fair_key(value, f"{task}'s fair_key function")
            else:
                keys["fair_key"] = fair
        return keys

    def unique_for(self, task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """The unique key of a call, as SQL computes it too (``task_key()``):
        with no ``unique_key``, the task and its arguments in the canonical
        form (``jobqueue.keys``)."""
        if not self.unique:
            return None
        if isinstance(self.unique_key, str):
            return f"{task}:{self.unique_key}"
        if self.unique_key is None:  # same task and arguments
            return f"{task}:{canonical_arguments(args, kwargs)}"
        return _scoped(task, self.unique_key, args, kwargs)

    def needs_python(self) -> dict[str, bool]:
        """Which of the task's keys only a Python function gives (SQL cannot
        compute them: ``task_settings`` says ``{"kind": "python"}``)."""
        return {
            "rate_limit_key": self.rate_per_second is not None
            and key_spec(self.rate_limit_key)["kind"] == "python",
            "concurrency_key": self.concurrency_limit is not None
            and key_spec(self.concurrency_key)["kind"] == "python",
            "unique_key": self.unique
            and key_spec(self.unique_key, unique=True)["kind"] == "python",
        }


#: The longest fair key: it is stored in the claim's fair index with every
#: waiting job that has one.
MAX_FAIR_KEY_LENGTH = 200


def check_fair_key(value: Any, what: str) -> str:
    """A fair key: a non-empty string (numbers are taken as their text) of at
    most MAX_FAIR_KEY_LENGTH characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{what} must give a string (or an int), got {type(value).__name__}")
    key = key_text(value)
    if not key or len(key) > MAX_FAIR_KEY_LENGTH:
        raise ValueError(
            f"{what} gave {key[:40]!r}: a fair key must be 1 to {MAX_FAIR_KEY_LENGTH} characters"
        )
    return key


def key_text(value: Any) -> str:
    """A key's text: a string's or an integer's own, as SQL reads it from the
    job's JSON (an Enum member's value, not "Tenant.ACME": str() of a str or
    int Enum names the member); anything else as format() gives it."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)
    return f"{value}"


def _scoped(
    task: str, key: KeyFunction | None, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> str:
    if key is None:
        return task
    return f"{task}:{key_text(key(*args, **kwargs))}"


def route(routes: Any, task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The queue ``app.conf.task_routes`` gives ``task``: a mapping of exact names or
    globs to a queue name (or ``{"queue": name}``), a callable, or a list of them."""
    for entry in routes if isinstance(routes, (list, tuple)) else [routes]:
        found = entry(task, args, kwargs) if callable(entry) else _mapped(entry, task)
        if isinstance(found, Mapping):
            found = found.get("queue")
        if found:
            return str(found)
    return None


#: static_route()'s answer for a task that a task_routes function may route.
BY_FUNCTION = object()


def static_route(routes: Any, task: str) -> str | object | None:
    """What ``route`` gives ``task`` whatever the call's arguments, as SQL's
    ``task_settings`` keeps it: a queue name, None (no route: the task's or
    the app's default queue), or BY_FUNCTION when a function in the routes
    comes before any mapping that names the task (only Python can run it)."""
    for entry in routes if isinstance(routes, (list, tuple)) else [routes]:
        if callable(entry):
            return BY_FUNCTION
        found = _mapped(entry, task)
        if isinstance(found, Mapping):
            found = found.get("queue")
        if found:
            return str(found)
    return None


def _mapped(entry: Any, task: str) -> Any:
    """A task_routes mapping's value for ``task``: its exact name, else the
    first glob (a key with ``*``, ``?`` or ``[``) that matches it."""
    import fnmatch

    if not isinstance(entry, Mapping):
        raise TypeError(f"task_routes entries must be mappings or callables, got {entry!r}")
    found = entry.get(task)
    if found is None:
        found = next(
            (
                v
                for pattern, v in entry.items()
                if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(task, pattern)
            ),
            None,
        )
    return found
