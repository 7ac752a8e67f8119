"""JSON encoding of arguments, results and errors (never pickle)."""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .exceptions import RemoteTraceback, TaskError

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decoder = json.JSONDecoder()

# JSON allows the NUL character (as \u0000) but PostgreSQL's jsonb refuses it. In
# encoded text, it is a \u0000 escape that is not itself an escaped backslash.
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _has_nul(text: str) -> bool:
    return "\\u0000" in text and _NUL.search(text) is not None


# The deepest nesting of arrays and objects a job's stored arguments may have:
# the args array and the kwargs object each count as one level, so an argument
# itself may nest MAX_NESTING - 1 levels (``[[1]]`` is 2). The producer refuses
# deeper arguments, and so does the SQL enqueue() (migration 0008). Why 200: a
# worker decodes JSON recursively in a slot thread whose stack already holds the
# pool's frames, then a process pool pickles the decoded arguments for its child
# (two recursion levels per nesting level: pickling fails near 500 levels under
# Python's default limit of 1,000), and a task often encodes a result built from
# them. 200 keeps 600 of the 1,000 levels free in the worst of these; real
# arguments rarely nest 10 levels.
MAX_NESTING = 200
# Nesting N levels takes 2N brackets: a text this short cannot exceed the limit.
_SHORT = 2 * MAX_NESTING + 1
_STRING = re.compile(r'"[^"]*"')  # once escapes are gone (see _depth)
# Keep brackets (as one kind) and quotes; delete every other byte.
_SKELETON = bytes.maketrans(b"{}", b"[]")
_NOT_SKELETON = bytes(b for b in range(256) if b not in b'[]{}"')


