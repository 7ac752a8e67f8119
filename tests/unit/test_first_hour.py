"""What a new user meets in the first hour, without a database: DSNs in
SQLAlchemy's form or malformed, ``-A`` naming a task or a bare module."""

from __future__ import annotations

import enum
import sys
import textwrap
from pathlib import Path

import pytest

from jobqueue import JobQueue, loader
from jobqueue.cli_args import globals_first
from jobqueue.dsn import normalize
from jobqueue.exceptions import ConfigurationError
from jobqueue.options import check_queue, resolve
from jobqueue.redact import mask, redact
from jobqueue.schedules import Schedule
from jobqueue.worker.settings import WorkerSettings


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgresql+psycopg://u:pw@db:5432/app", "postgresql://u:pw@db:5432/app"),
        ("postgresql+psycopg2://u@db/app?sslmode=require", "postgresql://u@db/app?sslmode=require"),
        ("postgres://u@db/app", "postgresql://u@db/app"),
        ("POSTGRESQL+ASYNCPG://u@db/app", "postgresql://u@db/app"),
        (" postgresql://u@db/app ", "postgresql://u@db/app"),
        ("host=db dbname=app", "host=db dbname=app"),
    ],
)
def test_sqlalchemy_and_libpq_forms_are_accepted(given: str, expected: str) -> None:
    assert normalize(given) == expected


