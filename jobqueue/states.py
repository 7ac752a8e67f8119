"""Job states, in Celery's vocabulary.

PENDING  waiting in a queue (due now or scheduled for later), or unknown id
STARTED  claimed by a worker and running
RETRY    failed, waiting for another attempt (reliability issue)
SUCCESS  finished; the result is stored
FAILURE  finished with an error; type, message and traceback are stored
REVOKED  cancelled or expired before it ran
"""

from typing import Final

PENDING: Final = "PENDING"
STARTED: Final = "STARTED"
RETRY: Final = "RETRY"
SUCCESS: Final = "SUCCESS"
FAILURE: Final = "FAILURE"
REVOKED: Final = "REVOKED"

ALL_STATES: Final = frozenset({PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED})
READY_STATES: Final = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES: Final = frozenset({PENDING, STARTED, RETRY})
EXCEPTION_STATES: Final = frozenset({FAILURE, REVOKED, RETRY})
