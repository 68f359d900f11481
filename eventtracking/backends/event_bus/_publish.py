"""Publishing envelopes to the Open edX event bus: the delivery's sink and its publishers.

:class:`BusSink` hands each batch of envelopes (see
:mod:`eventtracking.backends.event_bus._envelope`) to :class:`RedisStreamsPublisher` or
:class:`SignalPublisher`.

Why one module: the two publishers and the sink that drives them share one contract:
raise :class:`~eventtracking.backends.event_bus._envelope.PublishError` when the bus did
not take a batch, so that the delivery keeps it and retries, and refuse an envelope that
cannot be read or published alone, as a dead letter, so that the rest of its batch goes.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters
from eventtracking.backends.event_bus._envelope import (
    EVENT_TYPE,
    LOG,
    REDIS_INSTALL_HINT,
    REDIS_PRODUCERS,
    WIRE_MAGIC,
    Envelope,
    PublishError,
    avro_tracking_log,
    avro_writes_library_bytes,
    decode_envelope,
    enabled_topics,
    message_metadata,
    message_origin,
    openedx_events,
    storable,
    tracking_log,
    wire_parts,
)

__all__ = ["BusSettings", "BusSink", "RedisStreamsPublisher", "SignalPublisher"]

_UTC = datetime.timezone.utc
# Ids of messages a SignalPublisher already handed to the producer, so that a batch
# retried after a failure half-way does not publish its first half twice.
_REMEMBERED_IDS = 10_000


@dataclass(frozen=True)
class BusSettings:
    """The Django settings a batch is published under, read once per batch by
    :class:`BusSink` and handed to its publisher."""

    producer: Any = None
    redis_url: Any = None
    stream_max_len: Any = 10_000
    producer_config: Any = None
    #: Read by edx-event-bus-redis for the stream's name, and by openedx-events for
    #: the messages' ``source``: held here so that a change makes a new :class:`_Plan`.
    topic_prefix: Any = None
    service_name: Any = None

    @classmethod
    def read(cls) -> BusSettings:
        """The settings of the moment."""
        from django.conf import settings

        return cls(
            producer=getattr(settings, "EVENT_BUS_PRODUCER", None),
            redis_url=getattr(settings, "EVENT_BUS_REDIS_CONNECTION_URL", None),
            stream_max_len=getattr(settings, "EVENT_BUS_REDIS_STREAM_MAX_LEN", 10_000),
            producer_config=getattr(settings, "EVENT_BUS_PRODUCER_CONFIG", None) or {},
            topic_prefix=getattr(settings, "EVENT_BUS_TOPIC_PREFIX", None),
            service_name=getattr(settings, "EVENTS_SERVICE_NAME", None)
            or getattr(settings, "SERVICE_VARIANT", None),
        )


@dataclass(frozen=True)
class _Plan:
    """What every message published under one :class:`BusSettings` shares.

    Making it asks openedx-events and edx-event-bus-redis (the enabled topics, the
    streams' names, the messages' origin, whose host name is a system call); a
    publisher keeps it while the settings stay equal, so that a batch reads the
    settings once and asks neither library anything.
    """

    origin: dict[str, Any]
    #: The RESP head of an XADD to each enabled topic's stream (Redis Streams only).
    heads: tuple[bytes, ...] = ()
    #: The header fields every message carries, as bytes (Redis Streams only).
    template: tuple[bytes, bytes, bytes, bytes, bytes] = (b"", b"", b"", b"", b"")


class _Plans:
    """The :class:`_Plan` of the last settings a publisher saw."""

    def __init__(self, make: Callable[[BusSettings], _Plan]) -> None:
        self._make = make
        self._last: tuple[BusSettings, _Plan] | None = None

    def get(self, bus: BusSettings) -> _Plan:
        """The plan for ``bus``, made again when it differs from the last one's.

        Raises what making it raises (PublishError when no topic is enabled), and then
        keeps nothing, so the next batch tries again.
        """
        last = self._last
        # A setting whose == raises cannot be compared: the plan is made again.
        with contextlib.suppress(Exception):
            if last is not None and last[0] == bus:
                return last[1]
        plan = self._make(bus)
        # The producer config is copied, so that a change made to the setting's dict in
        # place is seen; one that cannot be copied is never equal to a later read.
        try:
            config = copy.deepcopy(bus.producer_config)
        except Exception:
            config = None
        self._last = (dataclasses.replace(bus, producer_config=config), plan)
        return plan


class RedisStreamsPublisher:
    """Write messages to Redis Streams exactly as edx-event-bus-redis's producer does.

    The settings are those of the batch (see :class:`BusSettings`); what they make of
    the streams and the messages' header fields is kept while they stay the same (see
    :class:`_Plan`). ``timeout`` bounds the connection and each reply, unless the URL
    sets ``socket_timeout`` or ``socket_connect_timeout`` itself; redis-py's own
    retries are off, the delivery retries with backoff instead. The fields of a message
    are checked against the library's for a probe message when the publisher is built
    (see :meth:`_direct_is_library`); if they ever differ, edx-event-bus-redis's own
    code builds every message.
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
        self._serialize = serialize_event_data_to_bytes
        self.timeout = timeout
        self._client: Any = None
        self._client_url: str | None = None
        # Whether messages may be built from the wire form directly, without
        # edx-event-bus-redis: only if that gives the library's fields for a probe.
        self._direct = avro_writes_library_bytes() and self._direct_is_library()
        self._plans = _Plans(self._plan)

    def _plan(self, bus: BusSettings) -> _Plan:
        max_len = int(bus.stream_max_len)
        topics = enabled_topics(bus.producer_config)
        origin = message_origin(self._events)
        return _Plan(
            origin=origin,
            heads=tuple(_resp_head(self._full_topic(topic), max_len) for topic in topics),
            template=_header_template(origin),
        )

    def _direct_is_library(self) -> bool:
        events = self._events
        envelope = Envelope(
            id="0f1e2d3c-4b5a-4697-8877-665544332211",
            time=datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=_UTC),
            name="probe",
            timestamp=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=_UTC),
            data="{}",
            context="{}",
        )
        try:
            origin = message_origin(events)
            library = self._library_fields(envelope, origin)
            avro = avro_tracking_log("probe", envelope.timestamp.isoformat(), "{}", "{}")
            direct = self._direct_fields(
                _header_template(origin),
                envelope.id.encode(),
                envelope.time.isoformat().encode(),
                avro,
            )
        except Exception:
            return False
        return list(direct.items()) == list(library.items())

    def _library_fields(self, envelope: Envelope, origin: dict[str, Any]) -> dict[bytes, bytes]:
        """A message's fields as edx-event-bus-redis builds them."""
        events = self._events
        log = tracking_log(events, envelope)
        event_bytes = bytes(self._serialize({"tracking_log": log}, events.TRACKING_EVENT_EMITTED))
        metadata = message_metadata(events, envelope, origin)
        message = self._message(topic="", event_data=event_bytes, event_metadata=metadata)
        fields: dict[bytes, bytes] = message.to_binary_dict()
        return fields

    @staticmethod
    def _direct_fields(
        template: tuple[bytes, bytes, bytes, bytes, bytes],
        message_id: bytes,
        sent: bytes,
        avro: bytes,
    ) -> dict[bytes, bytes]:
        """The same fields, built from the wire form's slices and the batch's constants
        (``edx_event_bus_redis.internal.utils.MessageHeader``'s order)."""
        event_type, source, minorversion, sourcehost, sourcelib = template
        return {
            b"type": event_type,
            b"id": message_id,
            b"source": source,
            b"time": sent,
            b"minorversion": minorversion,
            b"sourcehost": sourcehost,
            b"sourcelib": sourcelib,
            b"event_data": avro,
        }

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

    def publish(self, items: Sequence[bytes], bus: BusSettings | None = None) -> dict[int, str]:
        """XADD each message to every enabled topic, in one round trip.

        ``bus`` holds the settings to publish under (read now when None). Returns the
        positions of envelopes that can never be published, with the reason. Raises
        PublishError for anything a retry may fix: no URL, no topic, Redis unreachable,
        hung or refusing.
        """
        bus = bus or BusSettings.read()
        url = bus.redis_url
        if not url:
            msg = (
                "EVENT_BUS_REDIS_CONNECTION_URL is not set, so the Redis event bus cannot "
                "be reached; set it to redis://host:port/db. Events are kept until it is."
            )
            raise PublishError(msg)
        plan = self._plans.get(bus)
        origin = plan.origin
        template = plan.template
        direct = self._direct
        rejected: dict[int, str] = {}
        messages: list[dict[bytes, bytes]] = []
        for position, item in enumerate(items):
            try:
                parts = wire_parts(item) if direct else None
                if parts is not None:
                    messages.append(self._direct_fields(template, *parts))
                else:
                    messages.append(self._library_fields(decode_envelope(item), origin))
            except Exception as exc:
                rejected[position] = (
                    f"the event cannot be serialised for the event bus: {type(exc).__name__}: "
                    f"{storable(str(exc))}"
                )
        if not messages:
            return rejected
        chunks: list[bytes] = []
        for head in plan.heads:
            chunks.extend(_resp_xadd(head, fields) for fields in messages)
        try:
            self._send_commands(url, chunks)
        except Exception as exc:
            # A broken connection leaves the pool's socket unusable: start afresh.
            self._client = None
            msg = f"Redis did not take the batch: {type(exc).__name__}: {exc}"
            raise PublishError(msg) from exc
        return rejected

    def _send_commands(self, url: str, commands: list[bytes]) -> None:
        """Write ``commands`` (RESP) in one go and read every reply: a pipeline.

        redis-py's pipeline would pack each argument again through its encoder, which
        costs more than building the messages; the commands are packed here instead,
        and written on a connection of the client's pool. Raises the first error
        reply (after reading them all, so that the connection stays usable), and
        whatever the connection raises (then it is dropped).
        """
        import redis

        pool = self._redis(url).connection_pool
        try:
            connection = pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name
            connection = pool.get_connection("XADD")
        error: Exception | None = None
        try:
            # One buffer: given a list, redis-py makes a system call per item.
            connection.send_packed_command([b"".join(commands)])
            for _ in commands:
                try:
                    connection.read_response()
                except redis.ResponseError as exc:
                    error = error or exc
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        if error is not None:
            raise error


