"""Tests for eventtracking.backends.celery._wire: the codec events use across brokers."""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import multiprocessing
import time
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventtracking._contextstack import FrozenContext
from eventtracking._util import timestamps
from eventtracking._util.timestamps import parse_timestamp
from eventtracking.backends.celery import _wire
from eventtracking.backends.celery._backend import _entry_of
from eventtracking.backends.celery._wire import (
    MalformedEntry,
    current_event_id,
    decode_entry,
    decode_event,
    delivering,
    encode_entry,
    encode_event,
    event_id_from,
    is_event_id,
    new_entry,
    new_event_id,
)

UTC = datetime.timezone.utc
STAMP = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def event(**data: Any) -> dict[str, Any]:
    return {"name": "test.event", "timestamp": STAMP, "context": {"user_id": 7}, "data": data}


def test_an_event_round_trips_with_its_four_keys_and_an_aware_timestamp() -> None:
    """Decoding gives the same four keys, and the timestamp is the same aware datetime."""
    original = event(url="/courses", count=3, ok=True, nothing=None)
    decoded = decode_event(encode_event(original))
    assert decoded == original
    assert list(decoded) == ["name", "timestamp", "context", "data"]
    assert decoded["timestamp"].tzinfo is UTC


def test_a_shared_frozen_context_encodes_like_a_plain_dict() -> None:
    """The context the tracker shares between events encodes as its plain-dict form."""
    original = event()
    shared = {**original, "context": FrozenContext({"user_id": 7, "org": "X"})}
    assert json.loads(encode_event(shared))["context"] == {"user_id": 7, "org": "X"}


def test_values_json_cannot_carry_are_encoded_as_the_logger_encodes_them() -> None:
    """Sets, Decimals, UUIDs, dates and bytes arrive in the logger's form, never lost."""
    token = uuid.UUID("12345678-1234-5678-1234-567812345678")
    original = event(
        tags={"b", "a"},
        price=decimal.Decimal("1.10"),
        id=token,
        day=datetime.date(2024, 5, 6),
        raw=b"\xff\x00",
        nan=float("nan"),
        obj=object(),
    )
    data = decode_event(encode_event(original))["data"]
    assert data["tags"] == ["a", "b"]
    assert data["price"] == "1.10"
    assert data["id"] == str(token)
    assert data["day"] == "2024-05-06"
    assert data["raw"].startswith("base64:")
    assert data["nan"] == "NaN"
    assert data["obj"].startswith("<object object at")


def test_a_naive_timestamp_is_taken_as_utc() -> None:
    """A naive timestamp arrives as the same wall time in UTC, timezone-aware."""
    naive = datetime.datetime(2024, 1, 2, 3, 4, 5)
    decoded = decode_event(encode_event({**event(), "timestamp": naive}))
    assert decoded["timestamp"] == naive.replace(tzinfo=UTC)


def test_a_timestamp_in_another_zone_arrives_in_utc() -> None:
    """An aware timestamp in another zone arrives as the same instant in UTC."""
    zone = datetime.timezone(datetime.timedelta(hours=2))
    local = datetime.datetime(2024, 1, 2, 5, 4, 5, tzinfo=zone)
    decoded = decode_event(encode_event({**event(), "timestamp": local}))
    assert decoded["timestamp"] == local
    assert decoded["timestamp"].utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T03:04:05.678901+00:00",  # this codec
        "2024-01-02T03:04:05.678901Z",  # kombu <= 5.2
        "2024-01-02T03:04:05.678901+0000",  # %z, as 4.x's event bus writes
        "2024-01-02 03:04:05.678901+00:00",
    ],
)
def test_timestamp_strings_from_every_known_writer_parse_to_the_same_datetime(text: str) -> None:
    """Every ISO form that brokers and 4.x produced becomes the same aware datetime."""
    assert parse_timestamp(text) == STAMP
    assert parse_timestamp(text).tzinfo is UTC


