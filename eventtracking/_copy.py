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
        return _copy(value, 0)
    except RecursionError:
        return _deepcopy(value)


def _copy(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if depth > _MAX_DEPTH:
        return _deepcopy(value)
    depth += 1
    if kind is dict or kind is FrozenContext:
        return {key: _copy(item, depth) for key, item in value.items()}
    if kind is list:
        return [_copy(item, depth) for item in value]
    if kind is tuple:
        return tuple(_copy(item, depth) for item in value)
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
