"""Thread-safe counters behind every ``stats()`` method.

Counting must never slow the emit path down noticeably, so the hottest counter uses
:func:`itertools.count`, whose ``next()`` is a single atomic C call, while rarer
counters share one lock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping


class FastCounter:
    """A monotonically increasing counter that is cheap to bump from many threads."""

    __slots__ = ("_count", "incr")

    def __init__(self) -> None:
        self._count = itertools.count()
        #: Add one. The bound ``__next__`` of the count, so a bump is one C call.
        self.incr = self._count.__next__

    @property
    def value(self) -> int:
        """The number of increments so far."""
        # ``count`` has no public accessor; its repr is ``count(N)`` on every supported
        # Python, where N is the next value it would return.
        return int(repr(self._count)[6:-1])


class Counters:
    """Named counters, optionally grouped by a reason, read as one consistent snapshot.

    ``incr("failed")`` bumps a plain counter; ``incr("dropped", "filtered")`` bumps the
    ``filtered`` entry of the ``dropped`` group.
    """

    def __init__(self, *names: str, groups: tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._plain: dict[str, int] = dict.fromkeys(names, 0)
        self._groups: dict[str, dict[str, int]] = {group: {} for group in groups}
        self._values: dict[str, object] = {}

    def incr(self, name: str, reason: str | None = None, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``, or to ``reason`` inside group ``name``."""
        with self._lock:
            if reason is None:
                self._plain[name] = self._plain.get(name, 0) + amount
            else:
                group = self._groups.setdefault(name, {})
                group[reason] = group.get(reason, 0) + amount

    def add(self, **amounts: int) -> None:
        """Add to several plain counters at once, under one lock: ``add(received=100,
        delivered=99)``."""
        with self._lock:
            plain = self._plain
            for name, amount in amounts.items():
                plain[name] = plain.get(name, 0) + amount

    def set(self, name: str, value: object) -> None:
        """Record a gauge-like value, such as the last error message or a queue depth."""
        with self._lock:
            self._values[name] = value

    def get(self, name: str, reason: str | None = None) -> int:
        """Return one counter's current value (0 when it was never bumped)."""
        with self._lock:
            if reason is None:
                return self._plain.get(name, 0)
            return self._groups.get(name, {}).get(reason, 0)

    def snapshot(self) -> dict[str, object]:
        """Return a copy of every counter, group and recorded value."""
        with self._lock:
            result: dict[str, object] = dict(self._plain)
            for group, values in self._groups.items():
                result[group] = dict(values)
            result.update(self._values)
            return result


def merge_into(target: dict[str, object], extra: Mapping[str, object]) -> None:
    """Add the counts of ``extra`` into ``target``, summing ints and merging groups."""
    for key, value in extra.items():
        current = target.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, dict)):
            target[key] = value
        elif isinstance(value, int) and isinstance(current, int):
            target[key] = current + value
        elif isinstance(value, dict) and isinstance(current, dict):
            merged = dict(current)
            for reason, count in value.items():
                merged[reason] = merged.get(reason, 0) + count
            target[key] = merged
        else:
            target[key] = value
