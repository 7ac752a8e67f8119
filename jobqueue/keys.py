"""Keys that SQL computes too: the canonical text of a call's arguments,
keys named by an argument (``arg("account_id")``), and what a worker writes
to ``task_settings`` so that ``jobqueue.enqueue()`` in SQL, the beat and
canvas steps give a job the queue, limit keys and unique key ``delay()``
gives it (issue 24, item 7).

One canonical form, byte for byte the same in Python (``canonical_arguments``)
and in SQL (``canonical_json()``, migration 0022): compact JSON (``,`` and
``:``), every object's keys sorted by code point, numbers as PostgreSQL's
``numeric`` prints them (``1e-07`` is ``0.0000001``, ``-0.0`` is ``0.0``),
strings escaped as JSON escapes them. A unique task's default key is
``<task>:<canonical [args, kwargs]>``, so a job enqueued from SQL and the same
call's ``delay()`` share one key.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import JobQueue

log = logging.getLogger(__name__)


class Arg:
    """A key that is one argument of the call, taken by its parameter's name,
    whether the call passes it by position or by keyword: for limit and
    unique keys that SQL can compute (``jobqueue.enqueue()``, canvas steps,
    the beat), where a Python function's key cannot be.

    ``@app.task(concurrency_limit=1, concurrency_key=arg("account_id"))``
    is ``concurrency_key=lambda account_id, **_: account_id`` for a call
    that gives ``account_id``, and SQL computes the same key. The argument
    is the call's, else its parameter's default when that is a string or an
    integer; it must be a string or an integer (its digits): anything else,
    or no value at all, is a ``TypeError`` here and SQLSTATE ``22023`` in SQL."""

    __slots__ = ("default", "name", "position")

    def __init__(self, name: str, position: int | None = None, default: Any = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"arg() takes the name of one of the task's parameters, got {name!r}")
        self.name = name
        #: Its place among the positional parameters, once bound to the
        #: task's function (None: keyword-only, or not bound yet).
        self.position = position
        #: The parameter's default, when it is a string or an integer.
        self.default = default

    def __repr__(self) -> str:
        return f"arg({self.name!r})"

    def _identity(self) -> tuple[Any, ...]:
        return (self.name, self.position, type(self.default), self.default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arg) and other._identity() == self._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        if self.name in kwargs:
            value = kwargs[self.name]
        elif self.position is not None and self.position < len(args):
            value = args[self.position]
        elif self.default is not None:
            value = self.default
        else:
            raise TypeError(f"the key argument {self.name!r} was not given")
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return int.__repr__(value)
        raise TypeError(
            f"the key argument {self.name!r} must be a string or an integer, "
            f"got {type(value).__name__} {value!r}"
        )

    def bound(self, fn: Callable[..., Any], task: str, skip_self: bool) -> Arg:
        """This key with the argument's place in ``fn``'s positional
        parameters (without ``self`` for a bound task); a TypeError if ``fn``
        has no parameter of that name and takes no ``**kwargs``."""
        try:
            parameters = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # no signature to read: keywords only
            return Arg(self.name)
        if skip_self:
            parameters = parameters[1:]
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for index, parameter in enumerate(parameters):
            if parameter.kind not in positional:
                break
            if parameter.name == self.name:
                if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                    # A keyword of that name would be another value (in **kwargs).
                    raise TypeError(
                        f"task {task!r}: arg({self.name!r}) names a positional-only "
                        "parameter; a key argument must be one a call may also pass by name"
                    )
                return Arg(self.name, index, _default(parameter))
        named = {p.name: p for p in parameters}
        if self.name in named and named[self.name].kind is inspect.Parameter.KEYWORD_ONLY:
            return Arg(self.name, None, _default(named[self.name]))
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return Arg(self.name)
        raise TypeError(
            f"task {task!r}: arg({self.name!r}) names no parameter of the task's function "
            f"(it has {', '.join(named) or 'none'})"
        )

    def spec(self) -> dict[str, Any]:
        spec = {"kind": "arg", "name": self.name, "position": self.position}
        if self.default is not None:
            spec["default"] = self.default
        return spec


def _default(parameter: inspect.Parameter) -> str | int | None:
    """A parameter's default, if a key can be made of it (a string or an integer)."""
    value = parameter.default
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def arg(name: str) -> Arg:
    """A limit or unique key taken from the argument ``name`` (see ``Arg``)."""
    return Arg(name)


