"""Outbound HTTP to checked addresses: what the ``jobqueue.http.request``
task does on a worker (jobqueue/http.py is the task; this is the request).

A URL is allowed by the worker's settings (``Policy``) or refused before any
connection: its host must match ``http_allowed_hosts`` if set, and every
address the name resolves to must be public unless ``http_allow_private``
allows it. The connection goes to one of the addresses that were checked,
never to a second resolution of the name (DNS rebinding); each redirect is
checked the same way. No proxy from the environment is used: a proxy would
resolve the name itself.
"""

from __future__ import annotations

import fnmatch
import http.client
import ipaddress
import json as jsonlib
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from .exceptions import ConfigurationError
from .http import (
    MAX_HEADER_TEXT,
    MAX_REDIRECTS,
    HTTPConnectionError,
    HTTPServerError,
    HTTPStatusError,
    URLNotAllowed,
    split_url,
)

if TYPE_CHECKING:
    from .config import Settings

#: Statuses that say "later": retried like a 5xx.
RETRY_STATUSES = frozenset({408, 429})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_KINDS = (
    ("loopback", "a loopback address"),
    ("link_local", "a link-local address"),
    ("multicast", "a multicast address"),
    ("unspecified", "an unspecified address"),
    ("reserved", "a reserved address"),
    ("private", "a private address"),
)


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, for messages: a webhook's path and
    query often hold its secret, and errors are logged and stored."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Policy:
    """The worker's ``http_*`` settings, checked once per call."""

    def __init__(self, conf: Settings) -> None:
        hosts = conf.http_allowed_hosts
        if not isinstance(hosts, (list, tuple)) or not all(isinstance(h, str) for h in hosts):
            raise ConfigurationError(
                f"app.conf.http_allowed_hosts must be a list of host names, got {hosts!r}"
            )
        self.hosts = [h.lower().rstrip(".") for h in hosts]
        private = conf.http_allow_private
        self.any_private = private is True
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        if isinstance(private, (list, tuple)):
            for entry in private:
                try:
                    self.networks.append(ipaddress.ip_network(str(entry), strict=False))
                except ValueError:
                    raise ConfigurationError(
                        f"app.conf.http_allow_private: {entry!r} is not a network "
                        "(e.g. '10.0.5.0/24' or '127.0.0.1')"
                    ) from None
        elif not isinstance(private, bool):
            raise ConfigurationError(
                "app.conf.http_allow_private must be True, False or a list of networks, "
                f"got {private!r}"
            )
        limit = conf.http_max_body_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(
                f"app.conf.http_max_body_bytes must be an integer >= 0, got {limit!r}"
            )
        self.max_body = limit

    def check_host(self, url: str, host: str) -> None:
        name = host.lower().rstrip(".")
        if self.hosts and not any(fnmatch.fnmatchcase(name, h) for h in self.hosts):
            raise URLNotAllowed(
                f"{origin(url)}: host {host!r} is not in app.conf.http_allowed_hosts "
                f"({', '.join(self.hosts)})"
            )

    def check_address(self, url: str, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # without an IPv6 zone
        if self.any_private or any(ip in network for network in self.networks):
            return
        reason = refused(ip)
        if reason:
            what = f"{host} is" if host == address else f"{host} resolves to {ip},"
            raise URLNotAllowed(
                f"{origin(url)}: {what} {reason}; refused so a URL cannot reach internal "
                "services (allow it with app.conf.http_allow_private)"
            )


def refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` is not a public address (None: it is)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried in IPv6 reaches that IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None:
            inner = refused(embedded)
            return f"an address carrying {embedded}, {inner}" if inner else None
    for kind, phrase in _KINDS:
        if getattr(ip, f"is_{kind}"):
            return phrase
    if not ip.is_global:  # shared (100.64/10), documentation, benchmarking...
        return "not a public address"
    return None


def perform(
    policy: Policy,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    data: str | Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
    user_agent: str = "jobqueue",
) -> dict[str, Any]:
    """Make the request (following redirects, each checked); the response as
    the job's result, or one of this module's errors."""
    if params:
        url = _with_params(url, params)
    sent = {k.lower(): v for k, v in (headers or {}).items()}
    sent.setdefault("user-agent", user_agent)
    body: bytes | None = None
    if json is not None:
        body = jsonlib.dumps(json, separators=(",", ":")).encode()
        sent.setdefault("content-type", "application/json")
    elif isinstance(data, Mapping):
        body = urlencode(dict(data), doseq=True).encode()
        sent.setdefault("content-type", "application/x-www-form-urlencoded")
    elif data is not None:
        body = data.encode()
        sent.setdefault("content-type", "text/plain; charset=utf-8")
    for _ in range(MAX_REDIRECTS + 1):
        status, reason, response_headers, raw, truncated = _exchange(
            policy, method, url, sent, body, timeout
        )
        location = response_headers.get("location")
        if status in (301, 302, 303, 307, 308) and location:
            target = urljoin(url, location)
            if urlsplit(target).hostname != urlsplit(url).hostname:
                sent.pop("authorization", None)  # credentials stay with their host
                sent.pop("cookie", None)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
                sent.pop("content-type", None)
            url = target
            continue
        content_type = response_headers.get("content-type", "")
        text = _decode(raw, content_type)
        if status >= 400:
            excerpt = text if isinstance(text, str) else jsonlib.dumps(text)
            message = f"{method} {origin(url)} answered {status} {reason}: {excerpt[:200]!r}"
            if status >= 500 or status in RETRY_STATUSES:
                raise HTTPServerError(message, status)
            raise HTTPStatusError(message, status)
        return {
            "status": status,
            "headers": response_headers,
            "body": text if truncated else _json_or_text(text, content_type),
            "url": url,
            "truncated": truncated,
        }
    raise HTTPStatusError(f"{method} {origin(url)}: more than {MAX_REDIRECTS} redirects")


def _with_params(url: str, params: Mapping[str, Any]) -> str:
    """``url`` with ``params`` added to its query (a fragment is never sent)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(dict(params), doseq=True)) if q)
    return urlunsplit(parts._replace(query=query, fragment=""))


def _exchange(
    policy: Policy,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: float,
) -> tuple[int, str, dict[str, str], bytes, bool]:
    """One request and its response, to an address checked here."""
    scheme, host, port = split_url(url)
    policy.check_host(url, host)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HTTPConnectionError(
            f"{method} {origin(url)}: cannot resolve {host!r}: {exc}"
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:  # every one: a name may mix public and private ones
        policy.check_address(url, host, address)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = _PinnedHTTPS(host, port, addresses, timeout)
    else:
        connection = _PinnedHTTP(host, port, addresses, timeout)
    try:
        connection.request(method, target, body=body, headers=dict(headers))
        response = connection.getresponse()
        raw = response.read(policy.max_body + 1) if method != "HEAD" else b""
        truncated = len(raw) > policy.max_body
        return (
            response.status,
            response.reason,
            _headers(response.getheaders()),
            raw[: policy.max_body],
            truncated,
        )
    except (OSError, http.client.HTTPException) as exc:
        what = type(exc).__name__
        raise HTTPConnectionError(f"{method} {origin(url)}: {what}: {exc}") from None
    finally:
        connection.close()


def _connect(addresses: Sequence[str], port: int, timeout: float) -> socket.socket:
    """A connection to the first of ``addresses`` (all checked) that answers."""
    error: OSError = OSError("no address")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to checked addresses; the Host header names the host."""

    def __init__(self, host: str, port: int, addresses: Sequence[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses
        self.seconds = timeout

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.seconds)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As _PinnedHTTP, with TLS verified against the host's name."""

    def __init__(self, host: str, port: int, addresses: Sequence[str], timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.addresses = addresses
        self.seconds = timeout

    def connect(self) -> None:
        sock = _connect(self.addresses, self.port, self.seconds)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def _headers(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names, repeated ones joined with ", ", within MAX_HEADER_TEXT."""
    headers: dict[str, str] = {}
    budget = MAX_HEADER_TEXT
    for name, value in pairs:
        key = name.lower()
        budget -= len(key) + len(value)
        if budget < 0:
            break
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _decode(raw: bytes, content_type: str) -> str:
    match = re.search(r"charset=\"?([\w.:-]+)", content_type, re.IGNORECASE)
    try:
        return raw.decode(match.group(1) if match else "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _json_or_text(text: str, content_type: str) -> Any:
    media = content_type.split(";", 1)[0].strip().lower()
    if text and (media == "application/json" or media.endswith("+json")):
        try:
            return jsonlib.loads(text)
        except ValueError:
            return text
    return text
