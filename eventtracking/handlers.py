"""The receiver of ``TRACKING_EVENT_EMITTED`` where the Open edX event bus is consumed.

:func:`send_tracking_log_to_backends` acts only on signals that came from the bus
(``from_event_bus=True``, which the bus consumers set); the signal sent in the emitting
process is the producer's business. For each message it rebuilds the event
(``name``, ``timestamp``, and ``data`` and ``context`` parsed from their JSON text) and
hands it to every top-level
:class:`~eventtracking.backends.event_bus.EventBusRoutingBackend` of the default
tracker, which runs its processors and delivers to its nested backends.

Beyond 4.x, as ``docs/eventbus.rst`` tells: a message whose id was delivered moments
ago is skipped (the last 10,000 delivered ids are remembered, one longer than 64
characters by its SHA-256); a message that cannot become an event is a dead letter in
the backend's spool; nothing here raises into the consumer: every outcome is counted,
in :func:`stats` and in each backend's ``stats()['consumer']``.

The Django app connects the receiver when openedx-events is installed (see
:mod:`eventtracking.django.apps`); elsewhere, call :func:`connect`. Importing this
module needs only the core.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import json
import logging
import threading
from typing import Any

from eventtracking._json import dumps
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters
from eventtracking._util.timestamps import parse_timestamp
from eventtracking.backends.event_bus import EventBusRoutingBackend
from eventtracking.backends.event_bus._envelope import openedx_events, storable
from eventtracking.tracker import Tracker, registered

__all__ = ["DISPATCH_UID", "connect", "get_tracker", "send_tracking_log_to_backends", "stats"]

logger = logging.getLogger(__name__)
# Every message of a misconfigured consumer hits the same error: one line a minute.
_RATE_LIMITED = RateLimitedLogger(logger)

#: The ``dispatch_uid`` the receiver is connected with, so connecting twice is harmless.
DISPATCH_UID = "eventtracking.handlers.send_tracking_log_to_backends"

# How many recent message ids are remembered to drop re-sent copies.
_REMEMBERED_IDS = 10_000
# Ids longer than this (a UUID's text is 36 characters) are remembered by their hash.
_LONGEST_KEPT_ID = 64

_COUNTERS = Counters(
    "received",
    "ignored_local",
    "duplicates",
    "malformed",
    "no_tracker",
    "no_backend",
    "failed",
    "unreadable_id",
)
_seen: collections.OrderedDict[str, None] = collections.OrderedDict()
_seen_lock = threading.Lock()
_UTC = datetime.timezone.utc


def send_tracking_log_to_backends(sender: Any, signal: Any = None, **kwargs: Any) -> None:
    """Deliver a tracking log that came from the event bus to the event-bus backends.

    ``kwargs`` are the signal's: ``tracking_log`` (a ``TrackingLogData``), ``metadata``
    and ``from_event_bus``. Signals sent in this process (``from_event_bus`` false) are
    ignored, as is one whose ``from_event_bus`` has no truth value (its ``bool``
    raises). Never raises.
    """
    if not _from_event_bus(kwargs.get("from_event_bus", False)):
        _COUNTERS.incr("ignored_local")
        # 4.x's wording, which tests written for it assert.
        logger.debug("Event received from a non-event bus backend, skipping...")
        return
    _COUNTERS.incr("received")
    tracking_log = kwargs.get("tracking_log")
    message_id = _message_id(kwargs.get("metadata"))
    if message_id is not None and _seen_before(message_id):
        _COUNTERS.incr("duplicates")
        logger.info("Message %s from the event bus was delivered already: skipped", message_id)
        return
    tracker = get_tracker()
    if tracker is None:
        _COUNTERS.incr("no_tracker")
        _RATE_LIMITED.error(
            "no-tracker",
            "A tracking log arrived from the event bus but no default tracker is "
            "registered; it is dropped. Is eventtracking.django in INSTALLED_APPS?",
        )
        return
    engines = [
        backend
        for backend in tracker.backends.values()
        if isinstance(backend, EventBusRoutingBackend)
    ]
    if not engines:
        _COUNTERS.incr("no_backend")
        _RATE_LIMITED.error(
            "no-backend",
            "A tracking log arrived from the event bus but no top-level "
            "EventBusRoutingBackend is configured in EVENT_TRACKING_BACKENDS; it is dropped",
        )
        return
    try:
        event = _rebuild(tracking_log)
    except ValueError as exc:
        _COUNTERS.incr("malformed")
        engines[0].reject_from_bus(
            _raw(tracking_log, message_id),
            storable(str(exc)),
            None if message_id is None else storable(message_id),
        )
        return
    delivered = False
    for index, engine in enumerate(engines):
        try:
            # Each backend gets an event of its own, as a processor may change it.
            mine = event if index == len(engines) - 1 else _rebuild(tracking_log)
            delivered = engine.receive_from_bus(mine) is not False or delivered
        except Exception:
            # receive_from_bus contains every processor and backend failure; this is
            # a bug, and the consumer must go on with the next message.
            _COUNTERS.incr("failed")
            logger.exception("Delivering an event from the bus to %r failed", engine)
    if delivered and message_id is not None:
        # Only now: a copy that arrived first and was dropped keeps no later one out.
        _remember(message_id)


def get_tracker() -> Tracker | None:
    """The registered default tracker, or None when there is none.

    The receiver looks its tracker up through this module's ``get_tracker``, as 4.x's
    did, so tests written for 4.x can patch ``eventtracking.handlers.get_tracker``.
    Unlike :func:`eventtracking.tracker.get_tracker`, it never makes the fallback
    tracker that prints events: a message from the bus is not a script's.
    """
    return registered()


def _rebuild(tracking_log: Any) -> dict[str, Any]:
    """The event a tracking log stands for; ValueError when it cannot be one.

    Whatever reading the tracking log raises (a missing field, text that is not JSON or
    nested too deep, an object whose attributes raise) is the message's own fault, so
    it becomes the ValueError that makes the message a dead letter.
    """
    try:
        name = tracking_log.name
        timestamp = tracking_log.timestamp
        data = json.loads(tracking_log.data)
        context = json.loads(tracking_log.context)
    except Exception as exc:
        msg = f"the tracking log cannot be read as an event: {type(exc).__name__}: {exc}"
        raise ValueError(msg) from exc
    # openedx-events reads the timestamp back as a datetime in UTC: it is one already,
    # without the general parser. A timestamp that is not one is kept as it came: the
    # backends may know what it is.
    if type(timestamp) is not datetime.datetime or timestamp.tzinfo is not _UTC:
        with contextlib.suppress(ValueError):
            timestamp = parse_timestamp(timestamp)
    return {"name": name, "timestamp": timestamp, "data": data, "context": context}


def _raw(tracking_log: Any, message_id: str | None) -> bytes:
    """What a dead letter keeps of ``tracking_log``: each field that can be read."""
    fields: dict[str, Any] = {}
    for field in ("name", "timestamp", "data", "context"):
        try:
            fields[field] = getattr(tracking_log, field, None)
        except Exception as exc:
            fields[field] = f"<unreadable: {type(exc).__name__}>"
    fields["id"] = message_id
    return dumps(fields).encode("utf-8")


def _from_event_bus(flag: Any) -> bool:
    try:
        return bool(flag)
    except Exception:
        # Only openedx-events' consumers set the flag, to True: this one is no bus's.
        return False


def _message_id(metadata: Any) -> str | None:
    """The message id as text; None when there is none, or it cannot be read.

    An id that cannot be read (its ``str`` raises) is counted and the message is
    delivered without one: it cannot be told from a copy, but is not lost.
    """
    try:
        message_id = getattr(metadata, "id", None)
        return None if message_id is None else str(message_id)
    except Exception as exc:
        _COUNTERS.incr("unreadable_id")
        _RATE_LIMITED.warning(
            "unreadable-id",
            "A message from the event bus has an id that cannot be read (%s); it is "
            "delivered without one, so a copy of it would be delivered too",
            type(exc).__name__,
        )
        return None


def _seen_key(message_id: str) -> str:
    """What is remembered of ``message_id``: itself when it is as short as a UUID's
    text, otherwise its SHA-256, so that the remembered ids stay small whatever a
    writer on the bus sends as ids."""
    if len(message_id) <= _LONGEST_KEPT_ID:
        return message_id
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"


def _seen_before(message_id: str) -> bool:
    key = _seen_key(message_id)
    with _seen_lock:
        if key in _seen:
            _seen.move_to_end(key)
            return True
        return False


def _remember(message_id: str) -> None:
    key = _seen_key(message_id)
    with _seen_lock:
        _seen[key] = None
        _seen.move_to_end(key)
        if len(_seen) > _REMEMBERED_IDS:
            _seen.popitem(last=False)


def stats() -> dict[str, object]:
    """What the receiver saw in this process: the counters ``docs/eventbus.rst`` lists
    (*What is counted*), from ``received`` to ``unreadable_id``."""
    return _COUNTERS.snapshot()


def connect() -> bool:
    """Connect the receiver to ``TRACKING_EVENT_EMITTED``; False without openedx-events.

    Connecting again does nothing. The Django app calls this in ``ready()``.
    """
    try:
        signal = openedx_events().TRACKING_EVENT_EMITTED
    except ImportError:
        return False
    signal.connect(send_tracking_log_to_backends, dispatch_uid=DISPATCH_UID)
    return True
