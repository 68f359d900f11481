"""Keep events in a list in memory: for tests, demos and debugging."""

from __future__ import annotations

import threading
from typing import Any

from eventtracking._contextstack import plain_context
from eventtracking._copy import safe_copy
from eventtracking._util.options import check_count
from eventtracking.typing import Event

__all__ = ["InMemoryBackend"]


class InMemoryBackend:
    """Store a copy of every event it is sent, in order, safely across threads.

    The copy shares the event's read-only context when that context holds only plain
    values (strings, numbers...), since nothing can change it: every event emitted
    under the same contexts then stores one context, not one each. Such a stored
    context is read-only, like the event's; ``dict(event['context'])`` gives a mutable
    copy.

    ``events`` is the list of stored events. Read it while holding ``lock`` when other
    threads may be emitting, or take a snapshot with :meth:`snapshot`. ``max_events``
    bounds memory: when set, the oldest events are discarded first and counted in
    ``stats()['discarded']``. ``metadata`` lists the documentation records received
    (see :mod:`eventtracking.metadata`), in order.
    """

    mutates_events = False

    def __init__(self, max_events: int | None = None) -> None:
        check_count("max_events", max_events, or_none="or None")
        self.max_events = max_events
        self.events: list[Event] = []
        self.metadata: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._discarded = 0

    def send(self, event: Event) -> None:
        """Append a copy of ``event``, so later changes by the caller do not show."""
        stored = _copy_event(event)
        with self.lock:
            self.events.append(stored)
            if self.max_events is not None and len(self.events) > self.max_events:
                excess = len(self.events) - self.max_events
                del self.events[:excess]
                self._discarded += excess

    def send_metadata(self, record: dict[str, Any]) -> None:
        """Append a copy of a documentation record to ``metadata``."""
        stored = safe_copy(record)
        with self.lock:
            self.metadata.append(stored)

    def send_batch(self, events: Any) -> None:
        """Append copies of several events, in order."""
        for event in events:
            self.send(event)

    def snapshot(self) -> list[Event]:
        """Return a new list of the events stored so far."""
        with self.lock:
            return list(self.events)

    def clear(self) -> None:
        """Forget every stored event."""
        with self.lock:
            self.events.clear()

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing is buffered: always True."""
        return True

    def stats(self) -> dict[str, Any]:
        """``stored`` events held now and ``discarded`` ones over ``max_events``."""
        with self.lock:
            return {"stored": len(self.events), "discarded": self._discarded}


def _copy_event(event: Event) -> Event:
    """A deep copy of ``event`` that keeps a plain shared context as it is."""
    if type(event) is dict:
        context = event.get("context")
        if plain_context(context):
            return {
                key: value if value is context else safe_copy(value) for key, value in event.items()
            }
    copied: Event = safe_copy(event)
    return copied
