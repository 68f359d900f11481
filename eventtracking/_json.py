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
import uuid
from typing import Any

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


_FAST = json.JSONEncoder(default=encode_any, allow_nan=False)


def dumps(event: Any) -> str:
    """Serialise ``event`` to a JSON string; never raises, never writes invalid JSON."""
    try:
        if type(event) is dict:
            # Every event carries a UTC timestamp; converting it here spares the
            # encoder a call back into Python, the largest single cost of a line.
            stamp = event.get("timestamp")
            if type(stamp) is datetime.datetime and stamp.tzinfo is _UTC:
                event = {**event, "timestamp": stamp.isoformat()}
        return _FAST.encode(event)
    except (ValueError, TypeError, RecursionError):
        JSON_STATS.incr("cleaned")
        return _FAST.encode(clean(event))


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
