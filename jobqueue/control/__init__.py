"""Operations: manage jobs and queues (``app.control``) from Python and the
CLI, over the schema's SQL functions (see docs/operations.md). A surface over
the core: it imports the core, the core imports it only lazily
(``JobQueue.control``)."""

from .filters import Filters
from .jobs import Attempt, Job, QueueStats
from .management import BATCH_SIZE, Control
from .remote import Inspect, broadcast

__all__ = [
    "BATCH_SIZE",
    "Attempt",
    "Control",
    "Filters",
    "Inspect",
    "Job",
    "QueueStats",
    "broadcast",
]
