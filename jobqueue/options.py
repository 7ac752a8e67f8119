"""Job options: which a call may give, and how one job's are resolved.

Every way a job is made (``delay``/``apply_async``/``send_task``,
``enqueue_many``, a canvas step, a beat tick) resolves its options here, into
one ``JobSpec``, with one precedence:

    the call's option  >  app.conf.task_routes (queue only)  >  the task's
    (``@app.task(...)``)  >  the app's defaults (``app.conf``: default_queue,
    default_priority, default_time_limit, default_soft_time_limit)

A task that is not registered in this process (``send_task`` by name) has no
task level; its job stores only the call's time limits, and the worker fills
in the task's and then its app's defaults. Time limits given on the call
replace the task's; both are checked once, here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from .ids import check_id, new_id
from .limits import check_fair_key, route
from .retry import DEFAULT_MAX_RETRIES
from .serialization import dump_arguments, dumps, loads

if TYPE_CHECKING:
    from .app import JobQueue
    from .config import Settings
    from .tasks import Task

log = logging.getLogger("jobqueue.beat")

#: What a call may set on one job: ``apply_async``'s keywords (besides
#: ``args``, ``kwargs``, ``connection`` and the canvas links), a signature's
#: options, and a schedule's (those that make sense there, see SCHEDULE_OPTIONS).
CALL_OPTIONS = (
    "queue",
    "priority",
    "countdown",
    "eta",
    "expires",
    "task_id",
    "soft_time_limit",
    "time_limit",
    "headers",
    # Celery's other per-call options (see extra_options): rarely given, so
    # resolve() looks at them only when the call has one.
    "ignore_result",
    "add_to_parent",
    "retry",
    "retry_policy",
    "serializer",
    "compression",
    # jobqueue's: the job's fair key, in place of its task's (limits.FlowControl).
    "fair_key",
)
#: The per-call options resolve() handles apart (extra_options).
EXTRA_OPTIONS = frozenset(CALL_OPTIONS[CALL_OPTIONS.index("ignore_result") :])
#: Celery call options jobqueue refuses, each with the reason and what to do.
REFUSED_OPTIONS = {
    "shadow": "jobqueue names a job by its task in logs, events and the dashboard; "
    "pass a display name in headers= instead",
    "routing_key": "jobqueue has no exchanges or routing keys: a job goes to the "
    "queue named by queue= (or app.conf.task_routes)",
    "exchange": "jobqueue has no exchanges: a job goes to the queue named by queue= "
    "(or app.conf.task_routes)",
}
#: Celery's compression names: accepted and ignored, as PostgreSQL compresses
#: large jsonb values itself (TOAST, above ~2 kB).
COMPRESSIONS = frozenset(("zlib", "gzip", "bzip2", "lzma", "brotli", "zstd", "lz4"))
#: Celery's retry_policy keys (publish retries).
RETRY_POLICY_KEYS = frozenset(
    ("max_retries", "interval_start", "interval_step", "interval_max", "retry_errors", "timeout")
)
#: Header names a job has of its own (its columns), shown to before_task_publish
#: receivers as Celery shows them; ``headers=`` may not give them.
MESSAGE_HEADERS = frozenset(("task", "id", "root_id", "parent_id"))
#: A signature's options: the call options plus its callbacks.
SIGNATURE_OPTIONS = frozenset((*CALL_OPTIONS, "link", "link_error"))
#: What a chain, group or chord passes down to its steps as defaults (an id
#: belongs to one job).
INHERITED = tuple(o for o in CALL_OPTIONS if o != "task_id")
#: A schedule's options: every tick is a new job (no task_id) due when it
#: fires (no eta).
SCHEDULE_OPTIONS = tuple(
    o for o in CALL_OPTIONS if o not in ("task_id", "eta") and o not in EXTRA_OPTIONS
)


class JobSpec(NamedTuple):
    """One job, resolved: what every insert statement binds (``params()``).

    Times are relative to the database's clock when the job is written
    (``countdown``, ``expires_in``) unless given as moments (``eta``,
    ``expires_at``), so producers' clocks do not matter."""

    id: str
    task: str
    args: str  # JSON
    kwargs: str  # JSON
    queue: str
    priority: int
    options: str  # JSON: what the worker and SQL read (retries, limits, keys)
    rate_key: str | None
    concurrency_key: str | None
    countdown: float
    eta: datetime | None
    expires_at: datetime | None
    expires_in: float | None
    root_id: str | None = None
    parent_id: str | None = None
    id_given: bool = False  # by the caller (task_id=): it may be taken already
    # Given with headers= (checked: a JSON object); stored in ``options`` under
    # "headers", with what before_task_publish receivers add, when published.
    headers: dict[str, Any] | None = None
    # depends_on= (``dependencies``): the ids of the jobs it waits for, and
    # what a dependency that does not succeed does to it.
    depends_on: tuple[str, ...] | None = None
    on_dependency_failure: str = "fail"
    # The task's fair_key (or the call's): claimed round-robin across keys.
    fair_key: str | None = None

    def params(self) -> dict[str, Any]:
        """The statements' parameters (a dict display: ~0.4 us under ``_asdict``)."""
        (id, task, args, kwargs, queue, priority, options, rate_key, concurrency_key, countdown,
         eta, expires_at, expires_in, root_id, parent_id, *_, fair_key) = self  # fmt: skip
        return {
            "id": id,
            "task": task,
            "args": args,
            "kwargs": kwargs,
            "queue": queue,
            "priority": priority,
            "options": options,
            "rate_key": rate_key,
            "concurrency_key": concurrency_key,
            "countdown": countdown,
            "eta": eta,
            "expires_at": expires_at,
            "expires_in": expires_in,
            "root_id": root_id,
            "parent_id": parent_id,
            "fair_key": fair_key,
        }