def _too_deep(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in the JSON text."""
    # N levels take 2N brackets: a short text, or one with few opening brackets
    # (those inside strings counted too), cannot be that deep. Most end here.
    if len(text) <= 2 * limit + 1 or text.count("[") + text.count("{") <= limit:
        return False
    return _depth(text, limit) > limit


def _depth(text: str, stop: int | None = None) -> int:
    """How many levels arrays and objects nest in the JSON text (counting stops
    past ``stop``). Works on the text's brackets outside strings, all of one
    kind: each pass removes every innermost pair, so the passes are the depth.
    Bytes and C string methods throughout: for a list of 300 small dicts it
    costs about a tenth of encoding them."""
    if "\\" in text:  # escaped backslashes and quotes: out, so every quote ends a string
        text = text.replace("\\\\", "").replace('\\"', "")
    # A string without brackets leaves two adjacent quotes: drop those pairs.
    skeleton = text.encode("utf-8", "surrogatepass").translate(_SKELETON, _NOT_SKELETON)
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:  # a string holds brackets (rare): strip strings the slow way
        stripped = _STRING.sub("", text).encode("utf-8", "surrogatepass")
        skeleton = stripped.translate(_SKELETON, _NOT_SKELETON)
    depth = 0
    while skeleton and (stop is None or depth <= stop):
        inner = skeleton.replace(b"[]", b"")
        if inner == skeleton:  # not JSON from our encoder: nothing more to count
            break
        skeleton, depth = inner, depth + 1
    return depth


def dumps(value: Any) -> str:
    return _encoder.encode(value)


# -- results that are results or signatures ------------------------------------------
#
# A task may return an AsyncResult, a GroupResult, a ResultSet or a signature
# (chain, group, chord), as Celery lets it; JSON has no such types, so they are
# stored as tagged objects, {"__jobqueue__": <kind>, ...}, and a result that
# holds any is stored wrapped: {"__jobqueue__": "tagged", "value": <value>}.
# Only a wrapped result is walked when it is read (every other result is
# returned as stored: one dict test), and inside it a user's own dict that has
# the key "__jobqueue__" is stored as {"__jobqueue__": "dict", "value": {...}},
# so no user value is ever mistaken for a tagged one. Arguments are not
# escaped: "__jobqueue__": "tagged" is reserved in them (a chain step is given
# its parent's wrapped result as an argument, and revived).

TAG = "__jobqueue__"
_TAG_TEXT = f'"{TAG}"'


def _tagged(value: Any) -> Any:
    """The JSON form of a result or signature (the encoder's ``default``)."""
    from .canvas import Signature
    from .result import AsyncResult
    from .result_set import GroupResult, ResultSet

    if isinstance(value, AsyncResult):
        return {TAG: "result", "id": value.id}
    if isinstance(value, GroupResult):
        return {TAG: "group_result", "id": value.id, "results": value.results}
    if isinstance(value, ResultSet):
        return {TAG: "result_set", "results": value.results}
    if isinstance(value, Signature):
        return {TAG: "signature", **value._as_dict()}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_result_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_tagged
)


def dump_result(value: Any) -> str:
    """A task's return value as stored: JSON, with results and signatures
    tagged (the text is wrapped and user dicts escaped only when they occur:
    otherwise this is ``dumps`` and one substring search)."""
    text = _result_encoder.encode(value)
    if _TAG_TEXT not in text:
        return text
    return _result_encoder.encode({TAG: "tagged", "value": _escaped(value)})


def dump_replaced(result: Any) -> str:
    """The stored result of a job that ``self.replace()``d itself: a pointer to
    its replacement's result, which ``AsyncResult.get()`` follows."""
    return _result_encoder.encode({TAG: "replaced", "by": _tagged(result)})


def replaced_by(value: Any, app: Any) -> Any:
    """The replacement's result (an ``AsyncResult`` or ``GroupResult``) if
    ``value`` is a replaced job's stored result, else None."""
    if type(value) is dict and value.get(TAG) == "replaced" and "by" in value:
        return _revived(value["by"], app)
    return None


def _escaped(value: Any) -> Any:
    if isinstance(value, dict):
        inner = {k: _escaped(v) for k, v in value.items()}
        return {TAG: "dict", "value": inner} if TAG in value else inner
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    return value


def revive(value: Any, app: Any) -> Any:
    """A stored result as the task returned it: a wrapped result's tagged
    objects become AsyncResults (of ``app``), GroupResults, ResultSets and
    signatures again; any other value is returned as it is."""
    if type(value) is dict and value.get(TAG) in ("tagged", "replaced"):
        if value.get(TAG) == "replaced" and "by" in value:
            return _revived(value["by"], app)  # the replacement's result
        if "value" in value:
            return _revived(value["value"], app)
    return value


def revive_arguments(args: list[Any], app: Any) -> list[Any]:
    """Arguments with the wrapped results in them revived (a chain step's
    parent result; a chord body's list of header results)."""
    return [
        revive(a, app) if type(a) is dict else revive_arguments(a, app) if type(a) is list else a
        for a in args
    ]


def _revived(value: Any, app: Any) -> Any:
    if isinstance(value, list):
        return [_revived(v, app) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(TAG)
    if kind is None:
        return {k: _revived(v, app) for k, v in value.items()}
    if kind == "dict":
        return {k: _revived(v, app) for k, v in value["value"].items()}
    from .canvas import signature_from_dict
    from .result import AsyncResult
    from .result_set import GroupResult, ResultSet

    if kind == "result":
        return AsyncResult(value["id"], app=app)
    if kind == "group_result":
        return GroupResult(value["id"], _revived(value["results"], app), app=app)
    if kind == "result_set":
        return ResultSet(_revived(value["results"], app), app=app)
    if kind == "signature":
        fields = {k: _revived(v, app) for k, v in value.items() if k != TAG}
        return signature_from_dict(fields, app)
    return {k: _revived(v, app) for k, v in value.items()}  # not ours: as stored


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
    except (TypeError, ValueError, RecursionError):
        pass
    else:
        # Inline tests first: every delay() pays them; the regex and the nesting
        # scan run only for texts that may fail them (a NUL escape; a long text).
        maybe_nul = "\\u0000" in args_text or "\\u0000" in kwargs_text
        if (
            not (maybe_nul and (_has_nul(args_text) or _has_nul(kwargs_text)))
            and (
                len(args_text) + len(kwargs_text) <= _SHORT
                or not (_too_deep(args_text) or _too_deep(kwargs_text))
            )
            and (
                (args_text.isascii() and kwargs_text.isascii())
                or not (_SURROGATE.search(args_text) or _SURROGATE.search(kwargs_text))
            )
        ):
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
    except RecursionError:
        text = ""  # deeper than Python itself can encode
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where} of task {task!r} is not JSON serializable: {_describe(value)} "
            f"({type(value).__name__}); jobqueue stores arguments as JSON"
        ) from exc
    inside = MAX_NESTING - 1  # the arguments' own array or object is the first level
    if not text or _too_deep(text, inside):
        depth = f"{_depth(text)} levels" if text else "more levels than Python can encode"
        raise ValueError(
            f"{where} of task {task!r} nests lists and dicts too deeply ({depth}; at most "
            f"{inside} are accepted inside the arguments, so that every worker can decode "
            "them: jobqueue.serialization.MAX_NESTING)"
        )
    if _has_nul(text):
        raise ValueError(
            f"{where} of task {task!r} contains a NUL character (\\x00): {_describe(value)}; "
            "PostgreSQL cannot store it in jsonb"
        )
    if _SURROGATE.search(text):
        raise ValueError(
            f"{where} of task {task!r} contains a lone surrogate (U+D800 to U+DFFF, as "
            f"from bytes decoded with 'surrogateescape'): {_describe(value)}; it has no "
            "UTF-8 form, so PostgreSQL cannot store it"
        )


