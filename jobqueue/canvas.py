"""Canvas: signatures and the workflows built from them (Celery's names).

``Signature`` is a task call not yet made; ``chain``, ``group`` and ``chord``
combine them. Enqueueing a canvas *freezes* it: every job gets its id up
front, links become JSON in their parent's options, and the whole canvas is
written by one SQL call (``spawn``) in one transaction. From then on the
database drives it: the transaction that finishes a job also creates what
comes next (see migration 0003), so nothing polls and nothing can stall.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .current import current_app
from .ids import new_id
from .options import CALL_OPTIONS, INHERITED, SIGNATURE_OPTIONS, resolve
from .serialization import dumps, loads

if TYPE_CHECKING:
    from .app import JobQueue
    from .options import JobSpec
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
            raise TypeError(f"unknown signature option(s) {sorted(unknown)}")
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
        sig = self.clone(args, kwargs, **options) if (args or kwargs or options) else self
        sig, root = _with_root(sig)
        app = sig._resolve_app()
        if app.conf.eager:  # run here and now instead (jobqueue.eager): no transaction
            from .eager.run import run_canvas

            return run_canvas(app, sig, root)
        freezer = Freezer(app, root)
        tree, result = freezer.freeze(sig, member=None)
        app.store.insert_canvas(dumps(tree), dumps(freezer.groups), root, connection)
        for spec, step_args, step_kwargs in freezer.specs:
            app._published(spec, step_args, step_kwargs)
        return result

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
        sig, root = _with_root(sig)
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


def _with_root(sig: Signature) -> tuple[Signature, str]:
    """The workflow's root id: its first job's id when it starts with a task
    (as in Celery), else a fresh id naming the workflow."""
    if type(sig) is Signature:
        task_id = sig.options.get("task_id")
        return (sig, task_id) if task_id else (sig.clone(task_id=(task_id := new_id())), task_id)
    if isinstance(sig, chain):
        first, root = _with_root(sig.tasks[0])
        copy = sig._copy()
        assert isinstance(copy, chain)
        copy.tasks = [first, *sig.tasks[1:]]
        return copy, root
    return sig, new_id()


class Freezer:
    """Turns a signature tree into the JSON ``spawn`` understands, choosing
    every id, and builds the matching result objects."""

    def __init__(self, app: JobQueue, root: str) -> None:
        self.app = app
        self.root = root
        self.groups: list[dict[str, Any]] = []
        # Every step's job, for after_task_publish once the canvas is written.
        self.specs: list[tuple[JobSpec, Sequence[Any], Mapping[str, Any]]] = []

    def freeze(
        self,
        sig: Signature,
        member: dict[str, Any] | None,
        extra_links: Sequence[dict[str, Any]] = (),
        errbacks: Sequence[dict[str, Any]] = (),
        inherit: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """``member``: group/chord membership for the job that ends ``sig``;
        ``extra_links``: what runs after it; ``errbacks``: inherited error
        callbacks; ``inherit``: option defaults from enclosing signatures."""
        inherit = {**(inherit or {}), **{k: v for k, v in sig.options.items() if k in INHERITED}}
        if isinstance(sig, group) and (member is not None or extra_links):
            # One result standing for a list: collect the group with a chord whose
            # body (an identity) carries the membership and what follows. The
            # group's own error callbacks are added once, as the chord's header.
            collect = Signature("jobqueue.identity", app=self.app)
            return self._chord(chord(sig, collect), member, extra_links, errbacks, inherit)
        errbacks = [*errbacks, *self.callbacks(sig, "link_error")]
        if type(sig) is Signature:
            return self._task(sig, member, extra_links, errbacks, inherit)
        if isinstance(sig, group):
            return self._group(sig, errbacks, inherit)
        links = [*self.callbacks(sig, "link"), *extra_links]  # after the last step
        if isinstance(sig, chain):
            return self._chain(sig, member, links, errbacks, inherit)
        if isinstance(sig, chord):
            return self._chord(sig, member, links, errbacks, inherit)
        raise TypeError(f"cannot enqueue {sig!r}")

    def callbacks(self, sig: Signature, key: str) -> list[dict[str, Any]]:
        return [self.freeze(s, None)[0] for s in sig.options.get(key, [])]

    def _task(
        self,
        sig: Signature,
        member: dict[str, Any] | None,
        extra_links: Sequence[dict[str, Any]],
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
    ) -> tuple[dict[str, Any], Any]:
        from .result import AsyncResult

        opts = {**inherit, **sig.options}
        call = {k: v for k, v in opts.items() if k in CALL_OPTIONS and v is not None}
        task = self.app.tasks.get(sig.task_name)
        spec = resolve(self.app, sig.task_name, task, sig.args, sig.kwargs, call, relative=True)
        # Each step is published now, in the caller's context (a trace's, say),
        # though the database creates later steps only when their turn comes.
        spec = self.app._publishing(spec, sig.args, sig.kwargs)
        self.specs.append((spec, sig.args, sig.kwargs))
        options: dict[str, Any] = loads(spec.options)
        links = [*self.callbacks(sig, "link"), *extra_links]
        if links:
            options["link"] = links
        if errbacks:
            options["link_error"] = list(errbacks)
        if member and member.get("chord"):
            options["chord"] = member["chord"]
        tree = {
            "type": "task",
            "id": spec.id,
            "task": sig.task_name,
            "args": loads(spec.args),
            "kwargs": loads(spec.kwargs),
            "immutable": sig.immutable,
            "options": options,
            "queue": spec.queue,
            "priority": spec.priority,
            "countdown": spec.countdown,
            "expires_in": spec.expires_in,
        }
        if member:
            tree["group_id"], tree["group_index"] = member["group_id"], member["group_index"]
        return tree, AsyncResult(spec.id, app=self.app)

    def _chain(
        self,
        sig: chain,
        member: dict[str, Any] | None,
        extra_links: Sequence[dict[str, Any]],
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
    ) -> tuple[dict[str, Any], Any]:
        # Fold from the end: each step links to the rest, a group followed by
        # more steps becomes a chord, and the last step carries the membership.
        tail, result = self.freeze(sig.tasks[-1], member, extra_links, errbacks, inherit)
        for step in reversed(sig.tasks[:-1]):
            if isinstance(step, group):
                tail = self._chord_tree(step, tail, errbacks, inherit)
            else:
                tail, _ = self.freeze(step, None, [tail], errbacks, inherit)
        return tail, result

    def _group(
        self,
        sig: group,
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
        chord_id: str | None = None,
    ) -> tuple[dict[str, Any], Any]:
        from .result import GroupResult

        group_id = chord_id or new_id()
        members, results = [], []
        for index, item in enumerate(sig.tasks):
            membership = {"group_id": group_id, "group_index": index, "chord": chord_id}
            # A group's own links run after each member, as in Celery (fresh ids each).
            links = self.callbacks(sig, "link")
            tree, result = self.freeze(item, membership, links, errbacks, inherit)
            members.append(tree)
            results.append(result)
        self.groups.append({"id": group_id, "members": [str(r.id) for r in results]})
        return {"type": "group", "id": group_id, "tasks": members}, GroupResult(
            group_id, results, app=self.app
        )

    def _chord(
        self,
        sig: chord,
        member: dict[str, Any] | None,
        extra_links: Sequence[dict[str, Any]],
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
    ) -> tuple[dict[str, Any], Any]:
        if sig.body is None:
            raise ValueError("a chord needs a body: chord(header)(body) or chord(header, body)")
        body, result = self.freeze(sig.body, member, extra_links, errbacks, inherit)
        return self._chord_tree(sig.header, body, errbacks, inherit), result

    def _chord_tree(
        self,
        header: group,
        body: dict[str, Any],
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
    ) -> dict[str, Any]:
        chord_id = new_id()
        errbacks = [*errbacks, *self.callbacks(header, "link_error")]
        inherit = {**inherit, **{k: v for k, v in header.options.items() if k in INHERITED}}
        tree, _ = self._group(header, errbacks, inherit, chord_id=chord_id)
        return {"type": "chord", "id": chord_id, "header": tree["tasks"], "body": body}
