"""``jobqueue`` command line: worker, beat, db (migrations), stats; schedule
(jobqueue/schedule_cli.py), jobs and queue
(jobqueue/control/cli.py), inspect and control (jobqueue/control/remote_cli.py),
metrics (jobqueue/metrics/cli.py), events (jobqueue/events/cli.py), dashboard
(jobqueue/dashboard/cli.py), embedded,
demo."""

from __future__ import annotations

import logging
import shlex
import sys
from typing import Any

import click
import psycopg

from . import __version__, loader, logs
from . import embedded as emb
from .app import JobQueue
from .cli_args import globals_first
from .config import DSN_ENV, EMBEDDED_ENV, Settings
from .dsn import normalize
from .exceptions import ConfigurationError, JobQueueError, SchemaChangedError
from .logs import env_format
from .redact import redact
from .roles import grant_command
from .sql import validate_schema
from .worker.executor import JOB_LOGGER
from .worker.pools import POOLS
from .worker.settings import DEFAULT_PREFETCH_MULTIPLIER, WorkerSettings

_WORKER = WorkerSettings()  # the defaults the worker options show

APP_ENV = "JOBQUEUE_APP"


def load_app(spec: str) -> JobQueue:
    """The app named by ``-A``; a bad spec is a usage error."""
    try:
        return loader.load_app(spec)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="-A") from exc


class Context:
    def __init__(
        self, app_spec: str | None, dsn: str | None, schema: str | None, embedded: bool = False
    ) -> None:
        self.app_spec = app_spec
        self.dsn = dsn
        self.schema = schema
        self.embedded = embedded
        self._app: JobQueue | None = None
        self._checked = False

    def app(self, required: bool = False, database: bool = True) -> JobQueue:
        """The app of ``-A`` (else a plain one) with ``--dsn``/``--schema`` applied.
        ``database``: the command will use its database (see ``_check_database``)."""
        if self._app is None:
            if self.app_spec:
                self._app = load_app(self.app_spec)
            elif required:
                raise click.UsageError(
                    f"this command needs an app: pass -A module:app or set ${APP_ENV}"
                )
            else:
                self._app = JobQueue(schema=self.schema or "jobqueue")
            if self.dsn:
                self._app.conf.dsn = self.dsn
            if self.schema:
                self._app.conf.schema = self.schema
            if self.app_spec and (self.dsn or self.schema):
                self._app.conf.cli_options = self.options()
        if database and not self._checked:
            self._checked = True
            self._check_database(self._app)
        return self._app

    def options(self) -> str:
        """The global options that reach this command's database again (password hidden)."""
        words = []
        if self.app_spec:
            words += ["-A", self.app_spec]
        if self.dsn:
            words += ["--dsn", redact(self.dsn)]
        if self.schema:
            words += ["--schema", self.schema]
        if self.embedded:
            words += ["--embedded"]
        return " ".join(shlex.quote(word) for word in words)

    def _check_database(self, app: JobQueue) -> None:
        """Without a DSN: say, on one line of stderr, that the embedded server is
        used and where; without -A, refuse to create one unless --embedded asks."""
        if app.conf.resolved_dsn():
            return
        data_dir = app.conf.data_dir
        where = emb.pgdata(data_dir)
        if self.embedded:
            app.conf.embedded = True
        elif self.app_spec is None and not (app.conf.embedded and emb.exists(data_dir)):
            if app.conf.embedded:
                fallback = (
                    f" (or --embedded to use the embedded PostgreSQL in {where}, "
                    "creating it if need be)"
                )
            else:
                fallback = f" (${EMBEDDED_ENV}=0 forbids the embedded PostgreSQL)"
            raise click.UsageError(
                f"no database configured: pass -A module:app to use your app's DSN, "
                f"--dsn DSN, or set ${DSN_ENV}{fallback}"
            )
        if not app.conf.embedded:
            return  # the app forbids the fallback: its first connection says what to do
        if emb.announced(data_dir):
            return
        if self.app_spec:
            who = f"{self.app_spec} configures no DSN"
            elsewhere = f"--dsn DSN, set ${DSN_ENV}, or give JobQueue() a DSN"
        else:
            who = "no DSN configured"
            elsewhere = f"--dsn DSN or set ${DSN_ENV}, or pass -A module:app to use your app's DSN"
        click.echo(
            f"jobqueue: {who}: using embedded PostgreSQL in {where} (for another database "
            f"pass {elsewhere})",
            err=True,
        )


