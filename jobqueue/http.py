"""HTTP tasks: a built-in task that calls a URL (Celery 2.3's HTTP callback
tasks, made safe to point at a URL a user typed).

``jobqueue.http.request.delay("POST", url, json=..., headers=..., timeout=...)``
enqueues one job of the task ``jobqueue.http.request``, which every app
registers (``JobQueue._register_builtins``), so any worker runs it. The
module-level ``request`` is that task of the *current* app (``jobqueue.current``:
the JobQueue made last in this process); with several apps, use
``http.task(app)`` or ``app.send_task(HTTP_TASK, ...)``.

The failure contract:

- a response below 400 is the job's result: ``{"status", "headers", "body",
  "url", "truncated"}`` (``body``: decoded JSON if the response says it is
  JSON, else text; at most ``app.conf.http_max_body_bytes`` of it read);
- 5xx, 408 and 429 responses and connection failures (refused, reset, timed
  out, the name not resolving) raise a ``RetryableHTTPError`` and are retried
  with exponential backoff (``MAX_RETRIES`` retries, about 1, 2, 4, 8, 16 s
  apart with jitter), then fail;
- other 4xx responses raise ``HTTPStatusError`` at once, without retry;
- a URL the worker's settings do not allow raises ``URLNotAllowed``, without
  retry and without any connection made.

What is allowed is decided by the *worker's* app.conf, where the request is
made (jobqueue/outbound.py): the host must match ``http_allowed_hosts`` if
that is set, and every address it resolves to must be public unless
``http_allow_private`` allows it. A call is checked for form (method, URL,
headers, timeout) where it is enqueued, so a malformed one is never written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .current import current_app
from .exceptions import JobQueueError

if TYPE_CHECKING:
    from .app import JobQueue
    from .result import AsyncResult
    from .tasks import Task

HTTP_TASK = "jobqueue.http.request"
#: Retries of a 5xx, 408, 429 or a connection failure (Celery's max_retries).
MAX_RETRIES = 5
#: Redirects followed (each one checked as the first URL was).
MAX_REDIRECTS = 5
#: What a stored response's headers may take, in characters (names and values).
MAX_HEADER_TEXT = 16_384
#: The longest timeout a call may give, in seconds (per connect, per read).
MAX_TIMEOUT = 300.0
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name


class HTTPTaskError(JobQueueError):
    """Raised by the ``jobqueue.http.request`` task."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, status)  # both in args: the error is rebuilt from them
        self.status = status

    def __str__(self) -> str:
        return str(self.args[0])


class HTTPStatusError(HTTPTaskError):
    """The server answered with an error status (``status``); 4xx: not retried."""


class RetryableHTTPError(HTTPTaskError):
    """A failure that may pass: retried with backoff (``autoretry_for``)."""


class HTTPServerError(HTTPStatusError, RetryableHTTPError):
    """A 5xx, 408 or 429 answer."""


class HTTPConnectionError(RetryableHTTPError):
    """No answer: the name did not resolve, or the connection failed or timed out."""


class URLNotAllowed(HTTPTaskError, ValueError):
    """The URL (or a redirect) is refused by the worker's settings: never retried."""


# -- the call: checked where it is enqueued and again where it runs --------------


def check_call(
    method: Any,
    url: Any,
    headers: Any = None,
    timeout: Any = 10.0,
    json: Any = None,
    data: Any = None,
    params: Any = None,
) -> tuple[str, str]:
    """``(METHOD, url)`` of a well-formed call, else a one-line ValueError or
    TypeError saying what is wrong (the address checks need the worker's
    settings, and are made there)."""
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, got {method!r}")
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}")
    split_url(url)
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise TypeError(f"headers must be a mapping, got {type(headers).__name__}")
        for name, value in headers.items():
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} must be a string on one line, got {value!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not 0 < timeout <= MAX_TIMEOUT:  # also false for NaN
        raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds, got {timeout!r}")
    if json is not None and data is not None:
        raise ValueError("give json or data, not both")
    if data is not None and not isinstance(data, (str, Mapping)):
        raise TypeError(f"data must be a string or a mapping (a form), got {type(data).__name__}")
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping, got {type(params).__name__}")
    return method.upper(), url


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, else ValueError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url {url!r} must be http:// or https://")
    if not parts.hostname:
        raise ValueError(f"url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "url must not carry credentials (user:password@); send them in headers "
            "(Authorization), which are not logged with the URL"
        )
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


# -- the task, on every app ------------------------------------------------------


def register(app: JobQueue) -> None:
    """Register ``jobqueue.http.request`` on ``app`` (every app does, so every
    worker runs it)."""
    from . import __version__

    @app.task(
        name=HTTP_TASK,
        max_retries=MAX_RETRIES,
        autoretry_for=(RetryableHTTPError,),
        retry_backoff=True,
        retry_backoff_max=300,
    )
    def http_request(
        method: str,
        url: str,
        *,
        json: Any = None,
        data: str | Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        from .outbound import Policy, perform  # http.client: only where requests are made

        method, url = check_call(method, url, headers, timeout, json, data, params)
        return perform(
            Policy(app.conf),
            method,
            url,
            headers=headers,
            json=json,
            data=data,
            params=params,
            timeout=float(timeout),
            user_agent=f"jobqueue/{__version__}",
        )


def task(app: JobQueue) -> Task[..., dict[str, Any]]:
    """``app``'s ``jobqueue.http.request`` task."""
    registered: Task[..., dict[str, Any]] = app.tasks[HTTP_TASK]
    return registered


class _CurrentAppTask:
    """``jobqueue.http.request``: the current app's task, whose calls are
    checked before anything is enqueued."""

    name = HTTP_TASK

    def __repr__(self) -> str:
        return f"<@task: {HTTP_TASK} of the current app>"

    def delay(self, method: str, url: str, **kwargs: Any) -> AsyncResult:
        """Enqueue ``method url`` (keywords: json, data, params, headers, timeout)."""
        check_call(method, url, **kwargs)
        return task(current_app()).delay(method, url, **kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """``delay`` with job options (queue, countdown, connection=...)."""
        check_call(*args, **(kwargs or {}))
        return task(current_app()).apply_async(args, kwargs, **options)

    def s(self, *args: Any, **kwargs: Any) -> Any:
        """A signature of the call (for chains, groups, callbacks)."""
        check_call(*args, **kwargs)
        return task(current_app()).s(*args, **kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Any:
        """An immutable signature (a chain's result is not prepended)."""
        check_call(*args, **kwargs)
        return task(current_app()).si(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        """Anything else of the current app's task (its options, ``signature``...)."""
        if name.startswith("_"):  # inspect, copy and docs tools probe these: not the task's
            raise AttributeError(name)
        return getattr(task(current_app()), name)

    def __call__(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        """Make the request here and now, under this process's app settings."""
        check_call(method, url, **kwargs)
        return task(current_app())(method, url, **kwargs)


request = _CurrentAppTask()
