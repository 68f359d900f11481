"""The Django app configuration: builds the default tracker and registers the checks."""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
import weakref
from typing import Any

from django.apps import AppConfig

from eventtracking import tracker as tracker_module
from eventtracking.django import _settings
from eventtracking.locator import ContextVarLocator
from eventtracking.tracker import Tracker

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT", "EventTrackingConfig", "close_at_exit", "close_trackers"]

LOG = logging.getLogger("eventtracking.django")

#: Seconds that process exit may spend flushing the tracker, unless
#: ``EVENT_TRACKING_SHUTDOWN_TIMEOUT`` says otherwise.
DEFAULT_SHUTDOWN_TIMEOUT = _settings.DEFAULT_SHUTDOWN_TIMEOUT


class EventTrackingConfig(AppConfig):
    """``INSTALLED_APPS += ['eventtracking.django']``.

    :meth:`ready` registers the system checks, connects the Open edX event-bus receiver
    (:mod:`eventtracking.handlers`) when openedx-events is installed, registers a
    :class:`~eventtracking.django.DjangoTracker` as the default tracker when
    ``EVENT_TRACKING_ENABLED`` is true (and no tracker otherwise: the fallback that prints
    events when nothing is configured is off under Django), and arranges for that
    tracker to be closed (flushed) when the process exits.
    """

    name = "eventtracking.django"
    label = "eventtracking_django"
    verbose_name = "Event tracking"

    #: The exception that prevented building the tracker in :meth:`ready`, or None.
    #: ``manage.py check`` reports it (eventtracking.E007).
    startup_error: Exception | None = None

    def ready(self) -> None:
        """Register the checks and the default tracker; never raises.

        A configuration error is kept in :attr:`startup_error` for the checks, and the
        default tracker is then a :func:`~eventtracking.tracker.dropping_tracker`, as
        ``docs/django.rst`` ("The tracker") describes.
        """
        from eventtracking.django import checks  # noqa: F401 (importing it registers them)
        from eventtracking.django.django_tracker import override_default_tracker

        _connect_event_bus_receiver()
        _start_metrics()
        try:
            built = override_default_tracker()
        except Exception as error:
            self.startup_error = error
            settings_decide_the_default_tracker(error)
            report_startup_error(error)
            # 4.x's views do `with get_tracker().context(...)`: a KeyError there would
            # turn a settings typo into HTTP 500 on every page.
            tracker_module.register_tracker(tracker_module.dropping_tracker(ContextVarLocator()))
            return
        self.startup_error = None
        settings_decide_the_default_tracker(None)
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


def _start_metrics() -> None:
    """Turn on the metrics that ``EVENT_TRACKING_METRICS`` asks for; never raises.

    A bad value is logged here, and explained by ``manage.py check`` (eventtracking.E010).
    """
    from eventtracking.django import _metrics

    try:
        setting = _settings.metrics()
        if setting is not None:
            done = _metrics.start(setting, command=_metrics.management_command())
            LOG.info("Event tracking metrics: %s", done)
    except Exception as error:
        LOG.error("Event tracking metrics are off: %s", error)


def settings_decide_the_default_tracker(error: Exception | None) -> None:
    """Turn off the fallback default tracker that prints events (see
    :func:`eventtracking.tracker.set_fallback`), and say why there is no tracker.

    Under Django the settings decide: a site that turned tracking off, or whose tracker
    could not be built (``error``), must not start printing its events.
    """
    from django.conf import settings

    from eventtracking.django import checks
    from eventtracking.django.django_tracker import (
        DJANGO_BACKEND_SETTING_NAME,
        DJANGO_ENABLED_SETTING_NAME,
    )

    if error is not None:
        reason = (
            f"event tracking is off because the tracker could not be built from settings "
            f"({checks.check_id_of(error)}): {error} Run `manage.py check`"
        )
    elif not hasattr(settings, DJANGO_ENABLED_SETTING_NAME):
        reason = f"{DJANGO_ENABLED_SETTING_NAME} is not in settings"
        if getattr(settings, DJANGO_BACKEND_SETTING_NAME, None):
            reason += f", so {DJANGO_BACKEND_SETTING_NAME} is not used ({checks.W003})"
    else:
        reason = f"{DJANGO_ENABLED_SETTING_NAME} is not true in settings"
    tracker_module.set_fallback(None, reason)


def report_startup_error(error: Exception) -> None:
    """Log why the tracker could not be built, in one line, unless the system checks will.

    A configuration error's message says all there is to say, so it comes without a
    traceback; an unexpected error keeps its traceback. A management command
    (``check``, ``runserver``, ``migrate``, ...) runs the system checks, which print the
    same error with its fix, and the first dropped event repeats it otherwise.
    """
    from eventtracking._util import engines as _engines
    from eventtracking.django import checks

    if _running_a_management_command():
        return
    LOG.error(
        "Event tracking is off (%s): the tracker could not be built from settings: %s "
        "Run `manage.py check` for details.",
        checks.check_id_of(error),
        error,
        exc_info=not isinstance(error, _engines.EngineError),
    )


def _running_a_management_command() -> bool:
    """Whether this process is ``manage.py <command>`` or ``django-admin <command>``."""
    if len(sys.argv) < 2:
        return False
    try:
        from django.core.management import get_commands

        return sys.argv[1] in get_commands()
    except Exception:  # a broken project: log, rather than risk saying nothing
        return False


def shutdown_timeout() -> float:
    """The ``EVENT_TRACKING_SHUTDOWN_TIMEOUT`` setting, or the default when it is invalid."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        return _settings.shutdown_timeout()
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