def key_spec(key: Any, unique: bool = False) -> dict[str, Any]:
    """How SQL computes a key (a ``task_settings`` column): ``key`` is a
    task's ``rate_limit_key``, ``concurrency_key`` or (``unique``)
    ``unique_key`` option. Kinds: ``task`` (the task's name alone), ``args``
    (the call's canonical arguments), ``constant`` (one string), ``arg`` (one
    argument: name, place, default) and ``python`` (a function, which SQL
    cannot run: the caller passes its result)."""
    if key is None:
        return {"kind": "args"} if unique else {"kind": "task"}
    if isinstance(key, Arg):
        return key.spec()
    if unique and isinstance(key, str):
        return {"kind": "constant", "value": key}
    return {"kind": "python"}


# -- the canonical text of arguments ---------------------------------------------------


def canonical_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """``[args, kwargs]`` in the canonical form SQL's ``canonical_json()``
    gives the same JSON once stored (see the module's docstring). Values
    are those ``dump_arguments`` accepted: JSON's types, with Python's
    json conversions (tuples are arrays, dict keys become strings)."""
    return f"[{_array(args)},{_object(kwargs)}]"


def canonical(value: Any) -> str:
    """One JSON value in the canonical form."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if kind is float:
        return _number(value)
    if kind is list or kind is tuple:
        return _array(value)
    if kind is dict:
        return _object(value)
    # Subclasses, encoded as Python's json encodes them.
    if isinstance(value, str):
        return encode_basestring(str.__str__(value))
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return _array(value)
    if isinstance(value, dict):
        return _object(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not a JSON value")


def _array(values: Sequence[Any]) -> str:
    return "[" + ",".join([canonical(v) for v in values]) + "]"


def _object(mapping: Mapping[Any, Any]) -> str:
    if not mapping:
        return "{}"
    items: dict[str, Any] = {}
    for key, value in mapping.items():  # a later key that becomes the same string wins
        items[key if type(key) is str else _key(key)] = value
    return (
        "{"
        + ",".join([f"{encode_basestring(k)}:{canonical(items[k])}" for k in sorted(items)])
        + "}"
    )


def _key(key: Any) -> str:
    """A dict key as Python's json encoder writes it (a string)."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _number(value: float) -> str:
    """A float as PostgreSQL's numeric prints the text Python's json wrote
    for it: no exponent, no negative zero."""
    if value == 0:
        return "0.0"
    text = float.__repr__(value)
    if "e" in text:
        return format(Decimal(text), "f")
    return text


# -- what a worker writes to task_settings ---------------------------------------------


def task_settings(app: JobQueue) -> list[dict[str, Any]]:
    """Each registered task's settings as SQL applies them (``task_settings``,
    one JSON object per task): the queue of a call that names none (NULL when
    a ``task_routes`` function routes it), its priority, the options its jobs
    store, and how each key is made (``key_spec``). A task whose routed or
    default queue is not a valid name is left out (with a warning): SQL then
    treats it as unknown, as before this revision."""
    from .limits import BY_FUNCTION, static_route
    from .options import check_priority, check_queue

    conf = app.conf
    rows = []
    # In name order: workers starting together lock the rows in one order.
    for task in sorted(app.tasks.values(), key=lambda t: t.name):
        flow = task.flow
        routed = static_route(conf.task_routes, task.name) if conf.task_routes else None
        try:
            if routed is BY_FUNCTION:
                queue = None
            elif routed is not None:
                queue = check_queue(routed, f"app.conf.task_routes' queue for {task.name!r}")
            else:
                queue = task.queue or check_queue(conf.default_queue, "app.conf.default_queue")
            priority = task.priority
            if priority is None:
                priority = check_priority(conf.default_priority)
        except (TypeError, ValueError) as exc:
            log.warning("task %s: not written to task_settings (%s)", task.name, exc)
            continue
        rows.append(
            {
                "task": task.name,
                "queue": queue,
                "priority": priority,
                "options": task.base_options(),
                "rate_limit_key": None
                if flow.rate_per_second is None
                else key_spec(flow.rate_limit_key),
                "concurrency_key": None
                if flow.concurrency_limit is None
                else key_spec(flow.concurrency_key),
                "unique_key": key_spec(flow.unique_key, unique=True) if flow.unique else None,
                "unique_states": list(flow.unique_states),
                "unique_window": flow.unique_window,
                "on_duplicate": flow.on_duplicate,
            }
        )
    return rows
