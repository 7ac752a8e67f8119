"""The dashboard's pages (GET): read, never write. Each runs its reads in one
bounded transaction (``Reads.page``) and renders a template. Bad input in
a URL (an unknown state, a time without a date, arguments that are not
JSON, an id that is not a UUID) renders the page with a message and status
400, reading nothing."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..control.filters import STATES
from ..ids import check_id
from .charts import bars, totals
from .reads import JobFilter

if TYPE_CHECKING:
    from .app import Dashboard

STATE_ORDER = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")


def _dash(request: Request) -> Dashboard:
    dash: Dashboard = request.state.dash
    return dash


class BadInput(ValueError):
    """A URL or form value that cannot be used: shown to the user as is."""


# -- overview ---------------------------------------------------------------------------


@dataclass
class QueueRow:
    name: str
    due: int
    scheduled: int
    running: int
    succeeded: int
    failed: int
    revoked: int
    oldest: float
    paused: bool
    paused_at: datetime | None
    reason: str | None
    bars: list[Any]
    hour_succeeded: int
    hour_failed: int
    sampled: bool

    @property
    def failure_rate(self) -> float | None:
        done = self.hour_succeeded + self.hour_failed
        return self.hour_failed / done if done else None


def _overview(request: Request) -> dict[str, Any]:
    dash = _dash(request)
    dash.sampler.start()
    with dash.reads.page() as reads:
        queue_rows = reads.queues()
        workers = reads.workers()
        lapsed = reads.lapsed()
        soon = reads.schedules_soon(5)
    queues = []
    for (
        q,
        due,
        scheduled,
        started,
        success,
        failure,
        revoked,
        oldest,
        paused,
        at_,
        why,
    ) in queue_rows:
        minutes = dash.sampler.series(q)
        ok, failed, sampled = totals(minutes)
        queues.append(
            QueueRow(
                q,
                due,
                scheduled,
                started,
                success,
                failure,
                revoked,
                oldest or 0.0,
                paused,
                at_,
                why,
                bars(minutes),
                ok,
                failed,
                sampled,
            )
        )
    banners = [
        f"Worker {host} (pid {pid}): lease lapsed {_secs(age)} ago"
        + (f", holding {held} running job(s) until the rescue" if held else "")
        for host, pid, age, held in lapsed
    ]
    stale = [q for q in queues if not q.paused and q.due and q.oldest > dash.stale_after]
    if len(stale) <= STALE_BANNERS:
        banners += [
            f"Queue {q.name}: the oldest due job has waited {_secs(q.oldest)}"
            + (" and no live worker serves this queue" if not _served(q.name, workers) else "")
            for q in stale
        ]
    else:  # one banner, not a wall of them above the queues
        unserved = [q.name for q in stale if not _served(q.name, workers)]
        names = ", ".join(q.name for q in stale[:STALE_BANNERS])
        banners.append(
            f"{len(stale)} queues ({names}, …): due jobs have waited up to "
            f"{_secs(max(q.oldest for q in stale))}"
            + (f"; no live worker serves {', '.join(unserved)}" if unserved else "")
        )
    alive = [w for w in workers if w[12]]
    since = dash.sampler.since
    # The charts cover less than their hour (the last hour's history was not
    # read when the dashboard started): say since when.
    partial = (
        datetime.fromtimestamp(since, timezone.utc)
        if since and since > time.time() - 3570
        else None
    )
    return {
        "queues": queues,
        "alive": alive,
        "soon": soon,
        "banners": banners,
        "sampling_since": partial,
    }


# Stale queues named in a banner each; more share one banner.
STALE_BANNERS = 3


def _served(queue: str, workers: list[Any]) -> bool:
    return any(w[12] and queue in (w[5] or []) for w in workers)


def _secs(value: float) -> str:
    from .app import seconds

    return seconds(value)


def overview(request: Request) -> Response:
    return _dash(request).render(request, "overview.html", nav="overview", **_overview(request))


def overview_partial(request: Request) -> Response:
    return _dash(request).render(request, "_overview_live.html", **_overview(request))


def queues(request: Request) -> Response:
    dash = _dash(request)
    with dash.reads.page() as reads:
        rows = reads.queues()
        workers = reads.workers()
    served = {q: sum(1 for w in workers if w[12] and q in (w[5] or [])) for q, *_ in rows}
    return dash.render(request, "queues.html", nav="queues", queues=rows, served=served)


def workers(request: Request) -> Response:
    dash = _dash(request)
    with dash.reads.page() as reads:
        rows = reads.workers()
    return dash.render(request, "workers.html", nav="workers", workers=rows)


def schedules(request: Request) -> Response:
    dash = _dash(request)
    with dash.reads.page() as reads:
        rows = reads.schedules()
    return dash.render(request, "schedules.html", nav="schedules", schedules=rows)


def limits(request: Request) -> Response:
    dash = _dash(request)
    with dash.reads.page() as reads:
        rows = reads.limits()
    return dash.render(request, "limits.html", nav="limits", limits=rows)


# -- jobs -------------------------------------------------------------------------------

FILTER_FIELDS = ("state", "queue", "task", "exception", "since", "until", "args")


def parse_filter(values: Any) -> JobFilter:
    """The jobs list's filters from query or form fields (empty: not set)."""

    def text(name: str) -> str | None:
        value = values.get(name)
        value = value.strip() if isinstance(value, str) else None
        return value or None

    state = text("state")
    if state is not None:
        state = state.upper()
        if state not in STATES:
            raise BadInput(f"unknown state {state!r}: one of {', '.join(STATE_ORDER)}")
    args = text("args")
    if args is not None:
        try:
            args = json.dumps(json.loads(args))
        except ValueError as exc:
            raise BadInput(f'arguments must be JSON, e.g. [42] or {{"user": 7}}: {exc}') from exc
    since, until = _time(text("since"), "since"), _time(text("until"), "until")
    if since and until and since >= until:
        raise BadInput("since must be earlier than until")
    return JobFilter(state, text("queue"), text("task"), text("exception"), since, until, args)


