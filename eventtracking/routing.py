"""The router: each event goes through a chain of processors, then to every backend.

It is the core of delivery, not a backend: the tracker owns one, and routers nest to
build trees. 4.x code and settings import it as
``eventtracking.backends.routing.RoutingBackend``, which is the same class.

The router promises isolation without paying for a deep copy of every event:

* nothing it is given is ever changed: not the caller's ``data``, not the shared,
  read-only ``context``. Processors that may change events run on one private copy per
  chain; a backend that may change events gets a copy of its own, a lone one included;
* no backend sees another's changes (a Mongo ``_id`` never reaches the logger);
* a component promises not to change events with the class attribute
  ``mutates_events = False``. Every backend and processor shipped here does, routers
  included, so the common case copies nothing at all.

Copies are cheap and few: routers nested in a tree share one
:class:`~eventtracking._copy.Copier`, and a private event goes uncopied to the last
backend that may change it (``docs/design.rst`` tells how). A value that cannot be
copied is shared, logged and counted, never raised into the caller.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from eventtracking._copy import Copier, copy_one, safe_copy
from eventtracking._util.delivery_api import close_all, flush_all, stats_of
from eventtracking._util.metadata_api import deliver_metadata
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters
from eventtracking._util.watched import WatchedDict, WatchedList
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.processors.exceptions import (
    EventEmissionExit,
    NoBackendEnabled,
    NoTransformerImplemented,
)
from eventtracking.typing import Backend, Event, Processor

__all__ = [
    "Node",
    "RoutingBackend",
    "is_router",
    "may_change_events",
    "plan",
    "routes_here",
    "walk",
]

#: The router's logger keeps its 4.x name, which sites configure in ``LOGGING``.
LOG = logging.getLogger("eventtracking.backends.routing")


def may_change_events(component: object) -> bool:
    """Whether ``component`` may change the events it is given: True unless it says not
    with ``mutates_events = False``. The one rule of the router and the Celery worker."""
    return getattr(component, "mutates_events", True) is not False


# How a router hands the event to each of its backends (see RoutingBackend._refresh).
_SHARE = 0  # promises not to change it: the same object
_COPY = 1  # may change it: a copy of its own, unless the event is private and it is last
_NESTED = 2  # a plain RoutingBackend: the event, the tree's Copier, and ownership


class RoutingBackend:
    """Send events through ``processors`` and then to each of ``backends``.

    ``backends`` is a mapping of name -> backend, registered in sorted name order.
    ``processors`` is a sequence of callables, run in order. A processor returning a
    value other than None replaces the event; one raising
    :class:`~eventtracking.processors.exceptions.EventEmissionExit` drops it; any other
    exception is logged and counted and the event goes on unchanged. A backend that
    raises is logged and counted and never affects the others.

    A routing backend can itself be registered as a backend of another one, to build
    trees where a branch has its own processors. A router never changes the events it
    is given (``mutates_events`` is False): it copies for its own components. A
    subclass that overrides :meth:`send` and changes events must override
    ``mutates_events`` to say True.
    """

    def __init__(
        self,
        backends: Mapping[str, Backend] | None = None,
        processors: Iterable[Processor] | None = None,
    ) -> None:
        # Edited directly too, as 4.x code does: every change refreshes the copy plan.
        registry, chain = WatchedDict(), WatchedList()
        registry.on_change = chain.on_change = self._refresh
        self.backends: OrderedDict[str, Backend] = registry
        self.processors: list[Processor] = chain
        self._counters = Counters(groups=("dropped", "failed"))
        self._log = RateLimitedLogger(LOG)
        self._copy_for_processors = False
        self._copies = 0
        self._last_copies = False
        kind = type(self)
        # A subclass written for 4.x may override either step of send(): both are then
        # called, as 4.x did (see send and _route).
        self._custom_process = kind.process_event is not RoutingBackend.process_event
        self._customised = (
            self._custom_process or kind.send_to_backends is not RoutingBackend.send_to_backends
        )
        # The compiled copier of the last event's shape (see Copier): the next event
        # from the same place is copied without a walk.
        self._copy_hint: Any = None
        # (name, backend, how, last): the backend is Any because a _NESTED one is called
        # through RoutingBackend._route, which the Backend protocol does not have.
        self._plan: tuple[tuple[str, Any, int, bool], ...] = ()
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

    def register_backend(self, name: str, backend: Backend) -> None:
        """Add ``backend`` under ``name``.

        Raises :class:`~eventtracking.exceptions.ImproperlyConfigured` (a ValueError, as
        in 4.x) unless it has a callable ``send``.
        """
        if not callable(getattr(backend, "send", None)):
            # 4.x's sentence first: downstream tests match it.
            msg = (
                f'Backend {type(backend).__name__} does not have a callable "send" method. '
                f"It was registered as {name!r}; a backend must define send(event)."
            )
            raise ImproperlyConfigured(msg)
        self.backends[name] = backend
        self._refresh()
        with self._metadata_lock:
            records = list(self._metadata.values())
        for record in records:
            deliver_metadata([(name, backend)], record, self._counters)

    def register_processor(self, processor: Processor) -> None:
        """Append ``processor`` to the chain.

        Raises :class:`~eventtracking.exceptions.ImproperlyConfigured` (a ValueError, as
        in 4.x) unless it is callable.
        """
        if not callable(processor):
            # 4.x's sentence first: downstream tests match it.
            msg = (
                f"Processor {type(processor).__name__} is not callable. Got {processor!r}; "
                "a processor must be a callable taking the event."
            )
            raise ImproperlyConfigured(msg)
        self.processors.append(processor)
        self._refresh()

    def _refresh(self) -> None:
        """Precompute the copy plan, so sending does not inspect every component."""
        self._copy_for_processors = any(may_change_events(p) for p in self.processors)
        nodes = plan(self.backends)
        steps = []
        for index, node in enumerate(nodes):
            if node.inline:
                how = _NESTED
            elif node.copies:
                how = _COPY
            else:
                how = _SHARE
            steps.append((node.path[-1], node.backend, how, index == len(nodes) - 1))
        self._plan = tuple(steps)
        # Backends that get a copy of their own, made together before the first one
        # needs it; one fewer when a private event goes to the last of them.
        self._copies = sum(1 for entry in steps if entry[2] == _COPY)
        self._last_copies = bool(steps) and steps[-1][2] == _COPY

    @property
    def mutates_events(self) -> bool:
        """False: a router copies for its own processors and backends, and never changes
        the event it is given."""
        return False

    def send(self, event: Event) -> None:
        """Process ``event`` and deliver it to every backend. Never raises.

        ``event`` itself, its ``data`` included, is never changed.
        """
        if self._customised:
            # A subclass written for 4.x overrides one of the two steps: call both, as
            # 4.x did.
            try:
                event = self.process_event(event)
            except EventEmissionExit:
                self._counters.incr("dropped", "filtered")
                return
            self.send_to_backends(event)
            return
        self._route(event, None, False)

    def _route(self, event: Event, copier: Copier | None, private: bool) -> None:
        """Process and deliver ``event``.

        ``copier`` makes copies of this very event (a parent router's, shared by the
        tree) or is None. ``private`` is True when nothing else will ever see ``event``
        again, so the last backend that may change it can have it without a copy.
        """
        if self._custom_process:
            # A 4.x subclass's own step: it may keep and change what it is given.
            try:
                event = self.process_event(event)
            except EventEmissionExit:
                self._counters.incr("dropped", "filtered")
                return
            copier, private = None, False
        elif self.processors:
            try:
                processed, private = self._process(event, private)
            except EventEmissionExit:
                self._counters.incr("dropped", "filtered")
                return
            if processed is not event:
                event, copier = processed, None
        self._deliver(event, copier, private)

    def process_event(self, event: Event) -> Event:
        """Run the processor chain and return the resulting event.

        The caller's event is never changed: processors that may mutate work on a copy.
        Raises EventEmissionExit when a processor drops the event; logs, counts and
        swallows every other processor error.
        """
        if not self.processors:
            return event
        return self._process(event, False)[0]

    def _process(self, event: Event, private: bool) -> tuple[Event, bool]:
        """Run the chain; return the event and whether it is still private."""
        if self._copy_for_processors and not private:
            event, private = safe_copy(event), True
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
                if result is not None and result is not event:
                    # A replacement may hold anything, a module constant or the
                    # caller's data: it is not known to be private.
                    event, private = result, False
        return event, private

    def send_to_backends(self, event: Event) -> None:
        """Deliver ``event`` to every backend. Logs, counts and swallows their errors.

        ``event`` itself is never changed: a backend that may change it gets a copy.
        """
        self._deliver(event, None, False)

    def _deliver(self, event: Event, copier: Copier | None, private: bool) -> None:
        own_copier = copier is None
        copies: list[Any] | None = None
        for name, backend, how, last in self._plan:
            try:
                if how == _SHARE:
                    backend.send(event)
                elif how == _NESTED:
                    if copier is None:
                        copier = Copier(event, self._copy_hint)
                    backend._route(event, copier, private and last)
                elif private and last:
                    # Nothing will look at this event again: it needs no copy.
                    backend.send(event)
                else:
                    if copies is None:
                        count = self._copies - (private and self._last_copies)
                        if count == 1 and copier is None:
                            # One copy and no tree to share a Copier with: the usual
                            # case of a 4.x backend, made without a Copier around it.
                            copied, self._copy_hint = copy_one(event, self._copy_hint)
                            backend.send(copied)
                            continue
                        if copier is None:
                            copier = Copier(event, self._copy_hint)
                        # All at once, in one compiled loop; none of them is the event.
                        copies = copier.copies(count)
                        copies.reverse()
                    backend.send(copies.pop())
            except NoTransformerImplemented as exc:
                self._counters.incr("dropped", "no_transformer")
                LOG.info(
                    "Backend %r has no transformer for event %r: %r", name, _event_name(event), exc
                )
            except NoBackendEnabled as exc:
                self._counters.incr("dropped", "backend_disabled")
                LOG.info(
                    "Backend %r is not enabled; event %r not sent to it: %r",
                    name,
                    _event_name(event),
                    exc,
                )
            except Exception:
                self._counters.incr("failed", name)
                self._log.error(
                    f"backend:{name}",
                    "Backend %r failed to send event %r",
                    name,
                    _event_name(event),
                    exc_info=True,
                )
        if own_copier and copier is not None:
            self._copy_hint = copier.hint

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


def is_router(backend: object) -> bool:
    """Whether ``backend`` is a router: a :class:`RoutingBackend`, which has nested
    ``backends`` (an AsyncRoutingBackend or EventBusRoutingBackend included)."""
    return isinstance(backend, RoutingBackend)


def routes_here(backend: object) -> bool:
    """Whether ``backend`` is a router that hands its events to its nested backends
    itself, as :class:`RoutingBackend` does (``send`` and ``send_to_backends`` not
    overridden; its own ``process_event`` may be).

    A walk that delivers goes through such a router instead of calling its ``send``: a
    parent router hands it the event and the tree's copier, and the Celery worker
    delivers to its leaves one by one. A router that sends elsewhere (to Celery, to the
    event bus) is a leaf of such a walk.
    """
    if not isinstance(backend, RoutingBackend):
        return False
    kind = type(backend)
    return (
        kind.send is RoutingBackend.send
        and kind.send_to_backends is RoutingBackend.send_to_backends
    )


class Node(NamedTuple):
    """One backend of a tree, as :func:`walk` and :func:`plan` give it."""

    #: The names from the top of the tree down to this backend.
    path: tuple[str, ...]
    backend: Any
    #: :func:`routes_here`: a delivering walk goes into it rather than calling ``send``.
    inline: bool
    #: :func:`may_change_events`: it gets a copy of its own of each event.
    copies: bool


def plan(backends: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[Node]:
    """The backends of one level of a tree (``backends``, found at ``path``), in order.

    Worked out once for a level and kept (by the router, by the Celery worker per
    message), so that delivering an event inspects no backend.
    """
    return [
        Node((*path, name), backend, routes_here(backend), may_change_events(backend))
        for name, backend in list(backends.items())
    ]


def walk(
    backends: Mapping[str, Any],
    path: tuple[str, ...] = (),
    into: Callable[[Any], bool] = is_router,
) -> Iterator[Node]:
    """Every backend of a tree, each before its nested backends, depth first.

    The walk goes into the nested backends of each backend that ``into`` accepts: by
    default every router (:func:`is_router`); pass :func:`routes_here` to follow the
    events as this process delivers them.
    """
    for node in plan(backends, path):
        yield node
        if into(node.backend):
            yield from walk(node.backend.backends, node.path, into)


def _event_name(event: Any) -> Any:
    try:
        return event["name"]
    except Exception:
        return "<no name>"
