"""A notifier: failures recorded by a worker, sent from a thread of its own.

The contract of a notifier (``EmailNotifier``, ``WebhookNotifier``): ``send``
delivers one ``Message`` or raises; ``describe`` names where it sends,
without credentials. Everything else is here: which failures count
(filters), the rate limit (``digest.Digest``), retries, the flush at exit.

It hooks into the worker's ``outcomes_recorded`` (jobqueue/hooks.py), which
fires in the worker's main process once a batch of outcomes is committed:
a failure is notified only once it is durably recorded, and there is one
rate limit per worker process (not per process-pool child). The hook's
subscriber only queues the batch's failures (a list comprehension on the
completer's thread); matching, rendering and sending happen on the
notifier's thread, so a slow or dead mail server never holds up a job.
"""

from __future__ import annotations

import fnmatch
import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from .. import states
from ..exceptions import ConfigurationError
from ..worker.outcome import Outcome
from .digest import Digest, Failure, Message

if TYPE_CHECKING:
    from ..app import JobQueue

log = logging.getLogger("jobqueue.notify")

_BACKOFF = 1.0  # seconds before the first retry of a failed send; doubles, capped by the window
_installed: WeakKeyDictionary[JobQueue, list[Notifier]] = WeakKeyDictionary()
_STOP = object()


def installed(app: JobQueue) -> list[Notifier]:
    """The notifiers installed on ``app``."""
    return list(_installed.get(app, ()))