def _time(value: str | None, name: str) -> datetime | None:
    """An ISO time; without an offset it is UTC (what the form's fields say)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput(f"{name}: not a time: {value!r} (e.g. 2026-05-01T12:00, UTC)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def filter_query(values: Any, **extra: Any) -> str:
    """The filter's fields as a query string (links keep the filter)."""
    params = {k: values.get(k) for k in FILTER_FIELDS} | extra
    return urlencode({k: v for k, v in params.items() if v})


def _cursor(value: Any) -> str | None:
    if not value:
        return None
    try:
        return check_id(value, "after")
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


def jobs(request: Request) -> Response:
    dash = _dash(request)
    values = request.query_params
    form = {k: values.get(k, "") for k in FILTER_FIELDS}
    try:
        filters = parse_filter(values)
        after = _cursor(values.get("after"))
    except (BadInput, ValueError) as exc:
        return dash.render(
            request, "jobs.html", status=400, nav="jobs", form=form, error=str(exc), walk=None,
            rows=[], estimate=None, filters=None, next_query=None, states=STATE_ORDER,
            query=filter_query(values),
        )  # fmt: skip
    deadline = time.monotonic() + dash.scan_time
    with dash.reads.page() as reads:
        walk = reads.walk(filters, after, dash.page_size, dash.scan_budget, deadline)
        rows = reads.rows([str(r[0]) for r in walk.rows])
        estimate = reads.estimate(filters) if filters.counted else None
    next_query = filter_query(values, after=walk.cursor) if walk.cursor else None
    return dash.render(
        request, "jobs.html", nav="jobs", form=form, error=None, walk=walk, rows=rows,
        estimate=estimate, filters=filters, next_query=next_query, states=STATE_ORDER,
        after=after, query=filter_query(values),
    )  # fmt: skip


def job(request: Request) -> Response:
    dash = _dash(request)
    try:
        job_id = check_id(request.path_params["id"], "job id")
    except ValueError as exc:
        return dash.error(request, 404, str(exc))
    with dash.reads.page() as reads:
        row = reads.job(job_id)
        if row is None:
            return dash.error(request, 404, f"no job {job_id} (never enqueued, or deleted)")
        record = _record(row)
        attempts = reads.attempts(job_id)
        children = reads.children(job_id)
        group = reads.group(str(record["group_id"])) if record["group_id"] else []
        chord_id = (record["options"] or {}).get("chord")
        chord = reads.chord(str(chord_id)) if chord_id else None
        parent = reads.job(str(record["parent_id"])) if record["parent_id"] else None
    return dash.render(
        request, "job.html", nav="jobs", job=record, attempts=attempts, children=children,
        group=group, chord=chord, parent=_record(parent) if parent else None,
    )  # fmt: skip


# The columns of dashboard_job, in order.
_JOB_COLUMNS = (
    *("id", "task", "queue", "priority", "state", "args", "kwargs", "options", "run_at"),
    *("expires_at", "attempts", "worker_id", "created_at", "started_at", "finished_at"),
    *("result", "error", "root_id", "parent_id", "revoked_at", "revoke_terminate"),
    *("group_id", "group_index", "progress_state", "progress", "hostname", "pid"),
)


def _record(row: Any) -> dict[str, Any]:
    return dict(zip(_JOB_COLUMNS, row, strict=True))


# -- failures and workflows --------------------------------------------------------------


FAILURE_WINDOWS = (("1h", "last hour", 1), ("24h", "last 24 hours", 24),
                   ("7d", "last 7 days", 24 * 7), ("all", "all history", None))  # fmt: skip


