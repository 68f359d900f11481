"""Containers that report every change, so a cache derived from them never goes stale.

A router precomputes, from its ``backends`` and ``processors``, which components need
their own copy of each event. 4.x code also edits those containers directly
(``tracker.backends['x'] = backend``, ``tracker.processors.append(p)``); these
containers call back on such edits too, so the precomputed plan always matches them.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

_C = TypeVar("_C", bound=type)


def _watching(*names: str) -> Callable[[_C], _C]:
    """Make the methods ``names`` of the decorated class's base, each of which changes
    its contents, call ``on_change()`` after the change."""

    def decorate(cls: _C) -> _C:
        base = cls.__mro__[1]
        for name in names:
            setattr(cls, name, _watched(getattr(base, name)))
        return cls

    return decorate


def _watched(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def changing(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        if self.on_change is not None:
            self.on_change()
        return result

    return changing


# update(), |= and setdefault() go through __setitem__.
@_watching("__setitem__", "__delitem__", "pop", "popitem", "clear", "move_to_end")
class WatchedDict(OrderedDict[Any, Any]):
    """An OrderedDict that calls ``on_change()`` after any change to its contents."""

    on_change: Callable[[], None] | None = None


@_watching(
    "append", "extend", "insert", "remove", "pop", "clear", "__setitem__", "__delitem__", "__iadd__"
)
class WatchedList(list[Any]):
    """A list that calls ``on_change()`` after any change to which items it holds."""

    on_change: Callable[[], None] | None = None
