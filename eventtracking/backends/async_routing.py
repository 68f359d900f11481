"""The 4.x path of :class:`AsyncRoutingBackend`, kept so settings that name it still work.

The backend lives in :mod:`eventtracking.backends.celery` with the rest of the Celery
path; see ``eventtracking.backends.celery._backend`` for what it does.
"""

from __future__ import annotations

from eventtracking.backends.celery._backend import (
    CATCH_UP_BATCHES,
    DEFAULT_LEDGER_GRACE,
    DEFAULT_MAX_EVENT_SIZE,
    AsyncRoutingBackend,
)

__all__ = [
    "CATCH_UP_BATCHES",
    "DEFAULT_LEDGER_GRACE",
    "DEFAULT_MAX_EVENT_SIZE",
    "AsyncRoutingBackend",
]
