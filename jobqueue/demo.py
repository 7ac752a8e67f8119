"""``jobqueue demo``: the transactional promise, shown end to end.

Starts a worker in a subprocess, then in two transactions writes an order row
and enqueues a job for it: the committed one runs, the rolled-back one never
existed. Uses whatever database the app resolves (the embedded server when no
DSN is configured). An embedded server it started is stopped when it ends,
Ctrl-C included; one that was already running is left running, with the
command that stops it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import psycopg

from . import embedded
from .app import JobQueue

app = JobQueue()


@app.task
def ship_order(order_id: int) -> str:
    return f"order {order_id} shipped"


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def run() -> int:
    logging.basicConfig(format="demo: %(message)s")
    logging.getLogger("jobqueue.embedded").setLevel(logging.INFO)
    data_dir = app.conf.data_dir
    # What this demo starts, it stops: a server that ran before it is the user's.
    ours = not app.conf.resolved_dsn() and not embedded.is_running(data_dir)
    try:
        return _run()
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    finally:
        app.close()
        if ours and embedded.stop(data_dir):
            _say(f"stopped the embedded PostgreSQL it started in {embedded.pgdata(data_dir)}")
        elif not app.conf.resolved_dsn() and embedded.is_running(data_dir):
            _say(
                f"the embedded PostgreSQL in {embedded.pgdata(data_dir)} was already running "
                f"and still is; stop it with: {embedded.stop_command(data_dir)}"
            )


def _run() -> int:
    dsn = app.db.dsn()
    app.db.ensure_schema()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobqueue",
            "-A",
            "jobqueue.demo:app",
            "worker",
            "--concurrency",
            "2",
            "--loglevel",
            "warning",
        ],
        env={**os.environ, "JOBQUEUE_DSN": dsn},
        # Not in the terminal's process group: Ctrl-C reaches the demo alone,
        # which stops the worker (SIGTERM) before the server.
        start_new_session=True,
    )
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS jobqueue_demo")
            conn.execute("CREATE TABLE IF NOT EXISTS jobqueue_demo.orders (id int PRIMARY KEY)")
            conn.execute("TRUNCATE jobqueue_demo.orders")
            conn.commit()

            conn.execute("INSERT INTO jobqueue_demo.orders VALUES (1)")
            committed = ship_order.apply_async((1,), connection=conn)
            conn.commit()
            _say(f"committed order 1 and job {committed.id}")

            conn.execute("INSERT INTO jobqueue_demo.orders VALUES (2)")
            rolled_back = ship_order.apply_async((2,), connection=conn)
            conn.rollback()
            _say(f"rolled back order 2 and job {rolled_back.id}")

            started = time.monotonic()
            result = committed.get(timeout=30)
            _say(f"job for order 1 ran: {result!r} ({time.monotonic() - started:.3f}s)")

            orders = [r[0] for r in conn.execute("SELECT id FROM jobqueue_demo.orders")]
            conn.commit()
            gone = app.store.get_job(rolled_back.id) is None
            _say(f"orders in the table: {orders}; job for order 2 exists: {not gone}")
            ok = result == "order 1 shipped" and orders == [1] and gone
            _say("OK: committed work ran, rolled-back work never existed" if ok else "FAILED")
            return 0 if ok else 1
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        _wait(worker)


def _wait(worker: subprocess.Popen[bytes]) -> None:
    """Until the worker has exited, even through a second Ctrl-C (the stop of
    the server waits for the worker's connections to close)."""
    while True:
        try:
            worker.wait(timeout=30)
            return
        except KeyboardInterrupt:
            continue
        except subprocess.TimeoutExpired:
            worker.kill()
