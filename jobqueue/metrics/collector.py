"""The read of ``metrics()`` and its Prometheus families.

``SqlReader`` holds one connection of its own and answers within a deadline
or not at all; ``Collector`` turns the rows into families and adds the
exporter's own (``jobqueue_up``, the scrape's duration, its errors).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import psycopg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector as _Collector
from prometheus_client.utils import floatToGoString

from ..redact import redact

if TYPE_CHECKING:
    from ..app import JobQueue

log = logging.getLogger("jobqueue.metrics")

# What each series of metrics() is (docs/operations.md, "Metrics" says the
# same): its type and help. A name metrics() returns that is not here (a
# newer schema's) is exported untyped rather than dropped.
FAMILIES: dict[str, tuple[str, str]] = {
    "jobqueue_queue_due_jobs": ("gauge", "Jobs waiting in the queue that are due now."),
    "jobqueue_queue_scheduled_jobs": (
        "gauge",
        "Jobs waiting in the queue for a later time (ETA, countdown, retry delay).",
    ),
    "jobqueue_queue_oldest_due_age_seconds": (
        "gauge",
        "Seconds the oldest due job of the queue has waited since it was due (0: none).",
    ),
    "jobqueue_queue_running_jobs": ("gauge", "Jobs of the queue running now."),
    "jobqueue_queue_paused": ("gauge", "1 if the queue is paused, else 0."),
    "jobqueue_queue_workers": ("gauge", "Live workers consuming the queue."),
    "jobqueue_jobs_succeeded_total": ("counter", "Jobs that ended SUCCESS."),
    "jobqueue_jobs_failed_total": ("counter", "Jobs that ended FAILURE."),
    "jobqueue_jobs_retried_total": ("counter", "Attempts that ended in a retry."),
    "jobqueue_jobs_revoked_total": ("counter", "Jobs that ended REVOKED."),
    "jobqueue_job_wait_seconds": (
        "histogram",
        "Seconds from due (enqueued, or ETA/countdown/retry delay) to started, per attempt.",
    ),
    "jobqueue_job_run_seconds": ("histogram", "Seconds from started to finished, per attempt."),
    "jobqueue_workers": ("gauge", "Live workers (lease not expired) by hostname and version."),
    "jobqueue_schedule_lag_seconds": (
        "gauge",
        "Seconds an enabled periodic schedule is overdue (0: on time).",
    ),
}
_SUFFIXES = ("_bucket", "_sum", "_count")
_go_float = cast(Callable[[float], str], floatToGoString)  # le as Prometheus clients print it


class ReadError(Exception):
    """metrics() could not be read (in time)."""


class _Read:
    """One read in flight; every scrape that arrives meanwhile waits for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.rows: list[Any] = []
        self.error: BaseException | None = None
        self.conn: psycopg.Connection[Any] | None = None
        self.cancelled = False


class SqlReader:
    """Reads ``metrics()`` on a connection of its own, opened at the first
    read and again after any error. A read that has not answered within
    ``timeout`` seconds fails (the scrape says ``jobqueue_up 0``) and its
    query is cancelled; it goes on in its thread until the server or the
    network gives up, and scrapes arriving meanwhile wait for it rather than
    open more connections. The server ends the query at the same timeout
    (statement and lock timeouts), and the socket gives up on unacknowledged
    data after twice that: a dead server or a cut network cannot hold a
    thread for long."""

    def __init__(self, app: JobQueue, timeout: float = 5.0) -> None:
        if not 0 < timeout <= 300:  # also false for NaN
            raise ValueError(f"timeout must be in (0, 300] seconds, got {timeout!r}")
        self.app, self.timeout = app, timeout
        self._lock = threading.Lock()
        self._read: _Read | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._failing = False

    def read(self) -> list[Any]:
        """Rows of (metric, labels, value); ReadError if none came in time."""
        with self._lock:
            read = self._read
            if read is None or read.done.is_set():
                read = self._read = _Read()
                threading.Thread(
                    target=self._run, args=(read,), name="jobqueue-metrics-read", daemon=True
                ).start()
        if not read.done.wait(self.timeout):
            self._cancel(read)
            self._failed(f"PostgreSQL did not answer within {self.timeout:g}s")
            raise ReadError(f"no answer within {self.timeout:g}s")
        if read.error is not None:
            self._failed(_describe(read.error))
            raise ReadError(_describe(read.error)) from read.error
        if self._failing:
            self._failing = False
            log.warning("metrics: reading from PostgreSQL again")
        return read.rows

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _run(self, read: _Read) -> None:
        try:
            conn = self._connection()
            read.conn = conn
            read.rows = self.app.store.metrics(conn, self.timeout)
        except BaseException as exc:  # reported by read(); the thread must not die loud
            read.error = exc
            with self._lock:
                conn_, self._conn = self._conn, None
            if conn_ is not None:
                conn_.close()
        finally:
            read.done.set()

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        dsn = self.app.db.dsn()
        options: dict[str, Any] = {
            "autocommit": True,
            "application_name": "jobqueue-metrics",
            "prepare_threshold": None,  # one statement a scrape, and safe behind a pooler
        }
        # The DSN's own settings win (as for workers: db.worker_socket_options).
        if "connect_timeout" not in dsn:
            options["connect_timeout"] = max(round(self.timeout), 2)  # libpq's minimum
        if "tcp_user_timeout" not in dsn:
            options["tcp_user_timeout"] = int(self.timeout * 2000)
        if "keepalives_idle" not in dsn:
            options.update(keepalives=1, keepalives_idle=5, keepalives_interval=2)
            options["keepalives_count"] = 3
        conn = psycopg.connect(dsn, **options)
        with self._lock:
            self._conn = conn
        return conn

    def _cancel(self, read: _Read) -> None:
        conn = read.conn
        if conn is None or read.done.is_set() or read.cancelled:
            return
        read.cancelled = True  # once: later scrapes waiting on it add no cancel of their own

        def cancel() -> None:
            try:
                conn.cancel_safe(timeout=self.timeout)
            except Exception as exc:  # the server may be gone: the socket's timeout ends it
                log.debug("metrics: cancelling the late read failed: %s", exc)

        threading.Thread(target=cancel, name="jobqueue-metrics-cancel", daemon=True).start()

    def _failed(self, why: str) -> None:
        if not self._failing:  # once per outage, not once per scrape
            self._failing = True
            log.warning("metrics: cannot read from PostgreSQL (%s); jobqueue_up is 0", why)