def _resp_head(stream: str, max_len: int) -> bytes:
    """``XADD <stream> MAXLEN ~ <max_len> *`` in RESP, without the array header: what
    redis-py's ``xadd(stream, fields, maxlen=max_len, approximate=True)`` sends."""
    return b"".join(
        b"$%d\r\n%s\r\n" % (len(arg), arg)
        for arg in (b"XADD", stream.encode(), b"MAXLEN", b"~", str(max_len).encode(), b"*")
    )


def _resp_xadd(head: bytes, fields: dict[bytes, bytes]) -> bytes:
    """One XADD command in RESP: ``head`` (see :func:`_resp_head`) and the fields."""
    parts = [b"*%d\r\n" % (6 + 2 * len(fields)), head]
    for key, value in fields.items():
        parts.append(b"$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(value)))
        parts.append(value)
        parts.append(b"\r\n")
    return b"".join(parts)


def _header_template(origin: dict[str, Any]) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """The message fields that are the same for every message of a batch, as bytes."""
    events = openedx_events()
    return (
        EVENT_TYPE.encode(),
        str(origin["source"]).encode(),
        str(events.TRACKING_EVENT_EMITTED.minor_version).encode(),
        str(origin["sourcehost"]).encode(),
        ".".join(map(str, origin["sourcelib"])).encode(),
    )


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
        self._plans = _Plans(self._plan)

    def _plan(self, bus: BusSettings) -> _Plan:
        enabled_topics(bus.producer_config)
        return _Plan(origin=message_origin(self._events))

    def publish(self, items: Sequence[bytes], bus: BusSettings | None = None) -> dict[int, str]:
        """Send one signal per message, in order; raise PublishError at the first failure.

        ``bus`` holds the settings to publish under (read now when None). Messages sent
        before the failure are remembered and skipped when the batch comes back, so a
        retry does not publish them twice (within this process).
        """
        from openedx_events.exceptions import SenderValidationError

        origin = self._plans.get(bus or BusSettings.read()).origin
        producer_logger = self._producer_logger()
        observable = producer_logger.isEnabledFor(logging.ERROR)
        signal = self._events.TRACKING_EVENT_EMITTED
        rejected: dict[int, str] = {}
        for position, item in enumerate(items):
            try:
                envelope = decode_envelope(item)
            except ValueError as exc:
                rejected[position] = str(exc)
                continue
            if envelope.id in self._published:
                continue
            try:
                log_data = tracking_log(self._events, envelope)
                metadata = message_metadata(self._events, envelope, origin)
                if not item.startswith(WIRE_MAGIC):
                    # What every producer does first; done here, a message that can
                    # never be serialised is refused alone instead of failing its batch
                    # forever. One in the wire form was read back from the library's
                    # own bytes (four whole strings and a time): it is encoded once, by
                    # the producer.
                    self._serialize({"tracking_log": log_data}, signal)
            except Exception as exc:
                rejected[position] = (
                    f"the event cannot be serialised for the event bus: {type(exc).__name__}: {exc}"
                )
                continue
            with self._capture.collect() as errors:
                try:
                    responses = self._send(signal, envelope, metadata, log_data)
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

    def _send(self, signal: Any, envelope: Envelope, metadata: Any, log_data: Any) -> Any:
        """Send the signal with the envelope's id and time as its metadata.

        openedx-events' public ``send_event`` makes a new id at every call, so a message
        sent again after an ambiguous failure (Redis took it, then died before
        answering) would reach the bus twice under two ids. Its internal
        ``_send_event_with_metadata`` (openedx-events 9 and 10) keeps ours; without it,
        the public call is used.
        """
        send_with_metadata = getattr(signal, "_send_event_with_metadata", None)
        if send_with_metadata is None:
            return signal.send_event(send_robust=True, time=envelope.time, tracking_log=log_data)
        return send_with_metadata(
            metadata=metadata,
            send_robust=True,
            tracking_log=log_data,
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


# -- the sink ---------------------------------------------------------------------------


class BusSink:
    """The delivery's sink: publish a batch of envelopes.

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

    def choose(self, bus: BusSettings | None = None) -> RedisStreamsPublisher | SignalPublisher:
        """The publisher for the next batch (built on first use), by the settings
        ``bus`` (read now when None).

        Called from the delivery thread only, so building needs no lock.
        """
        choice = self.publisher
        if choice == "auto":
            producer = (bus or BusSettings.read()).producer
            choice = "redis" if producer in REDIS_PRODUCERS else "signal"
        if choice == "redis":
            if self._redis is None:
                self._redis = RedisStreamsPublisher(self.timeout)
            return self._redis
        if self._signal is None:
            self._signal = SignalPublisher()
        return self._signal

    def write_batch(self, items: Sequence[bytes]) -> dict[int, str]:
        """Publish ``items``; return the positions refused for good; raise to retry."""
        if not items:
            return {}
        bus = BusSettings.read()
        try:
            publisher = self.choose(bus)
        except ImportError as exc:
            raise PublishError(str(exc)) from exc
        self._last_publisher = publisher.name
        self._counters.set("in_flight", len(items))
        try:
            rejected = publisher.publish(items, bus)
        finally:
            self._counters.set("in_flight", 0)
        self._counters.incr("published", amount=len(items) - len(rejected))
        return rejected

    def stats(self) -> dict[str, Any]:
        """``published`` messages, ``in_flight`` (in the publish call now), ``publisher``
        (the last one used) and the signal publisher's own counters."""
        result: dict[str, Any] = self._counters.snapshot()
        result["publisher"] = self._last_publisher
        if self._signal is not None:
            result.update(self._signal.stats())
        return result
