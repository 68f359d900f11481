"""Copying events for processors and backends that may change them.

:func:`copy.deepcopy` is slow for the JSON-like trees that events are (it keeps a memo
of every object and dispatches on every leaf) and it raises on values that refuse to be
copied, which 4.x let escape into the caller. This module copies dicts, lists and tuples
by hand, shares immutable leaves without a call per leaf, and hands only other objects
to :func:`copy.deepcopy`. A shared, read-only
:class:`~eventtracking._contextstack.FrozenContext` comes out as a plain dict. A value
that cannot be copied is shared rather than lost, and counted.

Two entry points:

* :func:`safe_copy` makes one copy;
* :class:`Copier` makes as many independent copies of one event as a fan-out needs.
  The first copy walks the event and records where its containers are (a *plan*);
  every later copy replays the plan with C-level ``dict.copy`` and ``list.copy`` calls
  and no per-leaf work, which is several times cheaper than a walk.
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

__all__ = ["COPY_STATS", "Copier", "safe_copy"]

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

_dict_copy = dict.copy
_list_copy = list.copy
# True when every type in an iterable of types is immutable: one C-level pass over a
# container instead of a Python loop, for the usual containers of plain values.
_only_immutable = _IMMUTABLE.issuperset

class _Walk:
    """The state of one copying walk: the memo, and whether a plan can describe it."""

    __slots__ = ("memo", "replayable")

    def __init__(self) -> None:
        # id -> copy of every container seen: a container reached twice (shared, or
        # through a cycle) is copied once, as deepcopy's memo does. Without this a list
        # that holds itself twice would take 2**_MAX_DEPTH steps.
        self.memo: dict[int, Any] = {}
        # A plan is a tree: it cannot say "the same copy again", so a walk that met a
        # shared container (or went past _MAX_DEPTH) is never replayed.
        self.replayable = True


def safe_copy(value: Any) -> Any:
    """Return a deep copy of ``value``; never raises.

    Containers are copied, immutable scalars are shared. A value that refuses to be
    copied is shared as it is, logged at a limited rate and counted in
    ``COPY_STATS['uncopyable']``.
    """
    try:
        return _walk(value, 0, _Walk())[0]
    except RecursionError:
        return _deepcopy(value)


class Copier:
    """Independent deep copies of one value, as many as asked for; never raises.

    The first :meth:`copy` walks ``value`` like :func:`safe_copy` and remembers where
    its containers are; later ones rebuild just those containers. The value must not
    change between copies (the router copies before it hands the original to anyone
    who may change it). If it did change shape anyway, the copy falls back to a walk.
    """

    __slots__ = ("_plan", "_planned", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._plan: Any = None
        self._planned = False

    def copy(self) -> Any:
        """Return a new deep copy of the value (see :func:`safe_copy`)."""
        if self._planned:
            plan = self._plan
            if plan is None:
                # Not replayable: shared containers, or nesting past _MAX_DEPTH.
                return safe_copy(self.value)
            try:
                return plan[0](self.value, plan[1], plan[2])
            except Exception:
                # The value changed shape since it was planned (another thread edits the
                # caller's data): a fresh walk copies what is there now.
                return safe_copy(self.value)
        value = self.value
        state = _Walk()
        try:
            copied, plan = _walk(value, 0, state)
        except RecursionError:
            copied, state.replayable = _deepcopy(value), False
        self._plan = plan if state.replayable else None
        self._planned = True
        return copied


def _walk(value: Any, depth: int, state: _Walk) -> tuple[Any, Any]:
    """Copy ``value``; return the copy and the plan to make the same copy again."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value, None
    if depth > _MAX_DEPTH:
        state.replayable = False
        return _deepcopy(value), None
    memo = state.memo
    marker = id(value)
    done = memo.get(marker)
    if done is not None:
        state.replayable = False
        return done, None
    depth += 1
    if kind is dict or kind is FrozenContext:
        # A shallow copy in C brings every immutable child along; only the containers
        # are replaced by copies of their own.
        copied: dict[Any, Any] = _dict_copy(value)
        memo[marker] = copied
        flat: list[tuple[Any, Any]] = []
        nested: list[tuple[Any, Any]] = []
        for key, item in value.items():
            kind = type(item)
            if kind in _IMMUTABLE:
                continue
            # A container of immutable values is copied by one C call, and without the
            # memo: it holds no container, so it cannot be part of a cycle.
            if (kind is dict or kind is FrozenContext) and _only_immutable(
                map(type, item.values())
            ):
                copied[key] = _dict_copy(item)
                flat.append((key, _dict_copy))
            elif kind is list and _only_immutable(map(type, item)):
                copied[key] = _list_copy(item)
                flat.append((key, _list_copy))
            else:
                copied[key], child = _walk(item, depth, state)
                if child is not None:
                    nested.append((key, child))
        if not flat and not nested:
            return copied, _FLAT_DICT
        return copied, (_replay_dict, tuple(flat), tuple(nested))
    if kind is list:
        items: list[Any] = _list_copy(value)
        memo[marker] = items
        flat = []
        nested = []
        for index, item in enumerate(value):
            kind = type(item)
            if kind in _IMMUTABLE:
                continue
            if (kind is dict or kind is FrozenContext) and _only_immutable(
                map(type, item.values())
            ):
                items[index] = _dict_copy(item)
                flat.append((index, _dict_copy))
            elif kind is list and _only_immutable(map(type, item)):
                items[index] = _list_copy(item)
                flat.append((index, _list_copy))
            else:
                items[index], child = _walk(item, depth, state)
                if child is not None:
                    nested.append((index, child))
        if not flat and not nested:
            return items, _FLAT_LIST
        return items, (_replay_list, tuple(flat), tuple(nested))
    if kind is tuple:
        # Registered after it is built: a cycle through a tuple passes through a list
        # or dict, which the memo already holds.
        parts = [_walk(item, depth, state) for item in value]
        if all(
            child is None and part is item
            for (part, child), item in zip(parts, value, strict=True)
        ):
            # Only immutable (or shared) items: the tuple itself can be shared.
            return value, None
        result = memo[marker] = tuple(part for part, _ in parts)
        return result, (_replay_tuple, tuple(child for _, child in parts), ())
    copied_other = _deepcopy(value)
    if copied_other is value:
        # deepcopy shares it (a function, a class) or could not copy it: share it again
        # on replay, without a second warning.
        return value, None
    return copied_other, _DEEP


