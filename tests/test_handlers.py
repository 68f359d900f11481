"""The consumer-side receiver, eventtracking.handlers, given tracking logs directly.

The round trip through a real Redis is in test_event_bus.py; here the signal is sent
as the bus consumers send it (``send_event_with_custom_metadata``, which sets
``from_event_bus``), to check what the receiver does with each kind of message.
"""

from __future__ import annotations

import datetime
import functools
import json
import uuid
from pathlib import Path
from typing import Any

import eventbus_support
import pytest
from walk_support import files_entered

from eventtracking import handlers
from eventtracking.backends.event_bus import DEFAULT_STREAM, EventBusRoutingBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.spool import Spool
from eventtracking.tracker import Tracker, register_tracker

pytestmark = pytest.mark.usefixtures("bus_env")

# pytest finds fixtures by module attribute.
bus_env = eventbus_support.bus_env

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2024, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def tracking_log(
    name: str = "course.viewed",
    data: str = '{"n": 1}',
    context: str = '{"user_id": 3}',
    timestamp: Any = WHEN,
) -> Any:
    from openedx_events.analytics.data import TrackingLogData

    return TrackingLogData(name=name, timestamp=timestamp, data=data, context=context)


def from_the_bus(log: Any, message_id: uuid.UUID | None = None) -> list[Any]:
    """Send the signal as a bus consumer does; return the receivers' responses."""
    from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
    from openedx_events.data import EventsMetadata

    metadata = EventsMetadata(event_type=TRACKING_EVENT_EMITTED.event_type, id=message_id)
    return TRACKING_EVENT_EMITTED.send_event_with_custom_metadata(metadata, tracking_log=log)


def make_bus(tmp_path: Path, **options: Any) -> EventBusRoutingBackend:
    return EventBusRoutingBackend(spool_dir=tmp_path / "spool", **options)


def counts_since(before: dict[str, Any]) -> dict[str, int]:
    after = handlers.stats()
    return {key: int(after[key]) - int(before[key]) for key in after if after[key] != before[key]}


def test_the_app_connects_the_receiver_and_it_delivers(tmp_path: Path) -> None:
    """The Django app connected the receiver: a message from the bus reaches the nested
    backend of the top-level EventBusRoutingBackend, rebuilt as an event."""
    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    before = handlers.stats()
    responses = from_the_bus(tracking_log())
    assert [response for _, response in responses if isinstance(response, Exception)] == []
    assert nested.snapshot() == [
        {"name": "course.viewed", "timestamp": WHEN, "data": {"n": 1}, "context": {"user_id": 3}}
    ]
    assert counts_since(before) == {"received": 1}


def test_signals_sent_in_this_process_are_ignored(tmp_path: Path) -> None:
    """The signal the producing side sends (from_event_bus false) delivers nothing."""
    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    before = handlers.stats()
    handlers.send_tracking_log_to_backends(None, tracking_log=tracking_log())
    handlers.send_tracking_log_to_backends(None, tracking_log=tracking_log(), from_event_bus=False)
    assert nested.snapshot() == []
    assert counts_since(before) == {"ignored_local": 2}


def test_processors_run_and_can_drop(tmp_path: Path) -> None:
    """The backend's processors run on the consuming side: a replacement reaches the
    nested backends, an EventEmissionExit drops the event and is counted."""

    def tag(event: dict[str, Any]) -> dict[str, Any]:
        if event["name"] == "drop.me":
            raise EventEmissionExit
        return {**event, "data": {**event["data"], "tagged": True}}

    nested = InMemoryBackend()
    bus = make_bus(tmp_path, backends={"nested": nested}, processors=[tag])
    register_tracker(Tracker({"bus": bus}))
    from_the_bus(tracking_log())
    from_the_bus(tracking_log(name="drop.me"))
    assert [event["data"] for event in nested.snapshot()] == [{"n": 1, "tagged": True}]
    assert bus.stats()["consumer"] == {
        "received": 2,
        "delivered": 1,
        "filtered": 1,
        "dead_lettered": 0,
    }


def test_each_event_bus_backend_gets_its_own_event(tmp_path: Path) -> None:
    """Every top-level EventBusRoutingBackend receives the event, each its own copy, so
    a change by one does not show in another; other backends receive nothing."""

    changed: list[dict[str, Any]] = []

    class Mutating:
        """A lone backend that changes the event it is given, as 4.x backends may."""

        def send(self, event: dict[str, Any]) -> None:
            event["data"]["changed"] = True
            changed.append(event)

    second, plain = InMemoryBackend(), InMemoryBackend()
    tracker = Tracker(
        {
            "a": make_bus(tmp_path, backends={"m": Mutating()}),
            "b": make_bus(tmp_path, backends={"second": second}),
            "plain": RoutingBackend(backends={"plain": plain}),
        }
    )
    register_tracker(tracker)
    from_the_bus(tracking_log())
    assert [event["data"] for event in changed] == [{"n": 1, "changed": True}]
    assert [event["data"] for event in second.snapshot()] == [{"n": 1}]
    assert plain.snapshot() == []


