"""The Celery tasks behind :class:`~eventtracking.backends.async_routing.AsyncRoutingBackend`,
declared here (names, options) and run by :mod:`eventtracking.backends.celery._worker`.

``eventtracking.tasks.send_events(backend_name, entries)``
    What the backend publishes: a batch of entries (JSON text, see
    :mod:`eventtracking.backends.celery._wire`), each an event with its id.
``eventtracking.tasks.send_event(backend_name, processed_event)``
    The task of event-tracking 4.x, one event per message. Web processes still running
    4.x publish it during a rolling upgrade; workers running this library consume it.

Both look up ``backend_name`` among the top-level backends of the worker's default
tracker and deliver to its nested backends, leaf by leaf (see
:mod:`eventtracking.backends.celery._worker`): a leaf that fails is retried alone, with backoff,
and becomes a dead letter after :data:`MAX_RETRIES`; errors a retry cannot fix are dead
letters at once.

Both are ``acks_late`` with ``reject_on_worker_lost``: a message is acknowledged only
once its leaves hold its events (or its retries and dead letters are kept), so a worker
killed mid-batch gets the message redelivered. Set ``worker_prefetch_multiplier = 1``
so that a dying worker holds at most one unacknowledged batch.

The worker must build the default tracker before it consumes (the Django app does at
``django.setup()``), which imports this module and so registers the tasks. Importing
it without Celery raises ImportError naming the extra to install.
"""

from __future__ import annotations

from typing import Any

from eventtracking.backends.celery import _worker
from eventtracking.backends.celery._sink import LEGACY_TASK_NAME, TASK_NAME, import_celery
from eventtracking.backends.celery._worker import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_BACKOFF, stats

import_celery()

from celery import shared_task, signals  # noqa: E402 (after the check that names the extra)

__all__ = ["COUNTDOWN", "MAX_RETRIES", "send_event", "send_events", "start_sweepers", "stats"]

#: Retries of a failing leaf before its event becomes a dead letter (as in 4.x). An
#: AsyncRoutingBackend's ``max_retries`` option overrides it.
MAX_RETRIES = DEFAULT_MAX_RETRIES
#: Seconds before the first retry (as in 4.x); later retries back off exponentially,
#: with jitter. An AsyncRoutingBackend's ``retry_backoff`` option overrides it.
COUNTDOWN = DEFAULT_RETRY_BACKOFF

_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}


# The bodies are in _worker, where the rest of a message's life on the worker is.
send_events = shared_task(name=TASK_NAME, **_TASK_OPTIONS)(_worker.send_events)
send_event = shared_task(name=LEGACY_TASK_NAME, **_TASK_OPTIONS)(_worker.send_event)


@signals.worker_ready.connect(weak=False)
def start_sweepers(**kwargs: Any) -> None:
    """Start the Redis ledger sweeper of every AsyncRoutingBackend of the default tracker.

    Connected to Celery's ``worker_ready``: a worker looks for lost messages from the
    start, not only once a task arrives. Does nothing without a default tracker.
    """
    from eventtracking.tracker import registered

    tracker = registered()
    if tracker is None:
        return
    for backend in list(tracker.backends.values()):
        start = getattr(backend, "start_sweeper", None)
        if callable(start):
            start()
