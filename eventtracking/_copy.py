"""Copying events for processors and backends that may change them.

:func:`copy.deepcopy` is slow for the JSON-like trees that events are (it keeps a memo
of every object) and it raises on values that refuse to be copied, which 4.x let escape
into the caller. :func:`safe_copy` copies dicts, lists and tuples by hand, shares
immutable scalars, and only hands anything else to :func:`copy.deepcopy`. A shared,
read-only :class:`~eventtracking._contextstack.FrozenContext` comes out as a plain
dict. A value that cannot be copied is shared rather than lost, and counted.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import logging
import uuid
from typing import Any

from eventtracking._contextstack import FrozenContext
from eventtracking._ratelimit import RateLimitedLogger
from eventtracking._stats import Counters

__all__ = ["COPY_STATS", "safe_copy"]

LOG = logging.getLogger(__name__)
_RATE_LIMITED = RateLimitedLogger(LOG)

#: How many values could not be copied and were shared instead.
COPY_STATS = Counters("uncopyable")

_IMMUTABLE = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        complex,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        decimal.Decimal,
        uuid.UUID,
        frozenset,
    }
)

# Beyond this depth the hand-written copy hands over to deepcopy, whose memo copes with
# cycles; JSON-like event data is never this deep.
_MAX_DEPTH = 64


def safe_copy(value: Any) -> Any:
    """Return a deep copy of ``value``; never raises.

    Containers are copied, immutable scalars are shared. A value that refuses to be
    copied is shared as it is, logged at a limited rate and counted in
    ``COPY_STATS['uncopyable']``.
    """
    try:
        return _copy(value, 0, {})
    except RecursionError:
        return _deepcopy(value)


def _copy(value: Any, depth: int, memo: dict[int, Any]) -> Any:
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if depth > _MAX_DEPTH:
        return _deepcopy(value)
    # A container reached a second time (shared, or through a cycle) is copied once,
    # as deepcopy's memo does. Without this, every path to it is copied again: a list
    # that holds itself twice would take 2**_MAX_DEPTH steps.
    marker = id(value)
    done = memo.get(marker)
    if done is not None:
        return done
    depth += 1
    if kind is dict or kind is FrozenContext:
        copied: dict[Any, Any] = {}
        memo[marker] = copied
        for key, item in value.items():
            copied[key] = _copy(item, depth, memo)
        return copied
    if kind is list:
        items: list[Any] = []
        memo[marker] = items
        for item in value:
            items.append(_copy(item, depth, memo))
        return items
    if kind is tuple:
        # Registered after it is built: a cycle through a tuple passes through a list
        # or dict, which the memo already holds.
        result = memo[marker] = tuple(_copy(item, depth, memo) for item in value)
        return result
    return _deepcopy(value)


def _deepcopy(value: Any) -> Any:
    try:
        return copy.deepcopy(value)
    except Exception as exc:
        COPY_STATS.incr("uncopyable")
        _RATE_LIMITED.warning(
            f"uncopyable:{type(value).__qualname__}",
            "Could not copy a %s inside an event (%r); it is shared, not copied, so a "
            "processor or backend that changes it changes it for the others too.",
            type(value).__qualname__,
            exc,
        )
        return value