@pytest.mark.parametrize(
    "dsn, reason",
    [
        ("postgresql://u:se cret@db/app", "unexpected spaces"),
        ("postgresql+psycopg://u:secret@db/app?foo=bar", "invalid URI query parameter"),
        ("host='db password=secret", "unterminated quoted string"),
        ("password secret host=db", 'missing "="'),
        ("mysql://u:secret@db/app", "not a PostgreSQL URL"),
    ],
)
def test_a_malformed_dsn_is_one_line_without_its_password(dsn: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        normalize(dsn, "$JOBQUEUE_DSN")
    message = str(raised.value)
    assert reason in message and "$JOBQUEUE_DSN" in message
    assert "\n" not in message
    assert "secret" not in message and "se cret" not in message
    assert raised.value.__cause__ is None  # psycopg's message quotes the password


def test_a_malformed_dsn_fails_where_the_app_is_made() -> None:
    with pytest.raises(ConfigurationError, match=r"app\.conf\.dsn is not a valid DSN"):
        JobQueue("postgresql://u:se cret@db/app")


def test_redact_hides_the_password_of_a_dsn_that_does_not_parse() -> None:
    assert redact("postgresql://u:se cret@db/app") == "postgresql://u:***@db/app"
    assert mask('bad "secret"', "host=db password=secret") == 'bad "***"'


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``fh_proj_<n>`` with an app named ``app`` and a task ``add``;
    ``fh_two_<n>`` holds two apps, ``fh_other_<n>`` one app named ``queue``."""
    suffix = tmp_path.name.replace("-", "_")
    (tmp_path / f"fh_proj_{suffix}.py").write_text(
        textwrap.dedent(
            """
            from jobqueue import JobQueue

            app = JobQueue("postgresql://nobody@127.0.0.1:1/none")

            @app.task
            def add(x, y):
                return x + y
            """
        )
    )
    (tmp_path / f"fh_two_{suffix}.py").write_text(
        "from jobqueue import JobQueue\nfirst = JobQueue()\nsecond = JobQueue()\n"
    )
    (tmp_path / f"fh_other_{suffix}.py").write_text(
        "from jobqueue import JobQueue\nqueue = JobQueue()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield suffix
    for name in ("fh_proj", "fh_two", "fh_other"):
        sys.modules.pop(f"{name}_{suffix}", None)


def test_a_task_given_as_the_app_names_the_app(project: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        loader.load_app(f"fh_proj_{project}:add")
    assert str(raised.value) == (
        f"fh_proj_{project}:add is a task (fh_proj_{project}.add), not the app: "
        f"pass the JobQueue it belongs to, -A fh_proj_{project}:app"
    )


def test_a_missing_attribute_names_the_apps_there_are(project: str) -> None:
    with pytest.raises(ConfigurationError, match=f"pass -A fh_proj_{project}:app$"):
        loader.load_app(f"fh_proj_{project}:ap")


def test_a_bare_module_is_searched_for_its_app(project: str) -> None:
    module = sys.modules.get(f"fh_proj_{project}") or __import__(f"fh_proj_{project}")
    assert loader.load_app(f"fh_proj_{project}") is module.app
    other = __import__(f"fh_other_{project}")
    assert loader.load_app(f"fh_other_{project}") is other.queue  # the only JobQueue
    with pytest.raises(ConfigurationError, match="holds 2 JobQueue apps: pass one"):
        loader.load_app(f"fh_two_{project}")


# -- queue names ----------------------------------------------------------------


@pytest.mark.parametrize(
    "queue, error, words",
    [
        ("x,y", ValueError, "contains a comma"),
        ("", ValueError, "must not be empty"),
        (" email", ValueError, "whitespace"),
        ("email\n", ValueError, "whitespace"),
        ("q" * 256, ValueError, "at most 255"),
        (3, TypeError, "must be a string"),
    ],
)
def test_a_queue_no_worker_could_consume_is_refused(
    queue: object, error: type[Exception], words: str
) -> None:
    app = JobQueue("postgresql://nobody@127.0.0.1:1/none")  # refused before any connection

    @app.task(name="fh.add")
    def add(x: int, y: int) -> int:
        return x + y

    for attempt in (
        lambda: add.apply_async((1, 2), queue=queue),
        lambda: app.send_task("fh.add", (1, 2), queue=queue),
        lambda: app.enqueue_many(add, [(1, 2)], queue=queue),
        lambda: (add.s(1, 2) | add.s(3).set(queue=queue)).apply_async(),
        lambda: app.task(name="fh.other", queue=queue)(lambda: None),
    ):
        with pytest.raises(error, match=words):
            attempt()
    assert check_queue("q" * 255) == "q" * 255
    assert check_queue("inner space") == "inner space"  # -Q strips only the ends


def test_a_queue_named_by_a_string_enum_is_its_plain_string() -> None:
    """``class Queues(str, Enum)`` is a common way to name queues; it was
    refused as "begins or ends with whitespace" (the check's fast path takes
    only exact strings, and its slow path fell through to that message)."""

    class Queues(str, enum.Enum):
        EMAIL = "email"
        BAD = "a,b"

    assert type(check_queue(Queues.EMAIL)) is str
    assert check_queue(Queues.EMAIL) == "email"
    with pytest.raises(ValueError, match="contains a comma"):
        check_queue(Queues.BAD)
    app = JobQueue("postgresql://nobody@127.0.0.1:1/none", default_queue=Queues.EMAIL)

    @app.task(name="fh.mail", queue=Queues.EMAIL)
    def mail() -> None: ...

    assert type(mail.queue) is str and mail.queue == "email"
    assert app.conf.default_queue == "email"


def test_names_and_keys_given_by_enums_are_their_values() -> None:
    """Siblings of the queue above: a task named by a str Enum was registered
    under the member (its rate keys began "Names.MAIL:", while SQL keys its
    canvas steps by the stored name), and a fair key or a key function's
    value that was an Enum member was stored as "Tenant.ACME"."""

    class Names(str, enum.Enum):
        MAIL = "fh.mail"

    class Tenant(str, enum.Enum):
        ACME = "acme"

    class Shard(enum.IntEnum):
        TWO = 2

    app = JobQueue("postgresql://nobody@127.0.0.1:1/none")

    @app.task(name=Names.MAIL, rate_limit="5/s", rate_limit_key=lambda t, s: t)
    def mail(tenant: str, shard: int) -> None: ...

    @app.task(name="fh.shard", concurrency_limit=1, concurrency_key=lambda t, s: s)
    def shard(tenant: str, shard: int) -> None: ...

    assert type(mail.name) is str and mail.name == "fh.mail" and app.tasks["fh.mail"] is mail
    spec = resolve(app, mail.name, mail, (Tenant.ACME, Shard.TWO), {}, {"fair_key": Tenant.ACME})
    assert spec.rate_key == "fh.mail:acme"
    assert spec.fair_key == "acme"
    spec = resolve(app, shard.name, shard, (Tenant.ACME, Shard.TWO), {}, {})
    assert spec.concurrency_key == "fh.shard:2"


def test_routes_the_default_queue_and_schedules_are_checked_where_they_come_from() -> None:
    app = JobQueue("postgresql://nobody@127.0.0.1:1/none", task_routes={"fh.*": "a,b"})

    @app.task(name="fh.add")
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ValueError, match=r"task_routes' queue for 'fh.add' 'a,b'"):
        add.delay(1, 2)
    app.conf.task_routes = None
    app.conf.default_queue = ""
    with pytest.raises(ValueError, match=r"app\.conf\.default_queue must not be empty"):
        add.delay(1, 2)
    with pytest.raises(ValueError, match=r"beat_schedule\['tick'\]'s queue"):
        Schedule.from_entry("tick", {"task": "fh.add", "schedule": 60, "options": {"queue": 7}})
    with pytest.raises(ValueError, match="a worker's queue 'x ' begins or ends"):
        WorkerSettings(queues=("x ",)).resolve(app)


def test_periodic_below_task_says_to_put_it_above() -> None:
    app = JobQueue("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(TypeError, match=r"got 'report': put it above @app\.task"):

        @app.task
        @app.periodic(60)
        def report() -> None: ...

    @app.periodic(60)
    @app.task
    def cleanup() -> None: ...

    assert app.conf.beat_schedule[cleanup.name]["task"] == cleanup.name


@pytest.mark.parametrize(
    "given, read",
    [
        ("worker -A p:app -c 2", "-A p:app worker -c 2"),
        ("db upgrade --app=p:app head", "--app=p:app db upgrade head"),
        ("--dsn D stats --schema s --embedded", "--dsn D --schema s --embedded stats"),
        ("worker -Ap:app", "-Ap:app worker"),
        ("db current -- -A p:app", "db current -- -A p:app"),  # after --: arguments
        ("--help", "--help"),
        ("-A p:app worker", "-A p:app worker"),
    ],
)
def test_global_options_after_the_command_are_read_before_it(given: str, read: str) -> None:
    assert globals_first(given.split()) == read.split()
