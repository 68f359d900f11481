"""Route each event through a chain of processors, then to every registered backend.

The router promises isolation without paying for a deep copy of every event:

* processors run in order on a private copy of the event, made once per chain and only
  when at least one processor may change events, so the caller's ``data`` is never
  touched;
* when several backends share an event, each backend that may change events gets its
  own copy, so no backend ever sees another's changes (a Mongo ``_id`` never reaches
  the logger);
* the event's ``context`` is a read-only dict shared by every event emitted under the
  same contexts; a lone backend that may change events gets the event with a plain copy
  of it;
* a component promises not to change events with the class attribute
  ``mutates_events = False``; every backend and processor shipped here does, so the
  common case copies nothing at all.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from eventtracking._contextstack import FrozenContext
from eventtracking._copy import safe_copy
from eventtracking._delivery_api import close_all, flush_all, stats_of
from eventtracking._metadata_api import deliver_metadata
from eventtracking._ratelimit import RateLimitedLogger
from eventtracking._stats import Counters
from eventtracking._watched import WatchedDict, WatchedList
from eventtracking.processors.exceptions import (
    EventEmissionExit,
    NoBackendEnabled,
    NoTransformerImplemented,
)
from eventtracking.typing import Event

__all__ = ["RoutingBackend"]

LOG = logging.getLogger(__name__)


def _may_mutate(component: Any) -> bool:
    """Whether ``component`` may change the events it is given (True unless it says not)."""
    return getattr(component, "mutates_events", True) is not False


class RoutingBackend:
    """Send events through ``processors`` and then to each of ``backends``.

    ``backends`` is a mapping of name -> backend, registered in sorted name order.
    ``processors`` is a sequence of callables, run in order. A processor returning a
    value other than None replaces the event; one raising
    :class:`~eventtracking.processors.exceptions.EventEmissionExit` drops it; any other
    exception is logged and counted and the event goes on unchanged. A backend that
    raises is logged and counted and never affects the others.

    A routing backend can itself be registered as a backend of another one, to build
    trees where a branch has its own processors.
    """

    def __init__(
        self,
        backends: Mapping[str, Any] | None = None,
        processors: Iterable[Callable[[Event], Any]] | None = None,
    ) -> None:
        # Edited directly too, as 4.x code does: every change refreshes the copy plan.
        registry, chain = WatchedDict(), WatchedList()
        registry.on_change = chain.on_change = self._refresh
        self.backends: OrderedDict[str, Any] = registry
        self.processors: list[Callable[[Event], Any]] = chain
        self._counters = Counters(groups=("dropped", "failed"))
        self._log = RateLimitedLogger(LOG)
        self._copy_for_processors = False
        self._plan: list[tuple[str, Any, bool | None]] = []
        # Documentation records already passed on, by id: each goes to a backend once,
        # and a backend registered later still receives them.
        self._metadata: dict[Any, dict[str, Any]] = {}
        self._metadata_lock = threading.Lock()
        if backends is not None:
            for name in sorted(backends):
                self.register_backend(name, backends[name])
        if processors is not None:
            for processor in processors:
                self.register_processor(processor)

    def register_backend(self, name: str, backend: Any) -> None:
        """Add ``backend`` under ``name``; raises ValueError unless it has a callable ``send``."""
        if not callable(getattr(backend, "send", None)):
            msg = (
                f"Backend {name!r} ({type(backend).__name__}) has no callable 'send' "
                "method; a backend must define send(event)."
            )
            raise ValueError(msg)
        self.backends[name] = backend
        self._refresh()
        with self._metadata_lock:
            records = list(self._metadata.values())
        for record in records:
            deliver_metadata([(name, backend)], record, self._counters)

    def register_processor(self, processor: Callable[[Event], Any]) -> None:
        """Append ``processor`` to the chain; raises ValueError unless it is callable."""
        if not callable(processor):
            msg = (
                f"Processor {processor!r} ({type(processor).__name__}) is not callable; a "
                "processor must be a callable taking the event."
            )
            raise ValueError(msg)
        self.processors.append(processor)
        self._refresh()

    def _refresh(self) -> None:
        """Precompute the copy plan, so sending does not inspect every component."""
        self._copy_for_processors = any(_may_mutate(p) for p in self.processors)
        # None means "ask on every send": a nested router may gain backends later.
        self._plan = [
            (
                name,
                backend,
                None if isinstance(backend, RoutingBackend) else _may_mutate(backend),
            )
            for name, backend in self.backends.items()
        ]

    @property
    def mutates_events(self) -> bool:
        """True when any processor or backend of this router may change events."""
        return self._copy_for_processors or any(
            _may_mutate(backend) for backend in self.backends.values()
        )

    def send(self, event: Event) -> None:
        """Process ``event`` and deliver it to every backend. Never raises."""
        if self.processors:
            try:
                event = self.process_event(event)
            except EventEmissionExit:
                self._counters.incr("dropped", "filtered")
                return
        self.send_to_backends(event)

    def process_event(self, event: Event) -> Event:
        """Run the processor chain and return the resulting event.

        The caller's event is never changed: processors that may mutate work on a copy.
        Raises EventEmissionExit when a processor drops the event; logs, counts and
        swallows every other processor error.
        """
        if not self.processors:
            return event
        if self._copy_for_processors:
            event = safe_copy(event)
        for processor in self.processors:
            try:
                result = processor(event)
            except EventEmissionExit:
                raise
            except Exception:
                self._counters.incr("failed", "processor")
                self._log.error(
                    f"processor:{id(processor)}",
                    "Processor %r failed on event %r; the event goes on without its change",
                    processor,
                    _event_name(event),
                    exc_info=True,
                )
            else:
                if result is not None:
                    event = result
        return event

    def send_to_backends(self, event: Event) -> None:
        """Deliver ``event`` to every backend. Logs, counts and swallows their errors."""
        plan = self._plan
        shared = len(plan) > 1
        for name, backend, mutates in plan:
            payload = event
            if mutates or (mutates is None and backend.mutates_events):
                # Siblings must not see this backend's changes: a deep copy. A lone
                # backend only needs the shared, read-only context thawed.
                payload = safe_copy(event) if shared else _thaw_context(event)
            try:
                backend.send(payload)
            except NoTransformerImplemented as exc:
                self._counters.incr("dropped", "no_transformer")
                LOG.info("Backend %r has no transformer for event %r: %r", name,
                         _event_name(event), exc)
            except NoBackendEnabled as exc:
                self._counters.incr("dropped", "backend_disabled")
                LOG.info("Backend %r is not enabled; event %r not sent to it: %r", name,
                         _event_name(event), exc)
            except Exception:
                self._counters.incr("failed", name)
                self._log.error(
                    f"backend:{name}",
                    "Backend %r failed to send event %r",
                    name,
                    _event_name(event),
                    exc_info=True,
                )

    def send_metadata(self, record: dict[str, Any]) -> None:
        """Pass a documentation record to every backend that has ``send_metadata``.

        Each record (by its ``id``) goes to each backend once; a backend registered
        later receives the records passed on before. Processors do not see records.
        Never raises: a failing backend is logged and counted as
        ``failed['metadata:<name>']``. See :mod:`eventtracking.metadata`.
        """
        key = record.get("id")
        with self._metadata_lock:
            if key in self._metadata:
                return
            self._metadata[key] = record
        deliver_metadata(list(self.backends.items()), record, self._counters)

    def flush(self, timeout: float | None = None) -> bool:
        """Flush every backend that buffers; True when all of them delivered in time."""
        return flush_all(self.backends.items(), timeout)

    def close(self, timeout: float | None = None) -> None:
        """Close every backend that holds resources, within one shared ``timeout``."""
        close_all(self.backends.items(), timeout)

    def stats(self) -> dict[str, Any]:
        """Drops and failures seen by this router, and each backend's own stats.

        ``dropped`` counts events by reason (``filtered`` by a processor,
        ``no_transformer``, ``backend_disabled``); ``failed`` counts errors by the
        backend name, or ``processor``.
        """
        result = self._counters.snapshot()
        result["backends"] = stats_of(self.backends.items())
        return result


def _thaw_context(event: Any) -> Any:
    """The event with its shared :class:`FrozenContext` replaced by a plain copy."""
    if type(event) is dict:
        context = event.get("context")
        if type(context) is FrozenContext:
            return {**event, "context": dict(context)}
    return event


def _event_name(event: Any) -> Any:
    try:
        return event["name"]
    except Exception:
        return "<no name>"
