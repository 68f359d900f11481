"""The one codec for events that cross a broker: JSON text out, the same event back.

Brokers and their clients each serialise differently: kombu's JSON turned a
``datetime`` into an ISO string ending in ``Z`` up to 5.2 and into a tagged object since
5.3, and refused sets and custom objects with ``EncodeError``. Events that travel
through Celery or the event bus are therefore encoded here, by this library, into JSON
*text*, which every serializer carries unchanged:

* :func:`encode_event` writes an event as the logger does (:mod:`eventtracking._json`:
  datetimes in UTC ISO 8601, Decimal as its exact string, sets as lists, and so on).
  Nothing an event holds can make it fail.
* :func:`decode_event` reads it back: the same keys, with ``timestamp`` as a
  timezone-aware UTC ``datetime`` again. Other values arrive as the logger writes them.

Each event also gets an *event id* when a backend accepts it: 24 hexadecimal digits
laid out like a MongoDB ObjectId: seconds since the epoch, a counter (so that the ids of
one process sort in the order they were made), then 5 random bytes drawn for that id
alone, so that no id can be guessed from the ones before it. The id travels beside the
event, never inside it, in an *entry*::

    {"id": "65a1...", "event": {"name": ..., "timestamp": ..., "context": ..., "data": ...},
     "leaves": [["xapi"]], "attempt": 1}

``leaves`` (optional) limits delivery to some nested backends, by their path of names,
and ``attempt`` (optional, 0 when absent) counts earlier tries. A consumer that stores
events sets :data:`current_event_id` while it delivers one, so that a store can use the
id as its primary key and store a redelivered event only once.

An entry may end with ``"int64": true`` (and then has neither ``leaves`` nor
``attempt``): its writer promises that the event holds no integer beyond 64 bits, as
any event orjson wrote. A worker reads such an entry with orjson straight away; any
other entry it first scans for runs of 19 digits, which orjson would read as a float
where ``json.loads`` gives an int (see :func:`_loads`). A writer that breaks the
promise only has its own big integers read as floats. Workers of earlier versions keep
the field among the entry's other fields, which they ignore.

*Signatures* are part of the format. Anyone who can write to the broker can publish a
``send_events`` message, and a worker delivers what it is given. With ``signing_keys`` set on an
:class:`~eventtracking.backends.async_routing.AsyncRoutingBackend`, every message it
publishes carries, in the message header :data:`HEADER`, an HMAC-SHA256 of the
message's canonical bytes (the backend name, then each entry text, each preceded by
its length) under the first key. A worker whose backend has keys checks it against
each of them, with :func:`hmac.compare_digest`, and keeps a message that carries no
signature (``unsigned``) or one that matches no key (``bad_signature``) as a counted
dead letter instead of delivering it. A worker without keys delivers every message,
signed or not, as before.

Rotation: give the new key first and keep the old one after it on every node
(``signing_keys=[new, old]``); once every web node runs with the new key and the
messages signed with the old one are delivered, drop the old one.

A 4.x message (``send_event``) is never signed: a worker with keys refuses it too.

Why one module: what crosses the broker is one contract between web nodes and
workers, written and read here: the events' JSON, the entries around them, the ids
they carry and the signatures over them. A change to how one is written is a change
to how it is read, in the same file.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import hmac
import itertools
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from eventtracking._json import EventEncoder, dumps
from eventtracking._util.event_ids import (
    EVENT_ID_PATTERN,
    current_event_id,
    delivering,
    event_id_from,
    is_event_id,
)
from eventtracking._util.fork import after_fork_in_child
from eventtracking._util.options import is_count
from eventtracking._util.timestamps import UTC, parse_timestamp

__all__ = [
    "HEADER",
    "Entry",
    "MalformedEntry",
    "current_event_id",
    "decode_entry",
    "decode_event",
    "delivering",
    "encode_entry",
    "encode_event",
    "encode_value",
    "event_id_from",
    "is_event_id",
    "new_entry",
    "new_event_id",
    "normalise_keys",
    "read_entry",
    "refusal",
    "sign",
]

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # the [fast] extra is not installed
    _orjson = None

# For _loads: ASCII digits become "0", every other byte "-"; a run of 19 zeros then
# marks a number orjson may read differently (an int beyond 64 bits becomes a float).
_DIGIT_MARKS = bytes(48 if 48 <= byte <= 57 else 45 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def _loads(source: Any) -> Any:
    """``json.loads(source)``, by orjson (about twice as fast) when it gives the same.

    orjson takes UTF-8 text only, reads an int beyond 64 bits as a float and refuses
    NaN, Infinity and lone surrogates, which the standard library accepts: text with a
    run of 19 digits, text orjson refuses and anything but a str go to ``json.loads``,
    so the result, or the error, is always that of ``json.loads``.
    """
    if _orjson is not None and type(source) is str:
        try:
            data = source.encode()
        except UnicodeEncodeError:  # a lone surrogate
            return json.loads(source)
        if _LONG_NUMBER not in data.translate(_DIGIT_MARKS):
            try:
                return _orjson.loads(data)
            except _orjson.JSONDecodeError:
                pass
    return json.loads(source)


class MalformedEntry(ValueError):
    """An entry that is not what :func:`encode_entry` writes; the message says why."""


class Entry(NamedTuple):
    """A decoded entry: the event id, the event, and where it still has to go.

    ``leaves`` is None for every nested backend, or the paths (tuples of backend names)
    of the only ones to deliver to. ``attempt`` counts the earlier tries; ``extra``
    holds the entry's other fields. Immutable; a named tuple rather than a frozen
    dataclass, which takes a microsecond more to build, once per event in a worker.
    """

    id: str
    event: dict[str, Any]
    leaves: tuple[tuple[str, ...], ...] | None = None
    attempt: int = 0
    extra: Mapping[str, Any] = MappingProxyType({})


# -- events ---------------------------------------------------------------------------

_ENCODER = EventEncoder()


def encode_event(event: Any) -> str:
    """The JSON text of ``event``, by the logger's rules; never raises."""
    return _ENCODER.encode(event)


