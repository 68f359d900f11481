"""Events and documentation records as the BSON documents MongoBackend stores.

An event is encoded once, in ``send()``, into the bytes of its document: they are what
the delivery queues and spools, and what ``insert_many`` sends. Three things happen on
the way:

* **The _id.** An event without one gets an ``_id`` element spliced in front of its
  encoded body: the same bytes as encoding ``{"_id": ObjectId(), **event}``, without
  copying the event. The id is the one the event travelled with through a broker, when
  it did (:data:`eventtracking._util.event_ids.current_event_id`), so a redelivered event is
  stored once; else a new ObjectId, made cheaply (see :class:`_ObjectIds`).
* **Values BSON has no type for** get their obvious equivalent (a Decimal128, a
  datetime for a date, a list for a set), or else their ``repr``, reported and counted
  as the logger does, rather than losing the whole event.
* **Refusals.** An event BSON cannot encode, or one MongoDB would refuse (too large,
  nested too deep), raises :class:`Refused`, with the reason and a description for
  the dead letter it becomes.

bson is imported when an :class:`EventEncoder` is built, never at import.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import itertools
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from eventtracking._json import report_repr_fallbacks, safe_repr
from eventtracking._util.event_ids import current_event_id
from eventtracking._util.fork import after_fork_in_child

__all__ = ["EventEncoder", "Refused", "describe"]

# A nesting level costs at least 7 bytes of BSON (type, an empty key, a length, an end):
# a document smaller than this many bytes per level cannot be too deep, and is not
# walked.
_BYTES_PER_LEVEL = 7
# Longest description kept with a dead letter, in characters.
_DETAIL_LIMIT = 10_000


class Refused(Exception):
    """MongoDB cannot take this event or record: it becomes a dead letter.

    ``reason`` says why; ``payload`` is the encoded document, None when it could not be
    encoded; ``detail`` describes the event for a human (see :func:`describe`).
    """

    def __init__(self, reason: str, payload: bytes | None, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.payload = payload
        self.detail = detail


class EventEncoder:
    """Encode events and records as MongoDB documents of at most ``max_size`` bytes,
    nested at most ``max_nesting`` levels deep (the document itself being the first).

    Raises ImportError without pymongo (the caller says which extra to install).
    """

    def __init__(self, *, max_size: int, max_nesting: int) -> None:
        import bson

        self._encode = bson.encode
        self._codec = _codec_options()
        self._max_size = max_size
        self._max_nesting = max_nesting
        self._nesting_check_bytes = _BYTES_PER_LEVEL * max_nesting

    def event(self, event: Mapping[str, Any]) -> bytes:
        """The document of ``event``, with an ``_id`` unless it has one; never changes
        ``event``. Raises :class:`Refused`."""
        try:
            if "_id" in event:
                payload: bytes = self._encode(dict(event), False, self._codec)
            else:
                # Encode the event as it is, then put an _id element in front: the same
                # bytes as encoding {"_id": ObjectId(), **event}, without the copy.
                body = self._encode(event, False, self._codec)
                payload = (len(body) + 17).to_bytes(4, "little") + _event_id_element() + body[4:]
            if _FALLBACKS.values:
                report_repr_fallbacks(event, _FALLBACKS.take())
        except Exception as exc:
            _FALLBACKS.take()
            reason = f"BSON cannot encode the event: {type(exc).__name__}: {exc}"
            raise Refused(reason, None, describe(event)) from None
        if len(payload) > self._max_size:
            reason = (
                f"the document is {len(payload)} bytes encoded; MongoDB stores at most "
                f"{self._max_size} bytes per document"
            )
            raise Refused(reason, payload, describe(event))
        if len(payload) >= self._nesting_check_bytes and self._too_deep(event):
            reason = (
                f"the document is nested deeper than {self._max_nesting} levels, the most "
                "MongoDB stores"
            )
            raise Refused(reason, payload, describe(event))
        return payload

    def record(self, record: Mapping[str, Any]) -> bytes:
        """The document of a documentation record: the record, with its ``id`` as the
        ``_id``. Raises :class:`Refused`."""
        try:
            payload: bytes = self._encode({"_id": record["id"], **record}, False, self._codec)
        except Exception as exc:
            reason = f"BSON cannot encode the record: {type(exc).__name__}: {exc}"
            raise Refused(reason, None, describe(record)) from None
        return payload

    def _too_deep(self, document: Any) -> bool:
        """Whether objects and arrays in ``document`` nest deeper than allowed."""
        stack = [(document, 1)]
        while stack:
            value, depth = stack.pop()
            if depth > self._max_nesting:
                return True
            items = value.values() if isinstance(value, Mapping) else value
            stack.extend(
                (item, depth + 1) for item in items if isinstance(item, (Mapping, list, tuple))
            )
        return False


def describe(event: Any) -> str:
    """A bounded, human-readable description of an event, for a dead letter.

    When the event's repr fails, the description still gives its name and timestamp.
    """
    try:
        text = repr(event)
    except Exception as exc:
        name = timestamp = None
        # Not a mapping, or one that fails too: only its type is known.
        with contextlib.suppress(Exception):
            name, timestamp = event.get("name"), event.get("timestamp")
        text = (
            f"<event {safe_repr(name)} at {safe_repr(timestamp)} (a "
            f"{type(event).__name__}) whose repr() failed: {safe_repr(exc)}>"
        )
    if len(text) > _DETAIL_LIMIT:
        text = text[:_DETAIL_LIMIT] + f"... ({len(text) - _DETAIL_LIMIT} more characters)"
    return text


# -- values BSON has no type for ------------------------------------------------------


def _fallback_encoder(value: Any) -> Any:
    """Encode the values BSON has no type for but which have an obvious equivalent."""
    if isinstance(value, decimal.Decimal):
        from bson.decimal128 import Decimal128

        try:
            return Decimal128(value)
        except Exception:  # more digits than Decimal128 holds: keep them all, as text
            return str(value)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    if isinstance(value, (set, frozenset)):
        return list(value)
    # As the logger does: written as its repr, counted and reported (by the caller,
    # which knows the event), instead of losing the whole event to a dead letter.
    _FALLBACKS.values.append(value)
    return safe_repr(value)


class _Fallbacks(threading.local):
    """The values this thread's last encoding wrote as their repr."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def take(self) -> list[Any]:
        values, self.values = self.values, []
        return values


