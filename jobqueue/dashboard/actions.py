"""The dashboard's actions (POST): each one is an operation's SQL function
(``app.control`` and ``Store`` call them: retry_jobs, cancel_jobs,
delete_jobs, pause_queue, resume_queue, pause_schedule, resume_schedule,
run_schedule, set_rate_limit, set_concurrency_limit, reset_task_limit),
nothing of its own, and each is logged (logger ``jobqueue.dashboard``) with
who did it. ``Dashboard.guard`` has checked the session, the Origin and the
CSRF token before any of these runs; in read-only mode they refuse.

Bad input (an id that is not a UUID, a state the operation never acts on, a
rate PostgreSQL does not read) comes back as a message on the page it came
from, with nothing changed.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from ..control.filters import RETRYABLE, UNFINISHED
from ..ids import check_id
from .pages import BadInput, filter_query, parse_filter

if TYPE_CHECKING:
    from .app import Dashboard

log = logging.getLogger("jobqueue.dashboard")

BULK_CHUNK = 10_000  # ids per SQL call (the operations' own max_jobs)
BULK_SCAN = 100_000  # rows of the list's walk per statement, when collecting a bulk action's ids


def _dash(request: Request) -> Dashboard:
    dash: Dashboard = request.state.dash
    return dash


def _act(
    request: Request,
    what: str,
    target: str,
    run: Callable[[], str],
    refused_target: str | None = None,
) -> Response:
    """Run an action (``run`` returns the message to show), logged with who
    did it; refused in read-only mode; SQL's own refusals shown as messages
    (back at ``refused_target``, by default ``target``)."""
    dash = _dash(request)
    who = request.state.identity
    if dash.read_only:
        log.warning("%s: refused %s (the dashboard is read-only)", who, what)
        return dash.error(request, 403, "this dashboard is read-only: actions are disabled")
    try:
        message = run()
    except (BadInput, ValueError) as exc:
        log.info("%s: %s refused: %s", who, what, exc)
        return dash.back(request, refused_target or target, f"Not done: {exc}")
    except psycopg.Error as exc:
        if exc.sqlstate not in ("JQ002", "JQ003"):
            raise
        reason = exc.diag.message_primary or str(exc)
        log.info("%s: %s refused by PostgreSQL: %s", who, what, reason)
        return dash.back(request, refused_target or target, f"Not done: {reason}")
    log.info("%s: %s: %s", who, what, message)
    return dash.back(request, target, message)


def _job_id(request: Request) -> str:
    try:
        return check_id(request.path_params["id"], "job id")
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


# -- one job ----------------------------------------------------------------------------


def job_retry(request: Request) -> Response:
    job_id = request.path_params["id"]
    target = f"/jobs/{job_id}"

    def run() -> str:
        n = _dash(request).app.control.retry(_job_id(request))
        return (
            f"Job {job_id} retried."
            if n
            else f"Job {job_id} was not retried (not FAILURE or REVOKED)."
        )

    return _act(request, f"retry job {job_id}", target, run)


def job_cancel(request: Request) -> Response:
    job_id = request.path_params["id"]
    terminate = request.state.form.get("terminate") == "1"
    verb = "terminate" if terminate else "cancel"

    def run() -> str:
        n = _dash(request).app.control.cancel(_job_id(request), terminate=terminate)
        if not n:
            return f"Job {job_id} was not cancelled (already finished, or already revoked)."
        return f"Job {job_id} {'terminated' if terminate else 'cancelled'}."

    return _act(request, f"{verb} job {job_id}", f"/jobs/{job_id}", run)


def job_delete(request: Request) -> Response:
    job_id = request.path_params["id"]

    def run() -> str:
        n = _dash(request).app.control.delete(_job_id(request))
        if not n:
            raise BadInput(f"job {job_id} was not deleted (only finished jobs are)")
        return f"Job {job_id} deleted."

    # Back to the list (the job's page is gone), or to the job if it stays.
    return _act(request, f"delete job {job_id}", "/jobs", run, refused_target=f"/jobs/{job_id}")


# -- bulk, over the jobs list's filter ----------------------------------------------------


def bulk_retry(request: Request) -> Response:
    return _bulk(request, "retry", RETRYABLE)


def bulk_cancel(request: Request) -> Response:
    return _bulk(request, "cancel", UNFINISHED)


def _bulk(request: Request, operation: str, states: frozenset[str]) -> Response:
    """First POST (no ``confirm``): a page that states how many jobs the
    action would take now and asks again. Second POST (``confirm``): the
    matching ids, read with the list's own walk (so the list's filters,
    arguments included, are what is acted on), go to the operation's SQL
    function ``BULK_CHUNK`` at a time."""
    dash = _dash(request)
    form = request.state.form
    values = {**dict(request.query_params), **form}
    terminate = operation == "cancel" and values.get("terminate") == "1"
    target = "/jobs?" + filter_query(values)
    if dash.read_only:
        return _act(request, f"bulk {operation}", target, lambda: "")
    try:
        filters = parse_filter(values)
        if filters.state is not None and filters.state not in states:
            raise BadInput(
                f"{operation} acts on {' and '.join(sorted(states))} jobs, not {filters.state}"
            )
    except BadInput as exc:
        return dash.back(request, target, f"Not done: {exc}")
    if not values.get("confirm"):
        count = sum(len(ids) for ids in _matching(dash, filters, states))
        return dash.render(
            request, "confirm.html", nav="jobs", operation=operation, count=count,
            fields={k: v for k, v in values.items() if k in _FIELDS and v},
            describe=_describe(values), terminate=terminate, action=f"/jobs/{operation}",
            back=target,
        )  # fmt: skip

    def run() -> str:
        done = 0
        for ids in _matching(dash, filters, states):
            for start in range(0, len(ids), BULK_CHUNK):
                chunk = ids[start : start + BULK_CHUNK]
                if operation == "retry":
                    done += dash.app.control.retry(chunk)
                else:
                    done += dash.app.control.cancel(chunk, terminate=terminate)
        past = {"retry": "Retried", "cancel": "Terminated" if terminate else "Cancelled"}[operation]
        return f"{past} {done:,} job(s) ({_describe(values)})."

    what = f"bulk {operation}{' (terminate)' if terminate else ''} of {_describe(values)}"
    return _act(request, what, target, run)


_FIELDS = ("state", "queue", "task", "exception", "since", "until", "args", "terminate")


def _matching(dash: Dashboard, filters: Any, states: frozenset[str]) -> Any:
    """The ids of every job the list's filter matches now and the operation
    applies to, a walk's worth at a time (newest first)."""
    before: str | None = None
    with dash.reads.page() as reads:
        while True:
            walk = reads.walk(filters, before, BULK_CHUNK, BULK_SCAN)
            yield [str(r[0]) for r in walk.rows if r[1] in states]
            if walk.cursor is None:
                return
            before = walk.cursor


