"""Turning events into JSON that any reader can parse, whatever the data holds.

The rules, shared by every backend that writes JSON, are listed for users in
``docs/api.rst`` ("How values are written as JSON"); a value that follows none of them
is written as its ``repr``, with a rate-limited warning naming the event and the key
path, and a count.

The fast path is the standard library's C encoder; only an event that trips it (NaN, a
cycle, an odd key, an unknown object, extreme depth) takes the slower path that cleans
it first. :func:`dumps` writes exactly what ``json.dumps`` writes for the same cleaned
value.

With the ``[fast]`` extra, :mod:`eventtracking._orjson` writes the same values with
orjson, under the same rules, in compact form.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import json
import logging
import math
import os
import threading
import uuid
from typing import Any

from eventtracking._contextstack import FrozenContext, plain_context
from eventtracking._util.escape import safe_repr as safe_repr  # re-exported
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters

LOG = logging.getLogger("eventtracking.json")
_RATE_LIMITED = RateLimitedLogger(LOG)

#: ``repr_fallback`` counts objects written as their repr; ``cleaned`` counts events
#: that needed the slow cleaning path.
JSON_STATS = Counters("repr_fallback", "cleaned")

#: Containers nested deeper than this are written as ``"<too deep>"``.
MAX_DEPTH = 100

_UTC = datetime.timezone.utc
_KEY_TYPES = (str, int, float, bool, type(None))
# Ints this short are below the smallest digit limit Python allows (640 digits), so
# they always convert to decimal; only longer ones need checking.
_SAFE_INT_BITS = 2000


def encode_known(obj: Any) -> Any:
    """Return a JSON-ready stand-in for ``obj``, or raise TypeError for unknown types."""
    if isinstance(obj, datetime.datetime):
        tzinfo = obj.tzinfo
        if tzinfo is not _UTC:
            obj = obj.replace(tzinfo=_UTC) if tzinfo is None else obj.astimezone(_UTC)
        return obj.isoformat()
    if isinstance(obj, (datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, datetime.timedelta):
        return obj.total_seconds()
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except Exception:
            # Items that cannot be ordered, or whose comparison itself fails.
            return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    msg = f"Object of type {type(obj).__name__} is not JSON serializable"
    raise TypeError(msg)


def _repr_fallback(obj: Any, path: Any) -> str:
    """Count and report ``obj`` (found at ``path``, when known); return its repr."""
    JSON_STATS.incr("repr_fallback")
    kind = type(obj).__qualname__
    if path is None:
        _RATE_LIMITED.warning(
            f"repr:{kind}",
            "A %s in an event is not JSON serialisable; it is written as its repr.",
            kind,
        )
    else:
        _RATE_LIMITED.warning(
            f"repr:{kind}",
            "Event %r: the %s at %s is not JSON serialisable; it is written as its repr.",
            _event_of(path),
            kind,
            _Spelled(path),
        )
    return safe_repr(obj)


def report_repr_fallbacks(event: Any, values: list[Any]) -> None:
    """Count and report ``values``, found in ``event`` and written as their repr by
    another encoder (MongoDB's BSON), exactly as the JSON encoders report theirs: one
    ``repr_fallback`` each, and a warning naming the event and the key path."""
    wanted = {id(value): value for value in values}
    found: dict[int, Any] = {}
    _find_paths(event, (event_name_of(event), None), wanted, found, 0, set())
    for marker, value in wanted.items():
        _repr_fallback(value, found.get(marker))


def _find_paths(
    value: Any,
    path: Any,
    wanted: dict[int, Any],
    found: dict[int, Any],
    depth: int,
    active: set[int],
) -> None:
    if id(value) in wanted and id(value) not in found:
        found[id(value)] = path
        return
    if depth >= MAX_DEPTH or id(value) in active:
        return
    if isinstance(value, dict):
        active.add(id(value))
        for key, item in value.items():
            _find_paths(item, (path, key), wanted, found, depth + 1, active)
    elif isinstance(value, (list, tuple)):
        active.add(id(value))
        for index, item in enumerate(value):
            _find_paths(item, (path, index), wanted, found, depth + 1, active)


@dataclasses.dataclass(eq=False, slots=True)
class _Spelled:
    """A key path, spelled out only if the warning is written."""

    path: Any

    def __str__(self) -> str:
        return _spell(self.path)


class _Unserialisable(TypeError):
    """Raised by the fast path's hook for an object that needs the repr fallback, so that
    the cleaning path, which knows the key path, writes and reports it."""


def fast_default(obj: Any) -> Any:
    """The ``default`` hook of the fast path: a JSON stand-in for ``obj`` under the
    rules, or :class:`_Unserialisable` (a TypeError) to send the value to cleaning."""
    # Every event carries a UTC timestamp: answer it before the general dispatch.
    if type(obj) is datetime.datetime and obj.tzinfo is _UTC:
        return obj.isoformat()
    try:
        return encode_known(obj)
    except Exception:
        raise _Unserialisable from None


_FAST = json.JSONEncoder(default=fast_default, allow_nan=False)

try:
    from json.encoder import (  # type: ignore[attr-defined]
        c_make_encoder as _c_make_encoder,
    )
except ImportError:  # pragma: no cover - CPython always has the accelerator
    _c_make_encoder = None

if _c_make_encoder is not None:
    # JSONEncoder.encode() builds a new C encoder (and a dict of markers for cycle
    # detection) on every call, which costs more than encoding a small event. Each
    # thread builds one encoder, once, and reuses it with its markers dict, which the
    # encoder empties as it leaves each container. The arguments match JSONEncoder's
    # defaults (ensure_ascii, ", " and ": "), so the output is the same as
    # json.dumps(event, default=..., allow_nan=False).
    #
    # Why markers at all: without them a cycle is only found by RecursionError, about a
    # thousand levels down, after encoding everything at every level; a cyclic event
    # holding a 1 MB string took 5 s and 1 GB. With them, a cycle raises ValueError at
    # once, which sends the event down the cleaning path like any other failure.
    _ENCODER_ARGUMENTS = (
        fast_default,
        json.encoder.encode_basestring_ascii,  # the C function: ensure_ascii
        None,
        ": ",
        ", ",
        False,
        False,
        False,
    )
    _PER_THREAD = threading.local()

    def _encode(obj: Any) -> str:
        try:
            encode_chunks = _PER_THREAD.encoder
        except AttributeError:
            encode_chunks = _PER_THREAD.encoder = _c_make_encoder({}, *_ENCODER_ARGUMENTS)
        try:
            return "".join(encode_chunks(obj, 0))
        except BaseException:
            # An error leaves the markers of the containers it was inside behind.
            encode_chunks.markers.clear()
            raise

else:  # pragma: no cover

    def _encode(obj: Any) -> str:
        return _FAST.encode(obj)


def dumps(event: Any) -> str:
    """Serialise ``event`` to a JSON string; never raises, never writes invalid JSON."""
    try:
        return _encode(event)
    except (ValueError, TypeError, RecursionError):
        JSON_STATS.incr("cleaned")
        return _FAST.encode(clean(event, event_name_of(event)))


def event_name_of(event: Any) -> Any:
    """The event's name, for warnings; None for anything that is not an event."""
    if type(event) is dict:
        return event.get("name")
    return None


#: The keys of an event, in the order the tracker builds them.
EVENT_KEYS = ("name", "timestamp", "context", "data")
_escape = json.encoder.encode_basestring_ascii

# The last second utc_isoformat() wrote, as (its fields, its text up to the seconds).
_last_second: tuple[tuple[int, ...] | None, str] = (None, "")


def utc_isoformat(stamp: datetime.datetime) -> str:
    """``stamp.isoformat()`` for a datetime in UTC (``tzinfo`` is ``timezone.utc``).

    isoformat() costs about 0.6 us, half of it formatting the offset; events come many
    to a second, so the text up to the seconds is kept from one call to the next and
    only the microseconds are written each time (about 0.3 us).
    """
    global _last_second
    second = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    last = _last_second
    if last[0] != second:
        # isoformat() of the whole second ends with "+00:00".
        last = _last_second = (second, stamp.replace(microsecond=0).isoformat()[:-6])
    micro = stamp.microsecond
    return f"{last[1]}.{micro:06d}+00:00" if micro else f"{last[1]}+00:00"


class EventEncoder:
    """Serialise events like :func:`dumps`, reusing the JSON of a shared context.

    Events emitted under the same entered contexts share one read-only
    :class:`~eventtracking._contextstack.FrozenContext`. When an event is a plain dict
    with the four standard keys in their standard order, and its context is such an
    object holding only immutable values (strings, numbers, dates...: see
    :func:`~eventtracking._contextstack.plain_context`), the context's JSON is computed
    once and spliced into each line. The result is the same
    string :func:`dumps` returns; anything else simply goes through :func:`dumps`.
    """

    def __init__(self) -> None:
        # (context object, its JSON): one entry, replaced as a whole, so threads never
        # see a torn pair. Holding the object keeps its id from being reused.
        self._cached: tuple[Any, str] | None = None

    def encode(self, event: Any) -> str:
        """Return the JSON line for ``event``; never raises."""
        if type(event) is dict and tuple(event) == EVENT_KEYS:
            context = event["context"]
            cached = self._cached
            context_json: str | None
            if cached is not None and cached[0] is context:
                context_json = cached[1]
            elif plain_context(context):
                context_json = self._encode_context(context)
            else:
                context_json = None
            if context_json is not None:
                name = event["name"]
                stamp = event["timestamp"]
                try:
                    name_json = _escape(name) if type(name) is str else _encode(name)
                    if type(stamp) is datetime.datetime and stamp.tzinfo is _UTC:
                        stamp_json = f'"{utc_isoformat(stamp)}"'
                    else:
                        stamp_json = _encode(stamp)
                    data_json = _encode(event["data"])
                except (ValueError, TypeError, RecursionError):
                    pass
                else:
                    return (
                        f'{{"name": {name_json}, "timestamp": {stamp_json}, '
                        f'"context": {context_json}, "data": {data_json}}}'
                    )
        return dumps(event)

    def _encode_context(self, context: FrozenContext) -> str | None:
        """The JSON of a context that :func:`plain_context` vouches for, cached; None
        when it has no JSON of its own (a NaN, say), which leaves the event to
        :func:`dumps`."""
        try:
            context_json = _encode(context)
        except (ValueError, TypeError, RecursionError):
            return None
        self._cached = (context, context_json)
        return context_json


def clean(value: Any, event_name: Any = None) -> Any:
    """Return a copy of ``value`` that the strict encoder accepts (see the module rules).

    Warnings about values written as their repr name ``event_name`` and the key path.
    """
    return _clean(value, 0, set(), (event_name, None))


# A key path is built as a linked list of (parent, key) and spelled out only for a
# warning: data.player[2].handle.
def _spell(path: Any) -> str:
    keys = []
    while path[1] is not None:
        path, key = path
        keys.append(key)
    parts = []
    for key in reversed(keys):
        if type(key) is int:
            parts.append(f"[{key}]")
        else:
            parts.append(f".{safe_repr(key) if type(key) is not str else key}")
    return "".join(parts).lstrip(".") or "the top level"


def _clean(value: Any, depth: int, active: set[int], path: Any) -> Any:
    if isinstance(value, (int, float)):
        return number_form(value)
    if isinstance(value, str) or value is None:
        return value
    if depth >= MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, (dict, list, tuple)):
        marker = id(value)
        if marker in active:
            return "<cycle>"
        active.add(marker)
        try:
            if isinstance(value, dict):
                return {
                    _clean_key(key): _clean(item, depth + 1, active, (path, key))
                    for key, item in value.items()
                }
            return [
                _clean(item, depth + 1, active, (path, index)) for index, item in enumerate(value)
            ]
        finally:
            active.discard(marker)
    try:
        replacement = encode_known(value)
    except Exception:
        replacement = _repr_fallback(value, path)
    if replacement is value or isinstance(replacement, str):
        return replacement
    return _clean(replacement, depth + 1, active, path)


def _event_of(path: Any) -> Any:
    while path[1] is not None:
        path = path[0]
    return path[0]


def number_form(value: float) -> Any:
    """A number as the rules write it: itself, or a string for a NaN or an infinity
    (``"NaN"``, ``"Infinity"``, ``"-Infinity"``) and for an int too long for Python to
    write in decimal (its exact hex)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value.bit_length() > _SAFE_INT_BITS:
        try:
            int.__repr__(value)
        except ValueError:
            return hex(value)
    return value


def _clean_key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return str(key)
    if isinstance(key, _KEY_TYPES):
        return key
    return safe_repr(key)
