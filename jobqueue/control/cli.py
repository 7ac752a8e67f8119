"""``jobqueue jobs ...`` and ``jobqueue queue ...``: ``app.control`` on the
command line. Filters are the same options on every command and become one
``Filters``; destructive bulk commands (retry, cancel, delete, purge) count
what matches first and ask, unless ``--yes``; without a terminal to ask on,
they refuse. ``--json`` prints one JSON document (``jobs list``: an array,
written row by row)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .filters import FINISHED, RETRYABLE, STATES, UNFINISHED, WAITING, Filters
from .jobs import Job

if TYPE_CHECKING:
    from ..cli import Context
    from .management import Control

F = TypeVar("F", bound=Callable[..., Any])

#: Rows ``jobs list`` prints without ``--limit``.
LIST_LIMIT = 50


class AwareTime(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 time with its offset (``Z`` for UTC)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time, e.g. 2024-05-01T12:00:00+00:00")
        if when.tzinfo is None:
            self.fail(
                f"{value!r} has no UTC offset: add one, e.g. {when.isoformat()}+00:00 "
                f"or {when.isoformat()}Z"
            )
        return when


def filter_options(command: F) -> F:
    """The filter options, the same on every command that takes them."""
    options = [
        click.option("--id", "ids", multiple=True, metavar="ID", help="A job id (repeatable)."),
        click.option("--queue", default=None, help="Jobs of this queue."),
        click.option("--task", default=None, help="Jobs of this task name."),
        click.option(
            "--state",
            type=click.Choice(sorted(STATES), case_sensitive=False),
            default=None,
            help="Jobs in this state.",
        ),
        click.option(
            "--exception", default=None, metavar="TYPE", help="Jobs whose error is of this type."
        ),
        click.option("--enqueued-after", type=AwareTime(), default=None),
        click.option("--enqueued-before", type=AwareTime(), default=None),
        click.option("--finished-after", type=AwareTime(), default=None),
        click.option("--finished-before", type=AwareTime(), default=None),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def limit_option(default: int | None, help: str) -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=default,
        show_default=default is not None,
        help=help,
    )


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def make_filters(options: dict[str, Any]) -> Filters:
    """The command's filter options as one ``Filters``; a bad value is a usage error."""
    ids = options.pop("ids", ())
    try:
        return Filters(
            ids=tuple(ids) if ids else None,
            queue=options.pop("queue", None),
            task=options.pop("task", None),
            state=options.pop("state", None),
            exception=options.pop("exception", None),
            enqueued_after=options.pop("enqueued_after", None),
            enqueued_before=options.pop("enqueued_before", None),
            finished_after=options.pop("finished_after", None),
            finished_before=options.pop("finished_before", None),
            limit=options.pop("limit", None),
        )
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc


def _control(obj: Context) -> Control:
    return obj.app().control


def _usage(call: Callable[[], Any]) -> Any:
    """Run ``call``; a ValueError (a check of app.control) is a usage error."""
    try:
        return call()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str))


def _confirm(verb: str, count: int, filters: Filters, yes: bool) -> None:
    """Ask before a destructive bulk action: "Delete 1,234 jobs? [y/N]". No
    terminal to ask on and no --yes: refuse (usage error, nothing changed)."""
    if yes:
        return
    what = f"{verb} {count:,} job{'s' if count != 1 else ''} ({filters.describe()})"
    if not sys.stdin.isatty():
        raise click.UsageError(
            f"refusing to {what.lower()} without confirmation: stdin is not a terminal; "
            "pass --yes to confirm"
        )
    if not click.confirm(f"{what}?", default=False, err=True):
        click.echo("Aborted: nothing changed.", err=True)
        sys.exit(1)


def _bulk(
    obj: Context,
    verb: str,
    past: str,
    filters: Filters,
    states: frozenset[str],
    yes: bool,
    as_json: bool,
    run: Callable[[Control], int],
) -> None:
    """Count what matches, ask, act, say how many."""
    control = _control(obj)
    _usage(lambda: filters.restrict(states, verb.lower()))
    matched = control.count(filters, states)
    if filters.limit is not None:
        matched = min(matched, filters.limit)
    if matched == 0:
        done = 0
    else:
        _confirm(verb, matched, filters, yes)
        done = _usage(lambda: run(control))
    if as_json:
        _echo_json({"action": verb.lower(), "matched": matched, "count": done})
    else:
        click.echo(f"{past} {done:,} job{'s' if done != 1 else ''}.")


@click.group()
def jobs() -> None:
    """List, inspect, retry, cancel, delete, move and purge jobs."""


