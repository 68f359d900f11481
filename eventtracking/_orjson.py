"""The orjson encoder of the ``[fast]`` extra: the rules of :mod:`eventtracking._json`,
written by orjson.

:class:`OrjsonEventEncoder` and :func:`dumps_compact` write the same values as the
standard library path, in orjson's compact form: no space after ``:`` and ``,``, and
non-ASCII text as UTF-8 rather than ``\\u`` escapes (a line that needs cleaning escapes
it, as the standard library does). What orjson cannot write under the rules (ints over
64 bits, keys that are not strings, cycles, NaN) goes through the standard library with
the same separators. Without orjson, :data:`HAVE_ORJSON` is False and the encoder
refuses to be built, naming the extra.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Literal, overload

from eventtracking._contextstack import IMMUTABLE_TYPES, FrozenContext, plain_context
from eventtracking._json import (
    EVENT_KEYS,
    JSON_STATS,
    MAX_DEPTH,
    clean,
    encode_known,
    event_name_of,
    fast_default,
)

__all__ = [
    "FAST_INSTALL_HINT",
    "HAVE_ORJSON",
    "OrjsonEventEncoder",
    "dumps_compact",
    "dumps_stdlib",
]

_UTC = datetime.timezone.utc

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # the [fast] extra is not installed
    _orjson = None

#: Whether orjson, from ``pip install 'event-tracking[fast]'``, can be used.
HAVE_ORJSON = _orjson is not None

#: What to run to get the orjson encoder.
FAST_INSTALL_HINT = "pip install 'event-tracking[fast]'"

# The standard library's encoder with orjson's separators: for values orjson refuses
# (ints over 64 bits, keys that are not strings, cycles) and for values that need
# cleaning. It keeps ensure_ascii, so a line with a lone surrogate is still valid UTF-8.
_COMPACT = json.JSONEncoder(default=fast_default, allow_nan=False, separators=(",", ":"))

# Types whose JSON form can never hold a NaN or an infinity: the immutable ones but
# floats, and the complex numbers and frozensets that may hold them.
_FINITE_TYPES = IMMUTABLE_TYPES - {float, complex, frozenset}

if _orjson is not None:
    _odumps = _orjson.dumps
    # Datetimes and dataclasses go through _orjson_default, so that our rules apply
    # (UTC, and the repr of unknown objects); everything else orjson writes itself the
    # way json.dumps would.
    _OPTIONS = _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS
    # JSON made beforehand, written as it is (orjson 3.9 and later).
    _Fragment = _orjson.Fragment


def _orjson_default(obj: Any) -> Any:
    if type(obj) is datetime.datetime and obj.tzinfo is _UTC:
        return obj.isoformat()
    if isinstance(obj, tuple):
        # A namedtuple: json.dumps writes any tuple as a list.
        return list(obj)
    if isinstance(obj, float):
        # A float subclass: json.dumps writes it as a number.
        return float(obj)
    return encode_known(obj)


def _maybe_nonfinite(value: Any, depth: int = 0) -> bool:
    """Whether orjson may have written a NaN or an infinity of ``value`` as null.

    orjson writes them as null where our rule says "NaN", "Infinity" or "-Infinity".
    Only asked when a line holds a null; True for anything it cannot vouch for.
    """
    kind = type(value)
    if kind in _FINITE_TYPES:
        return False
    if kind is float:
        return not math.isfinite(value)
    if depth > MAX_DEPTH:
        return True
    if kind is dict or kind is FrozenContext:
        return any(_maybe_nonfinite(item, depth + 1) for item in value.values())
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return any(_maybe_nonfinite(item, depth + 1) for item in value)
    return True


def _orjson_bytes(value: Any) -> bytes | None:
    """orjson's JSON for ``value``, or None when it needs the standard library path."""
    try:
        # default and option by position: by keyword they cost 0.09 us more a call.
        out: bytes = _odumps(value, _orjson_default, _OPTIONS)
    except Exception:
        # orjson.JSONEncodeError (a TypeError) for what it refuses, and whatever a
        # conversion in _orjson_default raised.
        return None
    # find() rather than the in operator, which takes 0.05 us more on an event's data.
    if out.find(b"null") >= 0 and _maybe_nonfinite(value):
        return None
    return out