def _patterns(value: Iterable[str] | str | None, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    try:
        patterns = tuple(value)
    except TypeError:
        raise ConfigurationError(
            f"{name} must be a list of names or globs, got {value!r}"
        ) from None
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ConfigurationError(
                f"{name} must be a list of non-empty names or globs, got {pattern!r} in it"
            )
    return patterns


def _number(value: Any, name: str, minimum: float, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum:
        what = "an integer" if integer else "a number"
        raise ConfigurationError(f"{name} must be {what} >= {minimum:g}, got {value!r}")
    return value


class Notifier:
    """Base of the notifiers (see the module's docstring). Options:

    - ``window``: seconds; after a message, the next waits this long and
      counts every failure in between (the first failure after a quiet
      window goes out at once);
    - ``retries``: further attempts at a message that could not be sent
      (1 s, 2 s, 4 s... apart), after which it is dropped and logged;
    - ``on_retry``: also notify attempts that will be retried (RETRY);
      by default only jobs that failed for good (FAILURE);
    - ``tasks`` / ``exclude_tasks``: task names or globs (``"billing.*"``);
    - ``exceptions`` / ``exclude_exceptions``: exception type names, bare
      or with their module (``"TimeoutError"``, ``"requests.exceptions.*"``);
      an empty include list includes everything;
    - ``examples``: failures described in full in a digest.
    """

    kind = "notifier"
    #: Its own settings are app.conf.notify_<setting_prefix><parameter>.
    setting_prefix = ""

    def __init__(
        self,
        *,
        window: float = 300.0,
        retries: int = 3,
        on_retry: bool = False,
        tasks: Iterable[str] | None = None,
        exclude_tasks: Iterable[str] | None = None,
        exceptions: Iterable[str] | None = None,
        exclude_exceptions: Iterable[str] | None = None,
        examples: int = 5,
        from_conf: bool = False,
    ) -> None:
        self.from_conf = from_conf  # error messages name app.conf's settings
        name = self.name
        self.window = float(_number(window, name("window", own=False), 0))
        self.retries = int(_number(retries, name("retries", own=False), 0, integer=True))
        self.examples = int(_number(examples, name("examples", own=False), 1, integer=True))
        if not isinstance(on_retry, bool):
            raise ConfigurationError(
                f"{name('on_retry', own=False)} must be True or False, got {on_retry!r}"
            )
        self.states = frozenset({states.FAILURE, states.RETRY} if on_retry else {states.FAILURE})
        self.tasks = _patterns(tasks, name("tasks", own=False))
        self.exclude_tasks = _patterns(exclude_tasks, name("exclude_tasks", own=False))
        self.exceptions = _patterns(exceptions, name("exceptions", own=False))
        self.exclude_exceptions = _patterns(
            exclude_exceptions, name("exclude_exceptions", own=False)
        )
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._workers = 0  # running workers of this process it serves
        self._lock = threading.Lock()
        self.hostname = "?"
        self.sent = 0  # messages delivered
        self.dropped = 0  # messages given up on

    def name(self, parameter: str, own: bool = True) -> str:
        """What an error message calls ``parameter``: itself, or the setting."""
        if not self.from_conf:
            return parameter
        return f"app.conf.notify_{self.setting_prefix if own else ''}{parameter}"

    # -- the contract ------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Deliver ``message`` now, or raise."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where it sends, fit for a log line (no credential)."""
        return self.kind

    def secrets(self) -> Sequence[str]:
        """Strings that must never reach a log line (scrubbed from errors)."""
        return ()

    # -- wiring ----------------------------------------------------------------------

    def install(self, app: JobQueue) -> Notifier:
        """Notify the failures of every worker of ``app`` in this process (its
        thread starts with the first worker and stops with the last)."""
        app.hooks.connect("worker_ready", self._worker_ready)
        app.hooks.connect("outcomes_recorded", self._outcomes_recorded)
        app.hooks.connect("worker_stopped", self._worker_stopped)
        _installed.setdefault(app, []).append(self)
        return self

    def _worker_ready(self, worker: Any, **_: Any) -> None:
        with self._lock:
            self._workers += 1
            self.hostname = str(getattr(worker, "hostname", "?"))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"jobqueue-notify-{self.kind}", daemon=True
                )
                self._thread.start()
        log.info("%s: notifying %s", self.describe(), self._what())

    def _outcomes_recorded(self, outcomes: Sequence[Outcome], **_: Any) -> None:
        # On the completer's thread, between two commits: queue, nothing more.
        wanted = self.states
        failures = [o for o in outcomes if o.state in wanted]
        if failures:
            self._queue.put(failures)

    def _worker_stopped(self, **_: Any) -> None:
        with self._lock:
            self._workers -= 1
            last = self._workers <= 0
        if last:
            self.close()

    def close(self, timeout: float | None = None) -> None:
        """Send what is pending now (one attempt) and stop the thread, waiting
        at most ``timeout`` seconds (default: the send's own timeout, plus one)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._queue.put(_STOP)
        thread.join(self._flush_time() + 1.0 if timeout is None else timeout)
        if thread.is_alive():
            log.warning("%s: gave up flushing pending notifications at exit", self.describe())

    def _flush_time(self) -> float:
        return 10.0

    # -- the thread ------------------------------------------------------------------

    def matches(self, failure: Failure) -> bool:
        """Whether the filters let ``failure`` through."""
        task = failure.task
        if self.tasks and not any(fnmatch.fnmatchcase(task, p) for p in self.tasks):
            return False
        if any(fnmatch.fnmatchcase(task, p) for p in self.exclude_tasks):
            return False
        names = (failure.exception, f"{failure.module}.{failure.exception}")
        if self.exceptions and not any(
            fnmatch.fnmatchcase(n, p) for p in self.exceptions for n in names
        ):
            return False
        return not any(fnmatch.fnmatchcase(n, p) for p in self.exclude_exceptions for n in names)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug here must not pass silently
            log.exception(
                "%s: the notifier's thread failed; no more notifications", self.describe()
            )

    def _loop(self) -> None:
        digest = Digest(self.window, self.examples)
        retry: Message | None = None  # a message that could not be sent yet
        attempts = 0
        retry_at = 0.0
        while True:
            # Waiting on the queue is the timer: a new batch or the stop wakes it.
            # While a message awaits its retry, newer failures wait behind it.
            now = time.monotonic()
            wait = retry_at - now if retry is not None else digest.due_in(now)
            try:
                item = (
                    self._queue.get(timeout=max(0.0, wait))
                    if wait is not None
                    else self._queue.get()
                )
            except queue.Empty:
                item = None
            stopping = False
            while item is not None:
                if item is _STOP:
                    stopping = True
                else:
                    for outcome in item:
                        failure = Failure.from_outcome(outcome)
                        if self.matches(failure):
                            digest.add(failure)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            now = time.monotonic()
            if stopping:  # one last attempt at everything, bounded by the send's timeout
                if retry is not None:
                    self._attempt(retry, final=True)
                message = digest.take(now, self.hostname)
                if message is not None:
                    self._attempt(message, final=True)
                return
            if retry is not None:
                if now < retry_at:
                    continue
                message, retry = retry, None
            else:
                due = digest.due_in(now)
                if due is None or due > 0:
                    continue
                taken = digest.take(now, self.hostname)
                assert taken is not None
                message, attempts = taken, 0
            attempts += 1
            if not self._attempt(message, final=attempts > self.retries):
                retry = message
                retry_at = time.monotonic() + min(
                    _BACKOFF * 2 ** (attempts - 1), self.window or 1.0
                )

    def _attempt(self, message: Message, final: bool) -> bool:
        """Send ``message`` once; whether it is settled (sent, or given up on)."""
        try:
            self.send(message)
        except Exception as exc:
            reason = self._scrub(f"{type(exc).__name__}: {exc}")
            if final:
                self.dropped += 1
                log.error(
                    "%s: could not send a notification of %d failure(s) (%s); dropped "
                    "(the jobs' failures are recorded: jobqueue jobs list --state FAILURE)",
                    self.describe(),
                    message.count,
                    reason,
                )
                return True
            log.warning(
                "%s: could not send a notification of %d failure(s) (%s); will retry",
                self.describe(),
                message.count,
                reason,
            )
            return False
        self.sent += 1
        log.info("%s: sent a notification of %d failure(s)", self.describe(), message.count)
        return True

    def _scrub(self, text: str) -> str:
        for secret in self.secrets():
            if secret:
                text = text.replace(secret, "***")
        return text

    def _what(self) -> str:
        what = "failures and retries" if states.RETRY in self.states else "failures"
        parts = [f"{what}, at most one message every {self.window:g}s"]
        for name in ("tasks", "exclude_tasks", "exceptions", "exclude_exceptions"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={','.join(value)}")
        return "; ".join(parts)
