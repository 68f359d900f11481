"""Property tests: the event-bus receiver given arbitrary messages.

:func:`eventtracking.handlers.send_tracking_log_to_backends` is called as openedx-events
calls it (``tracking_log=TrackingLogData(...)``, ``metadata`` with an id,
``from_event_bus=True``, ``signal``), with a real default tracker whose
EventBusRoutingBackend delivers to an InMemoryBackend, or to a backend that raises.
Hypothesis draws the message: names of any type (surrogates, huge), timestamps (aware,
naive, out of range, of the wrong type), data and context texts (not JSON, nested
100,000 deep, huge strings, NaN literals, surrogate escapes, not text at all), ids
(missing, not text, re-used, forged) and kwargs missing or added. Every call must:

* return within :data:`LIMIT` seconds (a hang fails the test instead of stopping the
  run);
* raise nothing into the consumer, which would log it and go on, or loop on it;
* deliver the message to the leaf, or count it: as a duplicate, a dead letter kept in
  the spool, a processor's drop, a failure of the leaf, or a message with nowhere to go;
* leave a message id that was not delivered free: the same id, sent again with a good
  message, is delivered (only a delivered id keeps its copies out).

Another test sends thousands of hostile messages and checks that memory and open file
descriptors stay flat, and the last one gives ``decode_envelope`` (which reads back what
the producer spooled) arbitrary payloads: each is an envelope or a ValueError.

The module takes about 15 s. ``FUZZ_EXAMPLES=3000`` runs more examples;
``FUZZ_LOGS=1`` keeps the library's errors in the report of a failing example.
"""

from __future__ import annotations

import collections
import datetime
import gc
import json
import logging
import os
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import eventbus_support
import pytest
from hang_support import call_within, fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st

from eventtracking import handlers
from eventtracking.backends.event_bus import DEFAULT_STREAM, EventBusRoutingBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.spool import Spool
from eventtracking.tracker import Tracker, register_tracker

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bus_env")]

# pytest finds fixtures by module attribute.
bus_env = eventbus_support.bus_env

#: Seconds one call may take. Each takes well under a second (a 100,000-deep text is
#: refused at Python's recursion limit); this only has to tell a hang from a slow,
#: shared CI machine.
LIMIT = 10.0

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2024, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


# -- hostile parts of a message --------------------------------------------------------


class BadStr:
    """str() and repr() raise: an id or a name no one can print."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class RaisingLog:
    """A tracking log (or metadata) whose every field raises when read, with ``error``."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise self.error(f"no {name}")

    def __repr__(self) -> str:
        return f"RaisingLog({self.error.__name__})"


class BadBool:
    """Its truth value raises."""

    def __bool__(self) -> bool:
        raise RuntimeError("no bool")


class BadZone(datetime.tzinfo):
    """A time zone whose offset raises, or is not one a datetime can hold."""

    def __init__(self, offset: Any) -> None:
        self.offset = offset

    def utcoffset(self, moment: datetime.datetime | None) -> Any:
        if self.offset == "raise":
            raise RuntimeError("no offset")
        return self.offset

    def dst(self, moment: datetime.datetime | None) -> Any:
        return None

    def __repr__(self) -> str:
        return f"BadZone({self.offset!r})"


def _surrogate_text(text: str) -> str:
    return text + "\ud800"


NAMES = st.one_of(
    st.sampled_from(["course.viewed", "drop.me", "", "line\nbreak", "\x00", "é" * 20]),
    st.text(max_size=30),
    st.text(max_size=10).map(_surrogate_text),
    st.integers(100_000, 300_000).map(lambda size: "n" * size),
    st.sampled_from([None, 42, 4.5, b"bytes", ["a"], {"a": 1}]),
    st.builds(BadStr),
)

OFFSETS = st.sampled_from(
    [
        UTC,
        datetime.timezone(datetime.timedelta(hours=5)),
        datetime.timezone(datetime.timedelta(hours=-23, minutes=-59)),
        datetime.timezone(datetime.timedelta(hours=23, minutes=59)),
    ]
)

