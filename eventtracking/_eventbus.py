"""Publishing tracking logs to the Open edX event bus, from a delivery thread.

:class:`~eventtracking.backends.event_bus.EventBusRoutingBackend` turns each event into
an *envelope* (bytes: the message id, the send time, and the four fields of
``TrackingLogData`` with ``data`` and ``context`` as JSON text) and hands it to a
:class:`~eventtracking.delivery.BatchDelivery` whose sink is :class:`BusSink`. The sink
publishes batches with one of two publishers, and raises when the bus did not take
them, so that the delivery spools them and retries: nothing is lost while the bus is
down.

* :class:`RedisStreamsPublisher` writes to Redis Streams itself, with a pipeline per
  batch and bounded socket timeouts. The message is built by edx-event-bus-redis's own
  code (``RedisMessage`` and openedx-events' Avro serializer), so it is byte for byte
  what that library's producer writes, and its consumer reads it as its own. It is
  chosen when ``EVENT_BUS_PRODUCER`` names edx-event-bus-redis, because that
  producer catches every error and only logs it.
* :class:`SignalPublisher` sends the ``TRACKING_EVENT_EMITTED`` signal, as 4.x did, and
  openedx-events' handler passes it to the configured producer (Kafka, or any other).
  Errors are seen when the signal raises, when the producing receiver returns an
  error, or when the producer logs one at ERROR on this thread. What the producer
  reports later, from another thread, stays invisible (see docs/eventbus.rst).

The message id travels in the envelope, so a batch that is published again after a
failure carries the same ids, which lets consumers drop the copies.
"""

from __future__ import annotations

import collections
import datetime
import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from eventtracking import _json
from eventtracking._ratelimit import RateLimitedLogger
from eventtracking._stats import Counters