def _describe(values: dict[str, Any]) -> str:
    parts = [
        f"{k} {values[k]}"
        for k in ("state", "queue", "task", "exception", "since", "until", "args")
        if values.get(k)
    ]
    return ", ".join(parts) if parts else "every job"


# -- queues and schedules ----------------------------------------------------------------


def queue_pause(request: Request) -> Response:
    name = request.path_params["name"]

    def run() -> str:
        paused = _dash(request).app.control.pause_queue(
            name, reason=request.state.form.get("reason") or None
        )
        return f"Queue {name} paused." if paused else f"Queue {name} was already paused."

    return _act(request, f"pause queue {name}", _from(request, "/queues"), run)


def queue_resume(request: Request) -> Response:
    name = request.path_params["name"]

    def run() -> str:
        resumed = _dash(request).app.control.resume_queue(name)
        return f"Queue {name} resumed." if resumed else f"Queue {name} was not paused."

    return _act(request, f"resume queue {name}", _from(request, "/queues"), run)


def schedule_pause(request: Request) -> Response:
    name = request.path_params["name"]

    def run() -> str:
        done = _dash(request).app.control.pause_schedule(name)
        return f"Schedule {name} paused." if done else f"Schedule {name} was already paused."

    return _act(request, f"pause schedule {name}", "/schedules", run)


def schedule_resume(request: Request) -> Response:
    name = request.path_params["name"]

    def run() -> str:
        done = _dash(request).app.control.resume_schedule(name)
        return f"Schedule {name} resumed." if done else f"Schedule {name} was not paused."

    return _act(request, f"resume schedule {name}", "/schedules", run)