def _setup_logging(level: str, log_format: str | None) -> None:
    """Before the app is loaded: --log-format, else $JOBQUEUE_LOG_FORMAT (text
    if it holds nonsense: Settings.validate says so once the app is loaded)."""
    chosen = log_format or env_format()
    logs.configure(level, chosen if chosen in logs.LOG_FORMATS else "text", batched=True)


def _app_logging(app: JobQueue, level: str, log_format: str | None) -> None:
    """The app's ``conf.log_format`` applies unless --log-format was given."""
    if log_format is not None:
        return
    try:
        logs.check_format(app.conf.log_format)
    except ValueError as exc:
        raise click.UsageError(f"{exc} (or ${logs.LOG_FORMAT_ENV})") from None
    if app.conf.log_format != logs.current_format():
        logs.configure(level, app.conf.log_format, batched=True)


def _log_format_option(fn: Any) -> Any:
    return click.option(
        "--log-format",
        type=click.Choice(logs.LOG_FORMATS, case_sensitive=False),
        default=None,
        help="text, or json: one JSON object per line (default: app.conf.log_format, "
        f"${logs.LOG_FORMAT_ENV}, else text).",
    )(fn)


class _Group(click.Group):
    """Turns jobqueue's own errors into a one-line message and exit code 1."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, globals_first(args))

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except JobQueueError as exc:
            raise click.ClickException(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise click.ClickException(f"cannot connect to PostgreSQL: {exc}") from exc


def _check_dsn(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize(value, "--dsn")
    except JobQueueError as exc:
        raise click.UsageError(str(exc)) from None  # the message names --dsn


def _check_schema(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_schema(value)
    except JobQueueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-A",
    "--app",
    "app_spec",
    envvar=APP_ENV,
    metavar="MODULE:APP",
    help=f"The application, e.g. proj.tasks:app (or ${APP_ENV}).",
)
@click.option(
    "--dsn",
    metavar="DSN",
    callback=_check_dsn,
    help="PostgreSQL DSN (default: the app's, else $JOBQUEUE_DSN, else the embedded server).",
)
@click.option(
    "--schema", default=None, callback=_check_schema, help="Override the app's PostgreSQL schema."
)
@click.option(
    "--embedded",
    is_flag=True,
    help="If no DSN is configured, use the embedded PostgreSQL, creating it if need be "
    "(without -A, commands otherwise use only one that exists).",
)
@click.version_option(__version__, prog_name="jobqueue")
@click.pass_context
def main(
    ctx: click.Context, app_spec: str | None, dsn: str | None, schema: str | None, embedded: bool
) -> None:
    """jobqueue: a transactional job queue on PostgreSQL."""
    ctx.obj = Context(app_spec, dsn, schema, embedded)


@main.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs run at once (default: app.conf.worker_concurrency, else 4 x CPUs, at most 32).",
)
@click.option(
    "-Q",
    "--queues",
    default=None,
    metavar="A,B",
    help="Comma-separated queues to consume (default: the app's default queue).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    default=None,
    metavar="SECONDS",
    help="Poll this often when no NOTIFY arrives (default 5).",
)
@click.option("-n", "--hostname", default=None, help="Name shown in logs and the workers table.")
@click.option(
    "-P",
    "--pool",
    type=click.Choice(POOLS),
    default=_WORKER.pool,
    show_default=True,
    help="Where tasks run: threads, or child processes (real hard limits).",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    default=None,
    help="Process pool: replace a child after this many jobs.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=_WORKER.shutdown_timeout,
    show_default=True,
    metavar="SECONDS",
    help="Warm shutdown: how long running jobs may take before going back to the queue.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0.01),
    default=None,
    metavar="SECONDS",
    help=f"Seconds between heartbeats (default {Settings.heartbeat_interval:g}).",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Silent this long, this worker is presumed dead and its jobs are rescued "
    f"(default {Settings.lease_ttl:g}).",
)
@click.option(
    "--prefetch-multiplier",
    type=click.IntRange(min=1),
    default=None,
    help="Hold at most this many x concurrency jobs: running ones plus about 0.1 s of "
    "work claimed ahead. 1 disables prefetching (default: "
    f"app.conf.worker_prefetch_multiplier, else {DEFAULT_PREFETCH_MULTIPLIER}).",
)
@click.option(
    "--health-file",
    default=None,
    metavar="PATH",
    help="Create PATH once ready and touch it at every heartbeat that gets through; "
    "removed at exit. A liveness probe checks its age is under the lease.",
)
@click.option(
    "-B",
    "--beat",
    "with_beat",
    is_flag=True,
    help="Also run a beat here (any number of beats may run at once).",
)
@click.option(
    "-l",
    "--loglevel",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
    help="Default: info, but a job's INFO lines (Task x[id] succeeded in ...) only with "
    "-l info or debug: on short jobs they cost the drain about a quarter of its rate.",
)
@_log_format_option
@click.pass_obj
def worker(
    obj: Context,
    concurrency: int | None,
    queues: str | None,
    poll_interval: float | None,
    hostname: str | None,
    pool: str,
    max_tasks_per_child: int | None,
    shutdown_timeout: float,
    heartbeat_interval: float | None,
    lease_ttl: float | None,
    prefetch_multiplier: int | None,
    health_file: str | None,
    with_beat: bool,
    loglevel: str | None,
    log_format: str | None,
) -> None:
    """Start a worker that claims and runs jobs until SIGTERM/SIGINT."""
    from .worker import Worker

    quiet_jobs = loglevel is None
    loglevel = loglevel or "info"
    _setup_logging(loglevel, log_format)
    if quiet_jobs:
        # A line per job is ~20 us of the worker's GIL: a no-op drain ran 9,000
        # jobs/s with them, 10,700 without (benchmarks/log_cost.py, 8 interleaved
        # runs; docs/operations.md, Logging). Warnings and errors about jobs show.
        logging.getLogger(JOB_LOGGER).setLevel(logging.WARNING)
    app = obj.app(required=True)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if queues is not None and not names:
        raise click.BadParameter("give at least one queue name", param_hint="--queues")
    if max_tasks_per_child is not None and pool != "processes":
        raise click.BadParameter(
            "only the process pool replaces children; add --pool processes",
            param_hint="--max-tasks-per-child",
        )
    if heartbeat_interval is not None:
        app.conf.heartbeat_interval = heartbeat_interval
    if lease_ttl is not None:
        app.conf.lease_ttl = lease_ttl
    try:
        app.conf.validate()
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    _app_logging(app, loglevel, log_format)
    from .notify import install_configured  # a surface over the core, as this CLI

    try:
        install_configured(app)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = WorkerSettings().with_options(
        queues=names,
        concurrency=concurrency,
        poll_interval=poll_interval,
        hostname=hostname,
        pool=pool,
        max_tasks_per_child=max_tasks_per_child,
        shutdown_timeout=shutdown_timeout,
        prefetch_multiplier=prefetch_multiplier,
        health_file=health_file,
    )
    try:
        settings = settings.resolve(app)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    beat = None
    if with_beat:
        import threading

        from .beat import Beat

        beat = Beat(app)
        try:
            beat.schedules()  # a bad beat_schedule is a usage error, not a dead thread
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        threading.Thread(target=beat.run, name="jobqueue-beat", daemon=True).start()
    try:
        Worker(app, settings).run()
    except SchemaChangedError as exc:  # logged as it happened; exit non-zero, no traceback
        raise click.ClickException(str(exc)) from exc
    finally:
        if beat is not None:
            beat.stop()


@main.command()
@click.option(
    "-l",
    "--loglevel",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
)
@_log_format_option
@click.pass_obj
def beat(obj: Context, loglevel: str, log_format: str | None) -> None:
    """Enqueue periodic tasks until SIGTERM/SIGINT. Run as many as you like:
    each tick is enqueued exactly once."""
    from .beat import Beat

    _setup_logging(loglevel, log_format)
    try:
        app = obj.app()
        _app_logging(app, loglevel, log_format)
        runner = Beat(app)
        runner.schedules()  # validate app.conf.beat_schedule before starting
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    runner.run()


@main.group()
def db() -> None:
    """Schema migrations (alembic)."""


def _dsn(obj: Context) -> tuple[str, str]:
    app = obj.app()
    return app.db.dsn(), app.conf.schema


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
def db_upgrade(obj: Context, revision: str) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    from .migrate import current_revision, upgrade

    dsn, schema = _dsn(obj)
    upgrade(dsn, schema, revision)
    click.echo(f"schema {schema!r} at {redact(dsn)} is at revision {current_revision(dsn, schema)}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_obj
def db_downgrade(obj: Context, revision: str) -> None:
    """Migrate the schema down to REVISION ('base' removes every table)."""
    from .migrate import current_revision, downgrade

    dsn, schema = _dsn(obj)
    downgrade(dsn, schema, revision)
    click.echo(f"schema {schema!r} is at revision {current_revision(dsn, schema) or 'base'}")


@db.command("current")
@click.pass_obj
def db_current(obj: Context) -> None:
    """Show the schema's revision and the newest one this version knows."""
    from .migrate import current_revision, head_revision

    dsn, schema = _dsn(obj)
    current = current_revision(dsn, schema)
    head = head_revision()
    command = " ".join(word for word in ("jobqueue", obj.options(), "db upgrade") if word)
    note = "up to date" if current == head else f"run `{command}` to reach {head}"
    click.echo(f"{current or 'none'} ({note})")