__all__ = [
    "EVENT_TYPE",
    "INSTALL_HINT",
    "PUBLISHERS",
    "REDIS_INSTALL_HINT",
    "REDIS_PRODUCERS",
    "BusSink",
    "Envelope",
    "PublishError",
    "RedisStreamsPublisher",
    "SignalPublisher",
    "decode_envelope",
    "enabled_topics",
    "encode_envelope",
    "openedx_events",
    "parse_timestamp",
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
# Ids of messages a SignalPublisher already handed to the producer, so that a batch
# retried after a failure half-way does not publish its first half twice.
_REMEMBERED_IDS = 10_000


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
        "id": str(uuid.uuid1()),
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
    """Read a payload written by :func:`encode_envelope`; ValueError when it is not one."""
    try:
        fields = json.loads(payload)
        return Envelope(
            id=str(uuid.UUID(fields["id"])),
            time=parse_timestamp(fields["time"]),
            name=fields["name"],
            timestamp=parse_timestamp(fields["timestamp"]),
            data=_require_str(fields["data"], "data"),
            context=_require_str(fields["context"], "context"),
        )
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        msg = f"not an event-bus envelope: {type(exc).__name__}: {exc}"
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


# -- publishers -------------------------------------------------------------------------


class RedisStreamsPublisher:
    """Write messages to Redis Streams exactly as edx-event-bus-redis's producer does.

    Settings, read at each batch: ``EVENT_BUS_REDIS_CONNECTION_URL``,
    ``EVENT_BUS_TOPIC_PREFIX``, ``EVENT_BUS_REDIS_STREAM_MAX_LEN`` (default 10,000,
    trimmed approximately) and ``EVENT_BUS_PRODUCER_CONFIG``. ``timeout`` bounds the
    connection and each reply, unless the URL sets ``socket_timeout`` or
    ``socket_connect_timeout`` itself; redis-py's own retries are off, the delivery
    retries with backoff instead.
    """

    name = "redis-streams"

    def __init__(self, timeout: float) -> None:
        try:
            import redis  # noqa: F401
            from edx_event_bus_redis.internal.config import get_full_topic
            from edx_event_bus_redis.internal.message import RedisMessage
            from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes
        except ImportError as exc:
            msg = (
                "publisher='redis' writes the message format of edx-event-bus-redis, "
                f"which is not installed. Install it with: {REDIS_INSTALL_HINT}"
            )
            raise ImportError(msg) from exc
        self._events = openedx_events()
        self._full_topic = get_full_topic
        self._message = RedisMessage
        self._avro = _TrackingLogAvro(self._events, serialize_event_data_to_bytes)
        self.timeout = timeout
        self._client: Any = None
        self._client_url: str | None = None

    def _redis(self, url: str) -> Any:
        if self._client is None or self._client_url != url:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # URL options (?socket_timeout=...) win over these keyword arguments.
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._client_url = url
        return self._client

    def publish(self, batch: Sequence[tuple[int, Envelope]]) -> dict[int, str]:
        """XADD each message to every enabled topic, in one round trip.

        Returns the positions of messages that can never be serialised, with the
        reason. Raises PublishError for anything a retry may fix: no URL, no topic,
        Redis unreachable, hung or refusing.
        """
        from django.conf import settings

        url = getattr(settings, "EVENT_BUS_REDIS_CONNECTION_URL", None)
        if not url:
            msg = (
                "EVENT_BUS_REDIS_CONNECTION_URL is not set, so the Redis event bus cannot "
                "be reached; set it to redis://host:port/db. Events are kept until it is."
            )
            raise PublishError(msg)
        topics = [self._full_topic(topic) for topic in enabled_topics()]
        max_len = int(getattr(settings, "EVENT_BUS_REDIS_STREAM_MAX_LEN", 10_000))
        events = self._events
        origin = _origin(events)
        rejected: dict[int, str] = {}
        commands: list[tuple[str, dict[bytes, bytes]]] = []
        for position, envelope in batch:
            try:
                event_bytes = self._avro(_tracking_log(events, envelope))
                metadata = _metadata(events, envelope, origin)
                for stream in topics:
                    message = self._message(
                        topic=stream, event_data=event_bytes, event_metadata=metadata
                    )
                    commands.append((stream, message.to_binary_dict()))
            except Exception as exc:
                rejected[position] = (
                    f"the event cannot be serialised for the event bus: {type(exc).__name__}: {exc}"
                )
        if not commands:
            return rejected
        pipe = self._redis(url).pipeline(transaction=False)
        for stream, fields in commands:
            pipe.xadd(stream, fields, maxlen=max_len, approximate=True)
        try:
            pipe.execute()
        except Exception as exc:
            # A broken connection leaves the pool's socket unusable: start afresh.
            self._client = None
            msg = f"Redis did not take the batch: {type(exc).__name__}: {exc}"
            raise PublishError(msg) from exc
        return rejected


class SignalPublisher:
    """Send ``TRACKING_EVENT_EMITTED`` and watch the configured producer for errors.

    openedx-events passes the signal to ``EVENT_BUS_PRODUCER``'s producer through the
    handler it connects for the types in ``EVENT_BUS_PRODUCER_CONFIG``. Producers catch
    their own errors and log them; this publisher listens on the producer's logger
    (its module name) for ERROR records made on this thread while it sends, and treats
    one as a failure. ``unverified`` counts messages sent while that logger was
    disabled or set above ERROR, when a failure could not have been seen.
    """

    name = "signal"

    def __init__(self) -> None:
        from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes

        self._events = openedx_events()
        self._serialize = serialize_event_data_to_bytes
        self._published: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._capture = _ErrorCapture()
        self._watched: set[str] = set()
        self._log = RateLimitedLogger(LOG)
        self.counters = Counters("unverified", "receiver_errors")

    def publish(self, batch: Sequence[tuple[int, Envelope]]) -> dict[int, str]:
        """Send one signal per message, in order; raise PublishError at the first failure.

        Messages sent before the failure are remembered and skipped when the batch
        comes back, so a retry does not publish them twice (within this process).
        """
        from openedx_events.exceptions import SenderValidationError

        enabled_topics()
        producer_logger = self._producer_logger()
        observable = producer_logger.isEnabledFor(logging.ERROR)
        signal = self._events.TRACKING_EVENT_EMITTED
        rejected: dict[int, str] = {}
        for position, envelope in batch:
            if envelope.id in self._published:
                continue
            tracking_log = _tracking_log(self._events, envelope)
            try:
                # What every producer does first; done here, a message that can never
                # be serialised is refused alone instead of failing its batch forever.
                self._serialize({"tracking_log": tracking_log}, signal)
            except Exception as exc:
                rejected[position] = (
                    f"the event cannot be serialised for the event bus: {type(exc).__name__}: {exc}"
                )
                continue
            with self._capture.collect() as errors:
                try:
                    responses = self._send(signal, envelope, tracking_log)
                except SenderValidationError as exc:
                    rejected[position] = f"openedx-events refused the event: {exc}"
                    continue
                except Exception as exc:
                    msg = f"sending TRACKING_EVENT_EMITTED raised {type(exc).__name__}: {exc}"
                    raise PublishError(msg) from exc
            self._check_responses(responses)
            if errors:
                record = errors[0]
                msg = f"the event-bus producer logged an error: {record.getMessage()}"
                raise PublishError(msg)
            if not observable:
                self.counters.incr("unverified")
                self._log.warning(
                    "unverified",
                    "Logger %r is disabled or above ERROR, so errors of the event-bus "
                    "producer cannot be seen; events are assumed published",
                    producer_logger.name,
                )
            self._remember(envelope.id)
        return rejected

    def _send(self, signal: Any, envelope: Envelope, tracking_log: Any) -> Any:
        """Send the signal with the envelope's id and time as its metadata.

        openedx-events' public ``send_event`` makes a new id at every call, so a message
        sent again after an ambiguous failure (Redis took it, then died before
        answering) would reach the bus twice under two ids. Its internal
        ``_send_event_with_metadata`` (openedx-events 9 and 10) keeps ours; without it,
        the public call is used.
        """
        send_with_metadata = getattr(signal, "_send_event_with_metadata", None)
        if send_with_metadata is None:
            return signal.send_event(
                send_robust=True, time=envelope.time, tracking_log=tracking_log
            )
        return send_with_metadata(
            metadata=_metadata(self._events, envelope),
            send_robust=True,
            tracking_log=tracking_log,
        )

    def _producer_logger(self) -> logging.Logger:
        """The logger of the configured producer, watched for its errors from now on."""
        from openedx_events.event_bus import NoEventBusProducer, get_producer

        producer = get_producer()
        if isinstance(producer, NoEventBusProducer):
            msg = (
                "EVENT_BUS_PRODUCER is not set, or its producer failed to load (see the "
                "warnings of openedx-events), so nothing reaches the bus. Events are kept "
                "until it is set."
            )
            raise PublishError(msg)
        # Producers log through logging.getLogger(__name__) of their module.
        name = type(producer).__module__
        producer_logger = logging.getLogger(name)
        if name not in self._watched:
            producer_logger.addHandler(self._capture)
            self._watched.add(name)
        return producer_logger

    def _check_responses(self, responses: Any) -> None:
        from openedx_events.apps import general_signal_handler

        responses = list(responses or ())
        if not any(receiver is general_signal_handler for receiver, _ in responses):
            msg = (
                "openedx-events' producing handler is not connected to "
                "TRACKING_EVENT_EMITTED, so the signal reaches no producer: add "
                "'openedx_events' to INSTALLED_APPS and the event type to "
                "EVENT_BUS_PRODUCER_CONFIG before Django starts. Events are kept until "
                "it is connected."
            )
            raise PublishError(msg)
        for receiver, response in responses:
            if not isinstance(response, BaseException):
                continue
            if receiver is general_signal_handler:
                msg = (
                    "openedx-events' producing handler raised "
                    f"{type(response).__name__}: {response}"
                )
                raise PublishError(msg) from response
            # Another receiver of the signal in this process: not the bus's failure,
            # and sending again would repeat what the bus already has.
            self.counters.incr("receiver_errors")
            self._log.error(
                f"receiver:{receiver!r}",
                "Receiver %r of TRACKING_EVENT_EMITTED raised %s: %s",
                receiver,
                type(response).__name__,
                response,
            )

    def _remember(self, message_id: str) -> None:
        self._published[message_id] = None
        if len(self._published) > _REMEMBERED_IDS:
            self._published.popitem(last=False)

    def stats(self) -> dict[str, object]:
        """``unverified`` messages and ``receiver_errors`` of other receivers."""
        return self.counters.snapshot()


class _ErrorCapture(logging.Handler):
    """Collects ERROR records logged on a thread while it is inside :meth:`collect`."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._local = threading.local()

    @contextmanager
    def collect(self) -> Iterator[list[logging.LogRecord]]:
        records: list[logging.LogRecord] = []
        self._local.records = records
        try:
            yield records
        finally:
            self._local.records = None

    def emit(self, record: logging.LogRecord) -> None:
        records = getattr(self._local, "records", None)
        if records is not None:
            records.append(record)


def _tracking_log(events: SimpleNamespace, envelope: Envelope) -> Any:
    return events.TrackingLogData(
        name=envelope.name,
        timestamp=envelope.timestamp,
        data=envelope.data,
        context=envelope.context,
    )


def _origin(events: SimpleNamespace) -> dict[str, Any]:
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


def _metadata(
    events: SimpleNamespace, envelope: Envelope, origin: Mapping[str, Any] | None = None
) -> Any:
    signal = events.TRACKING_EVENT_EMITTED
    return events.EventsMetadata(
        event_type=signal.event_type,
        id=uuid.UUID(envelope.id),
        minorversion=signal.minor_version,
        time=envelope.time,
        **(origin or {}),
    )


class _TrackingLogAvro:
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
        self._library = lambda log: serialize({"tracking_log": log}, signal)
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


# -- the sink ---------------------------------------------------------------------------


class BusSink:
    """The delivery's sink: decode a batch of envelopes and publish them.

    ``publisher`` is ``'auto'`` (Redis Streams when ``EVENT_BUS_PRODUCER`` names
    edx-event-bus-redis, the signal otherwise; decided at each batch, from the
    settings of the moment), ``'redis'`` or ``'signal'``. ``timeout`` bounds each Redis
    call of the Redis Streams publisher.
    """

    def __init__(self, publisher: str = "auto", timeout: float = 2.0) -> None:
        self.publisher = publisher
        self.timeout = timeout
        self._redis: RedisStreamsPublisher | None = None
        self._signal: SignalPublisher | None = None
        self._counters = Counters("published")
        self._counters.set("in_flight", 0)
        self._last_publisher: str | None = None

    def choose(self) -> RedisStreamsPublisher | SignalPublisher:
        """The publisher for the next batch (built on first use).

        Called from the delivery thread only, so building needs no lock.
        """
        choice = self.publisher
        if choice == "auto":
            from django.conf import settings

            producer = getattr(settings, "EVENT_BUS_PRODUCER", None)
            choice = "redis" if producer in REDIS_PRODUCERS else "signal"
        if choice == "redis":
            if self._redis is None:
                self._redis = RedisStreamsPublisher(self.timeout)
            return self._redis
        if self._signal is None:
            self._signal = SignalPublisher()
        return self._signal

    def send_batch(self, items: Sequence[bytes]) -> dict[int, str]:
        """Publish ``items``; return the positions refused for good; raise to retry."""
        rejected: dict[int, str] = {}
        batch: list[tuple[int, Envelope]] = []
        for position, item in enumerate(items):
            try:
                batch.append((position, decode_envelope(item)))
            except ValueError as exc:
                rejected[position] = str(exc)
        if not batch:
            return rejected
        try:
            publisher = self.choose()
        except ImportError as exc:
            raise PublishError(str(exc)) from exc
        self._last_publisher = publisher.name
        self._counters.set("in_flight", len(batch))
        try:
            refused = publisher.publish(batch)
        finally:
            self._counters.set("in_flight", 0)
        rejected.update(refused)
        self._counters.incr("published", amount=len(batch) - len(refused))
        return rejected

    def stats(self) -> dict[str, Any]:
        """``published`` messages, ``in_flight`` (in the publish call now), ``publisher``
        (the last one used) and the signal publisher's own counters."""
        result: dict[str, Any] = self._counters.snapshot()
        result["publisher"] = self._last_publisher
        if self._signal is not None:
            result.update(self._signal.stats())
        return result