# Plans: how to rebuild a copy of a value from the original. None means "share it"
# (immutable). Otherwise a plan is ``(rebuild, flat, nested)``: ``rebuild(value, flat,
# nested)`` makes the copy. For a dict or a list, the C-level shallow copy brings every
# immutable child along; ``flat`` lists the (key or index, copy function) of children
# that are containers of immutables only, copied by one C call each, and ``nested`` the
# (key or index, plan) of the rest.
def _replay_dict(value: Any, flat: Any, nested: Any) -> Any:
    copied = _dict_copy(value)
    for key, copy_function in flat:
        copied[key] = copy_function(value[key])
    for key, (rebuild, child_flat, child_nested) in nested:
        copied[key] = rebuild(value[key], child_flat, child_nested)
    return copied


def _replay_list(value: Any, flat: Any, nested: Any) -> Any:
    items = _list_copy(value)
    for index, copy_function in flat:
        items[index] = copy_function(value[index])
    for index, (rebuild, child_flat, child_nested) in nested:
        items[index] = rebuild(value[index], child_flat, child_nested)
    return items


def _replay_tuple(value: Any, children: Any, _unused: Any) -> Any:
    # zip(strict=True) raises if the tuple is no longer the one planned.
    return tuple(
        item if child is None else child[0](item, child[1], child[2])
        for item, child in zip(value, children, strict=True)
    )


def _replay_deep(value: Any, _flat: Any, _nested: Any) -> Any:
    return _deepcopy(value)


_DEEP = (_replay_deep, (), ())
_FLAT_DICT = (_replay_dict, (), ())
_FLAT_LIST = (_replay_list, (), ())


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
