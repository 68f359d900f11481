"""The id of the event being delivered, as the stores read it.

An id is 24 lower-case hex digits in the layout of a MongoDB ObjectId. A backend that
sends events to another process (the Celery backend) gives each event one when it
accepts it (it makes them in its wire format, ``backends/celery/_wire.py``); a
consumer that delivers an event (the Celery worker) sets :data:`current_event_id`
around the delivery, so that a store can use the id as a primary key (MongoBackend's
``_id``, Segment's ``message_id``) and store a redelivered event once. The stores read
it here and know nothing of the broker that fed them.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

__all__ = [
    "EVENT_ID_PATTERN",
    "current_event_id",
    "delivering",
    "event_id_from",
    "is_event_id",
]

#: What an event id looks like.
EVENT_ID_PATTERN = re.compile(r"\A[0-9a-f]{24}\Z")
_UTC = datetime.timezone.utc

#: The id of the event being delivered on this thread or task, or None. Set by
#: consumers (the Celery worker) around each delivery; read by stores that can use it
#: as a primary key (MongoBackend uses it as ``_id``).
current_event_id: ContextVar[str | None] = ContextVar(
    "eventtracking_current_event_id", default=None
)


def is_event_id(value: Any) -> bool:
    """Whether ``value`` is a string of 24 lower-case hexadecimal digits."""
    return isinstance(value, str) and EVENT_ID_PATTERN.match(value) is not None


def event_id_from(seed: str, timestamp: Any = None) -> str:
    """A stable event id derived from ``seed`` (a message id, say).

    The same seed always gives the same id, so an event that arrives without one (a
    4.x message) is still stored once when the broker delivers it twice. The first 8
    digits hold the event's time in seconds when ``timestamp`` is a datetime, as an
    ObjectId would.
    """
    seconds = 0
    if isinstance(timestamp, datetime.datetime):
        with contextlib.suppress(OverflowError, ValueError, OSError):
            stamp = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=_UTC)
            seconds = int(stamp.timestamp())
    digest = hashlib.sha1(seed.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{seconds & 0xFFFFFFFF:08x}{digest[:16]}"


@contextlib.contextmanager
def delivering(event_id: str | None) -> Iterator[None]:
    """Set :data:`current_event_id` to ``event_id`` for the duration of a block."""
    token = current_event_id.set(event_id)
    try:
        yield
    finally:
        current_event_id.reset(token)