@pytest.mark.parametrize("value", ["not a date", "", 12, None, {"x": 1}])
def test_values_that_are_not_timestamps_are_kept_unchanged(value: Any) -> None:
    """A timestamp that names no time is kept as it is, not dropped, by decode_event and
    decode_entry; the parser itself says so with a ValueError."""
    text = json.dumps({"name": "x", "timestamp": value, "context": {}, "data": {}})
    assert decode_event(text)["timestamp"] == value
    assert decode_entry(encode_entry(new_event_id(), text)).event["timestamp"] == value
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(value)


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime.max.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
        datetime.datetime.min.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
    ],
    ids=["after-9999-in-utc", "before-year-1-in-utc"],
)
def test_a_timestamp_outside_the_calendar_in_utc_is_kept_unchanged(value: Any) -> None:
    """decode_event, given an event whose aware timestamp leaves the calendar in UTC,
    keeps it as it came instead of raising."""
    assert decode_event({"name": "x", "timestamp": value})["timestamp"] is value


def test_event_ids_are_unique_hex_in_the_objectid_layout() -> None:
    """Ids are 24 hex digits, distinct, and start with the current time in seconds."""
    ids = {new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(is_event_id(i) for i in ids)
    seconds = int(next(iter(ids))[:8], 16)
    assert abs(seconds - time.time()) < 120


def _child_ids(queue: Any) -> None:
    queue.put([new_event_id() for _ in range(100)])


def test_a_forked_child_makes_ids_that_never_collide_with_the_parents() -> None:
    """After fork the child draws random bytes of its own, so its ids differ."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    before = new_event_id()
    child = context.Process(target=_child_ids, args=(queue,))
    child.start()
    theirs = queue.get(timeout=30)
    child.join(30)
    ours = [new_event_id() for _ in range(100)]
    assert is_event_id(before)
    # Both drew from the block of random bytes the parent held at the fork, unless
    # the child threw its copy away.
    assert not set(theirs) & set(ours)


def test_one_observed_id_does_not_predict_the_next() -> None:
    """Every id ends in 5 random bytes of its own: no two share them, none is the one
    before plus one, and the middle digits are no fixed per-process value, so an id
    seen on a broker gives no later id away."""
    ids = [new_event_id() for _ in range(2_000)]
    assert len({event_id[14:] for event_id in ids}) == len(ids)
    assert len({event_id[8:18] for event_id in ids}) == len(ids)
    successors = sum(
        int(later[8:], 16) == int(earlier[8:], 16) + 1 for earlier, later in itertools.pairwise(ids)
    )
    assert successors == 0
    same_tail = sum(later[14:] == earlier[14:] for earlier, later in itertools.pairwise(ids))
    assert same_tail == 0


def test_ids_of_one_process_keep_the_order_they_were_made_in() -> None:
    """After the seconds comes a counter, so ids made one after the other sort in that
    order within a second, as ObjectIds do (wrapping at 2**24)."""
    ids = [new_event_id() for _ in range(2_000)]
    steps = {(int(b[8:14], 16) - int(a[8:14], 16)) % 2**24 for a, b in itertools.pairwise(ids)}
    assert steps == {1}


def test_an_id_derived_from_a_seed_is_stable_and_carries_the_event_time() -> None:
    """The same seed gives the same id; its first digits are the event's seconds."""
    first = event_id_from("task-1", STAMP)
    assert first == event_id_from("task-1", STAMP)
    assert first != event_id_from("task-2", STAMP)
    assert is_event_id(first)
    assert int(first[:8], 16) == int(STAMP.timestamp())


def test_an_entry_carries_the_id_beside_the_event_and_round_trips() -> None:
    """The id, leaves and attempt travel in the envelope; the event keeps its keys."""
    event_id = new_event_id()
    text = encode_entry(
        event_id, encode_event(event(a=1)), leaves=[["xapi"], ["b", "c"]], attempt=2
    )
    entry = decode_entry(text)
    assert entry.id == event_id
    assert entry.event == event(a=1)
    assert entry.leaves == (("xapi",), ("b", "c"))
    assert entry.attempt == 2
    assert decode_entry(text.encode()).id == event_id


def test_a_plain_entry_has_no_leaves_and_attempt_zero() -> None:
    """Without leaves or attempt, an entry means every backend, first try."""
    entry = decode_entry(encode_entry(new_event_id(), encode_event(event())))
    assert entry.leaves is None
    assert entry.attempt == 0


def test_a_new_entry_is_the_plain_entry_of_a_new_id() -> None:
    """new_entry writes what encode_entry writes for a fresh id: the event, no leaves,
    first try, and an id of its own each time."""
    first, second = (new_entry(encode_event(event(a=1))) for _ in range(2))
    entries = [decode_entry(first), decode_entry(second)]
    assert [entry.event for entry in entries] == [event(a=1)] * 2
    assert first == encode_entry(entries[0].id, encode_event(event(a=1)))
    assert entries[0].id != entries[1].id
    assert all(is_event_id(entry.id) for entry in entries)


def test_encoding_refuses_an_id_that_is_not_24_hex_digits() -> None:
    """A bad id is a ValueError that names it, never written into the JSON."""
    with pytest.raises(ValueError, match="'abc\"'"):
        encode_entry('abc"', encode_event(event()))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"event": {}}', "id"),
        ('{"id": "zz", "event": {}}', "id"),
        ('{"id": "0123456789abcdef01234567"}', "event"),
        ('{"id": "0123456789abcdef01234567", "event": [1]}', "event"),
        ('{"id": "0123456789abcdef01234567", "event": {}, "leaves": "x"}', "leaves"),
        ('{"id": "0123456789abcdef01234567", "event": {}, "attempt": -1}', "attempt"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_a_malformed_entry_raises_malformed_entry_saying_why(text: str, why: str) -> None:
    """Whatever is wrong with an entry, the error is MalformedEntry and names the part."""
    with pytest.raises(MalformedEntry, match=why):
        decode_entry(text)


def test_the_current_event_id_is_set_only_inside_delivering() -> None:
    """delivering() sets the id for its block and restores the previous value."""
    assert current_event_id.get() is None
    with delivering("0123456789abcdef01234567"):
        assert current_event_id.get() == "0123456789abcdef01234567"
        with delivering(None):
            assert current_event_id.get() is None
        assert current_event_id.get() == "0123456789abcdef01234567"
    assert current_event_id.get() is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(data=st.dictionaries(st.text(), json_values, max_size=5))
def test_any_json_data_round_trips_through_an_entry(data: dict[str, Any]) -> None:
    """Data made of JSON values comes back equal, whatever it holds."""
    original = {**event(), "data": data}
    entry = decode_entry(encode_entry(new_event_id(), encode_event(original)))
    assert entry.event == original


def test_module_exports_what_it_documents() -> None:
    """Every name in __all__ exists."""
    for name in _wire.__all__:
        assert hasattr(_wire, name), name


# -- the worker's fast paths give what the general paths give ---------------------------


def _same(left: Any, right: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0), NaN equal to NaN."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, float) and left != left:
        return right != right
    if isinstance(left, float):
        return left == right and str(left) == str(right)  # -0.0 is not 0.0
    return bool(left == right)


def _outcome(function: Any, source: Any) -> tuple[str, Any]:
    try:
        return "value", function(source)
    except (ValueError, RecursionError, TypeError) as exc:
        return "error", type(exc)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
_JSON_TEXTS = (
    _VALUES.map(json.dumps)
    | _VALUES.map(lambda value: json.dumps(value, ensure_ascii=False))
    | st.text()
    | st.sampled_from(
        [
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "[1e400, -1e400, 1e-400]",
            "NaN",
            "[Infinity, -Infinity]",
            '"\\ud800"',
            '"\ud800"',
            '{"a": 1, "a": 2}',
            "-0",
            "-0.0",
            "1E+2",
            '"\x01"',
            "\ufeff{}",
            " [1, 2] ",
            "[" * 2000 + "]" * 2000,
            '{"id": 12345678901234567890123}',
        ]
    )
)


@given(_JSON_TEXTS)
def test_entries_are_read_as_the_standard_library_reads_them(text: str) -> None:
    """With or without orjson, entry text reads to exactly what json.loads gives (the
    same types, big ints exact, NaN and Infinity, lone surrogates), or fails likewise."""
    fast, general = _outcome(_wire._loads, text), _outcome(json.loads, text)
    assert fast[0] == general[0]
    if fast[0] == "error":
        # Whether json.loads gives up on deep nesting with RecursionError or reaches a
        # JSONDecodeError first depends on how deep the caller's stack already is (the
        # fast path adds frames), not only on the text; the wire reads both as a
        # malformed entry. A TypeError must stay a TypeError.
        unreadable = {ValueError, json.JSONDecodeError, RecursionError}
        assert fast[1] is general[1] or {fast[1], general[1]} <= unreadable
    else:
        assert _same(fast[1], general[1])


@given(_VALUES)
def test_an_entry_decodes_to_the_event_decode_event_gives(data: Any) -> None:
    """decode_entry gives the event decode_event gives for the same text, whatever it
    holds (big ints, NaN, odd strings), with the timestamp an aware UTC datetime."""
    original = event(value=data)
    event_json = encode_event(original)
    entry = decode_entry(encode_entry(new_event_id(), event_json))
    assert _same({**entry.event, "timestamp": 0}, {**decode_event(event_json), "timestamp": 0})
    assert entry.event["timestamp"] == STAMP
    assert entry.event["timestamp"].tzinfo is UTC


_STAMPS = st.builds(
    lambda moment, offset, form: form(moment.replace(tzinfo=offset)),
    st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)),
    st.sampled_from(
        [
            None,
            UTC,
            datetime.timezone(datetime.timedelta(0)),
            datetime.timezone(datetime.timedelta(hours=-5, minutes=-30)),
        ]
    ),
    st.sampled_from(
        [
            lambda stamp: stamp.isoformat(),
            lambda stamp: stamp.isoformat(sep=" "),
            lambda stamp: stamp.isoformat(timespec="milliseconds"),
            lambda stamp: stamp.isoformat().replace("+00:00", "Z"),
            lambda stamp: stamp.isoformat().replace("+00:00", "z"),
            lambda stamp: stamp.isoformat().replace("+00:00", "+0000"),
            lambda stamp: f" {stamp.isoformat()}\n",
            lambda stamp: stamp.strftime("%Y-%m-%dT%H:%M:%S.%f%z"),
            lambda stamp: stamp.isoformat()[:10],
            lambda stamp: stamp.isoformat() + "0",
        ]
    ),
)


