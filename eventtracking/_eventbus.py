"""Tracking logs on their way to the Open edX event bus: envelopes, timestamps, topics.

:class:`~eventtracking.backends.event_bus.EventBusRoutingBackend` turns each event into
an *envelope* (bytes: the message id, the send time, and the four fields of
``TrackingLogData`` with ``data`` and ``context`` as JSON text) and hands it to a
:class:`~eventtracking.delivery.BatchDelivery` whose sink is
:class:`~eventtracking._eventbus_publish.BusSink`. The sink publishes batches with one
of two publishers, and raises when the bus did not take them, so that the delivery
spools them and retries: nothing is lost while the bus is down. This module holds what
the backend, the sink and the receiver share; :mod:`eventtracking._eventbus_publish`
holds the sink and the publishers:

* ``RedisStreamsPublisher`` writes to Redis Streams itself, with a pipeline per
  batch and bounded socket timeouts. The message is built by edx-event-bus-redis's own
  code (``RedisMessage`` and openedx-events' Avro serializer), so it is byte for byte
  what that library's producer writes, and its consumer reads it as its own. It is
  chosen when ``EVENT_BUS_PRODUCER`` names edx-event-bus-redis, because that
  producer catches every error and only logs it.
* ``SignalPublisher`` sends the ``TRACKING_EVENT_EMITTED`` signal, as 4.x did, and
  openedx-events' handler passes it to the configured producer (Kafka, or any other).
  Errors are seen when the signal raises, when the producing receiver returns an
  error, or when the producer logs one at ERROR on this thread. What the producer
  reports later, from another thread, stays invisible (see docs/eventbus.rst).

The message id travels in the envelope, so a batch that is published again after a
failure carries the same ids, which lets consumers drop the copies. It is a random
UUID (version 4): openedx-events' own default, ``uuid1``, holds the host's MAC address.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from eventtracking import _json

__all__ = [
    "EVENT_TYPE",
    "INSTALL_HINT",
    "PUBLISHERS",
    "REDIS_INSTALL_HINT",
    "REDIS_PRODUCERS",
    "Envelope",
    "PublishError",
    "TrackingLogAvro",
    "decode_envelope",
    "enabled_topics",
    "encode_envelope",
    "message_metadata",
    "message_origin",
    "openedx_events",
    "parse_timestamp",
    "tracking_log",
]

LOG = logging.getLogger("eventtracking.eventbus")

#: The openedx-events type of ``TRACKING_EVENT_EMITTED``.
EVENT_TYPE = "org.openedx.analytics.tracking.event.emitted.v1"

#: What to run when openedx-events is missing.
INSTALL_HINT = "pip install 'event-tracking[eventbus]'"

#: What to run when the Redis Streams publisher is asked for without its library.
REDIS_INSTALL_HINT = "pip install edx-event-bus-redis"

#: ``EVENT_BUS_PRODUCER`` values that name edx-event-bus-redis's producer.
REDIS_PRODUCERS = frozenset(
    {
        "edx_event_bus_redis.create_producer",
        "edx_event_bus_redis.internal.producer.create_producer",
    }
)

#: The accepted values of the backend's ``publisher`` option.
PUBLISHERS = ("auto", "redis", "signal")

_UTC = datetime.timezone.utc


class PublishError(Exception):
    """The bus did not take a batch; it is kept and retried."""


def openedx_events() -> SimpleNamespace:
    """The parts of openedx-events used here; ImportError naming the extra without it."""
    try:
        from openedx_events.analytics.data import TrackingLogData
        from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
        from openedx_events.data import EventsMetadata
        from openedx_events.tooling import SIGNAL_PROCESSED_FROM_EVENT_BUS
    except ImportError as exc:
        msg = (
            "The Open edX event bus needs openedx-events, which is not installed. "
            f"Install it with: {INSTALL_HINT}"
        )
        raise ImportError(msg) from exc
    return SimpleNamespace(
        TRACKING_EVENT_EMITTED=TRACKING_EVENT_EMITTED,
        TrackingLogData=TrackingLogData,
        EventsMetadata=EventsMetadata,
        FROM_EVENT_BUS=SIGNAL_PROCESSED_FROM_EVENT_BUS,
    )


# -- timestamps and envelopes -----------------------------------------------------------


def parse_timestamp(value: Any) -> datetime.datetime:
    """Return ``value`` as a timezone-aware UTC datetime, or raise ValueError.

    A datetime is converted to UTC (a naive one is taken to be UTC already, as the JSON
    encoder does). A string may be any ISO 8601 date-time: with ``T`` or a space, with
    or without a fraction of a second, ending in ``Z``, ``+HH:MM``, ``+HHMM`` or
    nothing (UTC). 4.x accepted only ``%Y-%m-%dT%H:%M:%S.%f%z`` and lost the others.
    """
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC)
    if isinstance(value, str):
        parsed = _parse_iso(value.strip())
        if parsed is not None:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_UTC)
        msg = (
            f"timestamp {value!r} is not an ISO 8601 date-time; emit events with a "
            "timezone-aware datetime, or a string such as '2024-01-31T12:00:00.000000+00:00'"
        )
        raise ValueError(msg)
    msg = (
        f"timestamp {value!r} ({type(value).__name__}) is neither a datetime nor an ISO "
        "8601 string; emit events with a timezone-aware datetime"
    )
    raise ValueError(msg)


def _parse_iso(text: str) -> datetime.datetime | None:
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        pass
    # Python 3.10's fromisoformat takes only 0, 3 or 6 digits of fraction and no
    # "+HHMM"; strptime covers those.
    for layout in (
        "%Y-%m-%dT%H:%M:%S.%f%z",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%d %H:%M:%S.%f%z",
        "%Y-%m-%d %H:%M:%S%z",
    ):
        try:
            return datetime.datetime.strptime(text, layout)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class Envelope:
    """One tracking log on its way to the bus: the message id and time, and its fields."""

    id: str
    time: datetime.datetime
    name: Any
    timestamp: datetime.datetime
    data: str
    context: str


def encode_envelope(event: Mapping[str, Any]) -> tuple[bytes, str | None]:
    """Serialise ``event`` for the delivery; never raises.

    Returns the payload and None, or, when the event cannot be published (its timestamp
    is unusable), a payload that keeps what the event held and the reason, for a dead
    letter. ``data`` and ``context`` become JSON text with the library's rules (see
    :mod:`eventtracking._json`): a set, a Decimal or an odd object is written, never
    fatal, where 4.x's encoder raised.
    """
    now = datetime.datetime.now(_UTC)
    fields = {
        "id": str(uuid.uuid4()),
        "time": now.isoformat(),
        "name": event.get("name"),
        "timestamp": None,
        "data": _json.dumps(event.get("data")),
        "context": _json.dumps(event.get("context")),
    }
    problem = None
    raw = event.get("timestamp")
    try:
        fields["timestamp"] = parse_timestamp(raw).isoformat()
    except ValueError as exc:
        problem = str(exc)
        fields["timestamp"] = raw if isinstance(raw, str) else _json.safe_repr(raw)
    return _json.dumps(fields).encode("utf-8"), problem


def decode_envelope(payload: bytes) -> Envelope:
    """Read a payload written by :func:`encode_envelope`; ValueError when it is not one.

    Any payload may come back from the spool (``spool redrive`` puts back whatever a
    dead letter holds), so every failure to read one, whatever its exception, is this
    payload's own and becomes the ValueError: it must be set aside alone, never be
    taken for a failure of the bus that holds up the items behind it.
    """
    try:
        fields = json.loads(payload)
        return Envelope(
            id=str(uuid.UUID(_require_str(fields["id"], "id"))),
            time=parse_timestamp(fields["time"]),
            name=fields["name"],
            timestamp=parse_timestamp(fields["timestamp"]),
            data=_require_str(fields["data"], "data"),
            context=_require_str(fields["context"], "context"),
        )
    except Exception as exc:
        # The reason is stored as text: a lone surrogate quoted from the payload must
        # not make the dead letter itself unwritable.
        reason = str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
        msg = f"not an event-bus envelope: {type(exc).__name__}: {reason}"
        raise ValueError(msg) from exc


def _require_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        msg = f"{name} must be JSON text, got {type(value).__name__}"
        raise TypeError(msg)
    return value


def enabled_topics() -> list[str]:
    """The topics ``EVENT_BUS_PRODUCER_CONFIG`` enables for tracking logs.

    The same rule as openedx-events' producing handler: ``enabled`` must be True.
    Raises PublishError when the setting is malformed or enables none, since nothing
    would reach the bus.
    """
    from django.conf import settings

    config = getattr(settings, "EVENT_BUS_PRODUCER_CONFIG", None) or {}
    by_topic = config.get(EVENT_TYPE) if isinstance(config, Mapping) else None
    topics = []
    if isinstance(by_topic, Mapping):
        topics = [
            topic
            for topic, options in by_topic.items()
            if isinstance(options, Mapping) and options.get("enabled") is True
        ]
    if not topics:
        msg = (
            f"EVENT_BUS_PRODUCER_CONFIG enables no topic for {EVENT_TYPE!r}, so tracking "
            "logs would reach no topic; add "
            f"{{{EVENT_TYPE!r}: {{'analytics': {{'event_key_field': 'tracking_log.name', "
            "'enabled': True}}}}. Events are kept until it does."
        )
        raise PublishError(msg)
    return topics


# -- messages ---------------------------------------------------------------------------


def tracking_log(events: SimpleNamespace, envelope: Envelope) -> Any:
    """The ``TrackingLogData`` of ``envelope``."""
    return events.TrackingLogData(
        name=envelope.name,
        timestamp=envelope.timestamp,
        data=envelope.data,
        context=envelope.context,
    )


def message_origin(events: SimpleNamespace) -> dict[str, Any]:
    """The metadata fields that are the same for every message of a batch.

    Taken from openedx-events' own defaults (``source`` from the service name setting,
    ``sourcehost``, ``sourcelib``), worked out once instead of for every message.
    """
    defaults = events.EventsMetadata(event_type=EVENT_TYPE)
    return {
        "source": defaults.source,
        "sourcehost": defaults.sourcehost,
        "sourcelib": defaults.sourcelib,
    }


def message_metadata(
    events: SimpleNamespace, envelope: Envelope, origin: Mapping[str, Any] | None = None
) -> Any:
    """The ``EventsMetadata`` of ``envelope``: its id and time, and ``origin``."""
    signal = events.TRACKING_EVENT_EMITTED
    return events.EventsMetadata(
        event_type=signal.event_type,
        id=uuid.UUID(envelope.id),
        minorversion=signal.minor_version,
        time=envelope.time,
        **(origin or {}),
    )


class TrackingLogAvro:
    """The Avro bytes of a ``TrackingLogData``, exactly as openedx-events writes them.

    openedx-events' ``serialize_event_data_to_bytes`` builds its serializer again and
    walks the attrs class for every message. A tracking log is four strings (the
    timestamp in ``isoformat()``), which fastavro writes from a plain record several
    times faster. That shortcut is taken only if it gave the library's bytes for probe
    messages when this object was built; otherwise, and for a message whose name is not
    a string, the library's function is called.
    """

    def __init__(self, events: SimpleNamespace, serialize: Any) -> None:
        signal = events.TRACKING_EVENT_EMITTED
        self._library: Callable[[Any], Any] = lambda log: serialize({"tracking_log": log}, signal)
        self._schema: Any = None
        try:
            import fastavro
            from openedx_events.event_bus.avro.serializer import AvroSignalSerializer

            self._schema = fastavro.parse_schema(AvroSignalSerializer(signal).schema)
            self._writer = fastavro.schemaless_writer
            probes = [
                events.TrackingLogData(
                    name="probe.é", timestamp=moment, data='{"a": [1, "é"]}', context="{}"
                )
                for moment in (
                    datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=_UTC),
                    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=_UTC),
                )
            ]
            if any(self._fast(probe) != self._library(probe) for probe in probes):
                self._schema = None
        except Exception:
            self._schema = None

    def _fast(self, log: Any) -> bytes:
        out = io.BytesIO()
        record = {
            "name": log.name,
            "timestamp": log.timestamp.isoformat(),
            "data": log.data,
            "context": log.context,
        }
        self._writer(out, self._schema, {"tracking_log": record})
        return out.getvalue()

    def __call__(self, log: Any) -> bytes:
        if self._schema is not None and type(log.name) is str:
            return self._fast(log)
        return bytes(self._library(log))
