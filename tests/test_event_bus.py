"""EventBusRoutingBackend against edx-event-bus-redis on a real Redis.

Events go out through the backend, come back through edx-event-bus-redis's own
consumer and the receiver in eventtracking.handlers, and must reach the nested backend
as they were emitted. The faults (Redis down, killed, hung) are in
test_event_bus_faults.py.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import eventbus_support
import pytest
from django.test import override_settings
from eventbus_support import EVENT_TYPE, TOPIC, bus_settings, consume, decode_message

from eventtracking import _json
from eventtracking.backends.event_bus import DEFAULT_STREAM, EventBusRoutingBackend, _envelope
from eventtracking.backends.event_bus._publish import BusSettings
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.spool import Spool
from eventtracking.tracker import Tracker, register_tracker

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bus_env")]

# pytest finds fixtures by module attribute.
bus_env = eventbus_support.bus_env

UTC = datetime.timezone.utc


def viewed(n: int, name: str = "course.viewed") -> dict[str, Any]:
    """The n-th event of a test that sends several, stamped now."""
    return {"name": name, "timestamp": datetime.datetime.now(UTC), "context": {}, "data": {"n": n}}


MakeBus = Callable[..., EventBusRoutingBackend]


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix of the test's own."""
    return "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40]


@pytest.fixture
def make_bus(tmp_path: Path) -> Iterator[MakeBus]:
    """Builds backends with a spool in tmp_path; each is closed when the test ends."""
    made: list[EventBusRoutingBackend] = []

    def build(**options: Any) -> EventBusRoutingBackend:
        options.setdefault("spool_dir", tmp_path / "spool")
        options.setdefault("flush_interval", 0.05)
        backend = EventBusRoutingBackend(**options)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close(0)


def as_json(value: Any) -> Any:
    """What a value looks like after the JSON rules of the library."""
    return json.loads(_json.dumps(value))


@pytest.mark.parametrize("publisher", ["auto", "signal"])
def test_events_cross_the_bus_to_the_nested_backend(
    publisher: str, redis_url: str, prefix: str, make_bus: MakeBus
) -> None:
    """Listed events are published, consumed by edx-event-bus-redis's consumer, and reach
    the nested backend with the same name, timestamp, context and data (values JSON cannot
    carry written by the library's rules); an unlisted event is skipped and counted."""
    remote = InMemoryBackend()
    local = InMemoryBackend()
    bus = make_bus(backends={"remote": remote}, publisher=publisher)
    tracker = Tracker({"bus": bus, "local": local})
    register_tracker(tracker)
    with bus_settings(redis_url, prefix), eventbus_support.producing_handler():
        with tracker.context("request", {"user_id": 7, "course_id": "course-v1:X+Y+Z"}):
            for n in range(20):
                tracker.emit(
                    "course.viewed",
                    {"n": n, "price": decimal.Decimal("1.10"), "tags": {"b", "a"}},
                )
            tracker.emit("not.listed", {"n": -1})
        assert bus.flush(30)
        handled = consume(20, group=f"{prefix}-g")

    assert handled == 20
    sent = [event for event in local.snapshot() if event["name"] == "course.viewed"]
    received = remote.snapshot()
    assert len(received) == 20
    for original, arrived in zip(sent, received, strict=True):
        assert arrived["name"] == original["name"]
        assert arrived["timestamp"] == original["timestamp"]
        assert arrived["timestamp"].tzinfo is not None
        assert arrived["context"] == {"user_id": 7, "course_id": "course-v1:X+Y+Z"}
        assert arrived["data"] == as_json(original["data"])
    assert received[3]["data"] == {"n": 3, "price": "1.10", "tags": ["a", "b"]}
    stats = bus.stats()
    assert stats["producer"]["published"] == 20
    assert stats["producer"]["skipped"] == {"not_listed": 1}
    assert stats["producer"]["dropped"] == {}
    assert stats["producer"]["publisher"] == ("redis-streams" if publisher == "auto" else "signal")
    assert stats["consumer"] == {"received": 20, "delivered": 20, "filtered": 0, "dead_lettered": 0}