#: A single job's options for its dependencies (``apply_async``, ``send_task``):
#: not call options, since a workflow's steps cannot take them.
DEPENDENCY_OPTIONS = ("depends_on", "on_dependency_failure")
#: What a dependency that ends FAILURE or REVOKED (or is deleted) does to the
#: job that depends on it: fails it (DependencyFailed), cancels it (REVOKED),
#: or lets it run once every dependency is settled.
ON_DEPENDENCY_FAILURE = ("fail", "cancel", "run")


def dependencies(options: dict[str, Any], where: str) -> tuple[tuple[str, ...] | None, str]:
    """Take ``depends_on`` and ``on_dependency_failure`` out of ``options``
    (a call's keywords), checked: ids (strings or UUIDs) or results (anything
    with an ``id``: AsyncResult, EagerResult), and a policy of ON_DEPENDENCY_FAILURE."""
    given = options.pop("depends_on", None)
    policy = options.pop("on_dependency_failure", None)
    if given is None:
        if policy is not None:
            raise TypeError(f"{where}: on_dependency_failure= needs depends_on=")
        return None, "fail"
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        given = [given]  # one id or one result
    ids = []
    for item in given:
        value = getattr(item, "id", item)
        ids.append(check_id(value, "depends_on: a job id"))
    policy = "fail" if policy is None else policy
    if policy not in ON_DEPENDENCY_FAILURE:
        raise ValueError(
            f"{where}: on_dependency_failure must be one of {', '.join(ON_DEPENDENCY_FAILURE)}, "
            f"got {policy!r}"
        )
    return tuple(ids), policy


