"""The Procrastinate benchmark app (``procrastinate -a benchmarks.peers.procrastinate_app.app``).

Runs in Procrastinate's own venv; the DSN comes from ``$BENCH_DSN``.
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector  # type: ignore[import-not-found]

from benchmarks.peers._common import record_latency

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_DSN", "")))


@app.task(name="noop")  # type: ignore[untyped-decorator]
async def noop() -> None:
    return None


@app.task(name="stamp")  # type: ignore[untyped-decorator]
async def stamp(sent: float) -> None:
    record_latency(sent)
