"""Tracking logs on their way to the Open edX event bus: envelopes, timestamps, topics.

:class:`~eventtracking.backends.event_bus.EventBusRoutingBackend` turns each event into
an *envelope* (bytes: a random message id, the send time, and the four fields of
``TrackingLogData`` with ``data`` and ``context`` as JSON text) and hands it to a
:class:`~eventtracking.delivery.BatchDelivery` whose sink is
:class:`~eventtracking.backends.event_bus._publish.BusSink`. The sink publishes batches with one
of two publishers, and raises when the bus did not take them, so that the delivery
spools them and retries: nothing is lost while the bus is down. This module holds what
the backend, the sink and the receiver share; :mod:`eventtracking.backends.event_bus._publish`
holds the sink and its two publishers, Redis Streams and the signal (``docs/eventbus.rst``
says what each can see of a failure, and why the message id is a random UUID that
travels in the envelope).

An envelope has two forms. The *wire* form is written once, by the caller, as what the
bus carries: the id and send time as the header text the message will hold, then the
Avro bytes of the ``TrackingLogData`` (four Avro strings: name, timestamp in
``isoformat()``, data, context). The Redis Streams publisher slices it into the
message's fields without decoding anything. The *JSON* form (an object with ``id``,
``time``, ``name``, ``timestamp``, ``data``, ``context``) is written for what the wire
form cannot hold (a name that is not text, a timestamp that is no date-time: dead
letters, which a person reads), when openedx-events writes the record otherwise than
this module does, and was the only form of earlier releases: both are read.

Why one module: encoding and decoding an envelope must agree byte for byte (timestamps,
JSON fields, the Avro bounds), and the publisher and the receiver both read them here.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import urandom
from types import SimpleNamespace
from typing import Any

from eventtracking import _json
from eventtracking._contextstack import plain_context
from eventtracking._util.timestamps import parse_timestamp

__all__ = [
    "EVENT_TYPE",
    "INSTALL_HINT",
    "PUBLISHERS",
    "REDIS_INSTALL_HINT",
    "REDIS_PRODUCERS",
    "WIRE_MAGIC",
    "Envelope",
    "PublishError",
    "avro_tracking_log",
    "avro_writes_library_bytes",
    "decode_envelope",
    "enabled_topics",
    "encode_envelope",
    "message_metadata",
    "message_origin",
    "openedx_events",
    "random_message_id",
    "storable",
    "tracking_log",
    "wire_parts",
    "wire_ready",
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
    fatal, where 4.x's encoder raised. The payload is in the wire form when it can
    be (see the module's docstring), otherwise in the JSON form.
    """
    message_id = random_message_id()
    sent = datetime.datetime.now(_UTC).isoformat()
    name = event.get("name")
    raw = event.get("timestamp")
    try:
        if type(raw) is datetime.datetime and raw.tzinfo is _UTC:
            stamp = raw.isoformat()
        else:
            stamp = parse_timestamp(raw).isoformat()
    except ValueError as exc:
        fields = _json_fields(message_id, sent, event)
        fields["timestamp"] = raw if isinstance(raw, str) else _json.safe_repr(raw)
        return _json.dumps(fields).encode("utf-8"), str(exc)
    data = _json.dumps(event.get("data"))
    context = _context_json(event.get("context"))
    if type(name) is str and wire_ready():
        try:
            avro = avro_tracking_log(name, stamp, data, context)
        except UnicodeEncodeError:
            pass  # a lone surrogate: the JSON form keeps it, the bus will refuse it
        else:
            return f"\x00eb2\n{message_id}\n{sent}\n".encode() + avro, None
    fields = _json_fields(message_id, sent, event, data=data, context=context)
    fields["timestamp"] = stamp
    return _json.dumps(fields).encode("utf-8"), None


