"""FastAPI: a job enqueued in the request's own transaction (docs/web-frameworks.md).

DATABASE_URL=postgresql://... JOBQUEUE_DASHBOARD_TOKEN=... uvicorn examples.web.fastapi_app:web
jobqueue -A examples.web.fastapi_app:jobs worker
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from jobqueue import JobQueue
from jobqueue.dashboard import Auth, create_app
from jobqueue.metrics import make_asgi_app

DATABASE_URL = os.environ["DATABASE_URL"]  # postgresql://user:password@host/dbname
jobs = JobQueue(DATABASE_URL, schema=os.environ.get("JOBQUEUE_SCHEMA", "jobqueue"))
# The same database through SQLAlchemy's psycopg 3 driver, async.
engine = create_async_engine(DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1))
Session = async_sessionmaker(engine, expire_on_commit=False)


@jobs.task
def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id}"


async def session() -> AsyncIterator[AsyncSession]:
    async with Session() as db:
        yield db


@asynccontextmanager
async def lifespan(web: FastAPI) -> AsyncIterator[None]:
    yield
    await jobs.aclose()  # the async pool and result listener of this event loop
    await engine.dispose()


web = FastAPI(lifespan=lifespan)
web.mount("/metrics", make_asgi_app(jobs))
web.mount("/jobs", create_app(jobs, auth=Auth(token=os.environ["JOBQUEUE_DASHBOARD_TOKEN"])))


@web.post("/orders/{order_id}")
async def create_order(
    order_id: int, db: Annotated[AsyncSession, Depends(session)]
) -> dict[str, str]:
    async with db.begin():  # the order and its job commit together, or neither exists
        await db.execute(text("INSERT INTO orders (id) VALUES (:id)"), {"id": order_id})
        receipt = await send_receipt.aapply_async((order_id,), connection=db)
        if order_id >= 1000:
            raise HTTPException(422, "order ids stop at 999")  # rolled back: no job
    return {"job": receipt.id}


@web.get("/receipts/{job_id}")
async def get_receipt(job_id: str) -> dict[str, str]:
    return {"receipt": await jobs.AsyncResult(job_id).aget(timeout=10)}
