"""Starlette with a psycopg pool of its own: the job joins the request's
transaction on a psycopg ``AsyncConnection`` (docs/web-frameworks.md).

    DATABASE_URL=postgresql://... uvicorn examples.web.starlette_app:web
    jobqueue -A examples.web.starlette_app:jobs worker
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from jobqueue import JobQueue
from jobqueue.dashboard import create_app
from jobqueue.metrics import make_asgi_app

DATABASE_URL = os.environ["DATABASE_URL"]
jobs = JobQueue(DATABASE_URL, schema=os.environ.get("JOBQUEUE_SCHEMA", "jobqueue"))
pool = AsyncConnectionPool(DATABASE_URL, open=False)  # the application's own connections


@jobs.task
def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id}"


async def create_order(request: Request) -> JSONResponse:
    order_id = request.path_params["order_id"]
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO orders (id) VALUES (%s)", (order_id,))
        receipt = await send_receipt.aapply_async((order_id,), connection=conn)
    return JSONResponse({"job": receipt.id})


async def get_receipt(request: Request) -> JSONResponse:
    result = jobs.AsyncResult(request.path_params["job_id"])
    return JSONResponse({"receipt": await result.aget(timeout=10)})


@asynccontextmanager
async def lifespan(web: Starlette) -> AsyncIterator[None]:
    await pool.open()
    yield
    await jobs.aclose()
    await pool.close()


web = Starlette(
    routes=[
        Route("/orders/{order_id:int}", create_order, methods=["POST"]),
        Route("/receipts/{job_id}", get_receipt),
        Mount("/metrics", make_asgi_app(jobs)),
        Mount("/jobs", create_app(jobs, read_only=True)),  # behind your own authentication
    ],
    lifespan=lifespan,
)
