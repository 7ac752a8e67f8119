"""OpenTelemetry tracing, built on jobqueue.signals (``pip install jobqueue[otel]``).

``instrument()`` makes, for every job:

- a PRODUCER span ``publish <task>`` where it is enqueued (``before_task_publish``:
  ``delay``, ``apply_async``, ``send_task``, each canvas step, each beat tick),
  a child of the span current there (the web request's), whose context is
  injected into the job's headers (W3C ``traceparent``, and ``tracestate`` /
  ``baggage`` if any: whatever the global propagator writes). It ends at once:
  it marks the enqueue, not the insert's duration;
- a CONSUMER span ``run <task>`` around each attempt in the worker
  (``task_prerun`` to ``task_postrun``), whose parent is extracted from the job's
  headers, so one trace runs from the request that enqueued to every attempt,
  canvas steps included (each step is published when the canvas is). It is
  the current span while the task runs (in the event loop too, for ``async
  def`` tasks), so the task's own spans are its children. A failure sets its
  status to ERROR and records the exception; a retry records the exception
  as an event and leaves the status unset.

Attributes: ``jobqueue.job.id``, ``jobqueue.task``, ``jobqueue.queue``,
``jobqueue.attempt`` (consumer), and the messaging conventions'
``messaging.system`` ("jobqueue"), ``messaging.operation.type``,
``messaging.destination.name`` (the queue) and ``messaging.message.id``.

Signals are process-wide, so is this: call ``instrument()`` once in each
process that enqueues or runs jobs. With ``--pool processes`` the children
are separate processes: instrument at import of the app's module (children
import it), or in a ``worker_process_init`` receiver that also sets up the
child's tracer provider and exporter. A child killed at its hard time limit
exports nothing of that attempt.
"""

from __future__ import annotations

import threading
from contextvars import Token
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__, signals

_SYSTEM = "jobqueue"
_lock = threading.Lock()
_current: Instrumentation | None = None


def instrument(*, tracer_provider: trace.TracerProvider | None = None) -> Instrumentation:
    """Trace jobs in this process (see the module's docstring); once per
    process: a second call returns the first's instrumentation."""
    global _current
    with _lock:
        if _current is None:
            _current = Instrumentation(tracer_provider)
        return _current


class Instrumentation:
    """The receivers that make the spans; ``uninstrument()`` disconnects them."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
        # (job id, thread) -> the attempt's span and the token of its context:
        # prerun, failure/retry and postrun are sent by the thread that runs it.
        self._running: dict[tuple[str, int], tuple[trace.Span, Token[Context]]] = {}
        self._receivers = (
            (signals.before_task_publish, self._publish),
            (signals.task_prerun, self._prerun),
            (signals.task_failure, self._failure),
            (signals.task_retry, self._retry),
            (signals.task_postrun, self._postrun),
        )
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)

    def uninstrument(self) -> None:
        global _current
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        with _lock:
            if _current is self:
                _current = None

    # -- receivers ------------------------------------------------------------------

    def _publish(
        self,
        sender: Any = None,
        headers: dict[str, Any] | None = None,
        routing_key: str | None = None,
        **_: Any,
    ) -> None:
        if headers is None:
            return
        span = self.tracer.start_span(
            f"publish {sender}",
            kind=SpanKind.PRODUCER,
            attributes={
                "jobqueue.job.id": str(headers.get("id")),
                "jobqueue.task": str(sender),
                "jobqueue.queue": str(routing_key),
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "publish",
                "messaging.destination.name": str(routing_key),
                "messaging.message.id": str(headers.get("id")),
            },
        )
        try:
            propagate.inject(headers, context=trace.set_span_in_context(span))
        finally:
            span.end()

    def _prerun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if sender is None or task_id is None:
            return
        request = sender.request
        parent = propagate.extract(request.headers or {})
        span = self.tracer.start_span(
            f"run {sender.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "jobqueue.job.id": task_id,
                "jobqueue.task": sender.name,
                "jobqueue.queue": str(request.queue),
                "jobqueue.attempt": request.attempt,
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "process",
                "messaging.destination.name": str(request.queue),
                "messaging.message.id": task_id,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        self._running[(task_id, threading.get_ident())] = (span, token)

    def _failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        running = self._running.get((str(task_id), threading.get_ident()))
        if running is None:  # sent by the worker for a child it killed: no span here
            return
        span = running[0]
        if exception is not None:
            span.record_exception(exception)
        description = f"{type(exception).__name__}: {exception}" if exception else None
        span.set_status(Status(StatusCode.ERROR, description))

    def _retry(self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
        running = self._running.get((str(getattr(request, "id", "")), threading.get_ident()))
        if running is None:
            return
        span = running[0]
        span.set_attribute("jobqueue.retry", True)
        if isinstance(reason, BaseException):
            span.record_exception(reason, attributes={"jobqueue.retry": True})

    def _postrun(
        self, sender: Any = None, task_id: str | None = None, state: str | None = None, **_: Any
    ) -> None:
        running = self._running.pop((str(task_id), threading.get_ident()), None)
        if running is None:
            return
        span, token = running
        if state is not None:
            span.set_attribute("jobqueue.state", state)
        try:
            context.detach(token)
        finally:
            span.end()