def test_a_message_delivered_already_is_skipped(tmp_path: Path) -> None:
    """A message whose id was delivered moments ago (a publisher's retry) is delivered
    once, and the copy is counted."""
    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    before = handlers.stats()
    message_id = uuid.uuid1()
    from_the_bus(tracking_log(), message_id)
    from_the_bus(tracking_log(), message_id)
    from_the_bus(tracking_log(), uuid.uuid1())
    assert len(nested.snapshot()) == 2
    assert counts_since(before) == {"received": 3, "duplicates": 1}


def test_an_id_is_kept_only_once_its_message_was_delivered(tmp_path: Path) -> None:
    """A message that a processor dropped, or that could not become an event, does not
    make its id seen: a later message under the same id (the real one, after a forged
    or broken copy got there first) is delivered, and only a copy of a delivered one is
    skipped."""

    def drop(event: dict[str, Any]) -> dict[str, Any]:
        if event["name"] == "drop.me":
            raise EventEmissionExit
        return event

    nested = InMemoryBackend()
    bus = make_bus(tmp_path, backends={"nested": nested}, processors=[drop])
    register_tracker(Tracker({"bus": bus}))
    before = handlers.stats()
    dropped_first, broken_first = uuid.uuid1(), uuid.uuid1()
    from_the_bus(tracking_log(name="drop.me"), dropped_first)
    from_the_bus(tracking_log(data='{"n": 1}'), dropped_first)
    from_the_bus(tracking_log(data="{not json"), broken_first)
    from_the_bus(tracking_log(data='{"n": 2}'), broken_first)
    from_the_bus(tracking_log(data='{"n": 3}'), broken_first)
    assert [event["data"] for event in nested.snapshot()] == [{"n": 1}, {"n": 2}]
    assert counts_since(before) == {"received": 5, "malformed": 1, "duplicates": 1}


def test_data_nested_too_deep_is_a_counted_dead_letter(tmp_path: Path) -> None:
    """Data nested 100,000 levels deep cannot be read (Python's recursion limit): the
    message is a dead letter, counted, and no RecursionError reaches the consumer."""
    nested = InMemoryBackend()
    bus = make_bus(tmp_path, backends={"nested": nested})
    register_tracker(Tracker({"bus": bus}))
    before = handlers.stats()
    deep = "[" * 100_000 + "]" * 100_000
    responses = from_the_bus(tracking_log(data=deep))
    assert [response for _, response in responses if isinstance(response, Exception)] == []
    assert nested.snapshot() == []
    assert counts_since(before) == {"received": 1, "malformed": 1}
    [letter] = Spool(tmp_path / "spool").dead_letters(f"{DEFAULT_STREAM}:received")
    assert "RecursionError" in letter.reason
    assert json.loads(letter.payload or b"")["data"] == deep


@pytest.mark.parametrize(
    ("data", "context"),
    [("{not json", "{}"), ("{}", "")],
)
def test_a_message_that_is_no_event_is_a_dead_letter(
    data: str, context: str, tmp_path: Path
) -> None:
    """Data or context that is not JSON cannot become an event: the message is kept as a
    dead letter in the spool with the reason, counted, and nothing raises into the
    consumer."""
    nested = InMemoryBackend()
    bus = make_bus(tmp_path, backends={"nested": nested})
    register_tracker(Tracker({"bus": bus}))
    before = handlers.stats()
    responses = from_the_bus(tracking_log(data=data, context=context))
    assert [response for _, response in responses if isinstance(response, Exception)] == []
    assert nested.snapshot() == []
    assert counts_since(before) == {"received": 1, "malformed": 1}
    assert bus.stats()["consumer"]["dead_lettered"] == 1
    [letter] = Spool(tmp_path / "spool").dead_letters(f"{DEFAULT_STREAM}:received")
    assert "JSONDecodeError" in letter.reason
    assert json.loads(letter.payload or b"")["data"] == data


def test_without_a_tracker_or_a_backend_the_message_is_counted(tmp_path: Path) -> None:
    """With no default tracker, or no EventBusRoutingBackend in it, the message is
    dropped with an error logged and a count, instead of an exception."""
    before = handlers.stats()
    from_the_bus(tracking_log())
    register_tracker(Tracker({"plain": InMemoryBackend()}))
    from_the_bus(tracking_log())
    assert counts_since(before) == {"received": 2, "no_tracker": 1, "no_backend": 1}


