"""The 4.x path of the Celery tasks, kept for ``CELERY_IMPORTS = ["eventtracking.tasks"]``.

Importing it registers the tasks ``eventtracking.tasks.send_events`` and
``eventtracking.tasks.send_event`` (their names are fixed, not taken from this module's
path); they live in ``eventtracking.backends.celery._tasks``. Importing it without
Celery raises ImportError naming the extra to install.
"""

from __future__ import annotations

from eventtracking.backends.celery._tasks import (
    COUNTDOWN,
    MAX_RETRIES,
    send_event,
    send_events,
    start_sweepers,
    stats,
)

__all__ = ["COUNTDOWN", "MAX_RETRIES", "send_event", "send_events", "start_sweepers", "stats"]