# The most of an error's message, and of its traceback, that is stored (in
# characters); its args are kept only if their JSON is no longer. Real messages
# and tracebacks (chained ones included) are a few KB and stay whole; a task
# that raises with a 300 MB message made PostgreSQL refuse the outcome (jsonb
# strings stop at 256 MB) and would be written twice (jobs and job_attempts)
# per attempt. An error is now at most ~200 K characters: even a full
# completion batch (complete_batch_size, 500) of them stays far below
# PostgreSQL's 1 GB limit for one value.
MAX_ERROR_TEXT = 64 * 1024
# In a Python str, any surrogate code point is unpaired text that UTF-8 (so
# PostgreSQL) cannot encode.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


# The worker's own modules: frames of these above a task's (the slot that
# called it) are left out of a stored traceback, as noise on a failed job's page.
_WORKER_FILES = str(Path(__file__).resolve().parent / "worker") + os.sep


def _from_the_task(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its leading frames in jobqueue's worker (never all of
    them: an error the worker raised itself keeps its last frame)."""
    while (
        tb is not None
        and tb.tb_next is not None
        and tb.tb_frame.f_code.co_filename.startswith(_WORKER_FILES)
    ):
        tb = tb.tb_next
    return tb


def dump_error(exc: BaseException) -> str:
    """The stored form of a task failure: type, module, message, args and traceback.

    Whatever the exception holds, the text is one PostgreSQL stores and the
    type survives: a huge message or traceback is cut to MAX_ERROR_TEXT
    characters (saying so), large args are dropped, a NUL is written as the six
    characters \\u0000, a lone surrogate as U+FFFD, and a ``__str__`` that
    raises gives a placeholder message."""
    cls = type(exc)
    message = error_text(exc)
    try:
        trace = "".join(traceback.format_exception(cls, exc, _from_the_task(exc.__traceback__)))
    except Exception:
        trace = ""
    text = dumps(
        {
            "type": cls.__qualname__,
            "module": cls.__module__,
            "message": _truncated(message, keep_end=False),
            "args": _json_safe_args(exc),
            "traceback": _truncated(trace, keep_end=True),
        }
    )
    # A NUL in the message would make the database refuse the whole error: keep
    # the error and show each NUL as the six characters \u0000 instead.
    if _has_nul(text):
        text = _NUL.sub(lambda m: m.group(1) + "\\\\u0000", text)
    if not text.isascii() and _SURROGATE.search(text) is not None:
        # Pairs written as two code points become their character; lone ones U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def error_text(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder naming its type if its ``__str__`` raises."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} object: str() failed>"


def _truncated(text: str, *, keep_end: bool) -> str:
    """``text`` cut to MAX_ERROR_TEXT characters, with a note saying so; a
    traceback keeps its start and its end (the innermost frame and the error)."""
    if len(text) <= MAX_ERROR_TEXT:
        return text
    note = f"[truncated: {len(text)} characters in all]"
    if not keep_end:
        return f"{text[:MAX_ERROR_TEXT]}… {note}"
    half = MAX_ERROR_TEXT // 2
    return f"{text[:half]}\n… {note} …\n{text[-half:]}"


def _json_safe_args(exc: BaseException) -> list[Any] | None:
    """The exception's args if they are JSON and small, else None (the error is
    then rebuilt from its message)."""
    try:
        args = list(exc.args)
        if sum(len(arg) for arg in args if isinstance(arg, str)) > MAX_ERROR_TEXT:
            return None  # too long, known without encoding it
        text = dumps(args)
    except Exception:  # not JSON, nested too deeply, a broken __len__...
        return None
    return args if len(text) <= MAX_ERROR_TEXT else None


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
