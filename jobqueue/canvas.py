"""Canvas: signatures and the workflows built from them (Celery's names).

``Signature`` is a task call not yet made; ``chain``, ``group`` and ``chord``
combine them. Enqueueing a canvas *freezes* it (``freezer``): every job gets
its id up front, links become JSON in their parent's options, and the whole
canvas is written by one SQL call (``spawn``) in one transaction. From then on
the database drives it: the transaction that finishes a job also creates what
comes next (see migration 0003), so nothing polls and nothing can stall.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .current import current_app
from .options import SIGNATURE_OPTIONS, unknown_options
from .serialization import dumps

if TYPE_CHECKING:
    from .app import JobQueue
    from .tasks import Task


class Signature:
    """A task call with its arguments and options, to be enqueued later."""

    def __init__(
        self,
        task: Task[Any, Any] | str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        app: JobQueue | None = None,
        immutable: bool = False,
        **options: Any,
    ) -> None:
        from .tasks import Task

        self.app: JobQueue | None
        if isinstance(task, Task):
            self.task_name, self.app = task.name, app or task.app
        else:
            self.task_name, self.app = str(task), app
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        self.options: dict[str, Any] = {}
        self.set(**options)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task_name}{'.si' if self.immutable else '.s'}({', '.join(parts)})"

    # -- building ------------------------------------------------------------

    def set(self, **options: Any) -> Signature:
        unknown = set(options) - SIGNATURE_OPTIONS
        if unknown:
            raise unknown_options(unknown, "signature")
        for key in ("link", "link_error"):
            if key in options:
                value = options.pop(key)
                for sig in value if isinstance(value, (list, tuple)) else [value]:
                    self._add_callback(key, sig)
        self.options.update(options)
        return self

    def clone(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A copy; unless immutable, ``args`` are prepended and ``kwargs`` merged."""
        copy = self._copy()
        if not self.immutable:
            copy.args = tuple(args) + self.args
            copy.kwargs = {**self.kwargs, **(kwargs or {})}
        copy.set(**options)
        return copy

    def _copy(self) -> Signature:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.options = {k: (list(v) if isinstance(v, list) else v) for k, v in self.options.items()}
        return copy

    def link(self, callback: Signature) -> Signature:
        """Enqueue ``callback`` with this job's result when it succeeds."""
        self._add_callback("link", callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Enqueue ``errback`` with this job's id if it fails (after its retries)."""
        self._add_callback("link_error", errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        self.link_error(errback)
        return self

    def _add_callback(self, key: str, sig: Signature) -> None:
        if not isinstance(sig, Signature):
            raise TypeError(f"{key} must be a signature, got {sig!r}")
        self.options.setdefault(key, []).append(sig)

    def __or__(self, other: Signature) -> Signature:
        if isinstance(other, Signature):
            return chain(self, other)
        return NotImplemented

    # -- ids ---------------------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The id its job will have (its ``task_id`` option): set by ``freeze()``
        or given; None until then."""
        task_id = self.options.get("task_id")
        return None if task_id is None else str(task_id)

    def freeze(self, _id: str | None = None, **_ignored: Any) -> Any:
        """Choose the ids of every job this signature will make, now, without
        enqueueing it; returns the result ``apply_async()`` will return (an
        ``AsyncResult``, or a ``GroupResult`` for a group), so its id can be
        stored or passed on first. ``_id``: the id to give the job whose
        result that is. Celery's other keywords (``group_id``, ``chord``,
        ``root_id``...) are accepted and ignored: the enqueue decides those.
        The ids are kept in the signature (and in its copies): enqueue it once."""
        assign_ids(self, _id)
        app = self._resolve_app()
        sig, root = with_root(self)
        return Freezer(app, root, publish=False).freeze(sig, member=None)[1]

    # -- enqueueing ------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        connection: Any = None,
        **options: Any,
    ) -> Any:
        """Enqueue the whole canvas in one transaction (``connection=`` to join yours);
        returns an ``AsyncResult`` or, for a group, a ``GroupResult``."""
        if self._resolve_app().conf.eager:  # run here and now instead (jobqueue.eager)
            from .eager.run import run_canvas

            sig = self.clone(args, kwargs, **options) if (args or kwargs or options) else self
            sig, root = with_root(sig)
            return run_canvas(sig._resolve_app(), sig, root)
        freezer, canvas, result = self._frozen(args, kwargs, options)
        freezer.app.store.insert_canvas(canvas, dumps(freezer.groups), freezer.root, connection)
        freezer.published()
        return result

    async def aapply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        connection: Any = None,
        **options: Any,
    ) -> Any:
        """``apply_async`` for async code (``jobqueue.aio``): ``connection=``
        an async connection whose transaction the canvas joins."""
        return await self._resolve_app().aio.apply_canvas(self, args, kwargs, connection, options)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        return await self.aapply_async(args, kwargs)

    def _frozen(
        self, args: Sequence[Any], kwargs: Mapping[str, Any] | None, options: Mapping[str, Any]
    ) -> tuple[Freezer, str, Any]:
        """``apply_async``'s first step (``jobqueue.aio`` shares it): every
        step resolved and published; the freezer, the canvas (JSON) and the result."""
        sig = self.clone(args, kwargs, **options) if (args or kwargs or options) else self
        sig, root = with_root(sig)
        freezer = Freezer(sig._resolve_app(), root)
        tree, result = freezer.freeze(sig, member=None)
        return freezer, dumps(tree), result

    def apply(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        throw: bool | None = None,
        **options: Any,
    ) -> Any:
        """Run the whole canvas here and now, as workers would, with no database
        (``jobqueue.eager``); an ``EagerResult`` or, for a group, an
        ``EagerGroupResult``. ``throw`` (default ``app.conf.eager_propagates``):
        raise the first failed job's exception instead."""
        from .eager.run import run_canvas

        sig = self.clone(args, kwargs, **options) if (args or kwargs or options) else self
        sig, root = with_root(sig)
        return run_canvas(sig._resolve_app(), sig, root, throw)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A task signature runs the task here and now, as in Celery; chains,
        groups and chords are enqueued."""
        app = self._resolve_app()
        task = app.tasks[self.task_name]
        call_args = self.args if self.immutable else tuple(args) + self.args
        return task(*call_args, **{**self.kwargs, **kwargs})

    def _resolve_app(self) -> JobQueue:
        if self.app is not None:
            return self.app
        return current_app()

    # What the freezer needs to know about each kind of signature.
    def _children(self) -> list[Signature]:
        return []

    def _as_dict(self) -> dict[str, Any]:
        """The signature as a task's stored result (serialization.dump_result;
        nested signatures are encoded in turn)."""
        return {
            "kind": "task",
            "task": self.task_name,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "options": self.options,
            "immutable": self.immutable,
        }


class chain(Signature):
    """Run signatures one after another, each result becoming the next one's
    first argument. ``a | b | c`` builds one too."""

    def __init__(
        self, *tasks: Signature | Iterable[Signature], app: JobQueue | None = None, **options: Any
    ) -> None:
        flat: list[Signature] = []
        for item in _flatten_args(tasks):
            nested: list[Signature] = item.tasks if isinstance(item, chain) else []
            flat.extend(nested if nested and not item.options else [item])
        if not flat:
            raise ValueError("a chain needs at least one signature")
        self.tasks: list[Signature] = flat
        Signature.__init__(self, "jobqueue.chain", app=app or _first_app(flat))
        self.set(**options)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)

    @property
    def id(self) -> str | None:
        """The id of its last job (the chain's result), once frozen."""
        return self.tasks[-1].id

    def _as_dict(self) -> dict[str, Any]:
        return {"kind": "chain", "tasks": self.tasks, "options": self.options}

    def clone(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        copy = self._copy()
        assert isinstance(copy, chain)
        copy.tasks = [self.tasks[0].clone(args, kwargs), *self.tasks[1:]]
        copy.set(**options)
        return copy

    def __or__(self, other: Signature) -> Signature:
        if isinstance(other, Signature):
            return chain(*self.tasks, other) if not self.options else chain(self, other)
        return NotImplemented

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)


class group(Signature):
    """Run signatures in parallel; the result lists theirs in the same order."""

    def __init__(
        self, *tasks: Signature | Iterable[Signature], app: JobQueue | None = None, **options: Any
    ) -> None:
        flat: list[Signature] = []
        for item in _flatten_args(tasks):
            # A group inside a group adds its members (as Celery does).
            nested: list[Signature] = item.tasks if isinstance(item, group) else []
            flat.extend(nested if nested and not item.options else [item])
        self.tasks: list[Signature] = flat
        Signature.__init__(self, "jobqueue.group", app=app or _first_app(flat))
        self.set(**options)

    def __repr__(self) -> str:
        return f"group({self.tasks!r})"

    @property
    def id(self) -> str | None:
        """The group's id (its ``GroupResult``'s), once frozen."""
        frozen = self.__dict__.get("_frozen_id")
        return None if frozen is None else str(frozen)

    def _as_dict(self) -> dict[str, Any]:
        return {"kind": "group", "tasks": self.tasks, "options": self.options}

    def clone(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        copy = self._copy()
        assert isinstance(copy, group)
        copy.tasks = [t.clone(args, kwargs) for t in self.tasks]
        copy.set(**options)
        return copy

    def __or__(self, other: Signature) -> Signature:
        if isinstance(other, Signature):
            return chord(self, other)  # a group followed by anything is a chord
        return NotImplemented

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)


class chord(Signature):
    """A group (the header) whose ordered results are passed to ``body``."""

    def __init__(
        self,
        header: Signature | Iterable[Signature],
        body: Signature | None = None,
        app: JobQueue | None = None,
        **options: Any,
    ) -> None:
        self.header = header if isinstance(header, group) else group(header, app=app)
        self.body = body
        Signature.__init__(
            self, "jobqueue.chord", app=app or self.header.app or (body.app if body else None)
        )
        self.set(**options)

    def __repr__(self) -> str:
        return f"chord({self.header.tasks!r}, {self.body!r})"

    @property
    def id(self) -> str | None:
        """The id of its body's job (the chord's result), once frozen."""
        return None if self.body is None else self.body.id

    def _as_dict(self) -> dict[str, Any]:
        return {"kind": "chord", "header": self.header, "body": self.body, "options": self.options}

    def clone(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        copy = self._copy()
        assert isinstance(copy, chord)
        header = self.header.clone(args, kwargs)
        assert isinstance(header, group)
        copy.header = header
        copy.set(**options)
        return copy

    def __call__(self, body: Signature | None = None, **options: Any) -> Any:
        """``chord(header)(body)`` enqueues the chord and returns the body's result."""
        sig: Signature = self
        if body is not None:
            copy = self._copy()
            assert isinstance(copy, chord)
            copy.body = body
            sig = copy
        return sig.apply_async(**options)


def signature(
    task: Task[Any, Any] | str | Signature,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Signature:
    if isinstance(task, Signature):
        return task.clone(args, kwargs, **options)
    return Signature(task, args, kwargs, **options)


def signature_from_dict(fields: Mapping[str, Any], app: JobQueue | None = None) -> Signature:
    """A signature from its stored form (``Signature._as_dict``, with nested
    signatures already rebuilt): what a task that returned one gives back."""
    kind, options = fields.get("kind"), dict(fields.get("options") or {})
    options.pop("link", None), options.pop("link_error", None)  # set below, as signatures
    sig: Signature
    if kind == "chain":
        sig = chain(*fields["tasks"], app=app, **options)
    elif kind == "group":
        sig = group(*fields["tasks"], app=app, **options)
    elif kind == "chord":
        sig = chord(fields["header"], fields["body"], app=app, **options)
    else:
        sig = Signature(
            str(fields["task"]),
            fields.get("args") or (),
            fields.get("kwargs"),
            app=app,
            immutable=bool(fields.get("immutable")),
            **options,
        )
    stored = fields.get("options") or {}
    for callback in stored.get("link") or ():
        sig.link(callback)
    for errback in stored.get("link_error") or ():
        sig.link_error(errback)
    return sig


def chunks(task: Task[Any, Any], items: Iterable[Sequence[Any]], size: int) -> Chunks:
    return Chunks(task, items, size)


class Chunks:
    """``task.chunks(items, n)``: the items split into jobs of ``n`` calls each."""

    def __init__(self, task: Task[Any, Any], items: Iterable[Sequence[Any]], size: int) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"chunk size must be a positive integer, got {size!r}")
        self.task, self.items, self.size = task, [tuple(i) for i in items], size

    def group(self) -> group:
        it = iter(self.items)
        parts = iter(lambda: list(itertools.islice(it, self.size)), [])
        return group([starmap_signature(self.task, part) for part in parts], app=self.task.app)

    def apply_async(self, connection: Any = None, **options: Any) -> Any:
        return self.group().apply_async(connection=connection, **options)

    def delay(self) -> Any:
        return self.apply_async()

    __call__ = delay

    async def aapply_async(self, connection: Any = None, **options: Any) -> Any:
        return await self.group().aapply_async(connection=connection, **options)


def map_signature(task: Task[Any, Any], items: Iterable[Any]) -> Signature:
    return Signature("jobqueue.map", (task.name, list(items)), app=task.app)


def starmap_signature(task: Task[Any, Any], items: Iterable[Sequence[Any]]) -> Signature:
    return Signature("jobqueue.starmap", (task.name, [list(i) for i in items]), app=task.app)


def _flatten_args(items: tuple[Any, ...]) -> list[Signature]:
    if len(items) == 1 and not isinstance(items[0], Signature):
        items = tuple(items[0])
    for item in items:
        if not isinstance(item, Signature):
            raise TypeError(f"expected a signature, got {item!r}")
    return list(items)


def _first_app(sigs: list[Signature]) -> JobQueue | None:
    return next((s.app for s in sigs if s.app is not None), None)


# The freezer (ids, the JSON spawn reads, the result objects) is a module of
# its own; imported last, as it builds on the classes above.
from .freezer import Freezer, assign_ids, with_root  # noqa: E402
