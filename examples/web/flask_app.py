"""Flask (sync): a SQLAlchemy session per request, the job in its
transaction, the metrics mounted beside the app (docs/web-frameworks.md).

    DATABASE_URL=postgresql://... flask --app examples.web.flask_app:web run
    jobqueue -A examples.web.flask_app:jobs worker
"""

from __future__ import annotations

import os

from flask import Flask, abort, g, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from jobqueue import JobQueue
from jobqueue.metrics import make_wsgi_app

DATABASE_URL = os.environ["DATABASE_URL"]
jobs = JobQueue(DATABASE_URL, schema=os.environ.get("JOBQUEUE_SCHEMA", "jobqueue"))
engine = create_engine(DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1))


@jobs.task
def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id}"


web = Flask(__name__)


def db() -> Session:
    """This request's session (what flask-sqlalchemy's ``db.session`` is)."""
    if "db" not in g:
        g.db = Session(engine)
    session: Session = g.db
    return session


@web.teardown_appcontext
def close_session(error: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()  # whatever was not committed is rolled back


@web.post("/orders/<int:order_id>")
def create_order(order_id: int) -> ResponseReturnValue:
    session = db()
    with session.begin():  # the order and its job commit together, or neither exists
        session.execute(text("INSERT INTO orders (id) VALUES (:id)"), {"id": order_id})
        receipt = send_receipt.apply_async((order_id,), connection=session)
        if order_id >= 1000:
            abort(422)  # rolled back: no job
    return jsonify(job=receipt.id)


@web.get("/receipts/<job_id>")
def get_receipt(job_id: str) -> ResponseReturnValue:
    return jsonify(receipt=jobs.AsyncResult(job_id).get(timeout=10))


# /metrics is served beside the Flask app, in the same WSGI server.
web.wsgi_app = DispatcherMiddleware(web.wsgi_app, {"/metrics": make_wsgi_app(jobs)})