_FALLBACKS = _Fallbacks()

_CODEC: Any = None


def _codec_options() -> Any:
    global _CODEC
    if _CODEC is None:
        from bson.binary import UuidRepresentation
        from bson.codec_options import CodecOptions, TypeRegistry

        _CODEC = CodecOptions(
            tz_aware=True,
            uuid_representation=UuidRepresentation.STANDARD,
            type_registry=TypeRegistry(fallback_encoder=_fallback_encoder),
        )
    return _CODEC


# -- _id ------------------------------------------------------------------------------


class _ObjectIds:
    """BSON ``_id`` elements holding new ObjectIds, about four times cheaper to make
    than ``bson.ObjectId()``, which locks and packs structs on every call.

    The layout is MongoDB's: 4 bytes of seconds since the epoch, 5 random bytes drawn
    once per process, and a 3-byte counter starting at a random value (all big-endian).
    A forked child draws its own random bytes, so its ids never collide with the
    parent's.
    """

    PREFIX = b"\x07_id\x00"  # type ObjectId, name "_id"

    def __init__(self) -> None:
        self._reset()
        after_fork_in_child(self._reset)

    def _reset(self) -> None:
        self._process_bytes = os.urandom(5)
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big"))

    def __call__(self) -> bytes:
        return (
            self.PREFIX
            + int(time.time()).to_bytes(4, "big")
            + self._process_bytes
            + (next(self._counter) & 0xFFFFFF).to_bytes(3, "big")
        )


_id_element = _ObjectIds()


def _event_id_element() -> bytes:
    """The ``_id`` element of the event being sent: the id it travelled with through a
    broker (so a redelivered event is stored once), else a new ObjectId."""
    event_id = current_event_id.get()
    if event_id is None:
        return _id_element()
    return _ObjectIds.PREFIX + bytes.fromhex(event_id)