def schedule_run(request: Request) -> Response:
    name = request.path_params["name"]

    def run() -> str:
        job_id = _dash(request).app.control.run_schedule(name)
        return f"Schedule {name}: job {job_id} enqueued now."

    return _act(request, f"run schedule {name} now", "/schedules", run)


# -- limits ------------------------------------------------------------------------------

_RATE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*([smh]))?$")


def _per_second(text: str) -> float | None:
    """A rate as parse_rate() reads it (to tell a changed field from an
    unchanged one; PostgreSQL checks it again)."""
    text = text.strip()
    if text in ("", "0"):
        return None
    m = _RATE.match(text)
    if m is None:
        raise BadInput(f"bad rate {text!r}: like 10/s, 100/m or 1000/h; empty for none")
    value = float(m.group(1)) / {"s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]
    return value or None


def limit_set(request: Request) -> Response:
    """Fields ``rate`` and ``concurrency`` (empty: no limit), each applied
    only if it differs from the limit in force (so changing one does not
    pin the other); ``reset=1`` goes back to the limits declared in code."""
    task = request.path_params["task"]
    form = request.state.form
    dash = _dash(request)
    who = f"dashboard:{request.state.identity}"

    def run() -> str:
        if form.get("reset") == "1":
            found = dash.app.store.reset_task_limit(task)
            return (
                f"{task}: limits back to those declared in code."
                if found
                else f"{task} had no limits."
            )
        current = {row[0]: row for row in dash.app.store.task_limits()}.get(task)
        done = []
        if "rate" in form:
            wanted = _per_second(form["rate"])
            now = current[1] if current else None
            if not _same_rate(wanted, now):
                dash.app.store.set_rate_limit(task, form["rate"].strip() or None, set_by=who)
                done.append(f"rate {form['rate'].strip() or 'none'}")
        if "concurrency" in form:
            text = form["concurrency"].strip()
            try:
                wanted_n = int(text) if text else None
            except ValueError as exc:
                raise BadInput(
                    f"concurrency must be a whole number or empty, got {text!r}"
                ) from exc
            if wanted_n is not None and wanted_n < 1:
                raise BadInput("concurrency must be 1 or more (empty: no limit)")
            now_n = current[3] if current else None
            if wanted_n != now_n:
                dash.app.store.set_concurrency_limit(task, wanted_n, set_by=who)
                done.append(f"concurrency {wanted_n if wanted_n is not None else 'none'}")
        if not done:
            return f"{task}: nothing changed."
        return f"{task}: " + ", ".join(done) + "."

    return _act(request, f"set limits of {task} ({_fields(form)})", "/limits", run)


def _same_rate(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9)


def _fields(form: dict[str, str]) -> str:
    return ", ".join(f"{k}={form[k]!r}" for k in ("rate", "concurrency", "reset") if k in form)


def _from(request: Request, default: str) -> str:
    """Where a form asked to go back to (``next``, a path of this dashboard)."""
    target = request.state.form.get("next") or default
    return target if target.startswith("/") and not target.startswith("//") else default


# -- login -------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    dash = _dash(request)
    form = request.state.form
    target = form.get("next") or "/"
    if dash.auth is None:
        return dash.back(request, "/", "No login needed: this dashboard has no authentication.")
    identity = None
    token = form.get("token", "")
    if token and dash.auth.check_token(token):
        identity = form.get("username") or "token"
    elif form.get("username") and form.get("password"):
        identity = dash.auth.check_user(form["username"], form["password"])
    if identity is None:
        log.warning("failed dashboard login (user %r)", form.get("username", ""))
        return dash.render(
            request, "login.html", status=401, nav=None, next=target, error="Wrong credentials."
        )
    session = dash.sessions.new(identity)  # a new CSRF token with the new identity
    request.state.session = session
    request.state.session_changed = True
    log.info("%s: logged in", identity)
    return dash.back(request, target, f"Logged in as {identity}.")


async def logout(request: Request) -> Response:
    dash = _dash(request)
    log.info("%s: logged out", request.state.identity)
    request.state.session = dash.sessions.new()
    request.state.session_changed = True
    return dash.back(request, "/login" if dash.auth else "/", "Logged out.")


__all__ = ["BULK_CHUNK"]