def encode_value(value: Any) -> str:
    """The JSON text of any value (an event's ``data`` or ``context``); never raises."""
    return dumps(value)


def decode_event(source: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """An event from its JSON text (or an already parsed dict), timestamp restored.

    Raises :class:`MalformedEntry` when the text is not JSON or not an object.
    """
    if isinstance(source, Mapping):
        event = dict(source)
    else:
        try:
            event = json.loads(source)
        except (ValueError, RecursionError) as exc:
            msg = f"the event is not valid JSON: {exc}"
            raise MalformedEntry(msg) from None
        if not isinstance(event, dict):
            msg = f"the event must be a JSON object, got {type(event).__name__}"
            raise MalformedEntry(msg)
    if "timestamp" in event:
        # A timestamp that names no time is kept as it came rather than lost.
        with contextlib.suppress(ValueError):
            event["timestamp"] = parse_timestamp(event["timestamp"])
    return event


# -- ids ----------------------------------------------------------------------------


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


# -- entries --------------------------------------------------------------------------


def encode_entry(
    event_id: str,
    event_json: str,
    *,
    leaves: Sequence[Sequence[str]] | None = None,
    attempt: int = 0,
    int64: bool = False,
) -> str:
    """The entry text for an event already encoded by :func:`encode_event`.

    ``event_id`` must satisfy :func:`is_event_id` (ValueError otherwise): it is written
    as it is, without escaping. ``int64`` as in :func:`new_entry`, for a first try only
    (neither ``leaves`` nor ``attempt``: ValueError). An event accepted now takes
    :func:`new_entry` instead.
    """
    if not is_event_id(event_id):
        msg = f"event_id must be 24 lower-case hex digits, got {event_id!r}"
        raise ValueError(msg)
    text = '{"id": "' + event_id + '", "event": ' + event_json
    if int64:
        if leaves is not None or attempt:
            msg = "int64 is for a first try: an entry with leaves or an attempt has neither"
            raise ValueError(msg)
        return text + _INT64_END
    if leaves is not None:
        text += ', "leaves": ' + json.dumps([list(path) for path in leaves])
    if attempt:
        text += ', "attempt": ' + str(int(attempt))
    return text + "}"


def new_entry(event_json: str, int64: bool = False) -> str:
    """:func:`encode_entry` for an event accepted now: with a new id from
    :func:`new_event_id`, which needs no check, and no leaves or attempt.

    ``int64``: the event's JSON holds no integer beyond 64 bits (orjson wrote it), and
    the entry says so (see the module docstring).
    """
    return (
        '{"id": "' + new_event_id() + '", "event": ' + event_json + (_INT64_END if int64 else "}")
    )


# How an entry whose writer promises no integer beyond 64 bits ends (see new_entry).
_INT64_END = ', "int64": true}'


def decode_entry(source: str | bytes) -> Entry:
    """Read an entry written by :func:`encode_entry`; MalformedEntry says what is wrong.

    Parsed by orjson when it is installed (the ``[fast]`` extra), with the results of
    the standard library's ``json`` (see :func:`_loads`). The entry's event is returned
    as parsed, not copied.
    """
    return Entry._make(read_entry(source))


_MATCH_ID = EVENT_ID_PATTERN.match
_ABSENT = object()
_fromisoformat = datetime.datetime.fromisoformat
# parse_timestamp's longest date-time: longer text goes to it, and is refused there.
_LONGEST_STAMP = 64


def read_entry(
    source: str | bytes,
) -> tuple[str, dict[str, Any], tuple[tuple[str, ...], ...] | None, int, dict[str, Any]]:
    """:func:`decode_entry` as a plain tuple (id, event, leaves, attempt, extra), for the
    worker, which reads one per event: a named tuple costs more to build.

    Raises :class:`MalformedEntry`.
    """
    try:
        if type(source) is str and _orjson is not None and source.endswith(_INT64_END):
            # The last member of a JSON object: its writer promises no integer beyond 64
            # bits, so orjson reads it as json.loads would, without the scan for long
            # numbers, which took an eighth of a worker's own time per event.
            try:
                raw = _orjson.loads(source)
            except _orjson.JSONDecodeError:  # NaN, a lone surrogate: json.loads decides
                raw = json.loads(source)
        else:
            raw = _loads(source)
    except (ValueError, RecursionError) as exc:
        msg = f"the entry is not valid JSON: {exc}"
        raise MalformedEntry(msg) from None
    except TypeError:
        msg = f"the entry must be JSON text, got {type(source).__name__}"
        raise MalformedEntry(msg) from None
    if not isinstance(raw, dict):
        msg = f"the entry must be a JSON object, got {type(raw).__name__}"
        raise MalformedEntry(msg)
    event_id = raw.pop("id", None)
    if not isinstance(event_id, str) or _MATCH_ID(event_id) is None:
        msg = f"the entry's id must be 24 lower-case hex digits, got {event_id!r}"
        raise MalformedEntry(msg)
    event = raw.pop("event", None)
    if not isinstance(event, dict):
        msg = f"the entry's event must be a JSON object, got {type(event).__name__}"
        raise MalformedEntry(msg)
    paths: tuple[tuple[str, ...], ...] | None = None
    attempt: Any = 0
    if raw:
        promise = raw.pop("int64", True)
        if promise is not True:
            msg = f"the entry's int64 must be true when present, got {promise!r}"
            raise MalformedEntry(msg)
    if raw:  # a first try has neither leaves nor attempt
        leaves = raw.pop("leaves", None)
        if leaves is not None:
            if not isinstance(leaves, list) or not all(
                isinstance(path, list) and all(isinstance(name, str) for name in path)
                for path in leaves
            ):
                msg = f"the entry's leaves must be a list of lists of names, got {leaves!r}"
                raise MalformedEntry(msg)
            paths = tuple(tuple(path) for path in leaves)
        attempt = raw.pop("attempt", 0)
        if not is_count(attempt, minimum=0):
            msg = f"the entry's attempt must be an int >= 0, got {attempt!r}"
            raise MalformedEntry(msg)
    # The event was just parsed and belongs to no one else: decode_event() would copy it.
    stamp = event.get("timestamp", _ABSENT)
    if stamp is _ABSENT:
        return event_id, event, paths, attempt, raw
    if type(stamp) is str and len(stamp) <= _LONGEST_STAMP:
        # What encode_event writes (``...+00:00``) is read by fromisoformat alone, as
        # parse_timestamp's own first step would: the same datetime, one call less.
        try:
            parsed = _fromisoformat(stamp)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is UTC:
                event["timestamp"] = parsed
                return event_id, event, paths, attempt, raw
    # Kept as it came when it names no time, as decode_event keeps it; not through
    # contextlib.suppress, which costs about 0.2 us per event more (python -m timeit).
    try:  # noqa: SIM105
        event["timestamp"] = parse_timestamp(stamp)
    except ValueError:
        pass
    return event_id, event, paths, attempt, raw


# -- signatures -----------------------------------------------------------------------

# refusal()'s default: look the backend up in the registered tracker.
_LOOK_UP: Any = object()

#: The Celery message header that carries the signature.
HEADER = "eventtracking_signature"

_PREFIX = b"eventtracking.tasks.send_events/v1\n"


def normalise_keys(keys: Any) -> tuple[bytes, ...]:
    """``keys`` (None, or a list of str or bytes) as a tuple of bytes; ValueError says
    what is wrong. A key shorter than 16 bytes is refused: it could be guessed."""
    if keys is None:
        return ()
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        msg = (
            f"signing_keys must be a list of keys (str or bytes), newest first, got {keys!r}; "
            "write signing_keys=[key] for one key"
        )
        raise ValueError(msg)
    result: list[bytes] = []
    for index, key in enumerate(keys):
        raw = key.encode("utf-8") if isinstance(key, str) else key
        if not isinstance(raw, bytes) or len(raw) < 16:
            # The key itself is a secret: only its type and length are shown.
            size = len(raw) if isinstance(raw, bytes) else "no"
            msg = (
                f"signing_keys[{index}] must be a str or bytes of at least 16 bytes, "
                f"got a {type(key).__name__} of {size} bytes"
            )
            raise ValueError(msg)
        result.append(raw)
    return tuple(result)


def _digest(key: bytes, backend_name: str, entries: Sequence[Any]) -> str:
    mac = hmac.new(key, _PREFIX, hashlib.sha256)
    for part in (backend_name, *entries):
        data = (
            part.encode("utf-8", "surrogatepass") if isinstance(part, str) else repr(part).encode()
        )
        mac.update(b"%d:" % len(data))
        mac.update(data)
    return mac.hexdigest()


def sign(keys: Sequence[bytes], backend_name: str, entries: Sequence[str]) -> str:
    """The signature of a message under the first of ``keys`` (which must not be empty)."""
    return _digest(keys[0], backend_name, entries)


def _problem(keys: Sequence[bytes], backend_name: str, entries: Any, signature: Any) -> str | None:
    """None when the message may be delivered; else the dead letter kind."""
    if not keys:
        return None
    if not isinstance(signature, str) or not signature:
        return "unsigned"
    if entries is None or not isinstance(entries, (list, tuple)):
        return "bad_signature"
    given = signature.encode("ascii", "replace")
    for key in keys:
        if hmac.compare_digest(_digest(key, backend_name, entries).encode("ascii"), given):
            return None
    return "bad_signature"


def _header(request: Any) -> Any:
    headers = getattr(request, "headers", None)
    if isinstance(headers, dict) and HEADER in headers:
        return headers[HEADER]
    return getattr(request, HEADER, None)


def refusal(
    task: Any, backend_name: Any, body: Any, *, legacy: bool = False, backend: Any = _LOOK_UP
) -> tuple[str, str] | None:
    """Why a task may not deliver its message, as ``(kind, reason)``, or None when it may.

    ``kind`` is ``unsigned`` or ``bad_signature``; the task keeps the message whole as
    a dead letter of that kind. ``body`` is the entries, or the event of a 4.x
    ``send_event`` message (``legacy``), which no signature covers. ``backend``: the
    backend ``backend_name`` names, when the caller found it already (None for none).
    """
    if not isinstance(backend_name, str):
        return None  # the task's own checks make it a malformed dead letter
    if backend is _LOOK_UP:
        from eventtracking.tracker import registered

        tracker = registered()
        backend = tracker.backends.get(backend_name) if tracker is not None else None
    keys = getattr(backend, "signing_keys", ())
    if not keys:
        return None
    kind = _problem(keys, backend_name, None if legacy else body, _header(task.request))
    if kind is None:
        return None
    reason = (
        "the message carries no signature, and this worker's backend has signing_keys: "
        "it was not published by a web node with the same keys"
        if kind == "unsigned"
        else "the message's signature matches none of this worker's signing_keys: it was "
        "changed, or signed with a key the worker does not have"
    )
    return kind, reason
