"""``jobqueue events``: the live stream on the command line, one event a line
(readable, or ``--json``: one JSON object a line). Says on stderr once it
listens; warnings (a lost connection, a payload it did not expect) go to
stderr too. Runs until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

import click

from .hints import MISSED, TYPES
from .reading import Event

if TYPE_CHECKING:
    from ..cli import Context


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def describe(event: Event) -> str:
    """One readable line: time, type, then what matters for that type."""
    kind = event["type"]
    words = [_when(event.get("timestamp")), f"{kind:<16}"]
    if kind.startswith("task-"):
        words.append(f"{event['name']}[{event['uuid']}]")
        words.append(f"queue={event['queue']}")
        if event.get("hostname"):
            words.append(f"worker={event['hostname']}")
        if event.get("retries"):
            words.append(f"retries={event['retries']}")
        if event.get("runtime") is not None:
            words.append(f"runtime={event['runtime']:.3f}s")
        if event.get("eta") is not None:
            words.append(f"eta={_when(event['eta'])}")
        if event.get("terminated"):
            words.append("terminated")
        if event.get("expired"):
            words.append("expired")
        if event.get("exception"):
            words.append(f"exception={event['exception']}")
        elif kind == "task-succeeded" and event.get("result") is not None:
            words.append(f"result={event['result']}")
    elif kind == MISSED:
        words.append(f"events since {_when(event.get('since'))} were missed (connection lost)")
    else:
        words.append(str(event.get("hostname") or event.get("worker_id")))
        if event.get("pid") is not None:
            words.append(f"pid={event['pid']}")
        if event.get("queues"):
            words.append(f"queues={','.join(event['queues'])}")
        if event.get("active") is not None:
            words.append(f"active={event['active']}")
    return " ".join(words)


def _stop_on_sigterm() -> None:
    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


@click.command("events")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--queue", "queues", multiple=True, metavar="QUEUE", help="Only this queue (repeatable)."
)
@click.option("--task", "tasks", multiple=True, metavar="TASK", help="Only this task (repeatable).")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=click.Choice(TYPES),
    help="Only events of this type (repeatable).",
)
@click.pass_obj
def events(
    obj: Context,
    as_json: bool,
    queues: tuple[str, ...],
    tasks: tuple[str, ...],
    types: tuple[str, ...],
) -> None:
    """Print task and worker events as they happen, until Ctrl-C."""
    from .. import logs

    chosen = logs.env_format()  # $JOBQUEUE_LOG_FORMAT, as workers and beats
    logs.configure(logging.WARNING, chosen if chosen in logs.LOG_FORMATS else "text")
    _stop_on_sigterm()
    app = obj.app()
    out: TextIO = sys.stdout
    try:
        with app.events.stream(
            queues=list(queues) or None, tasks=list(tasks) or None, types=list(types) or None
        ) as stream:
            schema = app.conf.schema
            click.echo(f"jobqueue events: listening (schema {schema}); Ctrl-C to stop", err=True)
            while lines := stream.batch_json():  # one write per batch, not per event
                if not as_json:
                    lines = [describe(json.loads(line)) for line in lines]
                out.write("\n".join(lines) + "\n")
                out.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `jobqueue events | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
