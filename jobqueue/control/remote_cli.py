"""``jobqueue inspect ...`` and ``jobqueue control ...``: Celery's ``celery
inspect`` and ``celery control`` over ``app.control`` (remote.py). Every
command takes ``-d/--destination`` (repeatable hostnames), ``-t/--timeout``
and ``--json``; the readable output is one block per worker. Exit status 0
when some worker answered, 1 when none did (as ``celery inspect``), 2 for a
usage error."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .cli import _control, _usage

if TYPE_CHECKING:
    from ..cli import Context

F = TypeVar("F", bound=Callable[..., Any])


def _common(command: F) -> F:
    options = [
        click.option(
            "-d",
            "--destination",
            "destination",
            multiple=True,
            metavar="HOSTNAME",
            help="Only this worker (repeatable; default: every live worker).",
        ),
        click.option(
            "-t",
            "--timeout",
            type=click.FloatRange(min=0),
            default=1.0,
            show_default=True,
            help="Seconds to wait for replies.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _show(
    replies: dict[str, Any] | None, as_json: bool, render: Callable[[Any], list[str]]
) -> None:
    if as_json:
        click.echo(json.dumps(replies or {}, default=str))
    elif not replies:
        click.echo("Error: no worker replied within the timeout.", err=True)
    else:
        for host, answer in sorted(replies.items()):
            click.echo(f"-> {host}: {_status(answer)}")
            for line in render(answer):
                click.echo(f"    {line}")
        n = len(replies)
        click.echo(f"\n{n} node{'s' if n != 1 else ''} online.")
    sys.exit(0 if replies else 1)


def _status(answer: Any) -> str:
    if isinstance(answer, dict) and "error" in answer:
        return f"ERROR {answer['error']}"
    if isinstance(answer, dict) and "ok" in answer:
        return f"OK {answer['ok']}"
    return "OK"


def _nothing(answer: Any) -> list[str]:
    return []


def _jobs(answer: Any) -> list[str]:
    if not isinstance(answer, list):
        return [str(answer)]
    if not answer:
        return ["- empty -"]
    lines = []
    for job in answer:
        started = job.get("time_start")
        since = (
            " started "
            + datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds")
            if isinstance(started, (int, float))
            else ""
        )
        args = json.dumps(job.get("args"), default=str)[:80]
        kwargs = json.dumps(job.get("kwargs"), default=str)[:80]
        lines.append(f"* {job.get('name')}[{job.get('id')}] args={args} kwargs={kwargs}{since}")
    return lines


def _names(answer: Any) -> list[str]:
    if not isinstance(answer, list):
        return [str(answer)]
    return [f"* {name}" for name in answer] or ["- empty -"]


def _queues(answer: Any) -> list[str]:
    if not isinstance(answer, list):
        return [str(answer)]
    return [f"* {q.get('name')}" for q in answer if isinstance(q, dict)] or ["- empty -"]


def _pretty(answer: Any) -> list[str]:
    return json.dumps(answer, indent=2, default=str).splitlines()


@click.group()
def inspect() -> None:
    """Ask live workers what they are doing (Celery's ``celery inspect``)."""


_INSPECTIONS: dict[str, tuple[str, Callable[[Any], list[str]]]] = {
    "ping": ("Ping the workers.", _nothing),
    "active": ("The jobs each worker is running.", _jobs),
    "reserved": ("The jobs each worker claimed ahead and has not started.", _jobs),
    "scheduled": (
        "Jobs a worker holds for later: none (jobs with an ETA wait in the database: "
        "jobqueue jobs list --state PENDING).",
        _jobs,
    ),
    "registered": ("The task names each worker knows.", _names),
    "stats": ("Each worker's pool, counters, resource use and database.", _pretty),
    "active_queues": ("The queues each worker claims from.", _queues),
}


def _inspection(name: str, help: str, render: Callable[[Any], list[str]]) -> None:
    @inspect.command(name, help=help)
    @_common
    @click.pass_obj
    def command(obj: Context, destination: tuple[str, ...], timeout: float, as_json: bool) -> None:
        control = _control(obj)
        asked = control.inspect(destination=list(destination) or None, timeout=timeout)
        _show(_usage(lambda: getattr(asked, name)()), as_json, render)


for _name, (_help, _render) in _INSPECTIONS.items():
    _inspection(_name, _help, _render)


@click.group()
def control() -> None:
    """Change live workers, or limits for all of them (Celery's ``celery control``)."""


def _broadcast(
    obj: Context,
    command: str,
    arguments: dict[str, Any],
    destination: tuple[str, ...],
    timeout: float,
    as_json: bool,
) -> None:
    replies = _usage(
        lambda: _control(obj).broadcast(
            command, arguments, destination=list(destination) or None, timeout=timeout
        )
    )
    merged = {host: answer for one in replies for host, answer in one.items()}
    _show(merged, as_json, _nothing)


@control.command("shutdown")
@_common
@click.pass_obj
def control_shutdown(
    obj: Context, destination: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Warm shutdown: workers stop claiming; running jobs finish."""
    _broadcast(obj, "shutdown", {}, destination, timeout, as_json)


@control.command("pool_grow")
@click.argument("n", type=click.IntRange(1, 10_000), default=1)
@_common
@click.pass_obj
def control_pool_grow(
    obj: Context, n: int, destination: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Add N slots to each worker's pool (until it restarts)."""
    _broadcast(obj, "pool_grow", {"n": n}, destination, timeout, as_json)


@control.command("pool_shrink")
@click.argument("n", type=click.IntRange(1, 10_000), default=1)
@_common
@click.pass_obj
def control_pool_shrink(
    obj: Context, n: int, destination: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Retire N slots of each worker's pool (never the last; running jobs finish)."""
    _broadcast(obj, "pool_shrink", {"n": n}, destination, timeout, as_json)


@control.command("add_consumer")
@click.argument("queue")
@_common
@click.pass_obj
def control_add_consumer(
    obj: Context, queue: str, destination: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Workers claim from QUEUE too (until they restart)."""
    _broadcast(obj, "add_consumer", {"queue": queue}, destination, timeout, as_json)


@control.command("cancel_consumer")
@click.argument("queue")
@_common
@click.pass_obj
def control_cancel_consumer(
    obj: Context, queue: str, destination: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Workers stop claiming from QUEUE (until they restart)."""
    _broadcast(obj, "cancel_consumer", {"queue": queue}, destination, timeout, as_json)


@control.command("rate_limit")
@click.argument("task")
@click.argument("rate")
@click.option("--burst", type=click.FloatRange(min=1), default=None, help="Bucket size.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def control_rate_limit(
    obj: Context, task: str, rate: str, burst: float | None, as_json: bool
) -> None:
    """Set TASK's rate limit for every worker, durably (RATE: 10/s, 100/m,
    1000/h; 0 for none). Stands across restarts until `control reset_limits`."""
    answer = _usage(lambda: _control(obj).rate_limit(task, rate, burst))
    if as_json:
        click.echo(json.dumps({"task": task, **answer}))
    else:
        per_second = answer["rate_per_second"]
        now = "no rate limit" if per_second is None else f"{per_second:g} jobs/s"
        click.echo(f"{task}: {now} (every worker, durable)")


@control.command("concurrency_limit")
@click.argument("task")
@click.argument("max_running", type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def control_concurrency_limit(obj: Context, task: str, max_running: int, as_json: bool) -> None:
    """At most MAX_RUNNING jobs of TASK at once across all workers (0: no limit)."""
    answer = _usage(lambda: _control(obj).concurrency_limit(task, max_running or None))
    if as_json:
        click.echo(json.dumps({"task": task, **answer}))
    else:
        value = answer["concurrency_limit"]
        click.echo(f"{task}: {'no concurrency limit' if value is None else f'at most {value}'}")


@control.command("reset_limits")
@click.argument("task")
@click.pass_obj
def control_reset_limits(obj: Context, task: str) -> None:
    """Back to the limits TASK declares in code."""
    changed = _usage(lambda: _control(obj).reset_limits(task))
    click.echo(f"{task}: {'limits as declared in code' if changed else 'had no limits'}")


@control.command("limits")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def control_limits(obj: Context, as_json: bool) -> None:
    """Every task limit in force, and who set it."""
    rows = _control(obj).limits()
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    if not rows:
        click.echo("No task limits.")
    for row in rows:
        rate = row["rate_per_second"]
        limit = row["concurrency_limit"]
        by = [f"rate set by {row['rate_set_by']}"] if row["rate_set_by"] else []
        by += (
            [f"concurrency set by {row['concurrency_set_by']}"] if row["concurrency_set_by"] else []
        )
        click.echo(
            f"{row['task']}: rate {'-' if rate is None else f'{rate:g}/s'}, "
            f"concurrency {'-' if limit is None else limit}"
            + (f" ({'; '.join(by)})" if by else " (as declared)")
        )
