"""The dashboard as an ASGI application: ``create_app(app)``.

Server-rendered pages (Starlette + Jinja2, autoescaped), htmx only to
refresh the overview's live part; every action is a real ``<form
method="post">`` that works without JavaScript. What each request goes
through, in order: security headers on every response (``_headers``), then
``Dashboard.guard``: the session (signed cookie, always present: it holds
the CSRF token), who is asking (``Authorization`` header, or the session's
login), and for a POST the Origin check, the CSRF token and read-only mode.
Pages are in ``pages.py``, actions in ``actions.py``.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import LOCAL, SESSION_COOKIE, Auth, Sessions, csrf_ok
from .charts import Counts, History, Sampler
from .reads import Reads

if TYPE_CHECKING:
    from ..app import JobQueue

log = logging.getLogger("jobqueue.dashboard")

HERE = Path(str(resources.files(__package__)))

# No inline script or style anywhere (htmx is told not to add its indicator
# style: see base.html's htmx-config), so 'self' is all a page needs.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}

Handler = Callable[..., Any]

# Seconds the charts' first sample may spend reading the hour before it.
HISTORY_TIMEOUT = 2.0


class Dashboard:
    """Everything the pages and actions share: the app, its reads, the
    charts' sampler, who may come in, and the templates."""

    def __init__(
        self,
        app: JobQueue,
        *,
        read_only: bool,
        auth: Auth | None,
        secret_key: bytes | None,
        stale_after: float,
        sample_every: float,
        timeout: float,
        page_size: int,
        scan_budget: int,
        scan_time: float,
    ) -> None:
        self.app = app
        self.read_only = read_only
        self.auth = auth
        self.sessions = Sessions(secret_key)
        self.stale_after = stale_after
        self.page_size = page_size
        self.scan_budget = scan_budget
        self.scan_time = scan_time
        self.reads = Reads(app, timeout)
        self.sampler = Sampler(self._sample, every=sample_every, first=self._first_sample)
        self.templates = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(("html",), default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            ago=ago,
            at=at,
            seconds=seconds,
            pretty=pretty,
            compact=compact,
            readable=readable,
            num=num,
            rate=rate_text,
        )

    def _sample(self) -> dict[str, tuple[int, int]]:
        with self.reads.page() as reads:
            return {str(q): (int(s), int(f)) for q, s, f in reads.outcomes()}

    def _first_sample(self, since: float) -> tuple[Counts, History]:
        """The counters and, in the same snapshot, the jobs finished per
        queue and minute since ``since``: at most ``HISTORY_TIMEOUT`` of
        reading (a sampler's thread, no page waits on it)."""
        with self.reads.page() as reads:
            history: History = {}
            for q, minute, ok, failed in reads.finished_minutes(since, HISTORY_TIMEOUT):
                history.setdefault(str(q), {})[round(minute)] = (int(ok), int(failed))
            counts = {str(q): (int(s), int(f)) for q, s, f in reads.outcomes()}
        return counts, history

    # -- rendering ------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        session = request.state.session
        flash = session.pop("flash", None)
        if flash is not None:
            request.state.session_changed = True
        html = self.templates.get_template(template).render(
            base=request.scope.get("root_path", "").rstrip("/"),
            path=request.url.path,
            identity=request.state.identity,
            auth=self.auth is not None,
            csrf=session["csrf"],
            read_only=self.read_only,
            flash=flash,
            schema=self.app.conf.schema,
            now=datetime.now(timezone.utc),
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(
            request, "error.html", status=status, status_code=status, message=message
        )

    def back(self, request: Request, target: str, message: str) -> Response:
        """After an action: a one-shot message, then back to ``target`` (a
        path of this dashboard)."""
        request.state.session["flash"] = message
        request.state.session_changed = True
        base = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(base + _local(target), status_code=303)

    # -- who is asking ----------------------------------------------------------------

    def guard(
        self, handler: Handler, *, public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the session, authentication and (for POST) the
        Origin, CSRF and read-only checks."""

        async def endpoint(request: Request) -> Response:
            session = self.sessions.load(request.cookies.get(SESSION_COOKIE))
            request.state.session_changed = session is None
            if session is None:
                session = self.sessions.new()
            request.state.session = session
            request.state.dash = self
            request.state.identity = self.identify(request, session)
            if request.state.identity is None and not public:
                response = self.refuse(request)
            elif request.method == "POST":
                response = await self._post(request, handler)
            else:
                response = await _call(handler, request)
            if request.state.session_changed:
                self.set_cookie(request, response)
            return response

        return endpoint

    def identify(self, request: Request, session: dict[str, Any]) -> str | None:
        if self.auth is None:
            return LOCAL
        header = request.headers.get("authorization")
        if header:
            return self.auth.identify(header)  # a wrong header is refused, whatever the cookie
        user = session.get("u")
        return user if isinstance(user, str) else None

    def refuse(self, request: Request) -> Response:
        """No (valid) credentials: a browser goes to the login form, anyone
        else (curl, a wrong Authorization header) gets 401."""
        wants_html = "text/html" in request.headers.get("accept", "")
        if wants_html and "authorization" not in request.headers and request.method == "GET":
            base = request.scope.get("root_path", "").rstrip("/")
            target = request.url.path[len(base) :] or "/"
            if request.url.query:
                target += "?" + request.url.query
            login = f"{base}/login?" + _query({"next": target})
            return RedirectResponse(login, status_code=303)
        return PlainTextResponse(
            "authentication required\n",
            status_code=401,
            headers={"www-authenticate": 'Basic realm="jobqueue dashboard", charset="UTF-8"'},
        )

    async def _post(self, request: Request, handler: Handler) -> Response:
        if not same_origin(request):
            return PlainTextResponse("cross-origin form refused\n", status_code=403)
        form = await request.form()
        given = form.get("csrf")
        if not csrf_ok(request.state.session, given if isinstance(given, str) else None):
            return PlainTextResponse(
                "missing or wrong CSRF token: reload the page and try again\n", status_code=403
            )
        request.state.form = {k: v for k, v in form.items() if isinstance(v, str)}
        return await _call(handler, request)

    def set_cookie(self, request: Request, response: Response) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.sessions.dump(request.state.session),
            max_age=self.sessions.seconds,
            path=(request.scope.get("root_path", "").rstrip("/") or "") + "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


async def _call(handler: Handler, request: Request) -> Response:
    if inspect.iscoroutinefunction(handler):
        result: Response = await handler(request)
        return result
    response: Response = await run_in_threadpool(handler, request)
    return response


def same_origin(request: Request) -> bool:
    """A POST's Origin (or, without one, its Referer) names this host; a
    request with neither (curl) passes on its CSRF token alone."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "") and parts.scheme in ("http", "https")


def _local(target: str) -> str:
    """``target`` if it is a path of this site (not //evil or http://evil)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _query(params: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


class _Headers:
    """Adds the security headers to every response, static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


# -- template filters -----------------------------------------------------------------


def ago(moment: datetime | None, now: datetime | None = None) -> Markup:
    """A relative time with the absolute one in its title ("3 min ago")."""
    if moment is None:
        return Markup('<span class="muted">—</span>')
    now = now or datetime.now(timezone.utc)
    delta = (now - moment).total_seconds()
    text = seconds(abs(delta))
    words = f"{text} ago" if delta >= 0 else f"in {text}"
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(at(moment), words)


def at(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return (
        moment.astimezone(timezone.utc)
        .isoformat(sep=" ", timespec="seconds")
        .replace("+00:00", " UTC")
    )


def seconds(value: float | None) -> str:
    """A duration in words: 850 ms, 42 s, 3 min, 5 h 2 min, 3 d."""
    if value is None or math.isnan(value):
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    if value < 3600:
        return f"{value // 60:.0f} min"
    if value < 86400:
        return f"{value // 3600:.0f} h {value % 3600 // 60:.0f} min"
    return f"{value // 86400:.0f} d"


def pretty(value: Any) -> str:
    """JSON, indented (autoescaped by the template like anything else)."""
    if value is None:
        return "null"
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


# A value whose JSON fits on this many characters is shown on one line.
READABLE_WIDTH = 100


def readable(value: Any) -> str:
    """JSON on one line when it is short ([42, "a@b.c"]), indented when it is
    long: a few short arguments one per line push a failed job's page down."""
    text = compact(value)
    return text if len(text) <= READABLE_WIDTH else pretty(value)


def compact(value: Any) -> str:
    """JSON on one line (autoescaped by the template)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def rate_text(per_second: float | None) -> str:
    """A rate per second as Celery writes it (10/s, 6/m, 2/h)."""
    if per_second is None:
        return ""
    for unit, factor in (("s", 1), ("m", 60), ("h", 3600)):
        value = per_second * factor
        if value >= 1 and abs(value - round(value)) < 1e-9:
            return f"{round(value)}/{unit}"
    return f"{per_second:g}/s"


# -- the application -------------------------------------------------------------------


def create_app(
    app: JobQueue,
    *,
    read_only: bool = False,
    auth: Auth | None = None,
    secret_key: bytes | None = None,
    stale_after: float = 300.0,
    sample_every: float = 10.0,
    timeout: float = 5.0,
    page_size: int = 50,
    scan_budget: int = 20_000,
    scan_time: float = 0.15,
) -> Starlette:
    """The dashboard of ``app``'s schema as an ASGI application, to serve
    (``jobqueue dashboard``) or to mount in a Starlette or FastAPI app
    (``outer.mount("/jobs", create_app(app, auth=Auth(token=...)))``).

    ``read_only``: no action is shown or accepted (a SELECT-only role is
    enough: ``jobqueue db grant --monitor``). ``auth``: who may come in (an
    ``Auth``); None lets anyone who reaches the app in, as the identity
    "local" (mount it behind your own authentication, or bind 127.0.0.1).
    ``secret_key``: signs the session cookies (random per process if None:
    give one when several processes serve the dashboard). ``stale_after``:
    seconds a queue's oldest due job may wait before the overview warns.
    ``sample_every``: seconds between the charts' samples. ``timeout``:
    seconds a page's reads may take on the server. ``scan_budget``: rows a
    list's walk reads at most per statement. ``scan_time``: seconds a list
    walks history for at most per page (then it says how far back it
    looked, and its Next link goes on from there)."""
    from . import actions, pages

    dash = Dashboard(
        app,
        read_only=read_only,
        auth=auth,
        secret_key=secret_key,
        stale_after=stale_after,
        sample_every=sample_every,
        timeout=timeout,
        page_size=page_size,
        scan_budget=scan_budget,
        scan_time=scan_time,
    )
    g = dash.guard
    routes = [
        Route("/healthz", lambda request: PlainTextResponse("ok"), methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        Route("/login", g(pages.login_page, public=True), methods=["GET"]),
        Route("/login", g(actions.login, public=True), methods=["POST"]),
        Route("/logout", g(actions.logout, public=True), methods=["POST"]),
        Route("/", g(pages.overview), methods=["GET"]),
        Route("/partials/overview", g(pages.overview_partial), methods=["GET"]),
        Route("/jobs", g(pages.jobs), methods=["GET"]),
        Route("/jobs/retry", g(actions.bulk_retry), methods=["POST"]),
        Route("/jobs/cancel", g(actions.bulk_cancel), methods=["POST"]),
        Route("/jobs/{id}", g(pages.job), methods=["GET"]),
        Route("/jobs/{id}/retry", g(actions.job_retry), methods=["POST"]),
        Route("/jobs/{id}/cancel", g(actions.job_cancel), methods=["POST"]),
        Route("/jobs/{id}/delete", g(actions.job_delete), methods=["POST"]),
        Route("/failures", g(pages.failures), methods=["GET"]),
        Route("/workflows", g(pages.workflows), methods=["GET"]),
        Route("/workflows/{root_id}", g(pages.workflow), methods=["GET"]),
        Route("/schedules", g(pages.schedules), methods=["GET"]),
        Route("/schedules/{name:path}/pause", g(actions.schedule_pause), methods=["POST"]),
        Route("/schedules/{name:path}/resume", g(actions.schedule_resume), methods=["POST"]),
        Route("/schedules/{name:path}/run", g(actions.schedule_run), methods=["POST"]),
        Route("/workers", g(pages.workers), methods=["GET"]),
        Route("/limits", g(pages.limits), methods=["GET"]),
        Route("/limits/{task:path}", g(actions.limit_set), methods=["POST"]),
        Route("/queues", g(pages.queues), methods=["GET"]),
        Route("/queues/{name:path}/pause", g(actions.queue_pause), methods=["POST"]),
        Route("/queues/{name:path}/resume", g(actions.queue_resume), methods=["POST"]),
    ]
    starlette = Starlette(routes=routes)
    starlette.state.dashboard = dash
    starlette.add_middleware(_Headers)
    return starlette


__all__ = ["SECURITY_HEADERS", "Dashboard", "create_app"]