@given(_STAMPS | st.text(max_size=70) | st.datetimes() | st.integers())
def test_the_fast_timestamp_path_gives_what_the_general_path_gives(value: Any) -> None:
    """parse_timestamp's fromisoformat shortcut returns, for any value, the same result
    (equal, same type, UTC tzinfo), or the same error, as the general path that handles
    every form."""
    fast, general = _parsed(parse_timestamp, value), _parsed(timestamps._parse, value)
    assert type(fast) is type(general)
    assert fast == general
    if isinstance(fast, datetime.datetime):
        assert fast.tzinfo is general.tzinfo is UTC


def _parsed(parse: Any, value: Any) -> Any:
    """What ``parse`` returns for ``value``, or the ValueError's text."""
    try:
        return parse(value)
    except ValueError as exc:
        return str(exc)


def test_a_timestamp_as_the_web_side_writes_it_reads_back_the_same() -> None:
    """The form encode_event writes reads back as the same aware UTC datetime."""
    stamp = json.loads(encode_event(event()))["timestamp"]
    assert parse_timestamp(stamp) == STAMP
    assert parse_timestamp(stamp).tzinfo is UTC


@given(_VALUES)
def test_an_entry_the_web_side_writes_reads_as_the_standard_library_reads_it(data: Any) -> None:
    """Whatever an event holds (ints over 64 bits, NaN, odd strings), the entry the web
    side writes for it reads on the worker to what json.loads gives: an entry that
    promises no integer beyond 64 bits (``int64``), which the worker reads with orjson
    alone, is written only for events that keep it."""
    text = _entry_of(event(value=data))
    fields = _wire.read_entry(text)
    expected = decode_event(json.loads(text)["event"])
    assert _same(fields[1], expected)
    assert fields[4] == {}
    assert text.endswith(', "int64": true}') is (_wire._orjson is not None and _fits_64_bits(data))


