"""Who may use the dashboard, and the signed session that carries it.

Three ways in, all checked with ``hmac.compare_digest`` (constant time):

- a **token** (``$JOBQUEUE_DASHBOARD_TOKEN``, or ``Auth(token=...)``): as
  ``Authorization: Bearer <token>``, as the password of HTTP basic (any user
  name: the identity is that name), or typed into the login form;
- **users and passwords** (a password file of ``user:password`` lines, or
  ``Auth(users={...})``): HTTP basic, or the login form;
- a **session cookie** set by the login form: signed (HMAC-SHA256 with the
  app's secret key), so it cannot be forged, and expiring.

Every visitor gets a session, logged in or not: it carries the CSRF token
that each form posts back (checked against the signed cookie, so a page of
another site can neither read nor guess it) and a one-shot message shown
after an action. No server-side state: a restart with a new secret logs
everyone out, nothing else.

Nothing here imports Starlette: the rules are plain functions of strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN_ENV = "JOBQUEUE_DASHBOARD_TOKEN"
SESSION_COOKIE = "jobqueue_dashboard"
SESSION_SECONDS = 12 * 3600  # a working day and then some: a second screen stays logged in
LOCAL = "local"  # the identity when no authentication is configured


@dataclass(frozen=True)
class Auth:
    """The credentials the dashboard accepts: a token, users with passwords,
    or both. ``Auth()`` accepts nobody (every credential is refused)."""

    token: str | None = None
    users: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 16:
            raise ValueError(
                "the dashboard token is too short: use at least 16 characters, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        for user, password in self.users.items():
            if not user or ":" in user or not password:
                raise ValueError(
                    f"bad dashboard user {user!r}: need a name without ':' and a password"
                )

    @classmethod
    def from_env(cls, password_file: str | Path | None = None) -> Auth | None:
        """The token of ``$JOBQUEUE_DASHBOARD_TOKEN`` and the users of
        ``password_file``; None when neither is given (no authentication)."""
        token = os.environ.get(TOKEN_ENV) or None
        users = read_password_file(password_file) if password_file is not None else {}
        if token is None and not users:
            return None
        return cls(token=token, users=users)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (("token",) if self.token else ()) + (("password",) if self.users else ())

    def check_token(self, given: str) -> bool:
        return self.token is not None and _same(given, self.token)

    def check_user(self, user: str, password: str) -> str | None:
        """The identity for ``user``/``password``, or None. The token is
        accepted as any user's password (curl -u ops:$TOKEN)."""
        expected = self.users.get(user)
        if expected is not None and _same(password, expected):
            return user
        if user and self.check_token(password):
            return user
        return None

    def identify(self, authorization: str | None) -> str | None:
        """The identity of an ``Authorization`` header (basic or bearer), or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return "token" if self.check_token(value) else None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = decoded.partition(":")
            return self.check_user(user, password) if sep else None
        return None


def read_password_file(path: str | Path) -> dict[str, str]:
    """``user:password`` lines (blank lines and ``#`` comments skipped)."""
    users: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the dashboard password file {str(path)!r}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"{path}:{number}: expected user:password")
        users[user] = password
    return users


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class Sessions:
    """Signed session cookies: ``{"u": identity or None, "csrf": token,
    "exp": epoch seconds, "flash": message or absent}``."""

    def __init__(self, secret: bytes | None = None, seconds: int = SESSION_SECONDS) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.seconds = seconds

    def new(self, identity: str | None = None) -> dict[str, Any]:
        return {
            "u": identity,
            "csrf": secrets.token_urlsafe(24),
            "exp": int(time.time()) + self.seconds,
        }

    def dump(self, session: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(session, separators=(",", ":")).encode())
        return f"{body.decode()}.{self._sign(body)}"

    def load(self, cookie: str | None) -> dict[str, Any] | None:
        """The session of a cookie, or None if it is missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body.encode())):
            return None
        try:
            session = json.loads(base64.urlsafe_b64decode(body.encode()))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(session, dict) or not isinstance(session.get("csrf"), str):
            return None
        if not isinstance(session.get("exp"), int) or session["exp"] < time.time():
            return None
        return session

    def _sign(self, body: bytes) -> str:
        return hmac.new(self.secret, body, hashlib.sha256).hexdigest()


def csrf_ok(session: dict[str, Any], given: str | None) -> bool:
    """Whether a form's CSRF field matches its session's token."""
    return bool(given) and hmac.compare_digest(str(given), str(session["csrf"]))


__all__ = [
    "LOCAL",
    "SESSION_COOKIE",
    "TOKEN_ENV",
    "Auth",
    "Sessions",
    "csrf_ok",
    "read_password_file",
]