TIMESTAMPS = st.one_of(
    st.datetimes(timezones=OFFSETS),
    st.datetimes(),
    # At the ends of the range: converting to UTC leaves it.
    st.builds(
        lambda moment, zone: moment.replace(tzinfo=zone),
        st.sampled_from([datetime.datetime.min, datetime.datetime.max]),
        OFFSETS,
    ),
    st.builds(
        lambda offset: WHEN.replace(tzinfo=BadZone(offset)),
        st.sampled_from(["raise", None, datetime.timedelta(hours=25), "not a timedelta"]),
    ),
    st.sampled_from(
        [
            "2024-03-04T05:06:07.89Z",
            "2024-03-04 05:06:07+0000",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-23:59",
            "test_timestamp",
            "",
            " ",
            "2024-13-45T99:99:99",
            "9" * 100_000,
            "2024-03-04T05:06:07\ud800",
        ]
    ),
    st.text(max_size=30),
    st.sampled_from([None, 0, -1, 2**70, float("nan"), b"2024-03-04", datetime.date(2024, 3, 4)]),
    st.builds(BadStr),
)


def _deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)

TEXTS = st.one_of(
    JSON_VALUES.map(json.dumps),
    st.sampled_from(
        [
            "{}",
            '{"n": 1}',
            "{not json",
            "",
            "[",
            "null",
            "NaN",
            '{"a": NaN, "b": Infinity, "c": -Infinity}',
            '"\\ud800"',
            '{"\\udfff": "\\ud800x"}',
            "\ud800",
            '{"a": "\ud800"}',
            "1" * 5000,
            '{"a": 1e999}',
            "\ufeff{}",
            '{"a": 1} trailing',
        ]
    ),
    st.builds(
        _deep,
        st.sampled_from([10, 500, 950, 990, 1000, 1100, 5000, 100_000]),
        st.sampled_from(["list", "dict"]),
    ),
    st.integers(100_000, 300_000).map(lambda size: '{"s": "' + "x" * size + '"}'),
    st.text(max_size=30),
    st.sampled_from([None, 42, b'{"n": 1}', bytearray(b"{}"), {"n": 1}, ["x"]]),
    st.builds(BadStr),
)

#: Ids a test hands out: a slot in a pool shared by the test's examples (so some are
#: re-used), or a forgery.
ID_KINDS = st.one_of(
    st.integers(0, 4).map(lambda slot: ("pool", slot)),
    st.sampled_from(
        [
            ("missing", None),
            ("none", None),
            ("fresh", None),
            ("fresh-str", None),
            ("forged", "not-a-uuid"),
            ("forged", ""),
            ("forged", 42),
            ("forged", "x" * 100_000),
            ("forged", "\ud800"),
            ("forged", b"\xff"),
            ("bad-str", None),
            ("raises", None),
        ]
    ),
)