def test_messages_are_byte_for_byte_what_the_redis_producer_writes(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """A message written by the backend's own Redis Streams writer has exactly the fields
    edx-event-bus-redis's producer writes for the same tracking log and metadata."""
    from edx_event_bus_redis.internal.producer import RedisEventProducer
    from edx_event_bus_redis.internal.utils import get_metadata_from_headers
    from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
    from walrus import Database

    bus = make_bus(publisher="redis")
    stream = f"{prefix}-{TOPIC}"
    with bus_settings(redis_url, prefix):
        bus.send(
            {
                "name": "course.viewed",
                "timestamp": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
                "context": {"user_id": 1},
                "data": {"x": [1, 2]},
            }
        )
        assert bus.flush(30)
        client = redis_server.client()
        [(_, ours)] = client.xrange(stream)
        decoded = decode_message(ours)
        producer = RedisEventProducer(Database.from_url(redis_url))
        producer.send(
            signal=TRACKING_EVENT_EMITTED,
            topic=TOPIC,
            event_key_field="tracking_log.name",
            event_data={"tracking_log": decoded["tracking_log"]},
            event_metadata=get_metadata_from_headers(ours),
        )
        [_, (_, theirs)] = client.xrange(stream)
    assert ours == theirs
    assert ours[b"type"] == EVENT_TYPE.encode()
    assert decoded["tracking_log"].timestamp == datetime.datetime(
        2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC
    )


def test_every_enabled_topic_gets_the_message(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """As openedx-events does, a message goes to each topic enabled in
    EVENT_BUS_PRODUCER_CONFIG, with the same message id; a disabled topic gets nothing."""
    bus = make_bus()
    config = eventbus_support.producer_config("analytics", "audit")
    config[EVENT_TYPE]["off"] = {"event_key_field": "tracking_log.name", "enabled": False}
    with bus_settings(redis_url, prefix, EVENT_BUS_PRODUCER_CONFIG=config):
        bus.send(
            {
                "name": "course.viewed",
                "timestamp": datetime.datetime.now(UTC),
                "context": {},
                "data": {},
            }
        )
        assert bus.flush(30)
    client = redis_server.client()
    [(_, first)] = client.xrange(f"{prefix}-analytics")
    [(_, second)] = client.xrange(f"{prefix}-audit")
    assert first == second
    assert client.xlen(f"{prefix}-off") == 0


@pytest.mark.parametrize(
    ("setting", "published"),
    [
        (["course.viewed"], 1),
        ({"course.viewed"}, 1),
        (("course.viewed",), 1),
        ("course.viewed", 1),  # a string is one name, not a substring test
        ("course.viewed.extra", 0),
        ([], 0),
    ],
)
def test_tracking_logs_setting_selects_the_names(
    setting: Any, published: int, redis_url: str, prefix: str, make_bus: MakeBus
) -> None:
    """EVENT_BUS_TRACKING_LOGS may be a list, tuple or set; a string counts as one name."""
    bus = make_bus()
    with bus_settings(redis_url, prefix), override_settings(EVENT_BUS_TRACKING_LOGS=setting):
        bus.send(
            {
                "name": "course.viewed",
                "timestamp": datetime.datetime.now(UTC),
                "context": {},
                "data": {},
            }
        )
        assert bus.flush(30)
    stats = bus.stats()["producer"]
    assert stats["published"] == published
    assert stats["skipped"] == ({} if published else {"not_listed": 1})


def test_switched_off_publishes_nothing(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """With SEND_TRACKING_EVENT_EMITTED_SIGNAL off (the default), nothing is published, no
    thread is started, and each skipped event is counted."""
    import threading

    bus = make_bus()
    with bus_settings(redis_url, prefix, switched_on=False):
        for _ in range(3):
            bus.send(
                {
                    "name": "course.viewed",
                    "timestamp": datetime.datetime.now(UTC),
                    "context": {},
                    "data": {},
                }
            )
        threads = [thread.name for thread in threading.enumerate()]
        assert "eventtracking-delivery-eventbus:default" not in threads
        assert bus.flush(5)
    assert bus.stats()["producer"]["skipped"] == {"switched_off": 3}
    assert bus.stats()["producer"]["queued"] == 0
    assert redis_server.client().exists(f"{prefix}-{TOPIC}") == 0


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2024-01-02T03:04:05.123456+00:00", datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, UTC)),
        # 4.x's strptime format needed a fraction and lost these:
        ("2024-01-02T03:04:05Z", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05+02:00", datetime.datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        ("2024-01-02 03:04:05.5+0000", datetime.datetime(2024, 1, 2, 3, 4, 5, 500000, UTC)),
        ("2024-01-02T03:04:05", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (
            datetime.datetime(2024, 1, 2, 3, 4, 5),
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        ),
    ],
)
def test_timestamps_4x_lost_are_published(
    given: Any,
    expected: datetime.datetime,
    redis_url: str,
    prefix: str,
    make_bus: MakeBus,
    redis_server: Any,
) -> None:
    """String timestamps in any ISO 8601 form, and naive datetimes (taken as UTC), are
    published as the UTC datetime they stand for."""
    bus = make_bus()
    with bus_settings(redis_url, prefix):
        bus.send({"name": "course.viewed", "timestamp": given, "context": {}, "data": {}})
        assert bus.flush(30)
    [(_, fields)] = redis_server.client().xrange(f"{prefix}-{TOPIC}")
    assert decode_message(fields)["tracking_log"].timestamp == expected


@pytest.mark.parametrize("given", ["yesterday", "", None, 1700000000])
def test_unusable_timestamp_is_a_dead_letter(
    given: Any,
    redis_url: str,
    prefix: str,
    make_bus: MakeBus,
    tmp_path: Path,
    redis_server: Any,
) -> None:
    """An event whose timestamp is no date-time is not published (4.x lost it without a
    count): it is kept as a dead letter in the spool, with a reason that names the value,
    and counted."""
    bus = make_bus()
    with bus_settings(redis_url, prefix):
        bus.send(
            {"name": "course.viewed", "timestamp": given, "context": {"u": 1}, "data": {"k": "v"}}
        )
        assert bus.flush(30)
    stats = bus.stats()["producer"]
    assert stats["dead_lettered"] == 1
    assert stats.get("published", 0) == 0
    [letter] = Spool(tmp_path / "spool").dead_letters(DEFAULT_STREAM)
    assert repr(given) in letter.reason
    assert letter.payload is not None
    kept = json.loads(letter.payload)
    assert (kept["name"], json.loads(kept["data"])) == ("course.viewed", {"k": "v"})
    assert redis_server.client().exists(f"{prefix}-{TOPIC}") == 0


def test_without_a_topic_events_wait_until_one_is_enabled(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """When EVENT_BUS_PRODUCER_CONFIG enables no topic, events are kept (not lost as with
    4.x), the error says what to add, and they are published in order once it is there."""
    bus = make_bus()
    with bus_settings(redis_url, prefix, topics=()):
        for n in range(5):
            bus.send(viewed(n))
        assert not bus.flush(0.5)
        stats = bus.stats()["producer"]
        assert stats["retries"] >= 1
        assert "EVENT_BUS_PRODUCER_CONFIG enables no topic" in stats["last_error"]
        with override_settings(EVENT_BUS_PRODUCER_CONFIG=eventbus_support.producer_config(TOPIC)):
            assert bus.flush(30)
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == [0, 1, 2, 3, 4]
    assert bus.stats()["producer"]["dropped"] == {}


def test_a_new_backend_publishes_what_an_earlier_one_left(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """Events spooled by a backend that could not publish are published by the next
    backend built on the same spool, at its first flush, before anything of its own."""
    first = make_bus()
    with bus_settings("redis://127.0.0.1:1/0", prefix):
        for n in range(3):
            first.send(viewed(n))
        first.close(0)
    assert first.stats()["producer"]["spooled"] == 3
    with bus_settings(redis_url, prefix):
        second = make_bus()
        assert second.flush(30)
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == [0, 1, 2]
    assert second.stats()["producer"]["replayed"] == 3


@pytest.mark.parametrize(
    "options",
    [
        {"publisher": "kafka"},
        {"batch_size": 0},
        {"flush_interval": -1},
        {"publish_timeout": 0},
        {"max_queue_size": "many"},
        {"spool_max_bytes": 0},
    ],
)
def test_bad_options_are_refused_when_built(options: dict[str, Any], tmp_path: Path) -> None:
    """Options out of range raise ImproperlyConfigured naming the option, when the backend
    is built rather than at the first event."""
    with pytest.raises(ImproperlyConfigured, match=next(iter(options))):
        EventBusRoutingBackend(spool_dir=tmp_path, **options)


def test_4x_surface(tmp_path: Path) -> None:
    """The 4.x arguments and attributes: processors, backends and backend_name, in 4.x's
    positional order, and the names 4.x imported at module level."""
    from eventtracking.backends import event_bus
    from eventtracking.processors.whitelist import NameWhitelistProcessor

    nested = InMemoryBackend()
    processor = NameWhitelistProcessor(whitelist=["a"])
    bus = EventBusRoutingBackend(
        [processor], {"xapi": nested}, "event_transformer", spool_dir=tmp_path
    )
    assert bus.backend_name == "event_transformer"
    assert bus.backends["xapi"] is nested
    assert bus.processors[0].whitelist == {"a"}
    assert bus.mutates_events is False
    assert event_bus.TRACKING_EVENT_EMITTED.event_type == EVENT_TYPE
    assert event_bus.TrackingLogData.__name__ == "TrackingLogData"


BLOCKED_SCRIPT = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            blocked = {"openedx_events", "edx_event_bus_redis", "edx_toggles", "django"}
            if name.partition(".")[0] in blocked:
                raise ImportError(f"{name} is blocked by the test")
            return None

    sys.meta_path.insert(0, Block())
    from eventtracking.backends import event_bus
    from eventtracking import handlers
    assert handlers.connect() is False
    try:
        event_bus.EventBusRoutingBackend(spool_dir=sys.argv[1])
    except ImportError as error:
        print(error)
    """
)


def test_without_openedx_events_building_names_the_extra(tmp_path: Path) -> None:
    """Without openedx-events (nor Django, nor edx-toggles) the module and the receiver
    module still import, the receiver does not connect, and building a backend raises
    ImportError naming the extra to install."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'event-tracking[eventbus]'" in result.stdout


def test_each_event_gets_its_own_message_id(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """Each event gets its own message id (a UUID) when it is sent."""
    bus = make_bus()
    with bus_settings(redis_url, prefix):
        for _ in range(10):
            bus.send(
                {
                    "name": "course.viewed",
                    "timestamp": datetime.datetime.now(UTC),
                    "context": {},
                    "data": {},
                }
            )
        assert bus.flush(30)
    ids = [
        decode_message(fields)["id"]
        for _, fields in redis_server.client().xrange(f"{prefix}-{TOPIC}")
    ]
    assert len(set(ids)) == 10
    assert all(uuid.UUID(value) for value in ids)


def _ids_after_fork(queue: Any) -> None:
    from eventtracking.backends.event_bus import _envelope as _eventbus

    event = {"name": "n", "timestamp": datetime.datetime.now(UTC), "context": {}, "data": {}}
    queue.put(
        [_eventbus.decode_envelope(_eventbus.encode_envelope(event)[0]).id for _ in range(50)]
    )


def test_message_ids_are_random_and_carry_no_mac_address() -> None:
    """Message ids are random UUIDs (version 4), not ``uuid1``, which holds the host's
    MAC address and clock; a forked child draws ids of its own, not its parent's."""
    import multiprocessing

    from eventtracking.backends.event_bus import _envelope as _eventbus

    event = {"name": "n", "timestamp": datetime.datetime.now(UTC), "context": {}, "data": {}}
    ids = [
        uuid.UUID(_eventbus.decode_envelope(_eventbus.encode_envelope(event)[0]).id)
        for _ in range(200)
    ]
    assert {value.version for value in ids} == {4}
    assert {value.variant for value in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == 200
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_ids_after_fork, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    drawn = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(60)
    assert len(set(drawn[0]) | set(drawn[1])) == 100


def test_message_ids_do_not_come_from_a_generator_that_can_be_replayed() -> None:
    """Message ids come from the operating system, not from :mod:`random`: the receiver
    keeps the first message under an id, so ids a writer on the bus could compute ahead
    (Python's generator follows from a few hundred observed outputs) would let a forgery
    pre-empt the real message. Reseeding :mod:`random` alike twice gives new ids."""
    import random

    from eventtracking.backends.event_bus import _envelope as _eventbus

    random.seed(1234)
    first = [_eventbus.random_message_id() for _ in range(5)]
    random.seed(1234)
    second = [_eventbus.random_message_id() for _ in range(5)]
    assert not set(first) & set(second)


@pytest.mark.parametrize("publisher", ["redis", "signal"])
def test_an_event_the_bus_cannot_carry_is_refused_alone(
    publisher: str,
    redis_url: str,
    prefix: str,
    make_bus: MakeBus,
    tmp_path: Path,
    redis_server: Any,
) -> None:
    """An event that cannot be serialised for the bus (a name that is not a string)
    becomes a dead letter with the reason; the events around it are published, in order."""
    bus = make_bus(publisher=publisher)
    with (
        bus_settings(redis_url, prefix, names=("course.viewed", 404)),
        eventbus_support.producing_handler(),
    ):
        for n, name in enumerate(["course.viewed", 404, "course.viewed"]):
            bus.send(viewed(n, name))
        assert bus.flush(30)
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == [0, 2]
    [letter] = Spool(tmp_path / "spool").dead_letters(DEFAULT_STREAM)
    assert "cannot be serialised for the event bus" in letter.reason
    assert bus.stats()["producer"]["dead_lettered"] == 1


def test_the_signal_publisher_encodes_each_event_once(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """Events written in the wire form are published through the signal without a trial
    serialisation of their own: the producer's is the only one, and every event arrives."""
    bus = make_bus(publisher="signal")
    with bus_settings(redis_url, prefix), eventbus_support.producing_handler():
        publisher = bus._sink.choose()
        trials: list[Any] = []
        serialize = publisher._serialize

        def counted(*args: Any) -> Any:
            trials.append(args)
            return serialize(*args)

        publisher._serialize = counted
        for n in range(3):
            bus.send(viewed(n))
        assert bus.flush(30)
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == [0, 1, 2]
    assert trials == []


def envelopes(numbers: range) -> list[bytes]:
    """Envelopes of listed events whose data is ``{"n": n}``, as ``send`` queues them."""
    return [_envelope.encode_envelope(viewed(n))[0] for n in numbers]


def calls_during(function: Callable[..., Any], *args: Any) -> list[tuple[str, str]]:
    """The (file, function) of every Python call ``function(*args)`` makes in this
    thread, and ("<builtin>", name) of every builtin it calls."""
    calls: list[tuple[str, str]] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls.append((frame.f_code.co_filename, frame.f_code.co_name))
        elif event == "c_call":
            calls.append(("<builtin>", getattr(arg, "__name__", "")))

    sys.setprofile(profile)
    try:
        function(*args)
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("publisher", ["redis", "signal"])
def test_a_batch_under_the_same_settings_works_out_nothing_again(
    publisher: str, redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """After a first batch, the next one under the same settings reads the settings
    once and works out neither the streams' names (edx-event-bus-redis's
    ``get_full_topic``) nor the messages' origin (openedx-events' source setting and
    the host name) again, for the batch or for any of its messages; the Redis Streams
    publisher calls neither library at all, and every event arrives in order."""
    import edx_event_bus_redis
    import openedx_events

    sink = make_bus(publisher=publisher)._sink
    with bus_settings(redis_url, prefix), eventbus_support.producing_handler():
        assert sink.write_batch(envelopes(range(3))) == {}
        calls = calls_during(sink.write_batch, envelopes(range(3, 6)))
    names = [name for _, name in calls]
    # (edx-event-bus-redis's producer, behind the signal, asks for its stream's name.)
    assert publisher == "signal" or "get_full_topic" not in names
    assert "_get_source" not in names
    assert "gethostname" not in names
    publish_file = sys.modules[BusSettings.__module__].__file__
    assert calls.count((publish_file, "read")) == 1
    if publisher == "redis":
        libraries = [
            Path(module.__file__).parent for module in (openedx_events, edx_event_bus_redis)
        ]
        assert [c for c in calls if any(c[0].startswith(str(d)) for d in libraries)] == []
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == list(range(6))


def test_settings_changed_between_batches_take_effect_at_the_next(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """What a publisher keeps from one batch to the next is made again when the settings
    change: a new topic prefix or service name (override_settings), and a topic enabled
    in the producer config's own dict, each take effect at the next batch."""
    from openedx_events.data import EventsMetadata

    sink = make_bus(publisher="redis")._sink
    config = eventbus_support.producer_config(TOPIC)
    renamed = {"EVENT_BUS_TOPIC_PREFIX": f"{prefix}-2", "EVENTS_SERVICE_NAME": "walked"}
    with bus_settings(redis_url, prefix, EVENT_BUS_PRODUCER_CONFIG=config):
        default_source = EventsMetadata(event_type=EVENT_TYPE).source
        assert sink.write_batch(envelopes(range(1))) == {}
        with override_settings(**renamed):
            renamed_source = EventsMetadata(event_type=EVENT_TYPE).source
            assert sink.write_batch(envelopes(range(1, 2))) == {}
        config[EVENT_TYPE]["audit"] = dict(config[EVENT_TYPE][TOPIC])
        assert sink.write_batch(envelopes(range(2, 3))) == {}
    assert renamed_source != default_source
    client = redis_server.client()
    sources = {}
    for stream, numbers in (
        (f"{prefix}-{TOPIC}", [0, 2]),
        (f"{prefix}-2-{TOPIC}", [1]),
        (f"{prefix}-audit", [2]),
    ):
        assert eventbus_support.published_names(client, stream) == numbers
        sources[stream] = [fields[b"source"].decode() for _, fields in client.xrange(stream)]
    assert sources[f"{prefix}-{TOPIC}"] == [default_source, default_source]
    assert sources[f"{prefix}-2-{TOPIC}"] == [renamed_source]


class Incomparable:
    """A settings value whose ``==`` raises."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("cannot compare")

    __hash__ = object.__hash__


def test_settings_that_cannot_be_compared_never_stop_a_batch(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """A producer config holding a value whose ``==`` raises (so the publisher cannot
    tell whether the settings changed) has every batch published, under the settings
    read for it."""
    sink = make_bus(publisher="redis")._sink
    config = eventbus_support.producer_config(TOPIC)
    config["some.other.type"] = {"odd": Incomparable()}
    with bus_settings(redis_url, prefix, EVENT_BUS_PRODUCER_CONFIG=config):
        for n in range(3):
            assert sink.write_batch(envelopes(range(n, n + 1))) == {}
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == [0, 1, 2]


def test_signal_without_the_producing_handler_keeps_the_events(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """When openedx-events' producing handler is not connected (openedx_events missing
    from INSTALLED_APPS), the signal would reach no producer: 4.x lost the events
    silently; here they are kept, the error says what to add, and they are published
    once the handler is connected."""
    bus = make_bus(publisher="signal")
    with bus_settings(redis_url, prefix):
        bus.send(
            {
                "name": "course.viewed",
                "timestamp": datetime.datetime.now(UTC),
                "context": {},
                "data": {"n": 0},
            }
        )
        assert not bus.flush(0.5)
        assert "'openedx_events' to INSTALLED_APPS" in bus.stats()["producer"]["last_error"]
        with eventbus_support.producing_handler():
            assert bus.flush(30)
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == [0]


def test_a_receiver_failing_in_this_process_is_counted_not_retried(
    redis_url: str, prefix: str, make_bus: MakeBus, redis_server: Any
) -> None:
    """Another receiver of the signal that raises in the emitting process is logged and
    counted; the message, which the producer took, is not sent again."""
    from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a plugin's receiver")

    bus = make_bus(publisher="signal")
    TRACKING_EVENT_EMITTED.connect(broken, dispatch_uid="broken-test-receiver")
    try:
        with bus_settings(redis_url, prefix), eventbus_support.producing_handler():
            bus.send(
                {
                    "name": "course.viewed",
                    "timestamp": datetime.datetime.now(UTC),
                    "context": {},
                    "data": {"n": 0},
                }
            )
            assert bus.flush(30)
    finally:
        TRACKING_EVENT_EMITTED.disconnect(dispatch_uid="broken-test-receiver")
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == [0]
    stats = bus.stats()["producer"]
    assert (stats["receiver_errors"], stats["retries"], stats["published"]) == (1, 0, 1)


@pytest.mark.parametrize(
    "log",
    [
        ("course.viewed", datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), '{"n": 1}', "{}"),
        ("é.ü", datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), '"x" * 9', '{"k": "é"}'),
        ("n", datetime.datetime(2024, 1, 2, tzinfo=UTC), json.dumps({"a": "b" * 100_000}), "{}"),
    ],
)
def test_fast_avro_is_the_library_s_bytes(log: tuple[Any, ...]) -> None:
    """The writer of a tracking log's Avro record gives openedx-events' bytes."""
    from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes

    from eventtracking.backends.event_bus import _envelope as _eventbus

    events = _eventbus.openedx_events()
    tracking_log = events.TrackingLogData(*log)
    assert _eventbus.avro_writes_library_bytes()
    expected = serialize_event_data_to_bytes(
        {"tracking_log": tracking_log}, events.TRACKING_EVENT_EMITTED
    )
    name, moment, data, context = log
    assert _eventbus.avro_tracking_log(name, moment.isoformat(), data, context) == expected


def test_fast_avro_steps_aside_when_the_library_writes_otherwise(
    redis_url: str,
    prefix: str,
    make_bus: MakeBus,
    redis_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should openedx-events ever write the record differently, the writer is not used:
    events are then kept in the JSON form and published through the library's own
    functions."""
    from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes

    from eventtracking.backends.event_bus import _envelope as _eventbus

    def another_format(data: dict[str, Any], signal: Any) -> bytes:
        return b"v2:" + serialize_event_data_to_bytes(data, signal)

    verdict = _eventbus.avro_writes_library_bytes(another_format)
    assert verdict is False
    monkeypatch.setattr(_eventbus, "_wire_verdict", [verdict])
    event = {
        "name": "course.viewed",
        "timestamp": datetime.datetime.now(UTC),
        "context": {},
        "data": {"n": 0},
    }
    payload, problem = _eventbus.encode_envelope(event)
    assert problem is None
    assert json.loads(payload)["name"] == "course.viewed"
    bus = make_bus(publisher="redis")
    with bus_settings(redis_url, prefix):
        bus.send(event)
        assert bus.flush(30)
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == [0]


#: Dead letters that can never be published, as ``spool redrive`` puts them back.
BAD_PAYLOADS = {
    # A name holding a lone surrogate: JSON carries it, UTF-8 (Avro, Redis) cannot.
    "lone-surrogate-name": None,
    # The same surrogate written raw into the payload (UTF-8 with surrogatepass).
    "raw-surrogate": json.dumps(
        {
            "id": str(uuid.uuid4()),
            "time": "2024-01-02T03:04:05+00:00",
            "name": "course.viewed\ud800",
            "timestamp": "2024-01-02T03:04:05+00:00",
            "data": "{}",
            "context": "{}",
        },
        ensure_ascii=False,
    ).encode("utf-8", "surrogatepass"),
    "not-utf8": b"\xff\xfe\x00garbage",
    "empty": b"",
    # The wire form, cut short: its Avro record lacks the end of its last string.
    "wire-cut-short": b"\x00eb2\n"
    + str(uuid.uuid4()).encode()
    + b"\n2024-01-02T03:04:05+00:00\n\x1acourse.viewed\x04ab\x04{}\x04{",
    # Written by hand or by another tool: an id that is not text, nesting deeper than
    # the JSON parser goes, a send time that is no time, a timestamp with a surrogate.
    "id-not-text": b'{"id": 1, "time": "2024-01-02T03:04:05+00:00"}',
    "too-deep": b"[" * 100_000,
    "time-not-a-time": json.dumps(
        {
            "id": str(uuid.uuid4()),
            "time": "2024-01-02T03:04:05+02:00 or so",
            "name": "course.viewed",
            "timestamp": "2024-01-02T03:04:05+00:00",
            "data": "{}",
            "context": "{}",
        }
    ).encode(),
    "surrogate-timestamp": json.dumps(
        {
            "id": str(uuid.uuid4()),
            "time": "2024-01-02T03:04:05+00:00",
            "name": "course.viewed",
            "timestamp": "2024-01-02T03:04:05\ud800",
            "data": "{}",
            "context": "{}",
        }
    ).encode(),
}


@pytest.mark.parametrize("bad", sorted(BAD_PAYLOADS))
@pytest.mark.parametrize("publisher", ["redis", "signal"])
def test_a_redriven_bad_item_never_holds_up_the_stream(
    publisher: str,
    bad: str,
    redis_url: str,
    prefix: str,
    make_bus: MakeBus,
    tmp_path: Path,
    redis_server: Any,
) -> None:
    """A dead letter that can never be published, re-driven with the documented
    ``python -m eventtracking spool redrive``, is set aside again on its own (a counted
    dead letter, with the reason) and the events emitted after it reach the stream, in
    order."""
    spool_path = tmp_path / "spool"
    surrogate_name = "course.viewed\ud800"
    first = make_bus(publisher=publisher)
    with (
        bus_settings(redis_url, prefix, names=("course.viewed", surrogate_name)),
        eventbus_support.producing_handler(),
    ):
        if BAD_PAYLOADS[bad] is None:
            first.send(
                {
                    "name": surrogate_name,
                    "timestamp": datetime.datetime.now(UTC),
                    "context": {},
                    "data": {"n": -1},
                }
            )
            assert first.flush(30)
        else:
            Spool(spool_path).add_dead_letters(
                DEFAULT_STREAM, [(BAD_PAYLOADS[bad], "planted by the test", None)]
            )
        first.close(5)
        [letter] = Spool(spool_path).dead_letters(DEFAULT_STREAM)
        redrive = subprocess.run(
            [
                sys.executable,
                "-m",
                "eventtracking",
                "spool",
                "redrive",
                "--spool-dir",
                str(spool_path),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "1 dead letter(s) moved back to be delivered" in redrive.stdout
        assert Spool(spool_path).dead_letters(DEFAULT_STREAM) == []

        bus = make_bus(publisher=publisher)
        for n in range(5):
            bus.send(viewed(n))
        assert bus.flush(30)
    stream = f"{prefix}-{TOPIC}"
    assert eventbus_support.published_names(redis_server.client(), stream) == list(range(5))
    [again] = Spool(spool_path).dead_letters(DEFAULT_STREAM)
    assert again.payload == letter.payload
    assert again.reason
    stats = bus.stats()["producer"]
    assert stats["dead_lettered"] == 1
    assert stats["published"] == 5
    assert stats["retries"] == 0


def test_an_envelope_sent_at_a_time_in_another_zone_is_published_at_that_time_in_utc(
    redis_url: str, prefix: str, make_bus: MakeBus, tmp_path: Path, redis_server: Any
) -> None:
    """A JSON-form envelope whose send time and timestamp are in another time zone (as
    another tool may write them) is published at the same moments, written in UTC."""
    envelope = {
        "id": str(uuid.uuid4()),
        "time": "2024-01-02T05:04:05+02:00",
        "name": "course.viewed",
        "timestamp": "2024-01-02T08:34:04+05:30",
        "data": json.dumps({"n": 0}),
        "context": "{}",
    }
    Spool(tmp_path / "spool").append(DEFAULT_STREAM, [json.dumps(envelope).encode()])
    bus = make_bus(publisher="redis")
    with bus_settings(redis_url, prefix):
        assert bus.flush(30)
    [(_, fields)] = redis_server.client().xrange(f"{prefix}-{TOPIC}")
    published = decode_message(fields)
    assert published["id"] == envelope["id"]
    stamp = published["tracking_log"].timestamp
    assert stamp == datetime.datetime(2024, 1, 2, 3, 4, 4, tzinfo=UTC)
    assert stamp.utcoffset() == datetime.timedelta(0)
    assert bus.stats()["producer"]["published"] == 1


def test_envelopes_spooled_by_an_earlier_release_are_published(
    redis_url: str, prefix: str, make_bus: MakeBus, tmp_path: Path, redis_server: Any
) -> None:
    """Envelopes in the JSON form that earlier releases spooled (with uuid1 ids) are
    published after an upgrade, with their ids, and in order with new events."""
    old_id = str(uuid.uuid1())
    old = {
        "id": old_id,
        "time": "2024-01-02T03:04:05.123456+00:00",
        "name": "course.viewed",
        "timestamp": "2024-01-02T03:04:04.000001+00:00",
        "data": json.dumps({"n": 0}),
        "context": json.dumps({"user_id": 5}),
    }
    Spool(tmp_path / "spool").append(DEFAULT_STREAM, [json.dumps(old).encode()])
    bus = make_bus(publisher="redis")
    with bus_settings(redis_url, prefix):
        assert bus.flush(30)
        bus.send(
            {
                "name": "course.viewed",
                "timestamp": datetime.datetime.now(UTC),
                "context": {},
                "data": {"n": 1},
            }
        )
        assert bus.flush(30)
    stream = f"{prefix}-{TOPIC}"
    client = redis_server.client()
    assert eventbus_support.published_names(client, stream) == [0, 1]
    first = decode_message(client.xrange(stream)[0][1])
    assert first["id"] == old_id
    assert first["tracking_log"].timestamp == datetime.datetime(2024, 1, 2, 3, 4, 4, 1, tzinfo=UTC)
    assert json.loads(first["tracking_log"].context) == {"user_id": 5}
