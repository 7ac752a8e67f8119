"""Eager mode and ``Task.apply()``: jobs run here and now, with no database.

``Task.apply()`` and ``Signature.apply()`` always run eagerly; with
``app.conf.eager = True`` (Celery's ``task_always_eager``) so do ``delay()``,
``apply_async()``, ``send_task()``, ``enqueue_many()`` and every canvas.

- ``run``: the machinery: each job goes through the worker's own executor,
  and what follows it is what the database's ``advance()`` would create;
- ``result``: ``EagerResult`` and ``EagerGroupResult``, Celery's names, read
  from memory.

docs/testing.md lists what differs from a worker.
"""

from .result import EagerGroupResult, EagerResult

# ``run`` is imported where eager mode starts (it loads the worker's executor),
# not here: ``import jobqueue`` stays as light as it was.
__all__ = ["EagerGroupResult", "EagerResult"]