class Message:
    """One drawn message: the kwargs' parts, and how the log and kwargs are shaped.

    Not a dataclass: hypothesis prints a dataclass field by field, with each field's
    repr, which may raise; this class's repr never does.
    """

    def __init__(
        self,
        name: Any = "course.viewed",
        timestamp: Any = WHEN,
        data: Any = '{"n": 1}',
        context: Any = '{"user_id": 3}',
        id_kind: tuple[str, Any] = ("fresh", None),
        log_shape: str = "tracking_log",
        from_event_bus: Any = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.timestamp = timestamp
        self.data = data
        self.context = context
        self.id_kind = id_kind
        self.log_shape = log_shape
        self.from_event_bus = from_event_bus
        self.extra = extra or {}

    def __repr__(self) -> str:
        def short(value: Any) -> str:
            try:
                text = repr(value)
            except Exception:
                return f"<{type(value).__name__} with no repr>"
            return text if len(text) < 80 else f"{text[:60]}... ({len(text)} chars)"

        parts = ", ".join(
            f"{key}={short(getattr(self, key))}"
            for key in (
                "name",
                "timestamp",
                "data",
                "context",
                "id_kind",
                "log_shape",
                "from_event_bus",
                "extra",
            )
        )
        return f"Message({parts})"


MESSAGES = st.builds(
    Message,
    name=NAMES,
    timestamp=TIMESTAMPS,
    data=TEXTS,
    context=st.one_of(st.just('{"user_id": 3}'), TEXTS),
    id_kind=ID_KINDS,
    log_shape=st.sampled_from(
        [
            "tracking_log",
            "tracking_log",
            "tracking_log",
            "namespace",
            "partial",
            "dict",
            "none",
            "missing",
            "raises-attribute",
            "raises-runtime",
        ]
    ),
    from_event_bus=st.one_of(
        st.sampled_from([True, True, True, True, False, None, "yes", 0, "missing"]),
        st.builds(BadBool),
    ),
    extra=st.sampled_from(
        [{}, {}, {"unexpected": object()}, {"signal": None}, {"sender_extra": "x" * 10}]
    ),
)


def _tracking_log(message: Message) -> Any:
    from openedx_events.analytics.data import TrackingLogData

    fields = {
        "name": message.name,
        "timestamp": message.timestamp,
        "data": message.data,
        "context": message.context,
    }
    shape = message.log_shape
    if shape == "tracking_log":
        return TrackingLogData(**fields)
    if shape == "namespace":
        return SimpleNamespace(**fields)
    if shape == "partial":
        return SimpleNamespace(name=message.name, data=message.data)
    if shape == "dict":
        return fields
    if shape == "raises-attribute":
        return RaisingLog(AttributeError)
    if shape == "raises-runtime":
        return RaisingLog(RuntimeError)
    return None


# -- the receiver under test -----------------------------------------------------------


class Failing:
    """A leaf backend that raises on every event."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, event: dict[str, Any]) -> None:
        self.calls += 1
        raise RuntimeError("the leaf is down")


def _drop(event: dict[str, Any]) -> dict[str, Any]:
    """A processor that drops the events named ``drop.me``, as a filter would."""
    if event.get("name") == "drop.me":
        raise EventEmissionExit
    return event


class Receiver:
    """A registered default tracker, its EventBusRoutingBackend and the leaf, with the
    ids this test hands out and remembers delivering."""

    def __init__(self, spool_dir: Path, leaf: str) -> None:
        self.memory = InMemoryBackend(max_events=1)
        self.failing = Failing()
        nested: Any = self.memory if leaf == "memory" else self.failing
        self.bus = EventBusRoutingBackend(
            spool_dir=spool_dir, backends={"leaf": nested}, processors=[_drop]
        )
        self.spool_dir = spool_dir
        self.tracker = Tracker({"bus": self.bus})
        register_tracker(self.tracker)
        self.pool = [uuid.uuid4() for _ in range(5)]
        self.delivered_ids: set[str] = set()

    def reached_leaf(self) -> int:
        """Events the leaf was handed (stored, discarded over max_events, or raised on)."""
        memory = self.memory.stats()
        return int(memory["stored"]) + int(memory["discarded"]) + self.failing.calls

    def metadata(self, id_kind: tuple[str, Any]) -> Any:
        """The ``metadata`` kwarg for ``id_kind``; ``...`` for none at all."""
        from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
        from openedx_events.data import EventsMetadata

        kind, value = id_kind
        if kind == "missing":
            return ...
        if kind == "raises":
            return RaisingLog(RuntimeError)
        if kind == "pool":
            message_id: Any = self.pool[value]
        elif kind == "fresh":
            message_id = uuid.uuid4()
        elif kind == "fresh-str":
            message_id = str(uuid.uuid4())
        elif kind == "none":
            message_id = None
        elif kind == "bad-str":
            message_id = BadStr()
        else:
            message_id = value
        if isinstance(message_id, uuid.UUID):
            return EventsMetadata(event_type=TRACKING_EVENT_EMITTED.event_type, id=message_id)
        # A metadata object a forger (or another library) built: only ``id`` is read.
        return SimpleNamespace(id=message_id)

    def counts(self) -> dict[str, int]:
        receiver = handlers.stats()
        bus = self.bus.stats()
        consumer = bus["consumer"]
        return {
            "leaf": self.reached_leaf(),
            "delivered": int(consumer["delivered"]),
            "filtered": int(consumer["filtered"]),
            "dead_lettered": int(consumer["dead_lettered"]),
            "dead_letter_dropped": _total(consumer.get("dropped", {})),
            "router_failed": _total(bus["failed"]),
            "router_dropped": _total(bus["dropped"]),
            **{
                f"receiver_{key}": int(receiver[key])  # type: ignore[call-overload]
                for key in (
                    "received",
                    "ignored_local",
                    "duplicates",
                    "malformed",
                    "no_tracker",
                    "no_backend",
                    "failed",
                )
            },
        }


def _total(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return sum(_total(item) for item in value.values())
    return 0


def _send(receiver: Receiver, message: Message, metadata: Any) -> Any:
    """Call the receiver with ``message`` in a thread; its :class:`Outcome`."""
    return call_within(
        LIMIT, handlers.send_tracking_log_to_backends, None, **_kwargs(message, metadata)
    )


def _kwargs(message: Message, metadata: Any) -> dict[str, Any]:
    """The signal's kwargs for ``message``, as openedx-events passes them."""
    kwargs: dict[str, Any] = {"signal": object()}
    if message.log_shape != "missing":
        kwargs["tracking_log"] = _tracking_log(message)
    if metadata is not ...:
        kwargs["metadata"] = metadata
    if message.from_event_bus != "missing":
        kwargs["from_event_bus"] = message.from_event_bus
    kwargs.update(message.extra)
    return kwargs


def _check(receiver: Receiver, message: Message) -> None:
    """Send ``message`` and check the promises of the module's docstring."""
    metadata = receiver.metadata(message.id_kind)
    before = receiver.counts()
    outcome = _send(receiver, message, metadata)
    assert outcome.error is None, f"the receiver raised into the consumer: {outcome.error!r}"
    after = receiver.counts()
    change = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    accounted = sum(
        change.get(key, 0)
        for key in (
            "leaf",
            "filtered",
            "receiver_ignored_local",
            "receiver_duplicates",
            "receiver_malformed",
            "receiver_no_tracker",
            "receiver_no_backend",
            "receiver_failed",
        )
    )
    assert accounted >= 1, f"the message was neither delivered nor counted: {change}"
    # The receiver's own "failed" is a bug in it (the router contains the leaf's errors).
    assert change.get("receiver_failed", 0) == 0, change
    # A message that cannot become an event is kept, in the spool, not only counted.
    assert change.get("dead_lettered", 0) == change.get("receiver_malformed", 0), change
    assert change.get("dead_letter_dropped", 0) == 0, change
    # Whatever reached the leaf, the router saw it through: delivered or a counted failure.
    if change.get("leaf"):
        assert change.get("delivered", 0) == 1, change
        if receiver.failing.calls:
            assert change.get("router_failed", 0) >= 1, change
    if isinstance(metadata, RaisingLog):
        return
    message_id = getattr(metadata, "id", None)
    if message_id is None or isinstance(message_id, BadStr):
        return
    key = str(message_id)
    if change.get("delivered"):
        receiver.delivered_ids.add(key)
        return
    # Not delivered: the id is free, unless an earlier example delivered it.
    before = receiver.counts()
    retry = _send(receiver, Message(), metadata)
    assert retry.error is None, f"the receiver raised on a good message: {retry.error!r}"
    change = {key: after - before[key] for key, after in receiver.counts().items()}
    if key in receiver.delivered_ids:
        assert change["receiver_duplicates"] == 1, change
    else:
        assert change["delivered"] == 1, f"a message not delivered kept its id: {change}"
        assert change["leaf"] == 1, change
        receiver.delivered_ids.add(key)


def _dead_letters(spool_dir: Path) -> int:
    return len(Spool(spool_dir).dead_letters(f"{DEFAULT_STREAM}:received"))


FUZZ = fuzz_settings(300)


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Keep the expected warnings and errors of hostile messages out of the output."""
    root = logging.getLogger("eventtracking")
    old = root.level
    root.setLevel(logging.ERROR if os.environ.get("FUZZ_LOGS") else logging.CRITICAL)
    yield
    root.setLevel(old)


@pytest.fixture(params=["memory", "raising"])
def receiver(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    quiet_logs: None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Receiver]:
    """The receiver's tracker, with a leaf that stores or one that raises, and no ids
    remembered from earlier tests (the forged ids are the same in every test)."""
    monkeypatch.setattr(handlers, "_seen", collections.OrderedDict())
    made = Receiver(tmp_path / "spool", request.param)
    yield made
    made.bus.close(5)
    # Every message counted a dead letter is in the spool.
    kept = _dead_letters(made.spool_dir)
    assert kept == made.bus.stats()["consumer"]["dead_lettered"]


# The messages the issue names, in every run whatever hypothesis draws.
MUST_INCLUDE: list[Message] = [
    Message(),
    Message(data=_deep(100_000, "list")),
    Message(context=_deep(100_000, "dict")),
    Message(data="{not json"),
    Message(data='{"a": NaN, "b": Infinity}'),
    Message(data='"\\ud800"', context='{"\\udfff": 1}'),
    Message(data='{"a": "\ud800"}'),
    Message(data="\ud800"),
    Message(name="\ud800"),
    Message(name=BadStr(), data="{not json"),
    Message(name="n" * 300_000, data='{"s": "' + "x" * 300_000 + '"}'),
    Message(data=None),
    Message(data=b'{"n": 1}'),
    Message(
        timestamp=datetime.datetime.min.replace(
            tzinfo=datetime.timezone(datetime.timedelta(hours=5))
        )
    ),
    Message(
        timestamp=datetime.datetime.max.replace(
            tzinfo=datetime.timezone(datetime.timedelta(hours=-5))
        )
    ),
    Message(timestamp="0001-01-01T00:00:00+05:00"),
    Message(timestamp="9" * 100_000),
    Message(timestamp=BadStr()),
    Message(id_kind=("forged", "not-a-uuid"), data="{not json"),
    Message(id_kind=("bad-str", None)),
    Message(id_kind=("bad-str", None), data="{not json"),
    Message(id_kind=("pool", 0)),
    Message(id_kind=("pool", 0)),
    Message(id_kind=("pool", 1), name="drop.me"),
    Message(id_kind=("missing", None), log_shape="missing"),
    Message(log_shape="none"),
    Message(log_shape="dict"),
    Message(log_shape="partial"),
    Message(log_shape="raises-runtime"),
    Message(log_shape="raises-runtime", id_kind=("pool", 2)),
    Message(from_event_bus="missing"),
    Message(from_event_bus=BadBool()),
    Message(timestamp=WHEN.replace(tzinfo=BadZone("raise"))),
    Message(timestamp=WHEN.replace(tzinfo=BadZone(datetime.timedelta(hours=25)))),
    Message(timestamp=WHEN.replace(tzinfo=BadZone("not a timedelta"))),
    Message(id_kind=("raises", None)),
    Message(id_kind=("raises", None), data="{not json"),
    Message(extra={"unexpected": object()}),
]


def _with_examples(test: Callable[..., None]) -> Callable[..., None]:
    for message in reversed(MUST_INCLUDE):
        test = example(message=message)(test)
    return test


@FUZZ
@_with_examples
@given(message=MESSAGES)
def test_the_receiver_survives_arbitrary_messages(receiver: Receiver, message: Message) -> None:
    """Each message returns within the limit, raises nothing, is delivered or counted,
    and an id it did not deliver stays free for the real message."""
    _check(receiver, message)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_memory_and_descriptors_stay_flat(
    tmp_path: Path, quiet_logs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of hostile messages leave no memory and no open file behind: after a
    warm-up, memory grows by less than 256 KiB over 3,000 more (under 90 bytes a
    message), and at most two more descriptors (none of its own) are open at the end."""
    # The remembered ids are bounded (10,000): a small bound reaches steady state
    # within the warm-up, so what grows after it is a leak.
    monkeypatch.setattr(handlers, "_REMEMBERED_IDS", 50)
    receiver = Receiver(tmp_path / "spool", "memory")
    messages = [message for message in MUST_INCLUDE if message.id_kind[0] != "pool"]

    def send(count: int) -> None:
        for index in range(count):
            message = messages[index % len(messages)]
            metadata = receiver.metadata(message.id_kind)
            handlers.send_tracking_log_to_backends(None, **_kwargs(message, metadata))

    def run(count: int) -> None:
        # One thread for the lot: a thread per call would be most of the time measured.
        outcome = call_within(LIMIT * 10, send, count)
        assert outcome.error is None, f"the receiver raised: {outcome.error!r}"

    try:
        run(300)
        gc.collect()
        tracemalloc.start()
        fds = _open_descriptors()
        start = tracemalloc.take_snapshot()
        run(3000)
        gc.collect()
        end = tracemalloc.take_snapshot()
        tracemalloc.stop()
        growth = sum(stat.size_diff for stat in end.compare_to(start, "filename"))
        top = end.compare_to(start, "lineno")[:5]
        assert growth < 256 * 1024, f"memory grew by {growth} bytes: {top}"
        # A leak here would be one descriptor per message or per dead letter, hundreds
        # of them; two spare ones let another test's server thread open a socket.
        assert _open_descriptors() <= fds + 2, (fds, _open_descriptors())
    finally:
        receiver.bus.close(5)


# -- envelopes read back from the spool ------------------------------------------------


def _wire(message_id: str, sent: str, strings: list[bytes], tail: bytes) -> bytes:
    from eventtracking.backends.event_bus._envelope import _avro_length

    avro = b"".join(_avro_length(len(text)) + text for text in strings)
    return f"\x00eb2\n{message_id}\n{sent}\n".encode() + avro + tail


FIELD_VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            str(uuid.UUID(int=1)),
            "2024-03-04T05:06:07+00:00",
            "0001-01-01T00:00:00+05:00",
            "\ud800",
            "9" * 10_000,
        ]
    ),
    st.none(),
    st.integers(),
    st.floats(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)

