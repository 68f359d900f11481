"""The ids events carry across processes, and the id of the event being delivered.

An id is 24 lower-case hex digits in the layout of a MongoDB ObjectId. A backend that
sends events to another process (the Celery backend) gives each event one when it
accepts it; a consumer that delivers an event (the Celery worker) sets
:data:`current_event_id` around the delivery, so that a store can use the id as a
primary key (MongoBackend's ``_id``, Segment's ``message_id``) and store a redelivered
event once. The stores read it here and know nothing of the broker that fed them.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import itertools
import os
import re
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from eventtracking._util.fork import after_fork_in_child

__all__ = [
    "EVENT_ID_PATTERN",
    "current_event_id",
    "delivering",
    "event_id_from",
    "is_event_id",
    "new_event_id",
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


# -- making ids ------------------------------------------------------------------------


class _IdSource:
    """Event ids in the ObjectId layout: the time in seconds, a counter, random bytes.

    4 bytes of seconds and a 3-byte counter (from a random start) keep the ids of one
    process in the order they were made, as ObjectIds are; the last 5 bytes are drawn
    for each id alone (from :func:`os.urandom`), so an id seen on a broker does not
    give the ones that follow: to publish a forged event first under the id of one
    still to come, a writer would have to guess 40 random bits. The bytes are drawn
    in blocks, as one system call per event would cost more than the rest of the id.
    A forked child throws its copy of the block away, or it would repeat its
    parent's ids.
    """

    def __init__(self) -> None:
        self._reset()
        after_fork_in_child(self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
        # What follows the seconds in the next ids: popleft() is atomic, so taking one
        # needs no lock; only refilling does.
        self._ready: collections.deque[str] = collections.deque()

    def _refill(self) -> None:
        with self._lock:
            if self._ready:
                return
            pool = os.urandom(_RANDOM_BLOCK).hex()
            self._ready.extend(
                f"{next(self._counter) & 0xFFFFFF:06x}{pool[start : start + _RANDOM_DIGITS]}"
                for start in range(0, len(pool), _RANDOM_DIGITS)
            )

    def __call__(self) -> str:
        seconds = int(time.time()) & 0xFFFFFFFF
        while True:
            try:
                return f"{seconds:08x}{self._ready.popleft()}"
            except IndexError:
                self._refill()


# The random hex digits of an id (5 bytes), and the bytes drawn at a time (819 ids).
_RANDOM_DIGITS = 10
_RANDOM_BLOCK = 4095


#: Return a new event id (24 lower-case hex digits), unique across processes.
new_event_id = _IdSource()


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
