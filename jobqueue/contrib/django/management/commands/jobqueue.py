"""``manage.py jobqueue worker|beat|db|...``: the ``jobqueue`` command line
(jobqueue/cli.py), with ``-A`` taken from ``settings.JOBQUEUE_APP``."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobqueue.cli import main
from jobqueue.contrib.django.command import app_spec
from jobqueue.exceptions import ConfigurationError


class Command(BaseCommand):
    help = "jobqueue's command line (worker, beat, db upgrade, ...) on JOBQUEUE_APP."

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand every argument after ``jobqueue`` to the click CLI as it is:
        Django's own parser would reject the CLI's options."""
        args = _without_django_options(argv[2:])
        if not _names_app(args) and not _asks_help(args):
            try:
                spec = app_spec()
            except ConfigurationError as exc:  # one line, as Django prints a CommandError
                self.stderr.write(f"CommandError: {exc}")
                sys.exit(1)
            args = ["-A", str(spec), *args]
        prog = f"{_prog(argv[0])} {argv[1]}"
        main.main(args=args, prog_name=prog)

    def print_help(self, prog_name: str, subcommand: str) -> None:
        """``manage.py help jobqueue``: the CLI's help, not Django's options."""
        main.main(args=["--help"], prog_name=f"{prog_name} {subcommand}", standalone_mode=False)

    def handle(self, *args: Any, **options: Any) -> None:  # call_command()
        raise CommandError(
            "run `manage.py jobqueue ...` from a shell; from Python, use jobqueue.cli.main"
        )


def _without_django_options(args: list[str]) -> list[str]:
    """The arguments without ``--settings`` and ``--pythonpath``, which Django
    has applied before it ran this command (the CLI knows neither)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--settings", "--pythonpath"):
            skip = True
        elif not arg.startswith(("--settings=", "--pythonpath=")):
            kept.append(arg)
    return kept


def _names_app(args: list[str]) -> bool:
    """Whether the arguments already name an app (``-A``, ``--app``)."""
    return any(arg in ("-A", "--app") or arg.startswith("--app=") for arg in args)


def _asks_help(args: list[str]) -> bool:
    return bool(args) and args[0] in ("-h", "--help", "--version")


def _prog(path: str) -> str:
    return "manage.py" if path.endswith("manage.py") else path.rsplit("/", 1)[-1] or sys.argv[0]
