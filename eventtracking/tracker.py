"""The tracker: stamps events, merges the entered contexts and hands events to backends.

Typical use::

    from eventtracking import tracker

    tracker.register_tracker(tracker.Tracker({'log': LoggerBackend(name='events')}))
    with tracker.get_tracker().context('request', {'user_id': 42}):
        tracker.emit('navigation.request', {'url': '/courses'})

Every event has exactly four keys: ``name``, ``timestamp`` (a timezone-aware UTC
datetime), ``context`` (the merged contexts) and ``data``.

Why one module, past 450 lines: :class:`Tracker` and the registry of trackers (with its
fallback) are the 4.x module ``eventtracking.tracker``, whose names users import from
here; the registry is the one place that reads ``TRACKERS``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from eventtracking._contextstack import ContextStack
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters, FastCounter, merge_into
from eventtracking.locator import (
    DefaultContextLocator,
    as_stack_locator,
    checked_context,
    stack_reader,
)
from eventtracking.routing import RoutingBackend
from eventtracking.typing import Backend, ContextLocator, Event, Processor, SupportsStats

__all__ = [
    "DEFAULT_TRACKER_NAME",
    "TRACKERS",
    "UNKNOWN_EVENT_TYPE",
    "Tracker",
    "console_tracker",
    "dropping_tracker",
    "emit",
    "get_tracker",
    "register_tracker",
    "registered",
    "registered_trackers",
    "set_console_backend",
    "set_fallback",
    "stats",
]

LOG = logging.getLogger(__name__)

UNKNOWN_EVENT_TYPE = "unknown"
DEFAULT_TRACKER_NAME = "default"

#: Registered trackers by name.
TRACKERS: dict[str, Tracker] = {}

UTC = timezone.utc

_anonymous_ids = itertools.count(1)


class Tracker:
    """Emit events through a routing backend, enriched with the located contexts.

    ``backends`` maps names to backends, ``processors`` is a sequence of callables run
    on every event before delivery, and ``context_locator`` decides which code shares a
    context stack (:class:`~eventtracking.locator.DefaultContextLocator` unless given).
    Raises ValueError for a backend without a callable ``send`` or a processor that is
    not callable, and TypeError for a locator without ``get()``.
    """

    def __init__(
        self,
        backends: Mapping[str, Backend] | None = None,
        context_locator: ContextLocator | None = None,
        processors: Iterable[Processor] | None = None,
    ) -> None:
        self.routing_backend = RoutingBackend(backends=backends, processors=processors)
        self.context_locator = context_locator or DefaultContextLocator()
        #: Called with each event before routing when set; see :mod:`eventtracking.metadata`.
        self.validator: Callable[[Event], Any] | None = None
        self._emitted = FastCounter()
        self._counters = Counters(groups=("dropped", "failed"))
        self._log = RateLimitedLogger(LOG)
        self._closed = False

    # -- contexts ---------------------------------------------------------------------

    @property
    def context_locator(self) -> ContextLocator:
        """The locator that stores this tracker's context stack, as it was given."""
        return self._locator

    @context_locator.setter
    def context_locator(self, locator: ContextLocator) -> None:
        # One seam: a 4.x-style locator (only get()) is wrapped in an adapter that
        # offers the same stack protocol as the locators shipped here.
        stacks = as_stack_locator(locator)
        self._locator = locator
        self._get_stack: Callable[[], ContextStack] = stack_reader(stacks)
        self._push: Callable[[str, Mapping[str, Any]], None] = stacks.push
        self._pop: Callable[[str], None] = stacks.pop

    @property
    def located_context(self) -> MutableMapping[str, Any]:
        """The entered contexts as a mutable mapping of name -> context, outermost first.

        It is the locator's ``get()``: editing it enters and leaves contexts, as in 4.x.
        """
        located: MutableMapping[str, Any] = self._locator.get()
        return located

    def enter_context(self, name: str, ctx: Mapping[str, Any]) -> None:
        """Enter ``ctx`` under ``name``; its keys are merged into every later event.

        The context is copied (one level deep) when entered, so later changes to the
        caller's dict do not show. Entering a name that is already entered makes it the
        innermost context, so its keys win; leaving it uncovers the previous one.
        Raises TypeError when ``ctx`` is not a mapping.
        """
        if type(ctx) is not dict and not isinstance(ctx, Mapping):
            checked_context(name, ctx)  # raises the TypeError that names the context
        # Inline, not checked_context(): this runs on every enter.
        self._push(name, dict(ctx))

    def exit_context(self, name: str) -> None:
        """Leave the innermost context called ``name``; KeyError when none is entered."""
        self._pop(name)

    def context(
        self, name: str | Mapping[str, Any], ctx: Mapping[str, Any] | None = None
    ) -> _EnteredContext:
        """Return a context manager that enters a context for the duration of a block.

        Call it as ``context(name, ctx)``, or as ``context(ctx)`` for an anonymous
        context that nothing else can leave by name.
        """
        if ctx is None and isinstance(name, Mapping):
            return _EnteredContext(self, f"<anonymous {next(_anonymous_ids)}>", name)
        if ctx is None:
            msg = (
                f"context({name!r}) needs a context mapping: call context(name, ctx) or "
                "context(ctx)."
            )
            raise TypeError(msg)
        return _EnteredContext(self, name, ctx)  # type: ignore[arg-type]

    def resolve_context(self) -> dict[str, Any]:
        """Return a new dict of every entered context merged, inner keys winning."""
        return dict(self._get_stack().merged())

    # -- emitting ---------------------------------------------------------------------

    def emit(self, name: str | None = None, data: Any = None) -> None:
        """Build an event and deliver it; never raises into the caller.

        The event is ``{'name', 'timestamp', 'context', 'data'}``: a missing name
        becomes ``'unknown'`` and missing data ``{}``. Failures are logged at a limited
        rate and counted in :meth:`stats`. The one exception is a validator in
        ``strict`` mode, whose error is meant to reach the caller.
        """
        try:
            # `data if data else {}`, tolerating data whose truth value raises.
            # contextlib.suppress would cost a context manager on every emit.
            try:  # noqa: SIM105
                data = data if data else {}
            except Exception:
                pass
            stack = self._get_stack()
            context: Mapping[str, Any] | None = stack.cached_merge
            if context is None:
                context = stack.merged()
            event = {
                "name": name or UNKNOWN_EVENT_TYPE,
                "timestamp": datetime.now(UTC),
                "context": context,
                "data": data,
            }
        except Exception:
            self._counters.incr("failed", "emit")
            self._log.error("emit", "Could not build event %r", name, exc_info=True)
            return
        self._emitted.incr()
        validator = self.validator
        if validator is not None:
            # A strict validator raises here, on purpose, into the caller.
            event = validator(event) or event
        try:
            self.routing_backend.send(event)
        except Exception:
            self._counters.incr("failed", "routing")
            self._log.error("routing", "Could not route event %r", name, exc_info=True)

    # -- backends and processors ------------------------------------------------------

    @property
    def backends(self) -> MutableMapping[str, Backend]:
        """The backends by name, in registration order (sorted at construction)."""
        return self.routing_backend.backends

    @property
    def processors(self) -> list[Processor]:
        """The processors, in the order they run."""
        return self.routing_backend.processors

    def get_backend(self, name: str) -> Backend:
        """Return the backend registered as ``name``; KeyError when there is none."""
        return self.backends[name]

    # -- delivery ---------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Ask every buffering backend to deliver what it holds, within ``timeout`` seconds.

        Returns True when every backend reports that everything accepted so far is
        delivered.
        """
        return self.routing_backend.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close every backend within ``timeout`` seconds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.routing_backend.close(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters for this tracker and everything below it.

        ``emitted`` counts events built; ``dropped`` counts events not delivered by
        reason; ``failed`` counts errors by where they happened; ``backends`` holds each
        backend's own ``stats()``; ``validation`` (only while a validator with ``stats()``
        is set) holds its findings.
        """
        routing = self.routing_backend.stats()
        result: dict[str, Any] = {"emitted": self._emitted.value, "dropped": {}, "failed": {}}
        merge_into(result, self._counters.snapshot())
        merge_into(result, {key: routing.get(key, {}) for key in ("dropped", "failed")})
        result["backends"] = routing["backends"]
        if isinstance(self.validator, SupportsStats):
            # Findings of the validator (eventtracking.metadata), only when one is set.
            result["validation"] = self.validator.stats()
        return result


