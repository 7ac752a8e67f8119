"""``enqueue_many``: every item checked and encoded into one statement's
parameters (``build``), and the results once it is written (``results``).
The sync and async ``enqueue_many`` share both; only the write between them
differs (``Store.insert_jobs`` or its awaited twin).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from . import signals
from .ids import new_id, new_ids
from .options import priority_for, queue_for, timing, with_headers
from .result import AsyncResult
from .serialization import dump_arguments, dumps

if TYPE_CHECKING:
    from .app import JobQueue
    from .tasks import Task


class Batch(NamedTuple):
    """``enqueue_many``'s jobs, ready to write (``build``)."""

    task: str
    queue: str
    ids: list[str]
    params: dict[str, Any]  # job_insert_many's (or job_insert_many_unique's)
    sent: list[tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any] | None]]
    holder_of: list[str] | None  # a unique task's: each item's first job of its key
    eager: bool = False  # app.conf.eager: to run at the call, not to write


def unique_batch(task: Task[Any, Any], ids: list[str], params: dict[str, Any]) -> list[str]:
    """Keep only the first item of each unique key in ``params`` (a key
    repeated within the batch goes to its first item); each item's first job."""
    if task.flow.on_duplicate != "keep":
        raise ValueError(
            f"enqueue_many(): task {task.name!r} has on_duplicate={task.flow.on_duplicate!r}, "
            "which changes a waiting holder job by job: enqueue its jobs one at a time"
        )
    first: dict[str, str] = {}
    holder_of = []
    for job_id, key in zip(ids, params["unique_keys"], strict=True):
        holder_of.append(first.setdefault(key, job_id))
    keep = [
        i for i, (job_id, holder) in enumerate(zip(ids, holder_of, strict=True)) if job_id == holder
    ]
    for column in (
        "ids",
        "args",
        "kwargs",
        "options",
        "rate_keys",
        "concurrency_keys",
        "unique_keys",
        "fair_keys",
    ):
        params[column] = [params[column][i] for i in keep]
    params.update(
        unique_states=list(task.flow.unique_states), unique_window=task.flow.unique_window
    )
    return holder_of


def build(
    app: JobQueue,
    task: Task[Any, Any] | str,
    items: Iterable[Sequence[Any] | Mapping[str, Any]],
    queue: str | None,
    priority: int | None,
    countdown: float | None,
    eta: datetime | None,
    expires: float | datetime | None,
) -> Batch | None:
    """``enqueue_many``'s first step (``app.aenqueue_many`` shares it): every
    item checked and encoded, the before-publish signals and hook sent;
    None for no items."""
    name = task if isinstance(task, str) else task.name
    registered = app.tasks.get(name) if isinstance(task, str) else task
    ids: list[str] = []
    rows: dict[str, list[Any]] = {
        "args": [],
        "kwargs": [],
        "options": [],
        "rate_keys": [],
        "concurrency_keys": [],
        "unique_keys": [],
        "fair_keys": [],
    }
    # Options depend on the arguments only through key functions: else once.
    flow = registered.flow if registered is not None else None
    unique = flow is not None and flow.unique
    per_item_options = flow is not None and (
        flow.rate_limit_key is not None
        or flow.concurrency_key is not None
        or flow.fair_key is not None
    )
    # With key functions, options are made per item (a key function may need
    # the arguments: calling it with none raised before any item was read).
    options: dict[str, Any] = (
        registered.job_options() if registered is not None and not per_item_options else {}
    )
    options_json = dumps(options)
    queue_name = queue_for(app, name, queue, task=registered)
    priority_ = priority_for(app, priority, registered)
    # The publish signals go job by job, and only while someone listens.
    publish = bool(signals.before_task_publish.receivers or signals.after_task_publish.receivers)
    sent: list[tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any] | None]] = []
    for index, item in enumerate(items):
        if isinstance(item, (str, bytes)):
            raise TypeError(
                f"item {index} of enqueue_many must be a tuple of arguments "
                f"or a mapping of keyword arguments, got {item!r}"
            )
        args, kwargs = ((), dict(item)) if isinstance(item, Mapping) else (tuple(item), {})
        try:
            a, k = dump_arguments(name, args, kwargs)
        except TypeError as exc:
            raise TypeError(f"item {index}: {exc}") from exc.__cause__
        if per_item_options:
            options = registered.job_options(args=args, kwargs=kwargs) if registered else {}
            options_json = dumps(options)
        stored = options_json
        if publish:  # the receivers see each job's id: made here (else all at once below)
            job_id = new_id()
            ids.append(job_id)
            headers = signals.send_before_publish(
                name, job_id, args, kwargs, queue_name, priority_, None
            )
            stored = with_headers(options_json, headers) if headers else options_json
            sent.append((job_id, args, kwargs, headers))
        rows["args"].append(a)
        rows["kwargs"].append(k)
        rows["options"].append(stored)
        rows["rate_keys"].append(options.get("rate_key"))
        rows["concurrency_keys"].append(options.get("concurrency_key"))
        rows["fair_keys"].append(options.get("fair_key"))
        rows["unique_keys"].append(flow.unique_for(name, args, kwargs) if unique and flow else None)
    if not publish:
        ids = new_ids(len(rows["args"]))
    if not ids:
        return None
    countdown_, eta_, expires_at, expires_in = timing(countdown, eta, expires)
    params = {
        "task": name,
        "ids": ids,
        **rows,
        "queue": queue_name,
        "priority": priority_,
        "countdown": countdown_,
        "eta": eta_,
        "expires_at": expires_at,
        "expires_in": expires_in,
    }
    if app.hooks.wanted("before_publish_many"):
        app.hooks.emit("before_publish_many", task=name, ids=ids, queue=params["queue"])
    if app.conf.eager:  # run at the call instead, every item (jobqueue.eager)
        return Batch(name, queue_name, ids, params, sent, None, eager=True)
    if registered is None or not registered.flow.unique:
        del params["unique_keys"]
        return Batch(name, queue_name, ids, params, sent, None)
    holder_of = unique_batch(registered, ids, params)
    return Batch(name, queue_name, ids, params, sent, holder_of)


def results(app: JobQueue, batch: Batch, holders: Mapping[str, str] | None) -> list[AsyncResult]:
    """``enqueue_many``'s last step: the results, and the after-publish
    signals of the jobs written. ``holders``: for a unique task, the job
    holding each key that was taken (insert_jobs_unique)."""
    if batch.holder_of is None:
        results = [AsyncResult.trusted(job_id, app) for job_id in batch.ids]
    else:
        params = batch.params
        holders = holders or {}
        by_id = {
            job_id: holders.get(key, job_id)
            for job_id, key in zip(params["ids"], params["unique_keys"], strict=True)
        }
        results = [AsyncResult(by_id[h], app=app) for h in batch.holder_of]
    if signals.after_task_publish.receivers:
        for (job_id, args, kwargs, headers), result in zip(batch.sent, results, strict=True):
            if result.id == job_id:  # else a unique job found its key held: nothing written
                signals.send_after_publish(batch.task, job_id, args, kwargs, batch.queue, headers)
    return results