def call_options(given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The call options in ``given`` that are set (not None); anything that is
    not a call option is a TypeError naming ``where``."""
    unknown = set(given) - set(CALL_OPTIONS)
    if unknown:
        raise unknown_options(unknown, where)
    return {k: v for k, v in given.items() if v is not None}


def unknown_options(unknown: set[str], where: str) -> TypeError:
    """The error for options that are not call options: with the reason for
    those of Celery's that jobqueue refuses."""
    refused = sorted(unknown & REFUSED_OPTIONS.keys())
    if refused:
        return TypeError(f"{where}: {refused[0]}= is not supported: {REFUSED_OPTIONS[refused[0]]}")
    return TypeError(f"{where} got unknown option(s) {sorted(unknown)}")


def extra_options(call: Mapping[str, Any], options: str) -> str:
    """Celery's rarer per-call options, checked; the job's stored options
    (JSON) with what the worker reads of them.

    - ``ignore_result``: stored with the job; the worker keeps no result (or,
      False, keeps it for a task that ignores results).
    - ``serializer``: ``"json"`` only; jobqueue stores JSON (jsonb) only.
    - ``compression``: accepted and ignored, PostgreSQL compresses large values.
    - ``retry``, ``retry_policy`` (publish retries): accepted and ignored, the
      enqueue retries transient database errors itself (``db_retry_seconds``).
    - ``add_to_parent``: accepted and ignored, a job enqueued from a task is
      not recorded as its child."""
    serializer = call.get("serializer")
    if serializer is not None and serializer not in ("json", "application/json"):
        raise ValueError(
            f"serializer={serializer!r} is not supported: jobqueue stores arguments and "
            "results as JSON (jsonb) only"
        )
    compression = call.get("compression")
    if compression is not None and compression not in COMPRESSIONS:
        raise ValueError(
            f"unknown compression {compression!r} (Celery's names are accepted and "
            "ignored: PostgreSQL compresses large jsonb values itself)"
        )
    for name in ("retry", "add_to_parent", "ignore_result"):
        value = call.get(name)
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    policy = call.get("retry_policy")
    if policy is not None:
        if not isinstance(policy, Mapping):
            raise TypeError(f"retry_policy must be a mapping, got {type(policy).__name__}")
        unknown = set(policy) - RETRY_POLICY_KEYS
        if unknown:
            raise TypeError(f"retry_policy got unknown key(s) {sorted(unknown)}")
    ignore = call.get("ignore_result")
    if ignore is None:
        return options
    decoded = loads(options)
    decoded["ignore_result"] = ignore
    return dumps(decoded)


def resolve(
    app: JobQueue,
    name: str,
    task: Task[Any, Any] | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    call: Mapping[str, Any],
    *,
    relative: bool = False,
    prepended: bool = False,
) -> JobSpec:
    """One job of task ``name`` (``task``: its registration here, if any, looked
    up once by the caller) with the options of its call (``CALL_OPTIONS``).
    ``relative``: the job is written later (a canvas step), so moments become
    seconds from now (``eta`` into ``countdown``, ``expires`` into ``expires_in``).
    ``prepended``: a canvas step given a value in front of its arguments; its
    keys taken from an argument are computed by SQL when it is written."""
    args_json, kwargs_json = dump_arguments(name, args, kwargs)
    soft, hard = call.get("soft_time_limit"), call.get("time_limit")
    if task is not None:
        options, keys = task.stored_options(soft, hard, args, kwargs, prepended)
    else:
        options, keys = dumps(unregistered_options(soft, hard)), {}
    fair_key = keys.get("fair_key")
    if call and not EXTRA_OPTIONS.isdisjoint(call):
        options = extra_options(call, options)
        if "fair_key" in call:
            fair_key = check_fair_key(call["fair_key"], "fair_key=")
            options = dumps(loads(options) | {"fair_key": fair_key})
    task_id, headers = call.get("task_id"), call.get("headers")
    countdown, eta, expires_at, expires_in = (
        relative_timing(call)
        if relative
        else timing(call.get("countdown"), call.get("eta"), call.get("expires"))
    )
    return JobSpec(  # positionally: every delay() comes here
        check_id(task_id) if task_id is not None else new_id(),
        name,
        args_json,
        kwargs_json,
        queue_for(app, name, call.get("queue"), args, kwargs, task),
        priority_for(app, call.get("priority"), task),
        options,
        keys.get("rate_key"),
        keys.get("concurrency_key"),
        countdown,
        eta,
        expires_at,
        expires_in,
        None,
        None,
        task_id is not None,
        None if headers is None else check_headers(headers),
        None,
        "fail",
        fair_key,
    )


#: The longest queue name: AMQP's (Celery's brokers), so every name a Celery
#: app uses fits; the column is text, but a name travels in every NOTIFY of
#: its jobs and in every entry of the claim's index.
MAX_QUEUE_LENGTH = 255


def check_queue(queue: Any, what: str = "queue") -> str:
    """A queue name a worker can consume: a non-empty string, at most
    MAX_QUEUE_LENGTH characters, without a comma (``-Q a,b`` splits on
    commas) or whitespace at its ends (which ``-Q`` strips). ``what`` says
    where the name came from in the error."""
    if (  # the hot path: every delay() that names or defaults a queue
        type(queue) is str
        and 0 < len(queue) <= MAX_QUEUE_LENGTH
        and "," not in queue
        and not queue[0].isspace()
        and not queue[-1].isspace()
    ):
        return queue
    if not isinstance(queue, str):
        raise TypeError(f"{what} must be a string, got {type(queue).__name__} {queue!r}")
    if type(queue) is not str:  # a str subclass (an Enum of queue names): its value
        return check_queue(str.__str__(queue), what)
    if not queue:
        raise ValueError(f"{what} must not be empty (omit it for the default queue)")
    if len(queue) > MAX_QUEUE_LENGTH:
        raise ValueError(
            f"{what} {queue[:40]!r}... is {len(queue)} characters long; "
            f"at most {MAX_QUEUE_LENGTH} are allowed"
        )
    if "," in queue:
        raise ValueError(
            f"{what} {queue!r} contains a comma: a worker's -Q splits on commas, so no "
            "worker could consume it; send each job to one queue"
        )
    raise ValueError(
        f"{what} {queue!r} begins or ends with whitespace, which a worker's -Q strips; "
        f"use {queue.strip()!r}"
    )


def queue_for(
    app: JobQueue,
    name: str,
    queue: str | None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    task: Task[Any, Any] | None = None,
) -> str:
    """The queue of one job of task ``name``: the call's ``queue``, else
    task_routes', else the task's, else app.conf.default_queue; each checked
    (``check_queue``) where it is taken, so the error names where it came from."""
    if queue is not None:
        return check_queue(queue)
    if app.conf.task_routes:
        routed = route(app.conf.task_routes, name, args, kwargs or {})
        if routed:
            return check_queue(routed, f"app.conf.task_routes' queue for {name!r}")
    task = task if task is not None else app.tasks.get(name)
    if task is not None and task.queue is not None:
        return task.queue  # checked by @app.task
    return check_queue(app.conf.default_queue, "app.conf.default_queue")


def priority_for(app: JobQueue, priority: Any, task: Task[Any, Any] | None) -> int:
    """The call's priority, else the task's, else ``app.conf.default_priority``."""
    if priority is None:
        priority = task.priority if task is not None else None
        if priority is None:
            priority = app.conf.default_priority
    return check_priority(priority)


def check_priority(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -32768 <= value <= 32767:
        raise ValueError(f"priority must be an integer in [-32768, 32767], got {value!r}")
    return value


def check_time_limits(soft: Any, hard: Any) -> tuple[float | None, float | None]:
    for name, value in (("soft_time_limit", soft), ("time_limit", hard)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        ):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if soft is not None and hard is not None and soft > hard:
        raise ValueError(f"soft_time_limit ({soft}s) must not exceed time_limit ({hard}s)")
    return (None if soft is None else float(soft)), (None if hard is None else float(hard))


def default_limits(
    conf: Settings, soft: float | None, hard: float | None
) -> tuple[float | None, float | None]:
    """``app.conf.default_soft_time_limit``/``default_time_limit`` (Celery's
    ``task_soft_time_limit``/``task_time_limit``) for a limit that neither the
    call nor the task set. A default yields to a limit given explicitly that it
    would contradict (a default hard limit below a given soft one, a default
    soft limit above a given hard one): the more specific setting wins."""
    default_soft, default_hard = conf.default_soft_time_limit, conf.default_time_limit
    if hard is None and default_hard is not None and (soft is None or soft <= default_hard):
        hard = default_hard
    if soft is None and default_soft is not None and (hard is None or default_soft <= hard):
        soft = default_soft
    return soft, hard


def check_headers(headers: Any) -> dict[str, Any]:
    """``headers=``: a mapping of names to JSON values, stored with the job."""
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping, got {type(headers).__name__}")
    given = dict(headers)
    for name in given:
        if not isinstance(name, str):
            raise TypeError(f"header names must be strings, got {name!r}")
        if name in MESSAGE_HEADERS:
            raise ValueError(
                f"header {name!r} is the job's own ({', '.join(sorted(MESSAGE_HEADERS))} "
                "are set by jobqueue); choose another name"
            )
    try:
        dumps(given)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"headers must be JSON values: {exc}") from None
    return given


def with_headers(options: str, headers: Mapping[str, Any]) -> str:
    """A job's stored options (JSON) with ``headers`` under "headers"."""
    decoded = loads(options)
    decoded["headers"] = dict(headers)
    return dumps(decoded)


def unregistered_options(soft: float | None, hard: float | None) -> dict[str, Any]:
    """The stored options of a job whose task this process does not know: the
    default retry limit (every job stores its own; SQL's max_retries() falls
    back to the same number for rows written without options), and the
    call's time limits."""
    soft, hard = check_time_limits(soft, hard)
    options: dict[str, Any] = {"max_retries": DEFAULT_MAX_RETRIES}
    options.update((k, v) for k, v in (("soft_time_limit", soft), ("time_limit", hard)) if v)
    return options


def timing(
    countdown: float | None, eta: datetime | None, expires: float | datetime | None
) -> tuple[float, datetime | None, datetime | None, float | None]:
    """(countdown, eta, expires_at, expires_in): when a job becomes due and
    when it stops being worth running."""
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    if countdown is not None and (
        isinstance(countdown, bool) or not isinstance(countdown, (int, float))
    ):
        raise TypeError(f"countdown must be a number of seconds, got {countdown!r}")
    if eta is not None and not isinstance(eta, datetime):
        raise TypeError(f"eta must be a datetime, got {eta!r}")
    expires_at, expires_in = None, None
    if isinstance(expires, datetime):
        expires_at = _aware(expires)
    elif expires is not None:
        if isinstance(expires, bool) or not isinstance(expires, (int, float)):
            raise TypeError(f"expires must be seconds or a datetime, got {expires!r}")
        expires_in = float(expires)
    return float(countdown or 0), _aware(eta), expires_at, expires_in


def relative_timing(
    options: Mapping[str, Any],
) -> tuple[float, None, None, float | None]:
    """``timing`` for a job written later (a canvas step): moments become
    seconds from now, as the job will be created after this call."""
    countdown, eta, expires_at, expires_in = timing(
        options.get("countdown"), options.get("eta"), options.get("expires")
    )
    if eta is not None:
        countdown = max(_seconds_until(eta), 0.0)
    if expires_at is not None:
        expires_in = _seconds_until(expires_at)
    return countdown, None, None, expires_in


def schedule_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule's stored options as call options; others (written in SQL,
    say) are ignored with a warning rather than stopping the beat."""
    unknown = set(options) - set(SCHEDULE_OPTIONS)
    if unknown:
        log.warning("ignoring unknown schedule option(s) %s", sorted(unknown))
    return {k: options[k] for k in SCHEDULE_OPTIONS if options.get(k) is not None}


def _seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(timezone.utc)).total_seconds()


def _aware(moment: datetime | None) -> datetime | None:
    """Naive datetimes are taken as local time, as ``datetime.now()`` makes them."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.astimezone()
