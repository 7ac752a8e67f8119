"""The test app, traced: ``jobqueue.contrib.otel`` instrumented at import.

Only worker subprocesses import it (``-A tests.otel_app:app``): the worker and,
with ``--pool processes``, each child, where every span is written at once as
one JSON line to the file named by ``$JOBQUEUE_TEST_SPANS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from jobqueue import JobQueue
from jobqueue.contrib.otel import instrument
from tests.apps import build

SPANS_FILE = "JOBQUEUE_TEST_SPANS"


class FileExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as file:  # one short append per span
            for span in spans:
                parent = span.parent
                file.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "kind": span.kind.name,
                            "pid": os.getpid(),
                            "trace_id": f"{span.context.trace_id:032x}",
                            "span_id": f"{span.context.span_id:016x}",
                            "parent_id": None if parent is None else f"{parent.span_id:016x}",
                            "status": span.status.status_code.name,
                            "attributes": dict(span.attributes or {}),
                            "events": [event.name for event in span.events],
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


provider = TracerProvider(resource=Resource.create({"service.name": "jobqueue-test-worker"}))
if os.environ.get(SPANS_FILE):
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ[SPANS_FILE])))
instrument(tracer_provider=provider)

app = JobQueue()
tasks = build(app)
