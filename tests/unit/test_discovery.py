"""app.autodiscover_tasks() and @shared_task, without Django (no database:
nothing here enqueues)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from jobqueue import ConfigurationError, JobQueue, discovery, shared, shared_task


@pytest.fixture(autouse=True)
def fresh_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's shared tasks and waiting discoveries only."""
    monkeypatch.setattr(shared, "_shared", [])
    monkeypatch.setattr(discovery, "_source", None)
    monkeypatch.setattr(discovery, "_waiting", [])


def _package(root: Path, modules: dict[str, str]) -> str:
    """A package of new name under ``root`` with the given modules; its name."""
    name = f"pkg_{secrets.token_hex(4)}"
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for module, source in modules.items():
        (root / name / f"{module}.py").write_text(source)
    return name


SHARED_SOURCE = """
from jobqueue import shared_task

@shared_task(queue="mail")
def send(to):
    return f"sent to {to}"
"""


def test_autodiscover_imports_each_packages_tasks_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    with_tasks = _package(tmp_path, {"tasks": SHARED_SOURCE})
    without = _package(tmp_path, {"models": ""})
    other_name = _package(tmp_path, {"jobs": SHARED_SOURCE})
    app = JobQueue("postgresql://unused/none")
    app.autodiscover_tasks([with_tasks, without])
    assert f"{with_tasks}.tasks.send" in app.tasks
    assert app.tasks[f"{with_tasks}.tasks.send"].queue == "mail"
    app.autodiscover_tasks(lambda: [other_name], related_name="jobs")
    assert f"{other_name}.jobs.send" in app.tasks


def test_autodiscover_of_a_missing_package_or_a_broken_module_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    app = JobQueue("postgresql://unused/none")
    with pytest.raises(ConfigurationError, match="cannot import package 'no_such_pkg_x'"):
        app.autodiscover_tasks(["no_such_pkg_x"])
    broken = _package(tmp_path, {"tasks": "import no_such_module_y\n"})
    with pytest.raises(ModuleNotFoundError, match="no_such_module_y"):
        app.autodiscover_tasks([broken])


def test_autodiscover_without_packages_waits_for_django_and_a_worker_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    package = _package(tmp_path, {"tasks": SHARED_SOURCE})
    app = JobQueue("postgresql://unused/none")
    app.autodiscover_tasks()
    assert f"{package}.tasks.send" not in app.tasks  # no framework's packages yet
    with pytest.raises(ConfigurationError, match="Django was never set up"):
        discovery.check_settled(app)
    discovery.provide_packages(lambda: [package])  # what contrib.django does when ready
    assert f"{package}.tasks.send" in app.tasks
    discovery.check_settled(app)
    later = JobQueue("postgresql://unused/none")
    later.autodiscover_tasks()  # the packages are known: at once
    assert f"{package}.tasks.send" in later.tasks


def test_shared_task_is_registered_with_every_app_and_follows_the_current_one() -> None:
    before = JobQueue("postgresql://unused/before")

    @shared_task
    def double(x: int) -> int:
        return 2 * x

    name = f"{__name__}.{double.__qualname__}"
    assert double.name == name
    assert name in before.tasks
    assert double.task is before.tasks[name]
    after = JobQueue("postgresql://unused/after")  # made later: gets it too
    assert name in after.tasks
    assert double.task is after.tasks[name]  # the current app's
    assert double(4) == 8  # called: runs here
    assert double.s(1).task_name == name
    assert double.max_retries == after.tasks[name].max_retries  # the task's attributes


def test_shared_task_options_and_an_apps_own_task_of_that_name() -> None:
    app = JobQueue("postgresql://unused/none")

    @app.task(name="report")
    def own() -> str:
        return "own"

    @shared_task(name="report", bind=True, max_retries=1)
    def report(self: object) -> str:
        return "shared"

    assert app.tasks["report"].fn is own.fn  # the app's own wins
    fresh = JobQueue("postgresql://unused/none")
    assert fresh.tasks["report"].bind and fresh.tasks["report"].max_retries == 1
    with pytest.raises(TypeError, match=r"@shared_task got unknown option\(s\) \['retries'\]"):
        shared_task(retries=3)


def test_shared_task_takes_what_app_task_takes() -> None:
    """Celery's acks_late and a base class, as @app.task takes them (a
    TypeError before: the option check knew only jobqueue's own names)."""
    from jobqueue import Task

    class Audited(Task):  # type: ignore[type-arg]
        max_retries = 7

    @shared_task(acks_late=False, base=Audited)
    def once() -> None: ...

    app = JobQueue("postgresql://unused/none")
    task = app.tasks[once.name]
    assert isinstance(task, Audited)
    assert task.max_retries == 7 and task.reject_on_worker_lost is False