def failures(request: Request) -> Response:
    dash = _dash(request)
    values = request.query_params
    window = values.get("window") or "24h"
    hours = {key: h for key, _, h in FAILURE_WINDOWS}
    try:
        before = _cursor(values.get("after"))
        if window not in hours:
            raise BadInput(f"window: one of {', '.join(hours)}")
    except (BadInput, ValueError) as exc:
        return dash.error(request, 400, str(exc))
    span = hours[window]
    since = datetime.now(timezone.utc) - timedelta(hours=span) if span else None
    deadline = time.monotonic() + dash.scan_time
    with dash.reads.page() as reads:
        # Each failure read costs a probe of its job's record (a heap page of
        # its own: 8 us at 10 M jobs on a stock server): steps of 1/8 of the
        # budget (2,500) check the time every 20 ms or so.
        walk = reads.failures(before, since, max(dash.scan_budget // 8, 500), deadline)
        examples = reads.failure_examples([g[1] for g in walk.groups.values()])
        all_time = reads.failed_totals()
    rows = sorted(
        ((task, exc, n, newest, *examples.get(newest, (None, None, None))[1:])
         for (task, exc), (n, newest) in walk.groups.items()),
        key=lambda r: (-r[2], r[0], r[1]),
    )  # fmt: skip
    next_query = urlencode({"window": window, "after": walk.cursor}) if walk.cursor else None
    return dash.render(
        request, "failures.html", nav="failures", walk=walk, rows=rows, all_time=all_time,
        next_query=next_query, window=window, windows=FAILURE_WINDOWS, since=since,
        after=before,
    )  # fmt: skip


@dataclass
class Workflow:
    root: str
    task: str | None
    jobs: int
    succeeded: int
    failed: int
    running: int
    waiting: int
    revoked: int
    created_at: datetime | None
    finished_at: datetime | None
    groups: int
    chords: int

    @property
    def state(self) -> str:
        if self.running or self.waiting:
            return "STARTED" if self.running or self.succeeded or self.failed else "PENDING"
        if self.failed:
            return "FAILURE"
        if self.revoked and not self.succeeded:
            return "REVOKED"
        return "SUCCESS"

    @property
    def finished(self) -> bool:
        return not (self.running or self.waiting)


def workflows(request: Request) -> Response:
    dash = _dash(request)
    try:
        before = _cursor(request.query_params.get("after"))
    except (BadInput, ValueError) as exc:
        return dash.error(request, 400, str(exc))
    size = 25
    with dash.reads.page() as reads:
        roots = reads.workflow_roots(before, size)
        rows = {str(r[0]): r for r in reads.workflow_summaries(roots)}
    found = [Workflow(root, r[11], *r[1:11]) for root in roots if (r := rows.get(root))]
    next_query = urlencode({"after": roots[-1]}) if len(roots) >= size else None
    return dash.render(
        request, "workflows.html", nav="workflows", workflows=found, next_query=next_query
    )


@dataclass
class Node:
    id: str
    task: str
    state: str
    group_id: str | None
    group_index: int | None
    chord: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error_type: str | None
    queue: str
    children: list[Node]


def workflow(request: Request) -> Response:
    dash = _dash(request)
    try:
        root = check_id(request.path_params["root_id"], "workflow id")
    except ValueError as exc:
        return dash.error(request, 404, str(exc))
    limit = 1000
    with dash.reads.page() as reads:
        rows = reads.workflow(root, limit)
        chord_ids = sorted({str(r[6]) for r in rows if r[6]})
        chords = {str(c[0]): c for c in reads.chords(chord_ids)}
    if not rows:
        return dash.error(request, 404, f"no workflow {root}")
    nodes = {
        str(r[0]): Node(
            str(r[0]),
            r[1],
            r[2],
            str(r[4]) if r[4] else None,
            r[5],
            str(r[6]) if r[6] else None,
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            [],
        )
        for r in rows
    }
    tops: list[Node] = []
    for r in rows:
        node = nodes[str(r[0])]
        parent = nodes.get(str(r[3])) if r[3] else None
        (parent.children if parent is not None and parent is not node else tops).append(node)
    counts = {s: sum(1 for n in nodes.values() if n.state == s) for s in STATE_ORDER}
    members = {c: sum(1 for n in nodes.values() if n.chord == c) for c in chords}
    return dash.render(
        request, "workflow.html", nav="workflows", root=root, tops=tops, chords=chords,
        nodes=nodes, members=members, counts=counts, total=len(rows),
        truncated=len(rows) >= limit,
    )  # fmt: skip


# -- login -----------------------------------------------------------------------------


def login_page(request: Request) -> Response:
    dash = _dash(request)
    target = request.query_params.get("next", "/")
    if dash.auth is None:
        base = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(base + "/", status_code=303)
    return dash.render(request, "login.html", nav=None, next=target, error=None)


__all__ = ["BadInput", "filter_query", "parse_filter"]
