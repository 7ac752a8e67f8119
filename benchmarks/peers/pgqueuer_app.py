"""The PgQueuer benchmark app: ``pgq run benchmarks.peers.pgqueuer_app:create``.

Runs in PgQueuer's own venv; the DSN comes from ``$BENCH_DSN``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-not-found,import-untyped,unused-ignore]
from pgqueuer import PgQueuer  # type: ignore[import-not-found]

from benchmarks.peers._common import record_latency


@asynccontextmanager
async def create() -> AsyncIterator[Any]:
    connection = await asyncpg.connect(os.environ["BENCH_DSN"])
    pgq = PgQueuer.from_asyncpg_connection(connection)

    @pgq.entrypoint("noop")  # type: ignore[untyped-decorator]
    async def noop(job: Any) -> None:
        return None

    @pgq.entrypoint("stamp")  # type: ignore[untyped-decorator]
    async def stamp(job: Any) -> None:
        record_latency(float(job.payload))

    try:
        yield pgq
    finally:
        await connection.close()


def main() -> None:
    """What ``pgq run benchmarks.peers.pgqueuer_app:create --batch-size N`` does, minus
    its logging setup, which fails under the typer that pip resolves for 1.6.0."""
    import logging
    import sys
    from datetime import timedelta

    from pgqueuer.adapters.cli.cli import asyncio_run  # type: ignore[import-not-found]
    from pgqueuer.adapters.cli.supervisor import run  # type: ignore[import-not-found]

    logging.basicConfig(level=logging.WARNING)
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    asyncio_run(run(create, batch_size=batch, dequeue_timeout=timedelta(seconds=30)))


if __name__ == "__main__":
    main()
