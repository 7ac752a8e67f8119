"""JSON encoding of arguments, results and errors (never pickle)."""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from .exceptions import RemoteTraceback, TaskError

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decoder = json.JSONDecoder()

# JSON allows the NUL character (as \u0000) but PostgreSQL's jsonb refuses it. In
# encoded text, it is a \u0000 escape that is not itself an escaped backslash.
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _has_nul(text: str) -> bool:
    return "\\u0000" in text and _NUL.search(text) is not None


def dumps(value: Any) -> str:
    return _encoder.encode(value)


def loads(text: str) -> Any:
    return _decoder.decode(text)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def dump_arguments(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """Encode a call's arguments, naming the culprit if one is not JSON."""
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs of task {task!r} must be a mapping, got {type(kwargs).__name__}")
    try:
        args_text = dumps(list(args)) if args else "[]"
        kwargs_text = dumps(dict(kwargs)) if kwargs else "{}"
    except (TypeError, ValueError):
        pass
    else:
        # Inline substring tests first: every delay() pays them, the regex is rare.
        maybe_nul = "\\u0000" in args_text or "\\u0000" in kwargs_text
        if not (maybe_nul and (_has_nul(args_text) or _has_nul(kwargs_text))):
            return args_text, kwargs_text
    for index, value in enumerate(args):
        _check(task, f"argument {index}", value)
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"keyword names of task {task!r} must be strings, got {key!r}")
        if "\x00" in key:
            raise ValueError(f"keyword name {key!r} of task {task!r} contains a NUL character")
        _check(task, f"keyword argument {key!r}", value)
    raise TypeError(f"arguments of task {task!r} are not JSON serializable")  # pragma: no cover


def _check(task: str, where: str, value: Any) -> None:
    try:
        text = dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where} of task {task!r} is not JSON serializable: {_describe(value)} "
            f"({type(value).__name__}); jobqueue stores arguments as JSON"
        ) from exc
    if _has_nul(text):
        raise ValueError(
            f"{where} of task {task!r} contains a NUL character (\\x00): {_describe(value)}; "
            "PostgreSQL cannot store it in jsonb"
        )


def dump_error(exc: BaseException) -> str:
    """The stored form of a task failure: type, module, message and traceback."""
    cls = type(exc)
    text = dumps(
        {
            "type": cls.__qualname__,
            "module": cls.__module__,
            "message": str(exc),
            "args": _json_safe_args(exc),
            "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__)),
        }
    )
    # A NUL in the message would make the database refuse the whole error: keep
    # the error and show each NUL as the six characters \u0000 instead.
    return _NUL.sub(lambda m: m.group(1) + "\\\\u0000", text) if _has_nul(text) else text


def _json_safe_args(exc: BaseException) -> list[Any] | None:
    try:
        dumps(list(exc.args))
    except (TypeError, ValueError):
        return None
    return list(exc.args)


def rebuild_error(error: Mapping[str, Any]) -> BaseException:
    """Turn a stored error back into an exception of the original type when the
    type is already importable here (never imports anything new), else into a
    ``TaskError`` subclass bearing the original type name."""
    name = str(error.get("type") or "Exception")
    module = error.get("module")
    message = str(error.get("message") or "")
    args = error.get("args")
    exc: BaseException | None = None
    cls = _lookup_exception(module, name)
    if cls is not None:
        try:
            exc = cls(*args) if isinstance(args, list) else cls(message)
        except Exception:
            try:
                exc = cls(message)
            except Exception:
                exc = None
    if exc is None:
        fallback = type(
            name.rsplit(".", 1)[-1], (TaskError,), {"exc_type": name, "exc_module": module}
        )
        exc = fallback(message)
    tb = error.get("traceback")
    if tb:
        exc.__cause__ = RemoteTraceback(str(tb))
    return exc


def _lookup_exception(module: Any, qualname: str) -> type[BaseException] | None:
    if not isinstance(module, str):
        return None
    owner: Any = sys.modules.get(module)
    if owner is None:
        return None
    for part in qualname.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    if isinstance(owner, type) and issubclass(owner, BaseException):
        return owner
    return None
