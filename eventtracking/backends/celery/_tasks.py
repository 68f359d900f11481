"""The Celery tasks behind :class:`~eventtracking.backends.async_routing.AsyncRoutingBackend`.

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

from eventtracking.backends.celery._sink import LEGACY_TASK_NAME, TASK_NAME, import_celery
from eventtracking.backends.celery._wire import refusal
from eventtracking.backends.celery._worker import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    Requeue,
    dead_letter_message,
    deliver,
    deliver_legacy,
    forget,
    send_back,
    stats,
)

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


def _arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[str, str]
) -> tuple[Any, Any, str | None]:
    """The two arguments of a task, by position or by name, and what is wrong with them.

    Tasks take ``*args`` so that a message with the wrong arguments reaches our code
    and becomes a counted dead letter, instead of a TypeError that Celery would
    acknowledge and drop.
    """
    values: list[Any] = [*args[:2], None, None][:2]
    for index, name in enumerate(names):
        if name in kwargs:
            values[index] = kwargs[name]
    given = len(args) + len(kwargs)
    unknown = sorted(set(kwargs) - set(names))
    if given != 2 or unknown:
        problem = (
            f"malformed message: expected 2 arguments ({', '.join(names)}), got "
            f"{len(args)} positional and keyword(s) {sorted(kwargs)}"
        )
        return values[0], None, problem
    return values[0], values[1], None


def check_task(task: Any, backend_name: Any, body: Any, *, legacy: bool = False) -> bool:
    """Whether a task may deliver its message; when not (see
    :func:`~eventtracking.backends.celery._wire.refusal`), the message is kept whole
    as a counted dead letter and taken out of the Redis ledger."""
    refused = refusal(task, backend_name, body, legacy=legacy)
    if refused is None:
        return True
    kind, reason = refused
    dead_letter_message(backend_name, body, reason, kind)
    forget(backend_name, getattr(task.request, "id", None))
    return False


@shared_task(name=TASK_NAME, **_TASK_OPTIONS)
def send_events(self: Any, *args: Any, **kwargs: Any) -> None:
    """Deliver a batch: ``send_events(backend_name, entries)``.

    ``entries`` is a list of entry texts written by
    :func:`eventtracking.backends.celery._wire.encode_entry`. Not meant to be called by hand:
    AsyncRoutingBackend publishes it.
    """
    backend_name, entries, problem = _arguments(args, kwargs, ("backend_name", "entries"))
    requeues = self.request.retries or 0
    try:
        if problem is not None:
            body = {"args": args, "kwargs": kwargs}
            dead_letter_message(backend_name, body, problem, requeues=requeues)
            forget(backend_name, self.request.id)
            return
        if check_task(self, backend_name, entries):
            deliver(backend_name, entries, self.request.id, requeues)
    except Requeue as requeue:
        send_back(self, requeue)


@shared_task(name=LEGACY_TASK_NAME, **_TASK_OPTIONS)
def send_event(self: Any, *args: Any, **kwargs: Any) -> None:
    """Deliver one event of a 4.x message: ``send_event(backend_name, processed_event)``.

    ``processed_event`` is the event dict, already through the top-level processors.
    Its ``timestamp`` may arrive as a datetime or an ISO string (kombu <= 5.2); either
    way the leaves receive a timezone-aware UTC datetime. The event's id is derived
    from the message id, so a redelivered message is stored once in MongoDB.
    """
    backend_name, event, problem = _arguments(args, kwargs, ("backend_name", "processed_event"))
    requeues = self.request.retries or 0
    try:
        if problem is not None:
            body = {"args": args, "kwargs": kwargs}
            dead_letter_message(backend_name, body, problem, requeues=requeues)
            return
        if check_task(self, backend_name, event, legacy=True):
            deliver_legacy(backend_name, event, self.request.id, requeues)
    except Requeue as requeue:
        send_back(self, requeue)


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
