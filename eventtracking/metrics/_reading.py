"""Reading the trackers' ``stats()`` for :mod:`eventtracking.metrics`, once per collection.

Each integer of a tracker's ``stats()`` becomes one point, ``(value, attributes)``,
filed under its key; see :mod:`eventtracking.metrics` for the attributes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from eventtracking import tracker as _tracker_module
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking.routing import walk

LOG = logging.getLogger("eventtracking.metrics")
_LOG = RateLimitedLogger(LOG)  # a failing read would otherwise log at every scrape

# Dicts that are sections of a backend's stats, even when every value in them is an
# integer (an event-bus consumer's counters); any other dict of integers is a group.
SECTIONS = frozenset({"publisher", "worker", "producer", "consumer", "spool", "metadata"})
# A reading of stats() older than this is taken again even outside the first callback.
_STALE_AFTER = 1.0

Point = tuple[int, dict[str, str]]


def flatten(stats: Mapping[str, Any], attributes: Mapping[str, str]) -> Iterator[tuple[str, Point]]:
    """Yield ``(key, (value, attributes))`` for every integer in ``stats``, nested or not.

    ``backends`` holds nested backends by name; other dicts are groups (their keys
    become ``reason``) or sections (their name becomes ``part``). Strings, floats and
    booleans (errors, times, flags) are not counts and are left out.
    """
    for key, value in stats.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            yield key, (value, dict(attributes))
        elif isinstance(value, Mapping):
            if key == "backends":
                parent = attributes.get("backend")
                for name, nested in value.items():
                    if isinstance(nested, Mapping):
                        path = f"{parent}.{name}" if parent else str(name)
                        inner = {k: v for k, v in attributes.items() if k != "part"}
                        yield from flatten(nested, {**inner, "backend": path})
            elif key not in SECTIONS and _is_group(value):
                for reason, count in value.items():
                    yield key, (count, {**attributes, "reason": str(reason)})
            else:
                part = attributes.get("part")
                yield from flatten(value, {**attributes, "part": f"{part}.{key}" if part else key})


def _is_group(value: Mapping[str, Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())


def _spool_points(
    backends: Mapping[str, Any], attributes: Mapping[str, str]
) -> Iterator[tuple[str, Point]]:
    """The spool depth and dead letters of each backend that delivers through a spool."""
    for node in walk(backends):
        path = ".".join(node.path)
        delivery = getattr(node.backend, "delivery", None)
        spool = getattr(delivery, "spool", None)
        stream = getattr(delivery, "stream", None)
        if spool is not None and isinstance(stream, str):
            entry = spool.status()["streams"].get(stream, {})
            point_attributes = {**attributes, "backend": path}
            yield "spool.pending", (int(entry.get("pending", 0)), point_attributes)
            yield "spool.dead_letters", (int(entry.get("dead_letters", 0)), point_attributes)


class Reading:
    """One reading of the trackers' stats, shared by every instrument of a collection."""

    def __init__(
        self, trackers: Callable[[], Iterable[tuple[str, Any]]], side: str, known: Collection[str]
    ) -> None:
        self._trackers = trackers
        self._side = side
        self._known = frozenset(known)
        self._lock = threading.Lock()
        self._taken = -_STALE_AFTER
        self._points: dict[str, list[Point]] = {}

    def take(self) -> None:
        """Read ``stats()`` of every tracker, and the spools, now."""
        points: dict[str, list[Point]] = {}

        def add(found: Iterable[tuple[str, Point]]) -> None:
            for key, point in found:
                points.setdefault(key, []).append(point)

        base = {"side": self._side}
        add(flatten(_tracker_module.stats(), {**base, "part": "module"}))
        for name, tracker in self._trackers():
            attributes = dict(base)
            if name != _tracker_module.DEFAULT_TRACKER_NAME:
                attributes["tracker"] = name
            try:
                add(flatten(tracker.stats(), attributes))
                routing = getattr(tracker, "routing_backend", None)
                add(_spool_points(getattr(routing, "backends", {}), attributes))
            except Exception:
                _LOG.error(
                    f"stats:{name}",
                    "Reading the stats of tracker %r for metrics failed",
                    name,
                    exc_info=True,
                )
        with self._lock:
            self._points = points
            self._taken = time.monotonic()

    def points(self, key: str, *, refresh: bool = False) -> list[Point]:
        """The points of ``key``; read again first when ``refresh`` or when stale."""
        if refresh or time.monotonic() - self._taken > _STALE_AFTER:
            self.take()
        with self._lock:
            return list(self._points.get(key, ()))

    def others(self) -> list[Point]:
        """Points whose key has no metric of its own, with the key as ``counter``."""
        with self._lock:
            items = list(self._points.items())
        return [
            (value, {**attrs, "counter": key})
            for key, found in items
            if key not in self._known
            for value, attrs in found
        ]
