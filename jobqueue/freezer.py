"""Freezing a canvas: every id chosen up front, the JSON the SQL ``spawn``
reads, and the result objects the caller gets (with their parents), for
``Signature.apply_async()`` and ``Signature.freeze()``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .canvas import Signature, chain, chord, group
from .ids import check_id, new_id
from .options import CALL_OPTIONS, INHERITED, resolve
from .serialization import dumps, loads

if TYPE_CHECKING:
    from .app import JobQueue
    from .options import JobSpec
    from .request import Request


def assign_ids(sig: Signature, job_id: str | None = None) -> None:
    """Fix the ids ``sig`` will give its jobs (``freeze``): a task signature's
    ``task_id``, a group's id (its chord's, when it is a header) and the id of
    the job that collects it when it is a step; the last job's is ``job_id``
    if given. Ids already fixed stay."""
    if type(sig) is Signature:
        if job_id is not None:
            sig.options["task_id"] = check_id(job_id, "task_id")
        elif sig.options.get("task_id") is None:
            sig.options["task_id"] = new_id()
    elif isinstance(sig, chain):
        for step in sig.tasks[:-1]:
            assign_ids(step)
        assign_ids(sig.tasks[-1], job_id)
    elif isinstance(sig, group):
        sig.__dict__.setdefault("_frozen_id", job_id or new_id())
        sig.__dict__.setdefault("_collect_id", new_id())
        for member in sig.tasks:
            assign_ids(member)
    elif isinstance(sig, chord):
        assign_ids(sig.header)
        if sig.body is not None:
            assign_ids(sig.body, job_id)


def with_root(sig: Signature) -> tuple[Signature, str]:
    """The workflow's root id: its first job's id when it starts with a task
    (as in Celery), else a fresh id naming the workflow."""
    if type(sig) is Signature:
        task_id = sig.options.get("task_id")
        return (sig, task_id) if task_id else (sig.clone(task_id=(task_id := new_id())), task_id)
    if isinstance(sig, chain):
        first, root = with_root(sig.tasks[0])
        copy = sig._copy()
        assert isinstance(copy, chain)
        copy.tasks = [first, *sig.tasks[1:]]
        return copy, root
    return sig, new_id()


class Freezer:
    """Turns a signature tree into the JSON ``spawn`` understands, choosing
    every id, and builds the matching result objects."""

    def __init__(self, app: JobQueue, root: str, publish: bool = True) -> None:
        self.app = app
        self.root = root
        self.publish = publish  # False: ``freeze()``, nothing will be written now
        self.groups: list[dict[str, Any]] = []
        # Every step's job, for after_task_publish once the canvas is written.
        self.specs: list[tuple[JobSpec, Sequence[Any], Mapping[str, Any]]] = []
        self._decoded: dict[str, dict[str, Any]] = {}  # stored options' texts, decoded

    def published(self) -> None:
        """The canvas was written: ``after_task_publish`` for each step."""
        for spec, step_args, step_kwargs in self.specs:
            self.app._published(spec, step_args, step_kwargs)

    def freeze(
        self,
        sig: Signature,
        member: dict[str, Any] | None,
        extra_links: Sequence[dict[str, Any]] = (),
        errbacks: Sequence[dict[str, Any]] = (),
        inherit: Mapping[str, Any] | None = None,
        given: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        """``member``: group/chord membership for the job that ends ``sig``;
        ``extra_links``: what runs after it; ``errbacks``: inherited error
        callbacks; ``inherit``: option defaults from enclosing signatures;
        ``given``: its first job is given a value in front of its arguments
        (a parent's result, a failed job's id)."""
        inherit = {**(inherit or {}), **{k: v for k, v in sig.options.items() if k in INHERITED}}
        if isinstance(sig, group) and (member is not None or extra_links):
            # One result standing for a list: collect the group with a chord whose
            # body (an identity) carries the membership and what follows. The
            # group's own error callbacks are added once, as the chord's header.
            collect = Signature(
                "jobqueue.identity", app=self.app, task_id=sig.__dict__.get("_collect_id")
            )
            collected = chord(sig, collect)
            return self._chord(collected, member, extra_links, errbacks, inherit, given)
        errbacks = [*errbacks, *self.callbacks(sig, "link_error")]
        if type(sig) is Signature:
            return self._task(sig, member, extra_links, errbacks, inherit, given)
        if isinstance(sig, group):
            return self._group(sig, errbacks, inherit, given=given)
        links = [*self.callbacks(sig, "link"), *extra_links]  # after the last step
        if isinstance(sig, chain):
            return self._chain(sig, member, links, errbacks, inherit, given)
        if isinstance(sig, chord):
            return self._chord(sig, member, links, errbacks, inherit, given)
        raise TypeError(f"cannot enqueue {sig!r}")

    def callbacks(self, sig: Signature, key: str) -> list[dict[str, Any]]:
        return [self.freeze(s, None, given=True)[0] for s in sig.options.get(key, [])]

    def _task(
        self,
        sig: Signature,
        member: dict[str, Any] | None,
        extra_links: Sequence[dict[str, Any]],
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
        given: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        from .result import AsyncResult

        opts = {**inherit, **sig.options}
        call = {k: v for k, v in opts.items() if k in CALL_OPTIONS and v is not None}
        task = self.app.tasks.get(sig.task_name)
        if task is not None and task.typing:  # with a stand-in for what it will be given
            task.check_arguments((None, *sig.args) if given and not sig.immutable else sig.args,
                                 sig.kwargs)  # fmt: skip
        prepended = given and not sig.immutable
        spec = resolve(
            self.app,
            sig.task_name,
            task,
            sig.args,
            sig.kwargs,
            call,
            relative=True,
            prepended=prepended,
        )
        # Each step is published now, in the caller's context (a trace's, say),
        # though the database creates later steps only when their turn comes.
        if self.publish:
            spec = self.app._publishing(spec, sig.args, sig.kwargs)
            self.specs.append((spec, sig.args, sig.kwargs))
        options = self._options(spec.options)
        if task is not None and task.flow.needs_python()["unique_key"]:
            # SQL computes the other unique keys when the step is written
            # (spawn(), from task_settings); a Python function's, only here,
            # from the signature's own arguments.
            options["unique_key"] = task.flow.unique_for(sig.task_name, sig.args, sig.kwargs)
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
            "args": [] if spec.args == "[]" else loads(spec.args),
            "kwargs": {} if spec.kwargs == "{}" else loads(spec.kwargs),
            "immutable": sig.immutable,
            "options": options,
            "queue": spec.queue,
            "priority": spec.priority,
            "countdown": spec.countdown,
            "expires_in": spec.expires_in,
        }
        if member:
            tree["group_id"], tree["group_index"] = member["group_id"], member["group_index"]
        # The id is one resolve() made or checked (a task_id given).
        return tree, AsyncResult.trusted(spec.id, self.app)

    def _options(self, text: str) -> dict[str, Any]:
        """A step's stored options, decoded: once per distinct text (the steps
        of one task share it), then copied, since each step adds its own
        links and membership at the top level. Decoding each step's options,
        arguments and keyword arguments was a seventh of a 10,000-header
        chord's Python (0.14 of 1.09 s under cProfile)."""
        decoded = self._decoded.get(text)
        if decoded is None:
            decoded = self._decoded[text] = loads(text)
        return dict(decoded)

    def _chain(
        self,
        sig: chain,
        member: dict[str, Any] | None,
        extra_links: Sequence[dict[str, Any]],
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
        given: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        # Fold from the end: each step links to the rest, a group followed by
        # more steps becomes a chord, and the last step carries the membership.
        # Each step's result is the parent of the next one's (result.parent).
        last = len(sig.tasks) > 1 or given  # the last step is given the one before's result
        tail, result = self.freeze(sig.tasks[-1], member, extra_links, errbacks, inherit, last)
        later = result
        for index in range(len(sig.tasks) - 2, -1, -1):
            step, fed = sig.tasks[index], index > 0 or given
            if isinstance(step, group):
                tail, earlier = self._chord_tree(step, tail, errbacks, inherit, fed)
            else:
                tail, earlier = self.freeze(step, None, [tail], errbacks, inherit, fed)
            _set_parent(later, earlier)
            later = earlier
        return tail, result

    def _group(
        self,
        sig: group,
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
        chord_id: str | None = None,
        given: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        from .result_set import GroupResult

        group_id = chord_id or sig.__dict__.get("_frozen_id") or new_id()
        members, results = [], []
        for index, item in enumerate(sig.tasks):
            membership = {"group_id": group_id, "group_index": index, "chord": chord_id}
            # A group's own links run after each member, as in Celery (fresh ids each).
            links = self.callbacks(sig, "link")
            tree, result = self.freeze(item, membership, links, errbacks, inherit, given)
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
        given: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        if sig.body is None:
            raise ValueError("a chord needs a body: chord(header)(body) or chord(header, body)")
        body, result = self.freeze(sig.body, member, extra_links, errbacks, inherit, True)
        tree, header = self._chord_tree(sig.header, body, errbacks, inherit, given)
        _set_parent(result, header)
        return tree, result

    def _chord_tree(
        self,
        header: group,
        body: dict[str, Any],
        errbacks: Sequence[dict[str, Any]],
        inherit: Mapping[str, Any],
        given: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        """The chord's tree, and its header's ``GroupResult``."""
        chord_id = header.__dict__.get("_frozen_id") or new_id()
        errbacks = [*errbacks, *self.callbacks(header, "link_error")]
        inherit = {**inherit, **{k: v for k, v in header.options.items() if k in INHERITED}}
        tree, results = self._group(header, errbacks, inherit, chord_id=chord_id, given=given)
        return {"type": "chord", "id": chord_id, "header": tree["tasks"], "body": body}, results


def _set_parent(result: Any, parent: Any) -> None:
    """``parent`` becomes the parent of the earliest result ``result`` already
    descends from (a chord body's parent is its header, whose parent is then
    the step before the chord)."""
    while result._parent is not None:
        result = result._parent
    result._parent = parent


def freeze_replacement(
    app: JobQueue,
    sig: Signature,
    job_id: str,
    root: str,
    options: Mapping[str, Any],
    eager_membership: tuple[str, int] | None = None,
    eager: bool = False,
) -> tuple[dict[str, str], Any]:
    """``self.replace(sig)`` of job ``job_id``: the replacement's canvas with
    every id chosen, carrying what the job carried (its ``link``s, so a
    chain's next steps, run after the replacement's last job with its result;
    its ``link_error``s on every job of it; its chord membership on its last
    job). Returns job_replace's parameters (without the lease's) and the
    replacement's result."""
    member: dict[str, Any] | None = None
    chord_id = options.get("chord")
    if chord_id:
        if eager:  # no row: the eager run knows it
            group_id, group_index = eager_membership or (None, None)
        else:
            rows = app.db.execute("job_membership", {"id": job_id})
            group_id, group_index = rows[0] if rows else (None, None)
        if group_id is not None:
            member = {"group_id": group_id, "group_index": group_index, "chord": chord_id}
    freezer = Freezer(app, root)
    tree, result = freezer.freeze(
        sig.clone(),
        member,
        extra_links=list(options.get("link") or ()),
        errbacks=list(options.get("link_error") or ()),
    )
    params = {"canvas": dumps(tree), "groups": dumps(freezer.groups), "root": root}
    return params, result


def add_to_group(app: JobQueue, request: Request, sig: Signature) -> Any:
    """``self.add_to_group(sig)``: ``sig`` becomes one more member of the
    group the running job belongs to (its place: after the group's members),
    listed by the statement that writes it (group_add)."""
    from .exceptions import ChordMembershipError

    with app.db.transaction() as conn:
        rows = app.db.run(conn, "group_lock", {"id": request.id})
        if not rows:
            raise ChordMembershipError(
                f"{request.task}[{request.id}] is not a member of a group: add_to_group() "
                "adds to the group the running job belongs to"
            )
        group_id, root, size, is_chord = rows[0]
        if is_chord:
            raise ChordMembershipError(
                f"{request.task}[{request.id}] is in a chord's header: use add_to_chord(), "
                "so that the chord's body waits for the new member"
            )
        freezer = Freezer(app, root or request.root_id or request.id)
        tree, result = freezer.freeze(sig.clone(), {"group_id": group_id, "group_index": size})
        params = {
            "group": group_id,
            "member": str(result.id),
            "canvas": dumps(tree),
            "groups": dumps(freezer.groups),
            "root": freezer.root,
            "parent": request.id,
        }
        app.db.run(conn, "group_add", params)
    freezer.published()
    return result


def add_to_chord(app: JobQueue, request: Request, sig: Signature) -> Any:
    """``self.add_to_chord(sig)``: ``sig`` becomes one more member of the
    chord ``request.chord`` (its place: after the header's members), counted
    by the statement that writes it (chord_add)."""
    from .exceptions import ChordMembershipError

    chord_id = request.chord
    with app.db.transaction() as conn:
        rows = app.db.run(conn, "chord_lock", {"id": chord_id})
        if not rows:
            raise ChordMembershipError(f"chord {chord_id} is not known (deleted by retention?)")
        state, root, size = rows[0]
        if state != "PENDING":
            raise ChordMembershipError(
                f"chord {chord_id} is {state}: its body "
                + ("ran already" if state == "DONE" else "will never run (a member failed)")
                + "; add_to_chord() cannot add to it"
            )
        freezer = Freezer(app, root or request.root_id or request.id)
        member = {"group_id": chord_id, "group_index": size, "chord": chord_id}
        tree, result = freezer.freeze(sig.clone(), member)
        params = {
            "chord": chord_id,
            "member": str(result.id),
            "canvas": dumps(tree),
            "groups": dumps(freezer.groups),
            "root": freezer.root,
            "parent": request.id,
        }
        app.db.run(conn, "chord_add", params)
    freezer.published()
    return result