@jobs.command("list")
@filter_options
@limit_option(LIST_LIMIT, "Show at most this many jobs.")
@click.option("--after", default=None, metavar="ID", help="Start after this job id (next page).")
@json_option
@click.pass_obj
def jobs_list(obj: Context, /, after: str | None, as_json: bool, **options: Any) -> None:
    """List jobs in id order (creation order), a page at a time."""
    filters = make_filters(options)
    rows = _usage(lambda: _control(obj).jobs(**_as_kwargs(filters), after=after))
    if as_json:
        _stream_array(job.to_dict() for job in rows)
        return
    header = ("id", "state", "queue", "task", "attempts", "created", "finished", "error")
    click.echo("\t".join(header))
    shown = 0
    last = None
    for job in rows:
        shown += 1
        last = job.id
        values = (
            job.id, job.state, job.queue, job.task, job.attempts,
            _time(job.created_at), _time(job.finished_at), job.error_type,
        )  # fmt: skip
        click.echo("\t".join("" if v is None else str(v) for v in values))
    if filters.limit is not None and shown == filters.limit:
        click.echo(f"(first {shown}; next page: --after {last})", err=True)


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_obj
def jobs_show(obj: Context, job_id: str, as_json: bool) -> None:
    """Show one job: its arguments, result or error, and every attempt."""
    control = _control(obj)
    job = _usage(lambda: control.job(job_id))
    if job is None:
        raise click.ClickException(f"no job with id {job_id}")
    attempts = control.history(str(job.id))
    if as_json:
        _echo_json({**job.to_dict(), "history": [a.to_dict() for a in attempts]})
        return
    _show(job)
    if attempts:
        click.echo("attempts:")
        for a in attempts:
            error = f"  {a.error_type}: {a.error_message}" if a.error_type else ""
            took = (
                f" ({(a.finished_at - a.started_at).total_seconds():.3f}s)"
                if a.started_at and a.finished_at
                else ""
            )
            click.echo(f"  #{a.attempt} {a.state} at {_time(a.finished_at)}{took}{error}")


def _show(job: Job) -> None:
    lines = [
        ("id", job.id),
        ("task", job.task),
        ("state", job.state if not job.progress_state else f"{job.state} ({job.progress_state})"),
        ("queue", job.queue),
        ("priority", job.priority),
        ("attempts", job.attempts),
        ("created", _time(job.created_at)),
        ("run at", _time(job.run_at)),
        ("started", _time(job.started_at)),
        ("finished", _time(job.finished_at)),
        ("expires", _time(job.expires_at)),
        ("worker", job.worker_id),
        ("root", job.root_id),
        ("parent", job.parent_id),
        ("group", job.group_id),
        ("args", json.dumps(job.args)),
        ("kwargs", json.dumps(job.kwargs)),
    ]
    if job.state == "SUCCESS":
        lines.append(("result", json.dumps(job.result)))
    if isinstance(job.error, dict):
        lines.append(("error", f"{job.error.get('type')}: {job.error.get('message')}"))
    for label, value in lines:
        if value is not None and value != "":
            click.echo(f"{label + ':':<10}{value}")
    if job.traceback:
        click.echo("traceback:")
        click.echo(job.traceback.rstrip("\n"))


@jobs.command("retry")
@filter_options
@limit_option(None, "Retry at most this many jobs.")
@click.option("--reset-retries", is_flag=True, help="Count retries from zero again.")
@yes_option
@json_option
@click.pass_obj
def jobs_retry(
    obj: Context, /, reset_retries: bool, yes: bool, as_json: bool, **options: Any
) -> None:
    """Run FAILURE and REVOKED jobs again, as a new attempt (history kept)."""
    filters = make_filters(options)
    _bulk(
        obj, "Retry", "Retried", filters, RETRYABLE, yes, as_json,
        lambda c: c.retry(**_as_kwargs(filters), reset_retries=reset_retries),
    )  # fmt: skip


@jobs.command("cancel")
@filter_options
@limit_option(None, "Cancel at most this many jobs.")
@click.option("--terminate", is_flag=True, help="Also stop running jobs now.")
@yes_option
@json_option
@click.pass_obj
def jobs_cancel(obj: Context, /, terminate: bool, yes: bool, as_json: bool, **options: Any) -> None:
    """Revoke unfinished jobs (waiting ones never run; running ones with --terminate)."""
    filters = make_filters(options)
    _bulk(
        obj, "Cancel", "Cancelled", filters, UNFINISHED, yes, as_json,
        lambda c: c.cancel(**_as_kwargs(filters), terminate=terminate),
    )  # fmt: skip


@jobs.command("delete")
@filter_options
@limit_option(None, "Delete at most this many jobs.")
@yes_option
@json_option
@click.pass_obj
def jobs_delete(obj: Context, /, yes: bool, as_json: bool, **options: Any) -> None:
    """Delete finished jobs (SUCCESS, FAILURE, REVOKED) and their attempts."""
    filters = make_filters(options)
    _bulk(
        obj, "Delete", "Deleted", filters, FINISHED, yes, as_json,
        lambda c: c.delete(**_as_kwargs(filters)),
    )  # fmt: skip


