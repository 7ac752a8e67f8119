"""Tasks for the Celery-parity tests (``tests.apps_parity:app`` in the worker).

Kept apart from ``tests.apps`` so these tasks (class-based ones, tasks that
reject or return results and signatures) do not change what the other tests'
worker registers.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from jobqueue import AsyncResult, JobQueue, Reject, Signature, Task, group
from tests.apps import CustomError


class PairError(Exception):
    """An exception whose constructor needs two arguments: a ChordError cannot
    also be one (it is built from a message alone)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code, self.detail = code, detail


class Journaled(Task[Any, Any]):
    """A base whose hooks note each call in the file named by the job's first
    argument (hooks run in the worker: the test reads the file)."""

    def _note(self, args: list[Any], line: str) -> None:
        with open(args[0], "a") as journal:
            journal.write(line + "\n")

    def before_start(self, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        self._note(args, f"before_start {task_id == self.request.id}")

    def on_success(
        self, retval: Any, task_id: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        self._note(args, f"on_success {retval}")

    def on_retry(
        self, exc: BaseException, task_id: str, args: list[Any], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        self._note(args, f"on_retry {type(exc).__name__} {einfo is not None}")

    def on_failure(
        self, exc: BaseException, task_id: str, args: list[Any], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        self._note(args, f"on_failure {type(exc).__name__} {einfo is not None}")

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        self._note(args, f"after_return {status} {retval!r}")


class BrokenHooks(Task[Any, Any]):
    """Hooks that raise: logged, the job's outcome stands."""

    def before_start(self, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        raise RuntimeError("before_start is broken")

    def on_success(
        self, retval: Any, task_id: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        raise RuntimeError("on_success is broken")


class Defaults(Task[Any, Any]):
    """Class attributes as defaults for the tasks made with it."""

    queue = "p-defaults"
    priority = 3
    max_retries = 7


def build(app: JobQueue) -> SimpleNamespace:
    @app.task(name="p.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="p.tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    @app.task(name="p.raise_custom", max_retries=0)
    def raise_custom(message: str) -> None:
        raise CustomError(message)

    @app.task(name="p.raise_pair", max_retries=0)
    def raise_pair(code: int) -> None:
        raise PairError(code, "paired")

    @app.task(name="p.raise_value", max_retries=0)
    def raise_value(message: str) -> None:
        raise ValueError(message)

    # -- Reject ------------------------------------------------------------------

    @app.task(name="p.refuse", autoretry_for=(Exception,))  # Reject is never autoretried
    def refuse(reason: str) -> None:
        raise Reject(reason, requeue=False)

    @app.task(name="p.requeue_once", bind=True)
    def requeue_once(self: Any) -> int:
        if self.request.retries == 0:
            raise Reject("not yet", requeue=True)
        return self.request.retries

    @app.task(name="p.requeue_always", max_retries=2)
    def requeue_always() -> None:
        raise Reject("never", requeue=True)

    @app.task(name="p.delivery", bind=True)
    def delivery(self: Any, fail_first: bool = False) -> dict[str, Any]:
        if fail_first and self.request.retries == 0:
            raise self.retry(countdown=0)
        return dict(self.request.delivery_info)

    @app.task(name="p.quiet", ignore_result=True)
    def quiet() -> int:
        return 42

    @app.task(name="p.untyped", typing=False)
    def untyped(x: int) -> int:
        return x

    @app.task(name="p.bound", bind=True)
    def bound(self: Any, x: int, y: int = 0) -> int:
        return x + y

    @app.task(name="p.keywords")
    def keywords(x: int, *rest: int, scale: int = 1, **extra: Any) -> int:
        return (x + sum(rest)) * scale

    # -- returning results and signatures -------------------------------------------------

    @app.task(name="p.returns_result")
    def returns_result(x: int) -> AsyncResult:
        return app.tasks["p.add"].delay(x, x)

    @app.task(name="p.returns_group")
    def returns_group() -> Any:
        return group(app.tasks["p.add"].s(1, 1), app.tasks["p.add"].s(2, 2)).apply_async()

    @app.task(name="p.returns_signature")
    def returns_signature() -> Signature:
        add = app.tasks["p.add"]
        return (add.s(2, 2) | add.s(3)).set(queue="default")

    @app.task(name="p.returns_mixed")
    def returns_mixed(x: int) -> dict[str, Any]:
        return {
            "user": {"__jobqueue__": "result", "id": "not one of ours"},
            "result": app.tasks["p.add"].delay(x, 1),
            "list": [1, {"__jobqueue__": "tagged", "value": 2}],
        }

    @app.task(name="p.returns_user_tag")
    def returns_user_tag() -> dict[str, Any]:
        return {"__jobqueue__": "tagged", "value": {"__jobqueue__": "result", "id": "x"}}

    @app.task(name="p.describe")
    def describe(value: Any) -> list[str]:
        values = value if isinstance(value, list) else [value]
        return [f"{type(v).__name__}:{v.get(timeout=30)}" for v in values]

    # -- class-based tasks ----------------------------------------------------------

    class Multiply(app.Task):  # type: ignore[name-defined,misc]
        name = "p.multiply"
        max_retries = 2

        def run(self, x: int, y: int) -> int:
            return x * y

    class ClassFlaky(app.Task):  # type: ignore[name-defined,misc]
        """Class attributes set its retry policy."""

        name = "p.class_flaky"
        autoretry_for = (OSError,)
        max_retries = 3
        retry_backoff = 0.1
        retry_jitter = False

        def run(self, failures: int) -> int:
            if self.request.retries < failures:
                raise OSError("not yet")
            return int(self.request.retries)

    app.register_task(Multiply())
    app.register_task(ClassFlaky)  # the class: made with this app

    @app.task(
        name="p.journaled",
        base=Journaled,
        autoretry_for=(OSError,),
        max_retries=1,
        retry_backoff=0.1,
        retry_jitter=False,
    )
    def journaled(path: str, mode: str) -> int:
        if mode == "fail":
            raise OSError("always")
        return 7

    @app.task(name="p.broken_hooks", base=BrokenHooks)
    def broken_hooks() -> str:
        return "fine"

    @app.task(name="p.defaults", base=Defaults)
    def defaults() -> str:
        return "defaults"

    @app.task(name="p.overridden", base=Defaults, queue="default")
    def overridden() -> str:
        return "overridden"

    return SimpleNamespace(app=app, **{k.removeprefix("p."): v for k, v in app.tasks.items()})


app = JobQueue()
tasks = build(app)
