"""The SQL boundary: every statement jobqueue runs, one method each.

This is the only Python that names a statement of ``sql/queries.sql``. Two
kinds of method:

- **on the app's connections** (producers, results, the CLI): no ``conn``
  argument; the statement runs on a pooled autocommit connection and
  transient failures are retried (``Database.execute``), or inside the
  caller's transaction when given ``connection=``;
- **on a connection the caller owns** (the worker's claim, completion,
  listener and heartbeat sessions; the beat): ``conn`` comes first, and the
  caller handles its failures (it reconnects; a batch is kept).

One module per kind of caller: ``producer`` (the app: enqueue, revoke,
results, batches), ``operations`` (app.control, the CLI, the dashboard),
``worker`` (a worker's sessions and its maintenance), ``listeners`` (the
metrics exporter, the events listener, the beat); ``base`` runs them.

Rules that used to live in comments live here: what must share a
transaction (a revocation, a rescue or a completion with the canvas steps
that follow it; a unique key's lock with its insert) is one method.
"""

from .base import LISTENED, VACUUMED, Params, StoreBase, refused_dependencies, schema_version
from .listeners import ListenerStatements
from .operations import FILTERS, OperationStatements
from .worker import WorkerStatements


class Store(ListenerStatements, OperationStatements, WorkerStatements):
    """Every statement jobqueue runs, one method each, grouped by who runs it
    (one module each); ``StoreBase`` runs them."""


__all__ = [
    "FILTERS",
    "LISTENED",
    "VACUUMED",
    "Params",
    "Store",
    "StoreBase",
    "refused_dependencies",
    "schema_version",
]