@jobs.command("move")
@filter_options
@limit_option(None, "Move at most this many jobs.")
@click.option("--to-queue", default=None, help="Put the jobs in this queue.")
@click.option("--to-priority", type=click.IntRange(0, 255), default=None, help="New priority.")
@click.option("--to-eta", type=AwareTime(), default=None, help="Run them at this time.")
@json_option
@click.pass_obj
def jobs_move(
    obj: Context,
    /,
    to_queue: str | None,
    to_priority: int | None,
    to_eta: datetime | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Give waiting jobs another queue, priority or due time."""
    filters = make_filters(options)
    done = _usage(
        lambda: _control(obj).move(
            **_as_kwargs(filters), to_queue=to_queue, to_priority=to_priority, to_eta=to_eta
        )
    )
    if as_json:
        _echo_json({"action": "move", "count": done})
    else:
        click.echo(f"Moved {done:,} job{'s' if done != 1 else ''}.")


@jobs.command("purge")
@click.option("--queue", default=None, help="Only this queue (default: every queue).")
@yes_option
@json_option
@click.pass_obj
def jobs_purge(obj: Context, queue: str | None, yes: bool, as_json: bool) -> None:
    """Revoke every waiting job (of --queue, else of every queue): Celery's purge."""
    filters = make_filters({"queue": queue})
    _bulk(
        obj, "Purge", "Purged", filters, WAITING, yes, as_json,
        lambda c: c.purge(queue),
    )  # fmt: skip


@click.group()
def queue() -> None:
    """List queues; pause and resume them for every worker at once."""


@queue.command("list")
@json_option
@click.pass_obj
def queue_list(obj: Context, as_json: bool) -> None:
    """Every queue of queue_stats, with whether it is paused."""
    rows = _control(obj).queues()
    if as_json:
        _echo_json([row.to_dict() for row in rows])
        return
    header = ("queue", "pending", "started", "retry", "success", "failure", "revoked")
    click.echo("\t".join((*header, "oldest", "paused")))
    for row in rows:
        values = [getattr(row, name) for name in header]
        values += [row.oldest_waiting, "yes" if row.paused else "no"]
        click.echo("\t".join("" if v is None else str(v) for v in values))


@queue.command("pause")
@click.argument("name")
@click.option("--reason", default=None, help="Why (shown where the pause is listed).")
@json_option
@click.pass_obj
def queue_pause(obj: Context, name: str, reason: str | None, as_json: bool) -> None:
    """Stop every worker from claiming jobs of queue NAME (jobs keep arriving)."""
    changed = _usage(lambda: _control(obj).pause_queue(name, reason))
    if as_json:
        _echo_json({"queue": name, "paused": True, "changed": changed})
    else:
        click.echo(f"{name}: {'paused' if changed else 'already paused'}")


@queue.command("resume")
@click.argument("name")
@json_option
@click.pass_obj
def queue_resume(obj: Context, name: str, as_json: bool) -> None:
    """Let workers claim jobs of queue NAME again."""
    changed = _usage(lambda: _control(obj).resume_queue(name))
    if as_json:
        _echo_json({"queue": name, "paused": False, "changed": changed})
    else:
        click.echo(f"{name}: {'resumed' if changed else 'was not paused'}")


@queue.command("fair")
@json_option
@click.pass_obj
def queue_fair(obj: Context, as_json: bool) -> None:
    """Waiting jobs per queue and fair key (the fair_keys view), most first."""
    rows = _control(obj).fair_keys()
    if as_json:
        _echo_json([row.to_dict() for row in rows])
        return
    click.echo("queue\tfair_key\twaiting\tdue\toldest_due_wait\tweight")
    for row in rows:
        values = (row.queue, row.fair_key, row.waiting, row.due, row.oldest_due_wait, row.weight)
        click.echo("\t".join("" if v is None else str(v) for v in values))


@queue.command("weight")
@click.argument("key")
@click.argument("weight", type=click.IntRange(1, 1000))
@json_option
@click.pass_obj
def queue_weight(obj: Context, key: str, weight: int, as_json: bool) -> None:
    """Give fair key KEY WEIGHT turns a round (1, the default, removes it)."""
    set_to = _usage(lambda: _control(obj).set_fair_weight(key, weight))
    if as_json:
        _echo_json({"fair_key": key, "weight": set_to})
    else:
        click.echo(f"{key}: weight {set_to}")


def _as_kwargs(filters: Filters) -> dict[str, Any]:
    """``Filters`` as app.control's keyword arguments."""
    return {**filters.params(), "limit": filters.limit}


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(sep=" ", timespec="seconds")


def _stream_array(items: Iterable[dict[str, Any]]) -> None:
    """One JSON array, written an element at a time (flat memory for long lists)."""
    click.echo("[", nl=False)
    for index, item in enumerate(items):
        click.echo(("," if index else "") + "\n" + json.dumps(item, default=str), nl=False)
    click.echo("\n]")


__all__ = ["jobs", "queue"]