def test_a_string_timestamp_becomes_a_datetime_or_stays(tmp_path: Path) -> None:
    """A string timestamp is parsed when it is ISO 8601 and kept as it is otherwise, as
    4.x kept it."""
    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    handlers.send_tracking_log_to_backends(
        None, tracking_log=tracking_log(timestamp="2024-03-04T05:06:07.89Z"), from_event_bus=True
    )
    handlers.send_tracking_log_to_backends(
        None, tracking_log=tracking_log(timestamp="test_timestamp"), from_event_bus=True
    )
    assert [event["timestamp"] for event in nested.snapshot()] == [WHEN, "test_timestamp"]


def test_a_timestamp_in_utc_is_delivered_without_the_timestamp_parser(tmp_path: Path) -> None:
    """A timestamp the bus hands over as a datetime in UTC, as openedx-events reads it
    back, is delivered as it came without entering the timestamp parser; one in another
    time zone is still converted to UTC."""
    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    receive = functools.partial(handlers.send_tracking_log_to_backends, None, from_event_bus=True)
    receive(tracking_log=tracking_log())  # first use: imports and caches
    files = files_entered(functools.partial(receive, tracking_log=tracking_log()))
    assert "_util/timestamps.py" not in files, files
    five_hours_ahead = datetime.timezone(datetime.timedelta(hours=5))
    receive(tracking_log=tracking_log(timestamp=WHEN.astimezone(five_hours_ahead)))
    stamps = [event["timestamp"] for event in nested.snapshot()]
    assert stamps == [WHEN, WHEN, WHEN]
    assert all(stamp.tzinfo is UTC for stamp in stamps)


def test_connect_is_idempotent(tmp_path: Path) -> None:
    """Connecting again (the app already did) does not make the receiver run twice."""
    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    assert handlers.connect() is True
    assert handlers.connect() is True
    from_the_bus(tracking_log())
    assert len(nested.snapshot()) == 1


def test_tests_written_for_4x_can_patch_get_tracker(tmp_path: Path) -> None:
    """The receiver finds its tracker through ``eventtracking.handlers.get_tracker``, as
    4.x's did: a tracker patched in there gets the message, the registered one does not."""
    from unittest import mock

    registered = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": registered})}))
    patched = InMemoryBackend()
    other = Tracker({"bus": make_bus(tmp_path / "other", backends={"nested": patched})})
    with mock.patch("eventtracking.handlers.get_tracker", return_value=other):
        from_the_bus(tracking_log())
    assert [event["name"] for event in patched.snapshot()] == ["course.viewed"]
    assert registered.snapshot() == []


class Unprintable:
    """An object whose repr and str raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class BrokenZone(datetime.tzinfo):
    """A time zone whose offset raises."""

    def utcoffset(self, moment: datetime.datetime | None) -> datetime.timedelta:
        raise RuntimeError("no offset")

    def dst(self, moment: datetime.datetime | None) -> None:
        return None

    def __deepcopy__(self, memo: Any) -> BrokenZone:
        return self


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime.datetime.min.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
        datetime.datetime.max.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
        Unprintable(),
        WHEN.replace(tzinfo=BrokenZone()),
    ],
    ids=["before-year-1-in-utc", "after-9999-in-utc", "unprintable", "broken-zone"],
)
def test_a_timestamp_that_cannot_be_read_is_kept_as_it_came(timestamp: Any, tmp_path: Path) -> None:
    """An aware datetime that would leave the calendar in UTC, or a value whose repr
    fails, raises nothing into the consumer: the event is delivered with the timestamp
    as it came, as any timestamp that is not one is."""
    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    handlers.send_tracking_log_to_backends(
        None, tracking_log=tracking_log(timestamp=timestamp), from_event_bus=True
    )
    [event] = nested.snapshot()
    # The backend stores a copy: the same type, and the same time for a datetime.
    assert type(event["timestamp"]) is type(timestamp)
    if isinstance(timestamp, datetime.datetime):
        assert event["timestamp"].replace(tzinfo=None) == timestamp.replace(tzinfo=None)
        assert event["timestamp"].tzinfo is timestamp.tzinfo


class UnreadableLog:
    """A tracking log whose data raises when read, as a broken deserialiser's might."""

    name = "course.viewed"
    timestamp = WHEN
    context = "{}"

    @property
    def data(self) -> str:
        raise RuntimeError("the data cannot be read")