PAYLOADS = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda tail: b"\x00eb2\n" + tail),
    st.builds(
        _wire,
        st.sampled_from([str(uuid.UUID(int=7)), "not-a-uuid", "0" * 36]),
        st.sampled_from(
            [
                "2024-03-04T05:06:07+00:00",
                "2024-03-04T05:06:07.123456+00:00",
                "9999-99-99T99:99:99+00:00",
            ]
        ),
        st.lists(
            st.one_of(
                st.binary(max_size=30),
                st.text(max_size=20).map(lambda text: text.encode("utf-8")),
                st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"2024-03-04T05:06:07+00:00"]),
            ),
            min_size=0,
            max_size=6,
        ),
        st.sampled_from([b"", b"", b"\x00", b"\xff" * 12]),
    ),
    st.fixed_dictionaries(
        {},
        optional={
            key: FIELD_VALUES for key in ("id", "time", "name", "timestamp", "data", "context")
        },
    ).map(lambda fields: json.dumps(fields).encode("utf-8")),
    st.sampled_from(
        [
            b"[" * 100_000 + b"]" * 100_000,
            b'{"id": ' + b"[" * 100_000,
            b"NaN",
            b"{}",
            b"null",
            b'"\\ud800"',
        ]
    ),
)


@FUZZ
@given(payload=PAYLOADS)
def test_decoding_any_payload_gives_an_envelope_or_a_value_error(payload: bytes) -> None:
    """Whatever a spool holds (``spool redrive`` puts back any dead letter),
    decode_envelope returns within the limit with an envelope of well-typed fields, or
    raises ValueError, which sets that payload aside alone."""
    from eventtracking.backends.event_bus._envelope import Envelope, decode_envelope

    outcome = call_within(LIMIT, decode_envelope, payload)
    if outcome.error is not None:
        assert isinstance(outcome.error, ValueError), repr(outcome.error)
        return
    envelope = outcome.result
    assert isinstance(envelope, Envelope)
    assert str(uuid.UUID(envelope.id)) == envelope.id
    for moment in (envelope.time, envelope.timestamp):
        assert isinstance(moment, datetime.datetime)
        assert moment.utcoffset() is not None
    assert isinstance(envelope.data, str)
    assert isinstance(envelope.context, str)
