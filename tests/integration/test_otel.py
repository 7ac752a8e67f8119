"""OpenTelemetry: one trace from the request that enqueues to every attempt in
the worker, canvas steps included, in the thread pool and in a pool child."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from jobqueue import JobQueue, chain, chord, group
from jobqueue.contrib.otel import instrument
from jobqueue.worker import Worker
from tests.apps import CustomError
from tests.conftest import wait_for

SPANS_FILE = "JOBQUEUE_TEST_SPANS"  # as in tests/otel_app.py, which only workers import


@pytest.fixture
def traced() -> Iterator[tuple[InMemorySpanExporter, Tracer]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation = instrument(tracer_provider=provider)
    try:
        yield exporter, provider.get_tracer("the web app")
    finally:
        instrumentation.uninstrument()


@contextmanager
def running(app: JobQueue) -> Iterator[None]:
    worker = Worker(app, concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(30)


def _job(span: ReadableSpan) -> str:
    return str((span.attributes or {})["jobqueue.job.id"])


def test_a_trace_crosses_from_the_request_into_the_worker(
    jq: Any, traced: tuple[InMemorySpanExporter, Tracer]
) -> None:
    exporter, tracer = traced
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as web:
        ok = jq.add.delay(1, 2)
        bad = jq.boom.delay("no")
        flaky = jq.flaky.delay(1)  # fails once, retried, then succeeds
        awaited = jq.async_add.delay(1, 2)
        steps = chain(jq.add.s(1, 1), jq.add.s(2)).apply_async()
        chorded = chord(group(jq.add.s(1, 1), jq.add.s(2, 2)), jq.tsum.s()).apply_async()
    with running(jq.app):
        assert [r.get(timeout=30) for r in (ok, flaky, awaited, steps, chorded)] == [
            3,
            "ok after 1 retries",
            3,
            4,
            6,
        ]
        with pytest.raises(CustomError):
            bad.get(timeout=30)
    spans = exporter.get_finished_spans()
    trace_id, web_id = web.get_span_context().trace_id, web.get_span_context().span_id
    producers = {_job(s): s for s in spans if s.kind == SpanKind.PRODUCER}
    consumers = [s for s in spans if s.kind == SpanKind.CONSUMER]
    # 1 + 1 + 1 + 1 + 2 (chain) + 3 (chord) jobs; flaky's job runs twice.
    assert len(producers) == 9 and len(consumers) == 10
    for span in [*producers.values(), *consumers]:
        assert span.context.trace_id == trace_id
    for producer in producers.values():
        assert producer.parent is not None and producer.parent.span_id == web_id
    for consumer in consumers:
        producer = producers[_job(consumer)]
        assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id

    def runs(job_id: str) -> list[ReadableSpan]:
        return sorted(
            (s for s in consumers if _job(s) == job_id),
            key=lambda s: int((s.attributes or {})["jobqueue.attempt"]),
        )

    (run,) = runs(ok.id)
    assert run.name == "run add" and producers[ok.id].name == "publish add"
    assert dict(run.attributes or {}) | {"jobqueue.job.id": "-"} == {
        "jobqueue.job.id": "-",
        "jobqueue.task": "add",
        "jobqueue.queue": "default",
        "jobqueue.attempt": 1,
        "jobqueue.state": "SUCCESS",
        "messaging.system": "jobqueue",
        "messaging.operation.type": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": ok.id,
    }
    assert run.status.status_code == StatusCode.UNSET
    (failed,) = runs(bad.id)
    assert failed.status.status_code == StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
    assert (failed.events[0].attributes or {})["exception.type"].endswith("CustomError")
    first, second = runs(flaky.id)
    assert (first.attributes or {})["jobqueue.retry"] is True
    assert [e.name for e in first.events] == ["exception"]
    assert (second.attributes or {})["jobqueue.attempt"] == 2 and not second.events


def test_an_async_task_runs_inside_its_span(
    jq: Any, traced: tuple[InMemorySpanExporter, Tracer]
) -> None:
    """The task's own spans are children of its run, also on the event loop thread."""
    exporter, tracer = traced

    @jq.app.task(name="traced_async")
    async def traced_async() -> str:
        with tracer.start_as_current_span("inside"):
            return "done"

    with running(jq.app):
        assert traced_async.delay().get(timeout=30) == "done"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    inside, run = spans["inside"], spans["run traced_async"]
    assert inside.parent is not None and inside.parent.span_id == run.context.span_id


def test_a_process_pool_child_continues_the_trace(
    jq: Any,
    traced: tuple[InMemorySpanExporter, Tracer],
    start_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter, tracer = traced
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv(SPANS_FILE, str(path))
    worker = start_worker("--pool", "processes", "--concurrency", "1", app="tests.otel_app:app")
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as web:
        steps = chain(jq.add.s(1, 1), jq.add.s(2)).apply_async()
        bad = jq.boom.delay("no")
    assert steps.get(timeout=30) == 4
    with pytest.raises(CustomError):
        bad.get(timeout=30)

    def consumers() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return [line for line in lines if line["kind"] == "CONSUMER"]

    # Exported as each run ends, before its outcome is sent to the worker.
    runs = wait_for(lambda: len(consumers()) == 3 and consumers(), 10, "three runs")
    producers = {_job(s): s for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER}
    assert len(producers) == 3
    trace_id = f"{web.get_span_context().trace_id:032x}"
    for run in runs:
        job = run["attributes"]["jobqueue.job.id"]
        assert run["trace_id"] == trace_id
        assert run["parent_id"] == f"{producers[job].context.span_id:016x}"
        assert run["pid"] != worker.proc.pid  # the child's own tracer exported it
    (failed,) = [run for run in runs if run["attributes"]["jobqueue.job.id"] == bad.id]
    assert failed["status"] == "ERROR" and failed["events"] == ["exception"]