def _describe(exc: BaseException) -> str:
    text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if isinstance(exc, psycopg.errors.UndefinedFunction):
        text += " (the schema predates revision 0015: run `jobqueue db upgrade`)"
    return text


class Collector(_Collector):
    """The families of one read, plus the exporter's own: ``jobqueue_up``
    (1: read, 0: not), ``jobqueue_scrape_duration_seconds`` and
    ``jobqueue_scrape_errors_total``."""

    def __init__(self, reader: SqlReader) -> None:
        self.reader = reader
        self.errors = 0

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            rows = self.reader.read()
            up = 1.0
        except ReadError:
            rows, up = [], 0.0
            self.errors += 1
        yield from families(rows)
        yield GaugeMetricFamily(
            "jobqueue_up", "1 if the last scrape read metrics() from PostgreSQL, else 0.", up
        )
        yield GaugeMetricFamily(
            "jobqueue_scrape_duration_seconds",
            "Seconds this scrape spent reading metrics() from PostgreSQL.",
            time.perf_counter() - started,
        )
        yield CounterMetricFamily(
            "jobqueue_scrape_errors",
            "Scrapes that could not read metrics() from PostgreSQL.",
            self.errors,
        )


def families(rows: list[Any]) -> list[Metric]:
    """Prometheus families from metrics() rows. A row that is not what
    metrics() returns (a name, a JSON object of text labels, a number) is
    logged and skipped, never the whole scrape."""
    simple: dict[str, Metric] = {}
    histograms: dict[str, dict[tuple[tuple[str, str], ...], dict[str, Any]]] = {}
    for row in rows:
        try:
            name, labels, value = row
            labels = {str(k): str(v) for k, v in dict(labels).items()}
            value = float(value)
        except (TypeError, ValueError) as exc:
            log.warning("metrics: skipped a malformed row %r (%s)", row, exc)
            continue
        base = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), None)
        if base is not None and FAMILIES.get(base, ("",))[0] == "histogram":
            le = labels.pop("le", None)
            series = histograms.setdefault(base, {}).setdefault(
                tuple(sorted(labels.items())), {"buckets": [], "sum": 0.0}
            )
            if name.endswith("_bucket") and le is not None:
                try:
                    series["buckets"].append((float(le), value))
                except ValueError:
                    log.warning("metrics: skipped a bucket with le=%r", le)
            elif name.endswith("_sum"):
                series["sum"] = value
            continue
        family = simple.get(name)
        if family is None:
            kind, doc = FAMILIES.get(name, ("unknown", f"{name} (from metrics())"))
            names = sorted(labels)
            if kind == "counter":
                family = CounterMetricFamily(name, doc, labels=names)
            elif kind == "gauge":
                family = GaugeMetricFamily(name, doc, labels=names)
            else:
                family = UnknownMetricFamily(name, doc, labels=names)
            simple[name] = family
        if sorted(labels) != list(family._labelnames):  # type: ignore[attr-defined]
            log.warning("metrics: skipped %s with labels %s", name, sorted(labels))
            continue
        family.add_metric([labels[k] for k in sorted(labels)], value)  # type: ignore[attr-defined]
    out: list[Metric] = list(simple.values())
    for base, by_labels in histograms.items():
        names = sorted(k for k, _ in next(iter(by_labels)))
        family = HistogramMetricFamily(base, FAMILIES[base][1], labels=names)
        for key, series in by_labels.items():
            buckets = sorted(series["buckets"])
            if not buckets or buckets[-1][0] != float("inf"):
                log.warning("metrics: skipped %s%s without a +Inf bucket", base, dict(key))
                continue
            family.add_metric(
                [v for _, v in key],
                [(_go_float(le), count) for le, count in buckets],
                series["sum"],
            )
        out.append(family)
    return out
