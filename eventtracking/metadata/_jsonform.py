"""What an event's data looks like once written as JSON, found without side effects.

:mod:`eventtracking._json` writes anything, falling back to ``repr`` with a warning.
The validator must instead *report* the values that would need that fallback, and must
not log or count on behalf of the writers while doing so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from eventtracking._json import encode_known

__all__ = ["is_plain", "json_size", "to_json_form", "unserialisable_paths"]

_NATIVE = (str, int, bool, type(None))
_MAX_DEPTH = 100
#: Paths reported per value at most: one bad list of 10,000 items is one finding.
MAX_PATHS = 10


def is_plain(value: Any, depth: int = 0) -> bool:
    """True when ``value`` is made only of JSON's own types (finite floats, str keys).

    A quick test for the validator's fast path: False does not mean unserialisable,
    only that :func:`unserialisable_paths` has to look closer.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            # Scalars inline: a call per value would double the cost.
            item_kind = type(item)
            if item_kind is str or item_kind is int or item_kind is bool or item is None:
                continue
            if not is_plain(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:
            item_kind = type(item)
            if item_kind is str or item_kind is int or item_kind is bool or item is None:
                continue
            if not is_plain(item, depth + 1):
                return False
        return True
    return False


def unserialisable_paths(value: Any, path: str = "data") -> list[tuple[str, str]]:
    """Return ``(path, type name)`` of values the JSON writers could only write as repr.

    Dates, decimals, UUIDs, sets, bytes and the like have a defined JSON form and are
    fine; so are NaN and odd keys. Reference cycles are reported as ``'cycle'``. At most
    :data:`MAX_PATHS` paths are returned.
    """
    return list(_walk(value, path, 0, set()))[:MAX_PATHS]


def _walk(value: Any, path: str, depth: int, active: set[int]) -> Iterator[tuple[str, str]]:
    if isinstance(value, (*_NATIVE, float)):
        return
    if depth >= _MAX_DEPTH:
        yield path, "too deep"
        return
    if isinstance(value, (dict, list, tuple)):
        marker = id(value)
        if marker in active:
            yield path, "cycle"
            return
        active.add(marker)
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    yield from _walk(item, f"{path}.{key}", depth + 1, active)
            else:
                for index, item in enumerate(value):
                    yield from _walk(item, f"{path}[{index}]", depth + 1, active)
        finally:
            active.discard(marker)
        return
    try:
        replacement = encode_known(value)
    except Exception:
        yield path, type(value).__qualname__
        return
    if replacement is not value and not isinstance(replacement, str):
        yield from _walk(replacement, path, depth + 1, active)


def to_json_form(value: Any, depth: int = 0) -> Any:
    """Return ``value`` as a JSON reader would get it back: dates as strings, and so on.

    Used to check data against a JSON Schema, which describes the written form. Values
    without a JSON form become the string ``"<unserialisable TYPE>"``, which no typed
    schema accepts.
    """
    if isinstance(value, (*_NATIVE, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return value
    if depth >= _MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, Mapping):
        return {str(key): to_json_form(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_form(item, depth + 1) for item in value]
    try:
        replacement = encode_known(value)
    except Exception:
        return f"<unserialisable {type(value).__qualname__}>"
    if isinstance(replacement, str):
        return replacement
    return to_json_form(replacement, depth + 1)


def _quiet_default(obj: Any) -> Any:
    try:
        return encode_known(obj)
    except Exception:
        return f"<unserialisable {type(obj).__qualname__}>"


_SIZER = json.JSONEncoder(default=_quiet_default)


def json_size(event: Any) -> int:
    """The length in characters of ``event`` written as JSON, as the logger counts it."""
    try:
        return len(_SIZER.encode(event))
    except (ValueError, TypeError, RecursionError):
        return len(_SIZER.encode(to_json_form(event)))
