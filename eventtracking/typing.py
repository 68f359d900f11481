"""Type aliases and the protocols of the library's seams: backends, processors, locators.

The tracker's signature says what it takes with them: ``Tracker(backends:
Mapping[str, Backend], processors: Iterable[Processor], context_locator:
ContextLocator)``. Only :meth:`Backend.send` is required of a backend. The delivery
methods are optional: the tracker calls each one on every backend that has it, through
nested routing backends too. The package tells which a backend has with ``isinstance``
on these runtime-checkable protocols (:class:`SupportsFlush`, :class:`SupportsClose`,
:class:`SupportsStats`, :class:`MetadataBackend`), never on the path of each event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Backend",
    "BatchBackend",
    "Context",
    "ContextLocator",
    "Event",
    "FlushableBackend",
    "MetadataBackend",
    "Processor",
    "SupportsClose",
    "SupportsFlush",
    "SupportsStats",
]

#: An event as it travels through processors and backends: the four keys ``name``,
#: ``timestamp``, ``context`` and ``data``.
Event = dict[str, Any]

#: A named context, merged into every event emitted while it is entered.
Context = Mapping[str, Any]


@runtime_checkable
class Backend(Protocol):
    """Anything with a ``send(event)`` method can receive events.

    Set a class attribute ``mutates_events = False`` to promise that :meth:`send` never
    changes the event or anything inside it. The router then hands the same object to
    every such backend instead of giving each its own copy. A backend without the
    attribute is assumed to mutate events.
    """

    def send(self, event: Event) -> None:
        """Deliver one event. Exceptions are logged and counted by the router."""


@runtime_checkable
class BatchBackend(Backend, Protocol):
    """A backend that can take many events in one call."""

    def send_batch(self, events: Iterable[Event]) -> None:
        """Deliver several events at once, in order."""


@runtime_checkable
class SupportsFlush(Protocol):
    """A component (a backend, a leaf) that can be asked to deliver what it buffers now.

    The tracker and routers call it through nested routers; the Celery worker calls it
    on each leaf that took events of a message before acknowledging the message.
    """

    def flush(self, timeout: float | None = None) -> bool | None:
        """Deliver what was accepted so far; False when not all of it was in time
        (None, from a backend written for the bare protocol, is success)."""


@runtime_checkable
class SupportsClose(Protocol):
    """A component that holds resources to release when the tracker closes."""

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release resources. Calling it twice is harmless."""


@runtime_checkable
class SupportsStats(Protocol):
    """A component that counts what became of its events (see ``Tracker.stats()``)."""

    def stats(self) -> dict[str, Any]:
        """Its counters, as a new dict of (nested dicts of) integers."""


@runtime_checkable
class FlushableBackend(Backend, SupportsFlush, SupportsClose, Protocol):
    """A backend that buffers events and can be asked to deliver them now."""

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what was accepted so far; True when all of it is delivered in time."""

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release resources. Calling it twice is harmless."""


@runtime_checkable
class MetadataBackend(Backend, Protocol):
    """A backend that stores event documentation records beside the events.

    The router hands each record (see :mod:`eventtracking.metadata`) to each such
    backend once, before the first event that refers to it.
    """

    def send_metadata(self, record: dict[str, Any]) -> None:
        """Store one documentation record; it must not be changed."""


@runtime_checkable
class Processor(Protocol):
    """A callable that may return a replacement event, or None to keep the event.

    Raising :class:`~eventtracking.processors.exceptions.EventEmissionExit` drops the
    event. ``mutates_events = False`` has the same meaning as on :class:`Backend`.
    """

    def __call__(self, event: Event) -> Event | None:
        """Inspect, change or replace the event."""


@runtime_checkable
class ContextLocator(Protocol):
    """Where a tracker keeps its entered contexts: the locator interface of 4.x.

    ``get()`` returns the entered contexts as a mutable mapping of name -> context,
    outermost first, which 4.x code edits in place. The locators of
    :mod:`eventtracking.locator` also offer the stack protocol
    (:class:`~eventtracking.locator.StackLocator`), which the tracker uses when it is
    there; a locator with only ``get()`` is wrapped in an adapter.
    """

    def get(self) -> MutableMapping[str, Context]:
        """The entered contexts, by name, outermost first."""
