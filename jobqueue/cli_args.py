"""The command line's words, before click reads them: ``jobqueue``'s own
options given after the command are moved before it, so ``jobqueue worker
-A proj.tasks:app`` works (Celery 5 refuses that order, and new users lose
time on it)."""

from __future__ import annotations

#: The options of ``jobqueue`` itself that take a value, and its flags.
_GLOBAL_VALUES = ("-A", "--app", "--dsn", "--schema")
_GLOBAL_FLAGS = ("--embedded",)


def _global_option(args: list[str], i: int) -> int:
    """How many words of ``args`` from ``i`` are one of jobqueue's own options
    (``-A x``, ``--app=x``, ``-Ax``, ``--embedded``); 0 if none."""
    word = args[i]
    if word in _GLOBAL_VALUES:
        return 2 if i + 1 < len(args) else 1
    if word in _GLOBAL_FLAGS or (word.startswith("-A") and not word.startswith("--")):
        return 1
    return 1 if any(word.startswith(f"{o}=") for o in _GLOBAL_VALUES if o.startswith("--")) else 0


def globals_first(args: list[str]) -> list[str]:
    """``args`` with jobqueue's own options given after the command moved before
    it: ``jobqueue worker -A proj.tasks:app`` is read as ``jobqueue -A
    proj.tasks:app worker``. (Celery 5 refuses that order; no command of ours
    has options of these names, so moving them is never ambiguous.) Words after
    ``--`` are left alone."""
    i = 0
    while i < len(args):  # past the options before the command
        taken = _global_option(args, i)
        if taken:
            i += taken
        elif args[i] in ("-h", "--help", "--version") or args[i] == "--":
            return args
        elif args[i].startswith("-"):
            return args  # an unknown option: click says so
        else:
            break
    command, moved, rest = i, [], []
    j = command + 1
    while j < len(args):
        if args[j] == "--":
            rest += args[j:]
            break
        taken = _global_option(args, j)
        if taken:
            moved += args[j : j + taken]
            j += taken
        else:
            rest.append(args[j])
            j += 1
    if not moved:
        return args
    return [*args[:command], *moved, *args[command : command + 1], *rest]
