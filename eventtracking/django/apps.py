"""The Django app configuration: builds the default tracker and registers the checks."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from typing import Any

from django.apps import AppConfig

from eventtracking.django import _request
from eventtracking.tracker import Tracker

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT", "EventTrackingConfig", "close_at_exit", "close_trackers"]

LOG = logging.getLogger("eventtracking.django")

#: Seconds that process exit may spend flushing the tracker, unless
#: ``EVENT_TRACKING_SHUTDOWN_TIMEOUT`` says otherwise.
DEFAULT_SHUTDOWN_TIMEOUT = _request.DEFAULT_SHUTDOWN_TIMEOUT


class EventTrackingConfig(AppConfig):
    """``INSTALLED_APPS += ['eventtracking.django']``.

    :meth:`ready` registers the system checks, connects the Open edX event-bus receiver
    (:mod:`eventtracking.handlers`) when openedx-events is installed, registers a
    :class:`~eventtracking.django.DjangoTracker` as the default tracker when
    ``EVENT_TRACKING_ENABLED`` is true, and arranges for that tracker to be closed
    (flushed) when the process exits.
    """

    name = "eventtracking.django"
    label = "eventtracking_django"
    verbose_name = "Event tracking"

    #: The exception that prevented building the tracker in :meth:`ready`, or None.
    #: ``manage.py check`` reports it (eventtracking.E007).
    startup_error: Exception | None = None

    def ready(self) -> None:
        """Register the checks and the default tracker; never raises.

        A configuration error must not stop every management command, including
        ``manage.py check``, which explains it. It is logged at ERROR instead, kept in
        :attr:`startup_error` for the checks, and no tracker is registered, so events
        are dropped and counted (see :func:`eventtracking.tracker.stats`).
        """
        from eventtracking.django import checks
        from eventtracking.django.django_tracker import override_default_tracker

        checks.register_checks()
        _connect_event_bus_receiver()
        try:
            built = override_default_tracker()
        except Exception as error:
            self.startup_error = error
            LOG.error(
                "Event tracking is off: the tracker could not be built from settings: %s "
                "Run `manage.py check` for details.",
                error,
                exc_info=True,
            )
            return
        self.startup_error = None
        if built is not None:
            close_at_exit(built, shutdown_timeout())


def _connect_event_bus_receiver() -> None:
    """Receive tracking logs from the Open edX event bus, when openedx-events is installed.

    openedx-events stays optional: without it there is no bus to receive from, and
    :func:`eventtracking.handlers.connect` does nothing.
    """
    try:
        from eventtracking import handlers

        handlers.connect()
    except Exception:
        # A broken openedx-events must not stop the app; the bus receiver is then off.
        LOG.exception("Could not connect the event-bus receiver; events from the bus are ignored")


def shutdown_timeout() -> float:
    """The ``EVENT_TRACKING_SHUTDOWN_TIMEOUT`` setting, or the default when it is invalid."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        return _request.shutdown_timeout()
    except ImproperlyConfigured:
        # The checks report the bad value (eventtracking.E010).
        return DEFAULT_SHUTDOWN_TIMEOUT


_exit_lock = threading.Lock()
_exit_registered = False
_to_close: list[tuple[weakref.ref[Tracker], float]] = []


def close_at_exit(tracker: Tracker, timeout: float) -> None:
    """Close ``tracker`` when the interpreter exits, spending at most ``timeout`` seconds.

    Only a weak reference is kept: a tracker that was discarded needs no closing. Under
    gunicorn with ``--preload`` the registration is inherited by every worker, so each
    worker closes its own copy of the tracker when it exits.
    """
    global _exit_registered
    with _exit_lock:
        _to_close.append((weakref.ref(tracker), timeout))
        if not _exit_registered:
            atexit.register(close_trackers)
            _exit_registered = True


def close_trackers() -> None:
    """Close every tracker passed to :func:`close_at_exit`, now; later calls do nothing.

    The trackers share one deadline, the longest of their timeouts. Runs at exit, and
    from :mod:`eventtracking.django.asgi` at ASGI lifespan shutdown.
    """
    with _exit_lock:
        pending = list(_to_close)
        _to_close.clear()
    if not pending:
        return
    # One deadline for all: exit must not take the sum of every tracker's timeout.
    deadline = time.monotonic() + max(timeout for _, timeout in pending)
    for ref, _ in pending:
        tracker: Any = ref()
        if tracker is None:
            continue
        try:
            tracker.close(max(0.0, deadline - time.monotonic()))
        except Exception:
            LOG.exception("Closing the event tracker at exit failed")