db.add_command(grant_command)


@main.command()
@click.pass_obj
def stats(obj: Context) -> None:
    """Print the queue_stats view: jobs per queue and state."""
    rows = obj.app().store.queue_stats()
    header = (
        "queue", "pending", "started", "retry", "success", "failure", "revoked", "oldest",
        "paused",
    )  # fmt: skip
    click.echo("  ".join(f"{h:>10}" for h in header))
    for row in rows:
        click.echo("  ".join(f"{v!s:>10}" for v in row))
    # What a rolling deploy (or a missing worker) leaves waiting: jobs of a task
    # that no live worker of their queue serves.
    for queue, task, waiting, oldest in obj.app().store.unserved_tasks():
        click.echo(
            f"warning: {waiting} job(s) of task {task!r} in queue {queue!r} wait for a worker "
            f"that serves it (oldest {oldest}); no live worker of that queue knows the task",
            err=True,
        )


def _register_schedule() -> None:
    """``schedule``: schedules at run time (jobqueue/schedule_cli.py)."""
    from .schedule_cli import schedule

    main.add_command(schedule)


_register_schedule()


def _register_operations() -> None:
    """``jobs`` and ``queue``: app.control on the command line (jobqueue/control/cli.py);
    ``inspect`` and ``control``: remote control (jobqueue/control/remote_cli.py)."""
    from .control.cli import jobs, queue
    from .control.remote_cli import control, inspect

    main.add_command(jobs)
    main.add_command(queue)
    main.add_command(inspect)
    main.add_command(control)


