"""Where ``config_from_object`` finds settings: a module path imported, and
which names of a module, an object or a mapping are settings.

Celery reads every attribute of a config object and ignores those it does
not know, so a misspelt setting silently did nothing. Here a public
lowercase name bound to data must be a setting (a typo raises, naming the
closest), while a config module's imports, functions, classes and uppercase
constants are left alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError


def import_object(path: str) -> Any:
    """``"pkg.module"``, ``"pkg.module:attr"`` or ``"pkg.module.attr"``."""
    module, _, attr = path.partition(":")
    if attr:
        return getattr(importlib.import_module(module), attr)
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        parent, _, attr = path.rpartition(".")
        if not parent or exc.name != path:  # the module itself failed to import something
            raise
        obj = importlib.import_module(parent)
        if not hasattr(obj, attr):
            raise
        return getattr(obj, attr)


#: Values a setting can have: what a config module's other names (imports,
#: helpers) are not.
_DATA = (type(None), bool, int, float, str, bytes, list, tuple, dict, set, frozenset,
         timedelta, datetime, date, time, Path)  # fmt: skip
_NAMESPACES = ("CELERY_", "JOBQUEUE_")
#: Names under a namespace that point at the app rather than configure it:
#: Django's ``JOBQUEUE_APP`` (jobqueue.contrib.django), like ``$JOBQUEUE_APP``
#: for the CLI. ``config_from_object(settings, namespace="JOBQUEUE")`` skips it.
_POINTERS = frozenset({"app"})


def settings_of(
    obj: Any, namespace: str | None, where: str, is_setting: Callable[[str], bool]
) -> Iterator[tuple[str, Any, str]]:
    """(setting name, value, name as written) of a config object:

    - a mapping without ``namespace``: every key;
    - a module or object without ``namespace``: its public lowercase names
      bound to data (``_DATA``), and any name ``is_setting`` knows whatever
      its value (``task_routes`` may be a function). Imports and helpers are
      left alone, and so are uppercase names, but ``CELERY_``/``JOBQUEUE_``
      ones raise saying to pass ``namespace``;
    - with ``namespace="X"``: only names starting ``X_``, the prefix removed
      and the rest lowercased (Celery's rule for Django's settings).

    Names are not checked here: ``resolve_setting`` raises for unknown ones."""
    mapping = isinstance(obj, Mapping)
    names = [n for n in (obj if mapping else dir(obj)) if isinstance(n, str)]

    def get(name: str) -> Any:
        return obj[name] if mapping else getattr(obj, name)

    if namespace:
        prefix = f"{namespace}_"
        for name in names:
            if name.startswith(prefix) and len(name) > len(prefix):
                setting = name[len(prefix) :].lower()
                if setting not in _POINTERS:
                    yield setting, get(name), name
        return
    for name in names:
        if mapping:
            yield name, get(name), name
            continue
        if name.startswith("_"):
            continue
        if name != name.lower():
            if name.startswith(_NAMESPACES):
                raise ConfigurationError(
                    f"{where}: {name} looks like a namespaced setting; pass "
                    f"namespace={name.partition('_')[0]!r} to read the {name.partition('_')[0]}_ "
                    "names (uppercase names are not read without a namespace)"
                )
            continue
        value = get(name)
        if is_setting(name) or isinstance(value, _DATA):
            yield name, value, name
