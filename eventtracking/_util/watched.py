"""Containers that report every change, so a cache derived from them never goes stale.

A router precomputes, from its ``backends`` and ``processors``, which components need
their own copy of each event. 4.x code also edits those containers directly
(``tracker.backends['x'] = backend``, ``tracker.processors.append(p)``); these
containers call back on such edits too, so the precomputed plan always matches them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, SupportsIndex


class WatchedDict(OrderedDict[Any, Any]):
    """An OrderedDict that calls ``on_change()`` after any change to its contents."""

    on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # update(), |= and setdefault() go through __setitem__.
    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._changed()

    def pop(self, *args: Any) -> Any:
        value = super().pop(*args)
        self._changed()
        return value

    def popitem(self, last: bool = True) -> tuple[Any, Any]:
        item = super().popitem(last)
        self._changed()
        return item

    def clear(self) -> None:
        super().clear()
        self._changed()

    def move_to_end(self, key: Any, last: bool = True) -> None:
        super().move_to_end(key, last)
        self._changed()


class WatchedList(list[Any]):
    """A list that calls ``on_change()`` after any change to which items it holds."""

    on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def append(self, item: Any) -> None:
        super().append(item)
        self._changed()

    def extend(self, items: Iterable[Any]) -> None:
        super().extend(items)
        self._changed()

    def insert(self, index: SupportsIndex, item: Any) -> None:
        super().insert(index, item)
        self._changed()

    def remove(self, item: Any) -> None:
        super().remove(item)
        self._changed()

    def pop(self, index: SupportsIndex = -1) -> Any:
        item = super().pop(index)
        self._changed()
        return item

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._changed()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._changed()

    def __iadd__(self, items: Iterable[Any]) -> WatchedList:  # type: ignore[misc]
        super().__iadd__(items)
        self._changed()
        return self
