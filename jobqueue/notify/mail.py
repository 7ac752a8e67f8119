"""Failure notifications by e-mail, through ``smtplib`` (Celery's error e-mails)."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Iterable, Sequence
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from ..exceptions import ConfigurationError
from .base import Notifier, _number
from .digest import Message

SECURITY = ("none", "starttls", "ssl")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
DEFAULT_SUBJECT = "[jobqueue] {task} failed: {exception_type}"
#: The fields a subject template may use (``digest.Message.fields``).
SUBJECT_FIELDS = ("task", "exception_type", "state", "count", "hostname", "queue", "job_id")


class EmailNotifier(Notifier):
    """Mails failures to ``admins`` (addresses, or ``(name, address)`` pairs as
    in Celery's ``ADMINS``) from ``sender`` through the SMTP server at
    ``host``:``port`` (default 25, 587 with ``security="starttls"``, 465 with
    ``"ssl"``), logging in with ``user``/``password`` if given. ``subject`` is
    a ``str.format`` template over the fields of ``SUBJECT_FIELDS``; a digest's
    subject adds how many more failures it counts. Options of ``Notifier``.

        EmailNotifier(admins=["ops@example.com"], host="smtp.example.com",
                      security="starttls", user="jobqueue", password=...).install(app)
    """

    kind = "e-mail"
    setting_prefix = "email_"

    def __init__(
        self,
        admins: Iterable[str | tuple[str, str]],
        *,
        sender: str | None = None,
        host: str = "localhost",
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        security: str = "none",
        timeout: float = 10.0,
        subject: str = DEFAULT_SUBJECT,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        name = self.name
        self.admins = self._recipients(admins)
        if security not in SECURITY:
            raise ConfigurationError(
                f"{name('security')} must be one of {', '.join(SECURITY)}, got {security!r}"
            )
        self.security = security
        if not isinstance(host, str) or not host:
            raise ConfigurationError(f"{name('host')} must be a host name, got {host!r}")
        self.host = host
        if port is None:
            port = DEFAULT_PORTS[security]
        self.port = int(_number(port, name("port"), 1, integer=True))
        self.timeout = float(_number(timeout, name("timeout"), 0.001))
        for key, value in (("user", user), ("password", password)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{name(key)} must be a string or None")
        if password and not user:
            raise ConfigurationError(f"{name('password')} is set without {name('user')}")
        self.user, self.password = user or None, password or None
        self.sender = sender or f"jobqueue@{socket.getfqdn()}"
        if not isinstance(self.sender, str) or "@" not in self.sender:
            raise ConfigurationError(f"{name('sender')} must be an e-mail address, got {sender!r}")
        self.subject = subject
        self._check_subject()

    def _recipients(self, admins: Iterable[str | tuple[str, str]]) -> list[str]:
        where = "app.conf.notify_admins" if self.from_conf else "admins"
        if isinstance(admins, str):
            admins = [admins]
        recipients = []
        for entry in admins:
            if isinstance(entry, (tuple, list)) and len(entry) == 2:
                display, address = entry
            else:
                display, address = "", entry
            if not isinstance(address, str) or "@" not in address or not isinstance(display, str):
                raise ConfigurationError(
                    f"{where} must list e-mail addresses or (name, address) pairs, "
                    f"got {entry!r} in it"
                )
            recipients.append(formataddr((display, address)) if display else address)
        if not recipients:
            raise ConfigurationError(f"{where} lists no address to mail failures to")
        return recipients

    def _check_subject(self) -> None:
        sample = dict.fromkeys(SUBJECT_FIELDS, "x")
        try:
            if not isinstance(self.subject, str):
                raise TypeError("not a string")
            self.subject.format(**sample)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            raise ConfigurationError(
                f"{self.name('subject')} {self.subject!r} is not a template over "
                f"{', '.join('{' + f + '}' for f in SUBJECT_FIELDS)} "
                f"({type(exc).__name__}: {exc})"
            ) from None

    def describe(self) -> str:
        return f"e-mail to {len(self.admins)} admin(s) via {self.host}:{self.port}"

    def secrets(self) -> Sequence[str]:
        return [self.password] if self.password else []

    def _flush_time(self) -> float:
        return 2 * self.timeout  # a retry and the digest, each one attempt

    def email(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = message.subject(self.subject)
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.admins)
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2])
        mail.set_content(message.text())
        return mail

    def send(self, message: Message) -> None:
        mail = self.email(message)
        smtp: smtplib.SMTP
        if self.security == "ssl":
            context = ssl.create_default_context()
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(mail)
