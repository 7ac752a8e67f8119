"""Failure notifications as an HTTP POST of JSON (Slack-compatible incoming
webhooks, chat bridges, incident tools), through ``urllib``."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from ..exceptions import ConfigurationError
from .base import Notifier, _number
from .digest import Message

SIGNATURE_HEADER = "X-Jobqueue-Signature"
TIMESTAMP_HEADER = "X-Jobqueue-Timestamp"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: urllib would repeat a POST as a GET, without its body."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Jobqueue-Signature``'s value: ``sha256=`` and the hex HMAC-SHA256,
    keyed by the secret, of the timestamp, a dot and the body."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


class WebhookNotifier(Notifier):
    """POSTs each message as JSON (``digest.Message.as_json``: its ``text`` is
    what a Slack incoming webhook shows) to ``url``, with ``headers`` added
    (e.g. ``Authorization``), giving up after ``timeout`` seconds. With a
    ``secret``, the request is signed: ``X-Jobqueue-Timestamp`` (Unix seconds)
    and ``X-Jobqueue-Signature`` (``signature()``). A response other than 2xx
    is a failed send. Options of ``Notifier``.

        WebhookNotifier("https://hooks.slack.com/services/...").install(app)
    """

    kind = "webhook"
    setting_prefix = "webhook_"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        timeout: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        name = self.name
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"{name('url')} must be an http:// or https:// URL")
        self.url = url
        # Only this much of the URL is ever logged: its path may hold the token.
        self.where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        headers = dict(headers or {})
        for key, value in headers.items():
            if not isinstance(key, str) or not isinstance(value, str) or "\n" in key + value:
                raise ConfigurationError(
                    f"{name('headers')} must map header names to values (strings on one line)"
                )
        self.headers = headers
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ConfigurationError(f"{name('secret')} must be a non-empty string or None")
        self.secret = secret
        self.timeout = float(_number(timeout, name("timeout"), 0.001))

    def describe(self) -> str:
        return f"webhook {self.where}"

    def secrets(self) -> Sequence[str]:
        parts = urlsplit(self.url)
        hidden = [self.url, parts.path, parts.query, *self.headers.values()]
        if parts.password:
            hidden.append(parts.password)
        if self.secret:
            hidden.append(self.secret)
        return [s for s in hidden if len(s) > 1]

    def _flush_time(self) -> float:
        return 2 * self.timeout

    def request(self, message: Message) -> urllib.request.Request:
        body = json.dumps(message.as_json(), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"jobqueue/{__version__}",
            **self.headers,
        }
        if self.secret:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self.secret, timestamp, body)
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def send(self, message: Message) -> None:
        try:
            with _opener.open(self.request(message), timeout=self.timeout) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:  # its text is "HTTP Error 500: ...", no URL
            raise OSError(f"HTTP {exc.code} {exc.reason}") from None
