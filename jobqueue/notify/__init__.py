"""Failure notifications: e-mail and webhooks, rate-limited into digests.

Failures recorded by a worker are sent from a thread of the notifier's own,
never in a job's path: the first failure after a quiet window at once, the
next ones together when the window ends (counts per task and exception, a
few examples), what is pending at exit in one last message. A message that
cannot be sent is retried a few times, then dropped and logged; the jobs'
failures are recorded either way. The core never imports this package.

Either configure ``app.conf.notify_*`` (docs/configuration.md), which
``jobqueue worker`` reads at start (``install_configured``), or install
notifiers yourself:

    from jobqueue.notify import EmailNotifier, WebhookNotifier
    EmailNotifier(["ops@example.com"], host="smtp.example.com").install(app)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Notifier, installed
from .digest import Digest, Failure, Message
from .mail import EmailNotifier
from .webhook import WebhookNotifier, signature

if TYPE_CHECKING:
    from ..app import JobQueue

__all__ = [
    "Digest",
    "EmailNotifier",
    "Failure",
    "Message",
    "Notifier",
    "WebhookNotifier",
    "configured",
    "install_configured",
    "installed",
    "signature",
]

_SHARED = (
    "window",
    "retries",
    "on_retry",
    "tasks",
    "exclude_tasks",
    "exceptions",
    "exclude_exceptions",
    "examples",
)
_EMAIL = ("sender", "host", "port", "user", "password", "security", "timeout", "subject")
_WEBHOOK = ("headers", "secret", "timeout")


def configured(app: JobQueue) -> list[Notifier]:
    """The notifiers ``app.conf`` asks for (none unless ``notify_admins`` or
    ``notify_webhook_url`` is set), checked: a bad setting raises
    ``ConfigurationError`` naming it."""
    conf = app.conf
    shared: dict[str, Any] = {name: getattr(conf, f"notify_{name}") for name in _SHARED}
    notifiers: list[Notifier] = []
    if conf.notify_admins:
        own = {name: getattr(conf, f"notify_email_{name}") for name in _EMAIL}
        notifiers.append(EmailNotifier(conf.notify_admins, **own, **shared, from_conf=True))
    if conf.notify_webhook_url:
        own = {name: getattr(conf, f"notify_webhook_{name}") for name in _WEBHOOK}
        notifiers.append(WebhookNotifier(conf.notify_webhook_url, **own, **shared, from_conf=True))
    return notifiers


def install_configured(app: JobQueue) -> list[Notifier]:
    """Install what ``app.conf`` configures, unless notifiers were installed
    on ``app`` already (by code: it knows best). Returns the ones installed."""
    if installed(app):
        return []
    return [notifier.install(app) for notifier in configured(app)]