def test_a_tracking_log_whose_fields_raise_is_a_dead_letter(tmp_path: Path) -> None:
    """A tracking log whose attribute raises any exception cannot become an event: it is
    a counted dead letter holding the fields that could be read, and nothing raises into
    the consumer."""
    nested = InMemoryBackend()
    bus = make_bus(tmp_path, backends={"nested": nested})
    register_tracker(Tracker({"bus": bus}))
    before = handlers.stats()
    handlers.send_tracking_log_to_backends(None, tracking_log=UnreadableLog(), from_event_bus=True)
    assert nested.snapshot() == []
    assert counts_since(before) == {"received": 1, "malformed": 1}
    [letter] = Spool(tmp_path / "spool").dead_letters(f"{DEFAULT_STREAM}:received")
    assert "RuntimeError" in letter.reason
    kept = json.loads(letter.payload or b"")
    assert kept["name"] == "course.viewed"
    assert kept["data"] == "<unreadable: RuntimeError>"


def test_an_id_that_cannot_be_read_is_counted_and_the_message_delivered(
    tmp_path: Path,
) -> None:
    """A metadata id whose text cannot be read (its str raises) raises nothing into the
    consumer: the message is delivered without an id and the id is counted."""
    from types import SimpleNamespace

    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    before = handlers.stats()
    for _ in range(2):
        handlers.send_tracking_log_to_backends(
            None,
            tracking_log=tracking_log(),
            metadata=SimpleNamespace(id=Unprintable()),
            from_event_bus=True,
        )
    assert [event["name"] for event in nested.snapshot()] == ["course.viewed"] * 2
    assert counts_since(before) == {"received": 2, "unreadable_id": 2}


def test_a_dead_letter_with_a_surrogate_in_its_id_is_kept(tmp_path: Path) -> None:
    """A message that cannot become an event, under a forged id holding a lone
    surrogate, is kept in the spool with the id escaped, not dropped because the spool
    cannot store the id."""
    from types import SimpleNamespace

    bus = make_bus(tmp_path, backends={"nested": InMemoryBackend()})
    register_tracker(Tracker({"bus": bus}))
    handlers.send_tracking_log_to_backends(
        None,
        tracking_log=tracking_log(data="{not json"),
        metadata=SimpleNamespace(id="forged-\ud800"),
        from_event_bus=True,
    )
    assert bus.stats()["consumer"] == {
        "received": 0,
        "delivered": 0,
        "filtered": 0,
        "dead_lettered": 1,
    }
    [letter] = Spool(tmp_path / "spool").dead_letters(f"{DEFAULT_STREAM}:received")
    assert letter.detail == "forged-\\ud800"
    assert json.loads(letter.payload or b"")["id"] == "forged-\ud800"


def test_a_from_event_bus_flag_without_a_truth_value_is_ignored(tmp_path: Path) -> None:
    """A signal whose from_event_bus raises when tested for truth was not sent by a bus
    consumer (they set True): it is ignored and counted, and raises nothing."""

    class NoTruth:
        def __bool__(self) -> bool:
            raise RuntimeError("no truth value")

    nested = InMemoryBackend()
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    before = handlers.stats()
    handlers.send_tracking_log_to_backends(
        None, tracking_log=tracking_log(), from_event_bus=NoTruth()
    )
    assert nested.snapshot() == []
    assert counts_since(before) == {"ignored_local": 1}


def test_huge_ids_are_remembered_in_little_memory(tmp_path: Path) -> None:
    """Ids of any length (a writer on the bus chooses them) are remembered in a few
    dozen bytes each: delivering 100 messages under distinct 100,000-character ids
    keeps less than 1 MB, and a copy under such an id is still skipped."""
    import gc
    import tracemalloc
    from types import SimpleNamespace

    nested = InMemoryBackend(max_events=1)
    register_tracker(Tracker({"bus": make_bus(tmp_path, backends={"nested": nested})}))
    log = tracking_log()

    def huge_id(index: int) -> str:
        # Made anew for each message, as a consumer decodes each one's id.
        return f"{index:06d}" + "x" * 100_000

    before = handlers.stats()
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for index in range(100):
            handlers.send_tracking_log_to_backends(
                None,
                tracking_log=log,
                metadata=SimpleNamespace(id=huge_id(index)),
                from_event_bus=True,
            )
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, f"{kept} bytes kept for 100 ids"
    handlers.send_tracking_log_to_backends(
        None, tracking_log=log, metadata=SimpleNamespace(id=huge_id(0)), from_event_bus=True
    )
    assert counts_since(before) == {"received": 101, "duplicates": 1}