_register_operations()


def _register_metrics() -> None:
    """``metrics``: the Prometheus exporter (jobqueue/metrics/cli.py; it
    imports prometheus_client only when run)."""
    from .metrics.cli import metrics

    main.add_command(metrics)


_register_metrics()


def _register_events() -> None:
    """``events``: the live stream of events (jobqueue/events/cli.py)."""
    from .events.cli import events

    main.add_command(events)


_register_events()


def _register_dashboard() -> None:
    """``dashboard``: the web dashboard (jobqueue/dashboard/cli.py; it imports
    Starlette and uvicorn only when run)."""
    from .dashboard.cli import dashboard

    main.add_command(dashboard)


_register_dashboard()


@main.group()
def embedded() -> None:
    """The embedded PostgreSQL used when no DSN is configured."""


@embedded.command("stop")
@click.option(
    "--data-dir",
    default=None,
    help="Data directory (default: the -A app's, else $JOBQUEUE_DATA_DIR, else ./.jobqueue).",
)
@click.pass_obj
def embedded_stop(obj: Context, data_dir: str | None) -> None:
    """Stop the embedded server."""
    from pathlib import Path

    if data_dir:
        directory = Path(data_dir)
    elif obj.app_spec:
        directory = obj.app(database=False).conf.data_dir
    else:
        directory = Settings().data_dir
    click.echo("stopped" if emb.stop(directory) else "not running")


@main.command()
def demo() -> None:
    """Run the demo: a committed job runs, a rolled-back one never exists."""
    from .demo import run

    sys.exit(run())