@dataclasses.dataclass(eq=False, slots=True)
class _EnteredContext:
    """The context manager returned by :meth:`Tracker.context`; also usable as a decorator."""

    tracker: Tracker
    name: str
    ctx: Mapping[str, Any]

    def __enter__(self) -> None:
        self.tracker.enter_context(self.name, self.ctx)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.tracker.exit_context(self.name)

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Use the context as a decorator: it is entered for every call of ``func``.

        For a coroutine function the context is entered while the coroutine runs, not
        merely while it is created.
        """
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _EnteredContext(self.tracker, self.name, self.ctx):
                    return await func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _EnteredContext(self.tracker, self.name, self.ctx):
                return func(*args, **kwargs)

        return wrapper


# -- the registry of trackers ---------------------------------------------------------

_MODULE_COUNTERS = Counters(groups=("dropped",))
_warned_lock = threading.Lock()
_warned_no_tracker = False

_fallback_lock = threading.Lock()


_console_backend: Callable[[], Backend] | None = None


def set_console_backend(factory: Callable[[], Backend]) -> None:
    """Choose the backend :func:`console_tracker` prints with. The package hands over
    :class:`~eventtracking.backends.stream.StreamBackend`: the tracker imports no backend."""
    global _console_backend
    _console_backend = factory


def console_tracker() -> Tracker:
    """A tracker that prints every event to standard output as a JSON line.

    It is the fallback default tracker: see :func:`get_tracker`. Raises RuntimeError
    when :func:`set_console_backend` was never called (importing the package calls it).
    """
    if _console_backend is None:
        msg = "no console backend: import eventtracking, which sets one"
        raise RuntimeError(msg)
    return Tracker({"stdout": _console_backend()})


class _DropEverything:
    """The one backend of :func:`dropping_tracker`: every event it is sent is dropped,
    counted as ``no_tracker`` in :func:`stats` and, the first time, logged with the
    reason given to :func:`set_fallback`."""

    def send(self, event: Event) -> None:
        _drop_without_tracker(event.get("name"), "the tracker drops every event")


def dropping_tracker(context_locator: ContextLocator | None = None) -> Tracker:
    """A tracker that drops every event it is given, counted (see :func:`stats`).

    Its contexts work like any tracker's, so code written as
    ``with get_tracker().context(...)`` keeps running. The Django app registers one as
    the default when the settings are broken: the site keeps serving, and the events
    are counted as dropped instead of lost without a trace. ``context_locator`` is as
    for :class:`Tracker`.
    """
    return Tracker({"dropped": _DropEverything()}, context_locator=context_locator)


_fallback: Callable[[], Tracker] | None = console_tracker
_no_tracker_reason: str | None = None


def set_fallback(factory: Callable[[], Tracker] | None, reason: str | None = None) -> None:
    """Choose what :func:`get_tracker` and :func:`emit` do when no default is registered.

    ``factory`` builds the tracker to register as the default then: by default
    :func:`console_tracker`, so that a script that configured nothing prints its
    events. None restores 4.x's behaviour: ``get_tracker()`` raises KeyError and
    :func:`emit` drops the event, counted; ``reason`` then says why in the warning of
    the first drop. The Django app sets None in ``ready()``: there the settings decide,
    and ``EVENT_TRACKING_ENABLED`` off means no tracker.
    """
    global _fallback, _no_tracker_reason, _warned_no_tracker
    with _warned_lock:
        _fallback = factory
        if reason != _no_tracker_reason:
            # A new explanation deserves to be heard once.
            _warned_no_tracker = False
        _no_tracker_reason = reason


def _fallback_default() -> Tracker | None:
    """Register and return the fallback default tracker, or None when there is none."""
    factory = _fallback
    if factory is None:
        return None
    with _fallback_lock:
        # Another thread may have registered one, fallback or not, meanwhile.
        existing = TRACKERS.get(DEFAULT_TRACKER_NAME)
        if existing is not None:
            return existing
        built = TRACKERS[DEFAULT_TRACKER_NAME] = factory()
    LOG.info(
        "No tracker was registered as %r, so one was made that prints events as JSON "
        "lines. Call eventtracking.tracker.register_tracker() to send them elsewhere.",
        DEFAULT_TRACKER_NAME,
    )
    return built


def register_tracker(tracker: Tracker, name: str = DEFAULT_TRACKER_NAME) -> None:
    """Make ``tracker`` available as ``get_tracker(name)``, replacing any previous one."""
    TRACKERS[name] = tracker


def registered(name: str = DEFAULT_TRACKER_NAME) -> Tracker | None:
    """The tracker registered as ``name``, or None: unlike :func:`get_tracker`, never the
    fallback that prints events. How the rest of the package finds its tracker."""
    return TRACKERS.get(name)


def registered_trackers() -> list[tuple[str, Tracker]]:
    """The registered trackers as ``(name, tracker)`` pairs, a copy safe to iterate."""
    return list(TRACKERS.items())


def get_tracker(name: str = DEFAULT_TRACKER_NAME) -> Tracker:
    """Return the tracker registered as ``name``.

    Raises KeyError when there is none, except for the default name: when no default
    tracker was registered, a fallback is registered and returned, which prints every
    event to standard output as a JSON line (see :func:`set_fallback`; not under the
    Django app, whose settings decide).
    """
    try:
        return TRACKERS[name]
    except KeyError:
        if name != DEFAULT_TRACKER_NAME:
            raise
        fallback = _fallback_default()
        if fallback is None:
            raise
        return fallback


def emit(name: str | None = None, data: Any = None) -> None:
    """Emit through the default tracker (see :func:`get_tracker` for the fallback).

    With no default tracker and no fallback, the event is dropped: the first time is
    logged at WARNING, and every time is counted in :func:`stats` as ``no_tracker``.
    """
    try:
        tracker = TRACKERS[DEFAULT_TRACKER_NAME]
    except KeyError:
        fallback = _fallback_default()
        if fallback is None:
            _drop_without_tracker(name, f"no tracker is registered as {DEFAULT_TRACKER_NAME!r}")
            return
        tracker = fallback
    tracker.emit(name, data)


def _drop_without_tracker(name: str | None, why: str) -> None:
    global _warned_no_tracker
    _MODULE_COUNTERS.incr("dropped", "no_tracker")
    with _warned_lock:
        first = not _warned_no_tracker
        _warned_no_tracker = True
    if first:
        reason = _no_tracker_reason or (
            "call eventtracking.tracker.register_tracker() at start-up (the Django app "
            "does it when EVENT_TRACKING_ENABLED is true)"
        )
        LOG.warning(
            "Event %r dropped: %s: %s. Further drops are only counted, in "
            "eventtracking.tracker.stats()['dropped']['no_tracker'].",
            name,
            why,
            reason,
        )


def stats() -> dict[str, Any]:
    """Counters of the module-level :func:`emit`: events dropped for want of a tracker."""
    return _MODULE_COUNTERS.snapshot()
