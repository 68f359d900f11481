"""Send tracking logs through the Open edX event bus, and deliver them where they arrive.

:class:`EventBusRoutingBackend` keeps the 4.x surface. In the process that emits,
:meth:`~EventBusRoutingBackend.send` queues the event for a background thread that
publishes it as openedx-events' ``TRACKING_EVENT_EMITTED`` signal, or writes it to Redis
Streams, and spools what the bus does not take; in the process that consumes the bus,
:func:`eventtracking.handlers.send_tracking_log_to_backends` hands it to
:meth:`~EventBusRoutingBackend.receive_from_bus`, which runs the processors and delivers
to the nested backends. ``docs/eventbus.rst`` walks both sides, and what is counted.

openedx-events is imported when a backend is built, so importing this module needs only
the core; building a backend without it raises ImportError naming the extra
(``pip install 'event-tracking[eventbus]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from eventtracking._util.options import check_seconds
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters
from eventtracking.backends.event_bus import _envelope as _eventbus
from eventtracking.backends.event_bus import _publish as _eventbus_publish
from eventtracking.config import SEND_TRACKING_EVENT_EMITTED_SIGNAL
from eventtracking.delivery._backend import SpoolingBackend
from eventtracking.delivery.options import DeliveryOptions
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.routing import RoutingBackend
from eventtracking.typing import Backend, Event, Processor

__all__ = [
    "DEFAULT_STREAM",
    "EVENT_TYPE",
    "INSTALL_HINT",
    "PUBLISHERS",
    "EventBusRoutingBackend",
]

logger = logging.getLogger(__name__)

EVENT_TYPE = _eventbus.EVENT_TYPE
INSTALL_HINT = _eventbus.INSTALL_HINT
PUBLISHERS = _eventbus.PUBLISHERS

#: The spool stream of events waiting for the bus. Every backend publishes to the same
#: bus, so they share it: any of them replays what another left.
DEFAULT_STREAM = f"eventbus:{EVENT_TYPE}"

# Messages are small and a web process should not hold them long.
_DEFAULTS = DeliveryOptions(batch_size=100, flush_interval=0.5)


def __getattr__(name: str) -> Any:
    # 4.x imported these at module level, and tests patch them here
    # (``eventtracking.backends.event_bus.TRACKING_EVENT_EMITTED.send_event``).
    if name in ("TRACKING_EVENT_EMITTED", "TrackingLogData"):
        return getattr(_eventbus.openedx_events(), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


class EventBusRoutingBackend(SpoolingBackend, RoutingBackend):
    """Publish events to the Open edX event bus; deliver those that come back from it.

    The 4.x arguments: ``processors`` and ``backends`` are used where the bus is
    consumed (see :meth:`receive_from_bus`); ``backend_name`` is kept as
    :attr:`backend_name`. ``publisher`` (``'auto'``, ``'redis'`` or ``'signal'``),
    ``publish_timeout`` (2.0 s) and the delivery options (see
    :class:`~eventtracking.delivery.options.DeliveryOptions`; ``batch_size`` 100,
    ``flush_interval`` 0.5 s and ``spool_stream`` :data:`DEFAULT_STREAM` by default)
    are described in ``docs/eventbus.rst`` (*Two ways to publish*, *Options*).

    The delivery thread starts with the first event to publish (or the first
    ``flush``), and then also publishes what earlier processes left in the spool. A
    process that publishes nothing, such as the bus consumer, starts no thread. Raises
    ImportError without openedx-events, ImproperlyConfigured for options out of range,
    and :class:`~eventtracking.spool.UnsafeSpoolError` (an ImproperlyConfigured) for a
    spool directory that another user could read or change.
    """

    def __init__(
        self,
        processors: Iterable[Processor] | None = None,
        backends: Mapping[str, Backend] | None = None,
        backend_name: str = "",
        *,
        publisher: str = "auto",
        publish_timeout: float = 2.0,
        batch_size: int = _DEFAULTS.batch_size,
        flush_interval: float = _DEFAULTS.flush_interval,
        max_queue_size: int = _DEFAULTS.max_queue_size,
        spool_dir: str | os.PathLike[str] | None = _DEFAULTS.spool_dir,
        spool_stream: str | None = _DEFAULTS.spool_stream,
        spool_max_bytes: int | None = _DEFAULTS.spool_max_bytes,
        durable: bool = _DEFAULTS.durable,
        exit_timeout: float = _DEFAULTS.exit_timeout,
        delivery_options: DeliveryOptions | None = None,
    ) -> None:
        _eventbus.openedx_events()
        _eventbus.wire_ready()
        from django.conf import settings  # openedx-events brings Django

        # The settings object, not their values: override_settings changes what it
        # holds, and send() reads the names of the moment at each event, without
        # an import statement on every event.
        self._settings = settings
        if publisher not in PUBLISHERS:
            msg = f"publisher must be one of {', '.join(map(repr, PUBLISHERS))}; got {publisher!r}"
            raise ImproperlyConfigured(msg)
        check_seconds("publish_timeout", publish_timeout)
        options = DeliveryOptions.merge(delivery_options, _DEFAULTS, locals())
        super().__init__(backends=backends, processors=processors)
        self.backend_name = backend_name
        self.stream = options.spool_stream or DEFAULT_STREAM
        self.delivery_options = options
        self._sink = _eventbus_publish.BusSink(publisher, timeout=float(publish_timeout))
        self.spool = options.open_spool()
        #: The :class:`~eventtracking.delivery.BatchDelivery` that publishes. It starts
        #: its thread with the first event (or flush), not here.
        self.delivery = options.delivery(
            self._sink, name=f"eventbus:{backend_name or 'default'}", spool=self.spool,
            stream=self.stream,
        )  # fmt: skip
        self._log = RateLimitedLogger(logger)
        self._producer = Counters(groups=("skipped",))
        self._consumer = Counters("received", "delivered", "filtered", "dead_lettered")

    def __repr__(self) -> str:
        return f"<EventBusRoutingBackend {self.backend_name or self.stream!r}>"

    @property
    def publisher(self) -> str:
        """The ``publisher`` option: ``'auto'``, ``'redis'`` or ``'signal'``."""
        return self._sink.publisher

    # -- the producing side -------------------------------------------------------------

    def send(self, event: Event) -> None:
        """Queue ``event`` for the bus when the switch is on and its name is listed.

        Never blocks on the bus and never raises. What is not published is counted:
        ``stats()['producer']['skipped']`` by reason (``switched_off``, ``not_listed``),
        and an event with an unusable timestamp is a dead letter.
        """
        try:
            if not SEND_TRACKING_EVENT_EMITTED_SIGNAL.is_enabled():
                self._producer.incr("skipped", "switched_off")
                return
            if not self._listed(event.get("name")):
                self._producer.incr("skipped", "not_listed")
                return
            payload, problem = _eventbus.encode_envelope(event)
        except Exception as exc:
            # Settings that cannot be read, an event that is not a mapping: keep what
            # can be kept of it, with the reason.
            kept = None
            with contextlib.suppress(Exception):
                kept = _eventbus.encode_envelope(event)[0]
            self.delivery.dead_letter(
                kept,
                f"the event cannot be prepared for the bus: {type(exc).__name__}: {exc}",
                _describe(event),
            )
            return
        if problem is not None:
            self.delivery.dead_letter(payload, problem, _describe(event))
            return
        self.delivery.put(payload)

    def _listed(self, name: Any) -> bool:
        names = getattr(self._settings, "EVENT_BUS_TRACKING_LOGS", ())
        if isinstance(names, str):
            # "abc" in "xabcx" would be a substring test: compare the one name instead.
            self._log.warning(
                "tracking-logs-str",
                "EVENT_BUS_TRACKING_LOGS is a string (%r); it should be a list or set of "
                "event names. It is read as that one name.",
                names,
            )
            return bool(name == names)
        try:
            return name in names
        except TypeError:
            return False

    # -- the consuming side -------------------------------------------------------------

    def receive_from_bus(self, event: Event) -> bool:
        """Run the processors on an event that came from the bus, then deliver it to the
        nested backends. Returns False when a processor dropped it.

        Backend failures are logged and counted by the router, as for any event.
        """
        self._consumer.incr("received")
        try:
            processed = self.process_event(event)
        except EventEmissionExit:
            self._consumer.incr("filtered")
            logger.info("Event %r from the bus was dropped by a processor", event.get("name"))
            return False
        self.send_to_backends(processed)
        self._consumer.incr("delivered")
        return True

    def reject_from_bus(
        self, payload: bytes | None, reason: str, detail: str | None = None
    ) -> None:
        """Keep a message from the bus that cannot become an event, as a dead letter.

        It goes to the spool's dead letters under ``<stream>:received``, with the
        reason; without a usable spool it is logged and counted as dropped.
        """
        self._consumer.incr("dead_lettered")
        self._log.warning("rejected", "A message from the event bus was rejected: %s", reason)
        try:
            self.spool.add_dead_letters(f"{self.stream}:received", [(payload, reason, detail)])
        except Exception:
            self._consumer.incr("dropped", "dead_letter")
            logger.exception("Could not keep a rejected event-bus message in the spool")

    # -- delivery -----------------------------------------------------------------------

    def _stats(self, result: dict[str, Any], delivery: dict[str, Any]) -> dict[str, Any]:
        """Counters of both sides, as ``docs/eventbus.rst`` (*What is counted*) lists
        them: ``producer`` (the delivery's, and ``skipped`` by reason), ``consumer``, and
        the router's for the nested backends."""
        delivery.update(self._producer.snapshot())
        result["producer"] = delivery
        result["consumer"] = self._consumer.snapshot()
        return result


def _consumes_the_bus() -> bool:
    """Whether this process consumes the bus (openedx-events' ``consume_events``
    command), the only place where nested backends receive events."""
    return "consume_events" in sys.argv[1:]


def _describe(event: Any) -> str:
    try:
        name = event.get("name")
    except Exception:
        name = None
    return f"event {name!r}"