def dumps_compact(value: Any) -> str:
    """Serialise ``value`` like :func:`~eventtracking._json.dumps`, in orjson's compact
    form; never raises.

    Uses orjson when it is installed, and the standard library with the same
    separators for what orjson cannot write under our rules.
    """
    if _orjson is not None:
        out = _orjson_bytes(value)
        if out is not None:
            return out.decode()
    return dumps_stdlib(value)


def dumps_stdlib(value: Any) -> str:
    """:func:`dumps_compact` through the standard library alone, cleaning what it
    refuses: the line for what orjson cannot write. Its cycle check stops at the first
    reference back, where an unchecked encoder would write the data again at every
    level until the recursion limit."""
    try:
        return _COMPACT.encode(value)
    except (ValueError, TypeError, RecursionError):
        JSON_STATS.incr("cleaned")
        return _COMPACT.encode(clean(value, event_name_of(value)))


class OrjsonEventEncoder:
    """Serialise events with orjson, under the rules of :mod:`eventtracking._json`.

    The line holds the same values as
    :class:`~eventtracking._json.EventEncoder`'s, in compact form (see the module
    documentation). Like it, it reuses the JSON of a shared context. Raises
    ImportError naming the extra when orjson is not installed.
    """

    def __init__(self) -> None:
        if _orjson is None:
            msg = f"The orjson encoder needs orjson: {FAST_INSTALL_HINT}"
            raise ImportError(msg)
        # (context, its JSON as an orjson.Fragment): see _json.EventEncoder.
        self._cached: tuple[Any, Any] | None = None

    @overload
    def encode(self, event: Any, orjson_only: Literal[False] = False) -> str: ...

    @overload
    def encode(self, event: Any, orjson_only: Literal[True]) -> str | None: ...

    def encode(self, event: Any, orjson_only: bool = False) -> str | None:
        """Return the JSON line for ``event``; never raises.

        With ``orjson_only``, return None instead of the standard library's line when
        orjson cannot write the event under the rules: a line orjson wrote holds no
        integer beyond 64 bits, which is what the Celery backend promises its workers
        (see :func:`eventtracking.backends.celery._wire.new_entry`).
        """
        if type(event) is dict and tuple(event) == EVENT_KEYS:
            context = event["context"]
            name = event["name"]
            stamp = event["timestamp"]
            if type(name) is str and type(stamp) is datetime.datetime and stamp.tzinfo is _UTC:
                # The cache lookup of _json.EventEncoder.encode, written out in each
                # encoder: a shared method would cost a call on every event.
                cached = self._cached
                context_json: Any
                if cached is not None and cached[0] is context:
                    context_json = cached[1]
                elif plain_context(context):
                    context_json = self._encode_context(context)
                else:
                    context_json = None
                if context_json is not None:
                    data_json = _orjson_bytes(event["data"])
                    if data_json is not None:
                        # One more orjson call writes the line: the timestamp natively
                        # (for a UTC datetime, exactly its isoformat()), the context
                        # and data as the JSON already made.
                        try:
                            line: bytes = _odumps(
                                {
                                    "name": name,
                                    "timestamp": stamp,
                                    "context": context_json,
                                    "data": _Fragment(data_json),
                                }
                            )
                        except _orjson.JSONEncodeError:
                            pass  # a name with a lone surrogate: as below
                        else:
                            return line.decode()
                    # orjson refused the data (or the name), so it would refuse the
                    # event too: a second try would cost as much again (for a cycle,
                    # orjson writes the data at every level down to its depth limit).
                    return None if orjson_only else dumps_stdlib(event)
        if orjson_only:
            out = _orjson_bytes(event)
            return None if out is None else out.decode()
        return dumps_compact(event)

    def _encode_context(self, context: FrozenContext) -> Any:
        """The JSON of a context that :func:`plain_context` vouches for, as a cached
        orjson Fragment; None when orjson cannot write it under the rules."""
        context_json = _orjson_bytes(context)
        if context_json is None:
            return None
        fragment = _Fragment(context_json)
        self._cached = (context, fragment)
        return fragment