def _fits_64_bits(value: Any) -> bool:
    """Whether no int in ``value`` is beyond what orjson writes (64 bits), and no float
    is NaN or infinite (which orjson writes as null)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, dict):
        return all(map(_fits_64_bits, value.values()))
    return all(map(_fits_64_bits, value))


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1, 10**30])
def test_a_promise_of_64_bit_integers_is_the_writers_to_keep(big: int) -> None:
    """An entry that promises no integer beyond 64 bits is read by orjson alone: a
    writer that breaks the promise has its own big integer read as a float (what orjson
    gives), while the same entry without the promise reads it exactly."""
    body = f'{{"id": "{new_event_id()}", "event": {{"name": "n", "data": {{"n": {big}}}}}'
    kept = _wire.read_entry(body + "}")
    assert kept[1]["data"]["n"] == big
    assert type(kept[1]["data"]["n"]) is int
    broken = _wire.read_entry(body + ', "int64": true}')
    assert broken[4] == {}
    if _wire._orjson is not None:
        assert broken[1]["data"]["n"] == float(big)
        assert type(broken[1]["data"]["n"]) is float


@pytest.mark.parametrize("value", ["false", "1", '"true"', "null", "[]"])
def test_an_int64_field_other_than_true_makes_the_entry_malformed(value: str) -> None:
    text = f'{{"id": "{new_event_id()}", "event": {{"name": "n"}}, "int64": {value}}}'
    with pytest.raises(_wire.MalformedEntry, match="int64 must be true"):
        _wire.read_entry(text)


@given(_VALUES, st.booleans())
def test_read_entry_gives_the_fields_of_decode_entry(data: Any, retried: bool) -> None:
    """read_entry (the worker's) and decode_entry give the same id, event, leaves,
    attempt and extra fields, for a first try and for a retry."""
    text = encode_entry(
        new_event_id(),
        encode_event(event(value=data)),
        leaves=[["a", "b"]] if retried else None,
        attempt=2 if retried else 0,
    )
    entry = decode_entry(text)
    fields = _wire.read_entry(text)
    assert _same(tuple(entry), fields)
    assert fields[2] == ((("a", "b"),) if retried else None)
    assert fields[3] == (2 if retried else 0)


def test_int64_is_written_for_a_first_try_only() -> None:
    """The promise ends the entry, where the publisher looks for an attempt count: it
    reads none there, and an entry with leaves or an attempt cannot carry it."""
    from eventtracking.backends.celery._sink import peek_attempt

    text = encode_entry(new_event_id(), encode_event(event()), int64=True)
    assert json.loads(text)["int64"] is True
    assert peek_attempt(text) == 0
    for retry in ({"attempt": 1}, {"leaves": [["a"]]}):
        with pytest.raises(ValueError, match="int64 is for a first try"):
            encode_entry(new_event_id(), encode_event(event()), int64=True, **retry)