def random_message_id() -> str:
    """A random (version 4) UUID as text, for a message id.

    Unlike ``uuid1``, it holds neither the MAC address nor the clock. Its bits come from
    :func:`os.urandom`: the bus receiver keeps the first message under an id, so ids
    made by a seeded generator, whose next outputs follow from a few hundred observed
    ones, would let a writer on the bus publish a forgery under an id still to come and
    have the real message dropped as a copy. (``uuid.uuid4()`` reads the same bytes,
    at three times the cost of this.)
    """
    digits = urandom(16).hex()
    # The version (4) and variant (10xx) bits, set in place of the random ones.
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


def _json_fields(
    message_id: str,
    sent: str,
    event: Mapping[str, Any],
    *,
    data: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "time": sent,
        "name": event.get("name"),
        "timestamp": None,
        "data": _json.dumps(event.get("data")) if data is None else data,
        "context": _json.dumps(event.get("context")) if context is None else context,
    }


# (context, its JSON) of the last shared read-only context: the events of one request
# carry the same one, so its JSON is written once. Replaced as a whole: threads never
# see a torn pair, and holding the object keeps its id from being reused.
_last_context: tuple[Any, str] | None = None


def _context_json(context: Any) -> str:
    global _last_context
    cached = _last_context
    if cached is not None and cached[0] is context:
        return cached[1]
    text = _json.dumps(context)
    if plain_context(context):
        _last_context = (context, text)
    return text


#: The first bytes of an envelope in the wire form. One in the JSON form starts with
#: ``{``; the NUL byte keeps the two apart whatever a future JSON writer does.
WIRE_MAGIC = b"\x00eb2\n"
# The header of the wire form: the message id and the send time, as encode_envelope
# writes them (the time in UTC, with or without microseconds).
_WIRE_HEADER = re.compile(
    rb"\x00eb2\n([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\n"
    rb"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?\+00:00)\n"
)


