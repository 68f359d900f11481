"""Turning events into JSON that any reader can parse, whatever the data holds.

The rules, shared by every backend that writes JSON:

* ``datetime`` -> ISO 8601 in UTC (a naive datetime is taken to be UTC already);
  ``date`` and ``time`` -> ISO 8601; ``timedelta`` -> seconds as a number;
* ``Decimal`` -> its exact string, e.g. ``"1.10"`` (a JSON number would be read back as
  a binary float and lose digits);
* ``UUID`` -> its canonical string; ``Enum`` -> its value; paths -> their string;
* ``set`` and ``frozenset`` -> a list, sorted when the items can be ordered;
* ``bytes`` -> the text when it is valid UTF-8, otherwise ``"base64:"`` followed by the
  base64 encoding;
* a float that is NaN or infinite -> the string ``"NaN"``, ``"Infinity"`` or
  ``"-Infinity"`` (bare ``NaN`` is not JSON);
* an int too long for Python to write in decimal (see
  :func:`sys.set_int_max_str_digits`) -> its exact hexadecimal string, ``"0x..."``;
* a key that is not a str, int, float, bool or None -> its ``repr``;
* a reference cycle -> the string ``"<cycle>"``; nesting deeper than
  :data:`MAX_DEPTH` -> ``"<too deep>"``;
* any other object, or one of the above whose conversion raises (a ``__fspath__`` or a
  set item's ``__lt__`` that fails) -> its ``repr``, with a warning (rate-limited) and a
  count; an object whose ``repr`` fails -> ``"<unrepresentable TYPE>"``.

The fast path is the standard library's C encoder; only an event that trips it (NaN, a
cycle, an odd key, extreme depth) takes the slower path that cleans it first.
"""

from __future__ import annotations

import base64
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

from eventtracking._contextstack import FrozenContext
from eventtracking._ratelimit import RateLimitedLogger
from eventtracking._stats import Counters

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


def safe_repr(obj: Any) -> str:
    """``repr(obj)``, or a placeholder naming its type when ``repr`` itself fails."""
    try:
        return repr(obj)
    except Exception:
        return f"<unrepresentable {type(obj).__qualname__}>"


def encode_any(obj: Any) -> Any:
    """Like :func:`encode_known`, but falls back to the repr instead of raising."""
    try:
        return encode_known(obj)
    except Exception:
        # TypeError for unknown types; anything else from a known type's own
        # conversion (a failing __fspath__, say) must not lose the event either.
        pass
    JSON_STATS.incr("repr_fallback")
    kind = type(obj).__qualname__
    _RATE_LIMITED.warning(
        f"repr:{kind}",
        "A %s in an event is not JSON serialisable; it is written as its repr.",
        kind,
    )
    return safe_repr(obj)


def _default(obj: Any) -> Any:
    # Every event carries a UTC timestamp: answer it before the general dispatch.
    if type(obj) is datetime.datetime and obj.tzinfo is _UTC:
        return obj.isoformat()
    return encode_any(obj)


_FAST = json.JSONEncoder(default=_default, allow_nan=False)

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
        _default,
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
        return _FAST.encode(clean(event))


_EVENT_KEYS = ("name", "timestamp", "context", "data")
_escape = json.encoder.encode_basestring_ascii
_SCALARS = (str, int, bool, type(None))


class EventEncoder:
    """Serialise events like :func:`dumps`, reusing the JSON of a shared context.

    Events emitted under the same entered contexts share one read-only
    :class:`~eventtracking._contextstack.FrozenContext`. When an event is a plain dict
    with the four standard keys in their standard order, and its context is such an
    object holding only strings, integers, booleans, None and finite floats, the
    context's JSON is computed once and spliced into each line. The result is the same
    string :func:`dumps` returns; anything else simply goes through :func:`dumps`.
    """

    def __init__(self) -> None:
        # (context object, its JSON): one entry, replaced as a whole, so threads never
        # see a torn pair. Holding the object keeps its id from being reused.
        self._cached: tuple[Any, str] | None = None

    def encode(self, event: Any) -> str:
        """Return the JSON line for ``event``; never raises."""
        if type(event) is dict and tuple(event) == _EVENT_KEYS:
            context = event["context"]
            if type(context) is FrozenContext:
                cached = self._cached
                context_json: str | None
                if cached is not None and cached[0] is context:
                    context_json = cached[1]
                else:
                    context_json = self._encode_context(context)
                if context_json is not None:
                    name = event["name"]
                    stamp = event["timestamp"]
                    try:
                        return (
                            '{"name": '
                            + (_escape(name) if type(name) is str else _encode(name))
                            + ', "timestamp": '
                            + (
                                '"' + stamp.isoformat() + '"'
                                if type(stamp) is datetime.datetime and stamp.tzinfo is _UTC
                                else _encode(stamp)
                            )
                            + ', "context": '
                            + context_json
                            + ', "data": '
                            + _encode(event["data"])
                            + "}"
                        )
                    except (ValueError, TypeError, RecursionError):
                        pass
        return dumps(event)

    def _encode_context(self, context: FrozenContext) -> str | None:
        for value in context.values():
            if not (
                isinstance(value, _SCALARS)
                or (isinstance(value, float) and math.isfinite(value))
            ):
                # A mutable value could change after the JSON is cached.
                return None
        try:
            context_json = _encode(context)
        except (ValueError, TypeError, RecursionError):
            return None
        self._cached = (context, context_json)
        return context_json


def clean(value: Any) -> Any:
    """Return a copy of ``value`` that the strict encoder accepts (see the module rules)."""
    return _clean(value, 0, set())


def _clean(value: Any, depth: int, active: set[int]) -> Any:
    if isinstance(value, int):
        if value.bit_length() > _SAFE_INT_BITS:
            return _huge_int(value)
        return value
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
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
                    _clean_key(key): _clean(item, depth + 1, active)
                    for key, item in value.items()
                }
            return [_clean(item, depth + 1, active) for item in value]
        finally:
            active.discard(marker)
    replacement = encode_any(value)
    if replacement is value or isinstance(replacement, str):
        return replacement
    return _clean(replacement, depth + 1, active)


def _huge_int(value: int) -> Any:
    """``value`` itself when Python may write it in decimal, else its exact hex string."""
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
