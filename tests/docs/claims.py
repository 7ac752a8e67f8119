"""The results the docs claim in comments, checked.

``add.delay(2, 3).get(timeout=10)  # 5`` says the call gives 5: a statement
that is a bare expression, on one line, whose comment starts with a Python
literal (alone, or followed by ``:``, ``,`` or ``;`` and an explanation), is
run as ``_claim(<expression>, <literal>)``, which fails the block when the
two differ. ``print(x)  # 'text'`` claims what ``x`` is. A comment that does
not start with a literal (``# every queue``), or whose literal holds ``...``
(``# [0, 2, 4, ..., 18]``), is prose, and is not checked.
"""

from __future__ import annotations

import ast
from typing import Any

CHECK = "__docs_claim__"


class ClaimFailed(AssertionError):
    pass


def claim(value: Any, expected: Any, line: int) -> Any:
    if value != expected:
        raise ClaimFailed(f"line {line}: the comment says {expected!r}, the code gives {value!r}")
    return value


def literal_claim(comment: str) -> str | None:
    """The longest start of ``comment`` that is a Python literal, if any."""
    cuts = [i for i, ch in enumerate(comment) if ch in ":,;"] + [len(comment)]
    for cut in sorted(cuts, reverse=True):
        text = comment[:cut].strip()
        if not text:
            continue
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return None if _has_ellipsis(value) else text
    return None


def _has_ellipsis(value: Any) -> bool:
    if value is Ellipsis:
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_ellipsis(v) for v in value)
    if isinstance(value, dict):
        return any(_has_ellipsis(k) or _has_ellipsis(v) for k, v in value.items())
    return False


def instrument(source: str, filename: str) -> ast.Module:
    """``source`` parsed, with its claims wrapped in checks."""
    tree = ast.parse(source, filename)
    lines = source.splitlines()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for i, stmt in enumerate(body):
            if not isinstance(stmt, ast.Expr) or stmt.end_lineno != stmt.lineno:
                continue
            rest = lines[stmt.lineno - 1][stmt.end_col_offset or 0 :]
            if "#" not in rest or rest.split("#", 1)[0].strip():
                continue
            expected = literal_claim(rest.split("#", 1)[1].strip())
            if expected is not None:
                body[i] = _wrap(stmt, expected)
    return ast.fix_missing_locations(tree)


def _wrap(stmt: ast.Expr, expected: str) -> ast.Expr:
    target = stmt.value
    is_print = (
        isinstance(target, ast.Call)
        and isinstance(target.func, ast.Name)
        and target.func.id == "print"
        and len(target.args) == 1
        and not target.keywords
    )
    inner = target.args[0] if is_print else target  # type: ignore[attr-defined]
    checked = ast.Call(
        func=ast.Name(CHECK, ast.Load()),
        args=[inner, ast.parse(expected, mode="eval").body, ast.Constant(stmt.lineno)],
        keywords=[],
    )
    ast.copy_location(checked, inner)
    if is_print:
        target.args[0] = checked  # type: ignore[attr-defined]
        return stmt
    return ast.copy_location(ast.Expr(checked), stmt)
