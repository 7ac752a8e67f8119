"""The project's own tasks, found by app.autodiscover_tasks()."""

from django.db import connection, transaction
from djproj.jobs import app


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.periodic(3600, name="shop.hourly")
@app.task
def hourly() -> None:
    """Declared in a discovered module: a beat must see it."""


@app.task
def database() -> str:
    """Django is set up in the worker: its ORM connection works here."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        return str(cursor.fetchone()[0])


@app.task
def place_order(fail: bool) -> str | None:
    """Enqueue inside atomic() from a task: the job follows the transaction."""
    try:
        with transaction.atomic():
            result = add.delay(20, 22)
            if fail:
                raise RuntimeError("payment declined")
    except RuntimeError:
        return None
    return result.id
