"""``jobqueue schedule ...``: periodic schedules listed and changed at run
time, in SQL (no restart needed); see docs/scheduling.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .cli import Context


@click.group()
def schedule() -> None:
    """List and change periodic schedules at run time (no restart needed)."""


@schedule.command("list")
@click.pass_obj
def schedule_list(obj: Context) -> None:
    """Show every schedule with its next and last run."""
    rows = obj.app().store.schedule_list()
    header = ("name", "task", "schedule", "tz", "enabled", "catch_up", "source", "next", "last")
    click.echo("\t".join(header))
    for row in rows:
        click.echo("\t".join("" if v is None else str(v) for v in row))


def _operation(call: Callable[[], object]) -> object:
    try:
        return call()
    except ValueError as exc:  # no such schedule (JQ002), said by the SQL function
        raise click.ClickException(str(exc)) from None


@schedule.command("pause")
@click.argument("name")
@click.pass_obj
def schedule_pause(obj: Context, name: str) -> None:
    """Stop enqueueing NAME until resumed (pause_schedule())."""
    changed = _operation(lambda: obj.app().control.pause_schedule(name))
    click.echo(f"{name}: paused" if changed else f"{name}: already paused")


@schedule.command("resume")
@click.argument("name")
@click.pass_obj
def schedule_resume(obj: Context, name: str) -> None:
    """Resume NAME from its next fire time (resume_schedule())."""
    changed = _operation(lambda: obj.app().control.resume_schedule(name))
    click.echo(f"{name}: resumed" if changed else f"{name}: was not paused")


@schedule.command("run")
@click.argument("name")
@click.pass_obj
def schedule_run(obj: Context, name: str) -> None:
    """Enqueue one job of NAME now, paused or not (run_schedule()); prints its id."""
    job_id = _operation(lambda: obj.app().control.run_schedule(name))
    click.echo(f"{name}: enqueued {job_id}")


@schedule.command("remove")
@click.argument("name")
@click.pass_obj
def schedule_remove(obj: Context, name: str) -> None:
    """Delete NAME (a schedule declared in code comes back when a beat restarts)."""
    if not obj.app().store.schedule_delete(name):
        raise click.ClickException(f"no schedule named {name!r}")
    click.echo(f"{name}: removed")


@schedule.command("add")
@click.argument("name")
@click.option("--task", required=True, help="Task name to enqueue.")
@click.option("--cron", default=None, help='Cron expression, e.g. "*/5 * * * *".')
@click.option(
    "--every",
    type=click.FloatRange(min=0.001, min_open=False),
    default=None,
    metavar="SECONDS",
    help="Interval in seconds.",
)
@click.option("--args", "args_json", default="[]", help="JSON array of arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--queue", default=None)
@click.option("--timezone", default="UTC", show_default=True)
@click.option(
    "--catch-up", type=click.Choice(["once", "skip", "all"]), default="once", show_default=True
)
@click.pass_obj
def schedule_add(
    obj: Context,
    name: str,
    task: str,
    cron: str | None,
    every: float | None,
    args_json: str,
    kwargs_json: str,
    queue: str | None,
    timezone: str,
    catch_up: str,
) -> None:
    """Create (or replace) schedule NAME."""
    import json

    from .schedules import Schedule
    from .serialization import dumps

    try:
        args = json.loads(args_json)
        kwargs = json.loads(kwargs_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise click.BadParameter("--args must be a JSON array and --kwargs a JSON object")
    try:
        sched = Schedule(
            name=name,
            task=task,
            cron=cron,
            interval=every,
            args=args,
            kwargs=kwargs,
            options={"queue": queue} if queue else {},
            timezone=timezone,
            catch_up=catch_up,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    obj.app().store.schedule_add(
        {
            "name": name,
            "task": task,
            "args": dumps(args),
            "kwargs": dumps(kwargs),
            "options": dumps(sched.options),
            "cron": cron,
            "interval": every,
            "timezone": timezone,
            "catch_up": catch_up,
        },
    )
    click.echo(f"{name}: {cron or f'every {every}s'} → {task}")