def wire_parts(payload: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The message id, send time and Avro bytes of a wire-form envelope, as bytes.

    None when ``payload`` is in the JSON form. Raises ValueError when it claims the
    wire form but is not a well-formed one (a header out of shape, Avro strings whose
    lengths do not add up), so that a damaged payload is never published.
    """
    if not payload.startswith(WIRE_MAGIC):
        return None
    match = _WIRE_HEADER.match(payload)
    if match is None:
        msg = "a wire-form envelope whose header is not a message id and a UTC time"
        raise ValueError(msg)
    avro = payload[match.end() :]
    _avro_string_bounds(avro)
    return match.group(1), match.group(2), avro


def _avro_string_bounds(avro: bytes) -> list[tuple[int, int]]:
    """Where the four Avro strings of a tracking log start and end; ValueError when
    ``avro`` is not exactly four of them."""
    bounds = []
    position = 0
    size = len(avro)
    for _ in range(4):
        shift = 0
        zigzag = 0
        while True:
            if position >= size or shift > 63:
                msg = "the Avro record of the tracking log is cut short"
                raise ValueError(msg)
            byte = avro[position]
            position += 1
            zigzag |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        length = (zigzag >> 1) ^ -(zigzag & 1)
        if length < 0 or position + length > size:
            msg = "the Avro record of the tracking log has a string of an impossible length"
            raise ValueError(msg)
        bounds.append((position, position + length))
        position += length
    if position != size:
        msg = "the Avro record of the tracking log has bytes after its four strings"
        raise ValueError(msg)
    return bounds


# The Avro length prefix of each string shorter than 64 bytes: one byte.
_SHORT_LENGTHS = [bytes((size << 1,)) for size in range(64)]


def _avro_length(size: int) -> bytes:
    if size < 64:
        return _SHORT_LENGTHS[size]
    zigzag = size << 1
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def avro_tracking_log(name: str, timestamp: str, data: str, context: str) -> bytes:
    """The Avro bytes of ``TRACKING_EVENT_EMITTED``'s data for one tracking log.

    Its schema is one record of four strings, written in order as a zigzag varint
    length and the UTF-8 bytes; ``timestamp`` is the ``isoformat()`` openedx-events
    writes. Raises UnicodeEncodeError for a string UTF-8 cannot hold (a lone
    surrogate). Used only when :func:`avro_writes_library_bytes` vouched for it.
    """
    name_bytes = name.encode("utf-8")
    stamp_bytes = timestamp.encode("utf-8")
    data_bytes = data.encode("utf-8")
    context_bytes = context.encode("utf-8")
    return b"".join(
        (
            _avro_length(len(name_bytes)),
            name_bytes,
            _avro_length(len(stamp_bytes)),
            stamp_bytes,
            _avro_length(len(data_bytes)),
            data_bytes,
            _avro_length(len(context_bytes)),
            context_bytes,
        )
    )


def avro_writes_library_bytes(serialize: Callable[[Any, Any], Any] | None = None) -> bool:
    """Whether :func:`avro_tracking_log` gives the bytes of openedx-events'
    ``serialize_event_data_to_bytes`` (or ``serialize``) for probe tracking logs:
    short and long strings, non-ASCII text, times with and without microseconds."""
    try:
        events = openedx_events()
        if serialize is None:
            from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes

            serialize = serialize_event_data_to_bytes
        signal = events.TRACKING_EVENT_EMITTED
        for name, moment, data, context in (
            ("probe.é", datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=_UTC), "{}", "{}"),
            (
                "p",
                datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=_UTC),
                '{"a": [1, "é"]}',
                "x" * 300,
            ),
        ):
            log = events.TrackingLogData(name=name, timestamp=moment, data=data, context=context)
            ours = avro_tracking_log(name, moment.isoformat(), data, context)
            if bytes(serialize({"tracking_log": log}, signal)) != ours:
                return False
    except Exception:
        return False
    return True


# Whether the wire form may be written: avro_writes_library_bytes(), asked once.
_wire_verdict: list[bool] = []


def wire_ready() -> bool:
    """Whether envelopes may be written in the wire form: :func:`avro_writes_library_bytes`,
    asked once per process (backends ask when built, not on a request's first event)."""
    if not _wire_verdict:
        _wire_verdict.append(avro_writes_library_bytes())
    return _wire_verdict[0]


def decode_envelope(payload: bytes) -> Envelope:
    """Read a payload written by :func:`encode_envelope`; ValueError when it is not one.

    Any payload may come back from the spool (``spool redrive`` puts back whatever a
    dead letter holds), so every failure to read one, whatever its exception, is this
    payload's own and becomes the ValueError: it must be set aside alone, never be
    taken for a failure of the bus that holds up the items behind it.
    """
    try:
        parts = wire_parts(payload)
        if parts is not None:
            message_id, sent, avro = parts
            name, stamp, data, context = (
                avro[start:end].decode("utf-8") for start, end in _avro_string_bounds(avro)
            )
            return Envelope(
                id=message_id.decode(),
                time=parse_timestamp(sent.decode()),
                name=name,
                timestamp=parse_timestamp(stamp),
                data=data,
                context=context,
            )
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
        msg = f"not an event-bus envelope: {type(exc).__name__}: {storable(str(exc))}"
        raise ValueError(msg) from exc


def storable(text: str) -> str:
    """``text`` with lone surrogates (which a forged id, a payload or a hostile object's
    error may hold) written as escapes, so that a dead letter's reason can be stored."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _require_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        msg = f"{name} must be JSON text, got {type(value).__name__}"
        raise TypeError(msg)
    return value


def enabled_topics(config: Any = None) -> list[str]:
    """The topics ``EVENT_BUS_PRODUCER_CONFIG`` (``config``, or the setting when None)
    enables for tracking logs.

    The same rule as openedx-events' producing handler: ``enabled`` must be True.
    Raises PublishError when the setting is malformed or enables none, since nothing
    would reach the bus.
    """
    if config is None:
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
    ``sourcehost``, ``sourcelib``), worked out once for as long as the settings stay
    the same, instead of for every message.
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
