"""What an event's data looks like once written as JSON, found without side effects.

:mod:`eventtracking._json` writes anything, falling back to ``repr`` with a warning.
The validator must instead *report* the values that would need that fallback, and must
not log or count on behalf of the writers while doing so.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from eventtracking._json import encode_known, number_form, safe_repr

__all__ = [
    "elements",
    "entries",
    "is_plain",
    "json_size",
    "key_text",
    "to_json_form",
    "unserialisable_paths",
]

_NATIVE = (str, int, bool, type(None))
_MAX_DEPTH = 100
#: Paths reported per value at most: one bad list of 10,000 items is one finding.
MAX_PATHS = 10


def entries(value: Mapping[Any, Any]) -> list[tuple[Any, Any]] | None:
    """The ``(key, item)`` pairs of a mapping, or None when reading them raises.

    Event data may hold any object, including a mapping whose ``items()`` raises: the
    walkers below report it as a value without a JSON form instead of failing.
    """
    try:
        return list(value.items())
    except Exception:
        return None


def elements(value: Any) -> list[Any] | None:
    """The items of a list or tuple, or None when iterating it raises."""
    try:
        return list(value)
    except Exception:
        return None


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
    # The dict and list loops are written out twice on purpose: a shared loop over
    # values, with the keys checked in a separate pass, measured 12% slower.
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
    return list(itertools.islice(_walk(value, path, 0, set()), MAX_PATHS))


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
        pairs = entries(value) if isinstance(value, dict) else None
        items = None if isinstance(value, dict) else elements(value)
        if pairs is None and items is None:
            # Reading it raised: the writers cannot write it either.
            yield path, type(value).__qualname__
            return
        active.add(marker)
        try:
            if pairs is not None:
                for key, item in pairs:
                    yield from _walk(item, f"{path}.{key_text(key)}", depth + 1, active)
            else:
                for index, item in enumerate(items or ()):
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


def to_json_form(value: Any) -> Any:
    """Return ``value`` as a JSON reader would get it back: dates as strings, and so on.

    Used to check data against a JSON Schema, which describes the written form. Values
    without a JSON form become the string ``"<unserialisable TYPE>"``, which no typed
    schema accepts. A reference cycle becomes ``"<cycle>"`` where it closes, as the
    JSON writers write it, so every object is walked at most once per path and a dict
    that holds itself never makes the walk exponential.
    """
    return _json_form(value, 0, set())


def _json_form(value: Any, depth: int, active: set[int]) -> Any:
    if isinstance(value, (int, float)):
        return number_form(value)
    if isinstance(value, (str, type(None))):
        return value
    if depth >= _MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, (Mapping, list, tuple)):
        marker = id(value)
        if marker in active:
            return "<cycle>"
        pairs = entries(value) if isinstance(value, Mapping) else None
        items = None if isinstance(value, Mapping) else elements(value)
        if pairs is None and items is None:
            return f"<unserialisable {type(value).__qualname__}>"
        active.add(marker)
        try:
            if pairs is not None:
                return {key_text(key): _json_form(item, depth + 1, active) for key, item in pairs}
            return [_json_form(item, depth + 1, active) for item in items or ()]
        finally:
            active.discard(marker)
    try:
        replacement = encode_known(value)
    except Exception:
        return f"<unserialisable {type(value).__qualname__}>"
    if isinstance(replacement, str):
        return replacement
    return _json_form(replacement, depth + 1, active)


def key_text(key: Any) -> str:
    """A key as JSON writers write it: text as it is, numbers, booleans and None as
    their JSON text, anything else as its repr."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, bool):
        return "null" if key is None else ("true" if key else "false")
    if isinstance(key, int):
        form = number_form(key)
        return form if isinstance(form, str) else int.__repr__(form)
    if isinstance(key, float):
        form = _json_form(key, 0, set())
        return form if isinstance(form, str) else float.__repr__(key)
    return safe_repr(key)


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
    except Exception:
        # A cycle, or an object whose own methods raise: measure the written form.
        return len(_SIZER.encode(to_json_form(event)))
