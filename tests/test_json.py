"""Tests for eventtracking._json: the serialisation rules every JSON-writing backend shares."""

from __future__ import annotations

import decimal
import enum
import json
import math
import tracemalloc
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventtracking import _json
from eventtracking._contextstack import FrozenContext
from eventtracking._json import (
    JSON_STATS,
    MAX_DEPTH,
    EventEncoder,
    clean,
    dumps,
    encode_known,
    safe_repr,
    utc_isoformat,
)
from eventtracking._orjson import HAVE_ORJSON, OrjsonEventEncoder, dumps_compact
from eventtracking._util.ratelimit import RateLimitedLogger


def loads_strict(text: str) -> Any:
    def reject(name: str) -> Any:
        msg = f"non-standard JSON constant {name}"
        raise ValueError(msg)

    return json.loads(text, parse_constant=reject)


@pytest.fixture(autouse=True)
def _fresh_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first repr-fallback warning of every type."""
    monkeypatch.setattr(_json, "_RATE_LIMITED", RateLimitedLogger(_json.LOG))


class NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_encode_known_raises_type_error_for_unknown_objects() -> None:
    """encode_known() refuses unknown objects with TypeError, as json's default() must."""
    with pytest.raises(TypeError, match="object"):
        encode_known(object())


def test_safe_repr_never_raises() -> None:
    """safe_repr() gives the repr, or a placeholder naming the type when repr raises."""
    assert safe_repr([1]) == "[1]"
    assert safe_repr(NoRepr()) == "<unrepresentable NoRepr>"


PLAIN = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=PLAIN)
def test_dumps_of_plain_json_matches_the_standard_library(value: Any) -> None:
    """For data JSON already supports, dumps() writes exactly what json.dumps writes."""
    assert dumps(value) == json.dumps(value)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)


@settings(max_examples=150, deadline=None)
@given(
    name=st.one_of(st.text(max_size=8), st.none(), st.integers()),
    context=st.dictionaries(
        st.one_of(st.text(max_size=4), st.integers(-5, 5), st.none(), st.floats(), st.tuples()),
        st.one_of(SCALARS, PLAIN, st.integers(4400, 4401).map(lambda digits: 10**digits)),
        max_size=4,
    ),
    data=st.one_of(PLAIN, st.dictionaries(st.text(max_size=3), SCALARS, max_size=3)),
    aware=st.booleans(),
)
def test_event_encoder_matches_dumps(
    name: Any, context: dict[str, Any], data: Any, aware: bool
) -> None:
    """EventEncoder, which reuses a shared context's JSON, writes the same string as dumps()
    for every event, however often the context is reused."""
    frozen = FrozenContext(context)
    stamp = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc if aware else None)
    encoder = EventEncoder()
    for index in range(2):
        event = {"name": name, "timestamp": stamp, "context": frozen, "data": [data, index]}
        line = encoder.encode(event)
        assert line == dumps(event)
        loads_strict(line)


class Level(enum.IntEnum):
    LOW = 1


class Text(str):
    pass


CONTEXT_VALUES = {
    "aware": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    "naive": datetime(2024, 5, 6, 7, 8, 9),
    "date": datetime(2024, 5, 6).date(),
    "time": datetime(2024, 5, 6, 7, 8, 9).time(),
    "delta": datetime(2024, 5, 7) - datetime(2024, 5, 6),
    "decimal": decimal.Decimal("1.10"),
    "uuid": uuid.UUID(int=7),
    "bytes": b"caf\xc3\xa9",
    "binary": b"\xff\x00",
    "frozenset": frozenset({"b", "a"}),
    "nan": math.nan,
    "complex": 1j,
    "enum": Level.LOW,
    "str_subclass": Text("x"),
    "list": [1, 2],
}


@pytest.mark.parametrize("key", sorted(CONTEXT_VALUES))
def test_a_shared_context_of_any_value_is_written_as_dumps_writes_it(key: str) -> None:
    """Whatever a shared context holds (dates, decimals, bytes, sets, NaN, values with no
    JSON form, subclasses, mutable lists), the encoders write, event after event, the
    line the uncached path writes: dumps() for EventEncoder, dumps_compact() for
    OrjsonEventEncoder."""
    context = FrozenContext({"user": "u", key: CONTEXT_VALUES[key]})
    encoders: list[tuple[Any, Any]] = [(EventEncoder(), dumps)]
    if HAVE_ORJSON:
        encoders.append((OrjsonEventEncoder(), dumps_compact))
    for encoder, uncached in encoders:
        for index in range(3):
            event = {
                "name": "n",
                "timestamp": datetime(2024, 5, 6, tzinfo=timezone.utc),
                "context": context,
                "data": {"i": index},
            }
            assert encoder.encode(event) == uncached(event)


def test_event_encoder_falls_back_for_other_shapes() -> None:
    """Events that are not the plain four-key dict go through dumps() unchanged."""
    encoder = EventEncoder()
    odd = {"data": 1, "name": "x", "timestamp": None, "context": FrozenContext()}
    assert encoder.encode(odd) == dumps(odd)
    assert encoder.encode([1, 2]) == "[1, 2]"


def test_dumps_nonfinite_floats_become_strings() -> None:
    """NaN and infinities are written as the strings "NaN", "Infinity" and "-Infinity"."""
    text = dumps([math.nan, math.inf, -math.inf, 1.5])
    assert loads_strict(text) == ["NaN", "Infinity", "-Infinity", 1.5]


def test_dumps_counts_events_that_needed_cleaning() -> None:
    """Only data that trips the fast encoder is counted as cleaned."""
    before = JSON_STATS.get("cleaned")
    dumps({"fine": [1, "a"]})
    assert JSON_STATS.get("cleaned") == before
    dumps({"nan": math.nan})
    assert JSON_STATS.get("cleaned") == before + 1


def test_clean_cuts_nesting_at_max_depth() -> None:
    """Containers nested deeper than MAX_DEPTH are replaced by "<too deep>"."""
    value: Any = []
    for _ in range(MAX_DEPTH + 5):
        value = [value]
    cleaned = clean(value)
    depth = 0
    while isinstance(cleaned, list):
        cleaned = cleaned[0]
        depth += 1
    assert cleaned == "<too deep>"
    assert depth == MAX_DEPTH


def test_clean_marks_cycles() -> None:
    """A container that contains itself is written as "<cycle>" at the point it repeats."""
    loop: list[Any] = []
    loop.append({"again": loop})
    assert clean(loop) == [{"again": "<cycle>"}]


@pytest.mark.parametrize("encode", [dumps, EventEncoder().encode])
def test_a_cycle_is_found_before_its_data_is_encoded_a_thousand_times(
    encode: Any,
) -> None:
    """A cyclic event holding a 1 MB string is written with "<cycle>" markers, without
    encoding the string once per level down to the recursion limit (about 1 GB and
    seconds, found by tests/test_fuzz_emit.py)."""
    data: dict[str, Any] = {"text": "x" * 1_000_000}
    for number in range(3):
        data[f"cycle{number}"] = data
    event = {"name": "n", "timestamp": None, "context": FrozenContext(), "data": data}
    tracemalloc.start()
    try:
        line = encode(event)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    written = loads_strict(line)["data"]
    assert written == {
        "text": "x" * 1_000_000,
        "cycle0": "<cycle>",
        "cycle1": "<cycle>",
        "cycle2": "<cycle>",
    }
    # The line itself, the cleaned copy and a few buffers: a handful of megabytes.
    assert peak < 50_000_000, f"peak {peak / 1e6:.0f} MB"
    # Once found, the encoder still works for the next event on this thread.
    assert loads_strict(encode({"name": "m", "timestamp": None, "context": {}, "data": {}}))


def test_clean_keys() -> None:
    """Keys json accepts are kept; non-finite floats become str(); others their repr."""
    cleaned = clean({1: "a", math.inf: "b", frozenset(): "c", NoRepr(): "d"})
    assert cleaned == {1: "a", "inf": "b", "frozenset()": "c", "<unrepresentable NoRepr>": "d"}


def test_huge_int_is_written_exactly_in_hex() -> None:
    """An int too long for decimal conversion is written as its exact hex string."""
    value = 7**10_000
    assert loads_strict(dumps({"n": value})) == {"n": hex(value)}
    assert int(loads_strict(dumps(value)), 16) == value


def test_int_below_the_digit_limit_stays_a_number() -> None:
    """Long ints that Python can still write in decimal stay JSON numbers."""
    value = 10**1000
    assert loads_strict(dumps({"n": value, "x": math.nan})) == {"n": value, "x": "NaN"}


def test_set_items_whose_comparison_raises() -> None:
    """A set whose items cannot be compared (even with a non-TypeError) is still written."""

    class Grumpy:
        def __lt__(self, other: object) -> bool:
            raise RuntimeError("no ordering")

        def __repr__(self) -> str:
            return "Grumpy()"

    assert loads_strict(dumps({Grumpy(), Grumpy()})) == ["Grumpy()", "Grumpy()"]


def test_failing_fspath_falls_back_to_repr() -> None:
    """A path-like whose __fspath__ raises is written as its repr, not lost."""

    class BadPath:
        def __fspath__(self) -> str:
            raise OSError("unmounted")

        def __repr__(self) -> str:
            return "BadPath()"

    assert loads_strict(dumps({"p": BadPath()})) == {"p": "BadPath()"}


def test_enum_with_unserialisable_value_is_cleaned() -> None:
    """What a known type is converted to is itself cleaned (an enum whose value is NaN)."""

    class Odd(enum.Enum):
        NAN = math.nan

    assert loads_strict(dumps([Odd.NAN])) == ["NaN"]


ODD = st.recursive(
    st.one_of(
        SCALARS,
        st.integers(2**62, 2**80),
        st.datetimes(timezones=st.none() | st.just(timezone.utc)),
        st.dates(),
        st.decimals(allow_nan=False),
        st.sets(st.integers(-3, 3), max_size=3),
        st.binary(max_size=4),
        st.text(alphabet="aé\u2028\x00\x7f", max_size=4),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children),
        st.dictionaries(
            st.one_of(st.text(max_size=3), st.integers(-3, 3), st.booleans(), st.none()),
            children,
            max_size=3,
        ),
    ),
    max_leaves=15,
)


@pytest.mark.skipif(not HAVE_ORJSON, reason="orjson is not installed (the [fast] extra)")
@settings(max_examples=200, deadline=None)
@given(
    name=st.one_of(st.text(max_size=5), st.integers()),
    context=st.dictionaries(st.text(max_size=3), SCALARS, max_size=3),
    data=ODD,
)
def test_orjson_encoder_writes_the_values_the_stdlib_encoder_writes(
    name: Any, context: dict[str, Any], data: Any
) -> None:
    """Whatever the event holds (NaN, ints over 64 bits, keys that are not strings,
    dates, decimals, sets, bytes, control and non-ASCII characters), the orjson line
    parses to exactly what the standard library line parses to, and is valid JSON."""
    event = {
        "name": name,
        "timestamp": datetime(2024, 5, 6, tzinfo=timezone.utc),
        "context": FrozenContext(context),
        "data": data,
    }
    fast = OrjsonEventEncoder().encode(event)
    assert loads_strict(fast) == loads_strict(EventEncoder().encode(event))
    assert loads_strict(dumps_compact(data)) == loads_strict(dumps(data))


@pytest.mark.skipif(not HAVE_ORJSON, reason="orjson is not installed (the [fast] extra)")
@settings(max_examples=200, deadline=None)
@given(
    name=st.text(alphabet="an\udc80\u2028", max_size=5),
    context=st.dictionaries(st.text(alphabet="nul", max_size=4), SCALARS, max_size=3),
    data=ODD,
)
def test_orjson_encoder_writes_the_line_dumps_compact_writes(
    name: str, context: dict[str, Any], data: Any
) -> None:
    """The encoder's one-call line for a shared context is the line dumps_compact() writes
    for the same event, event after event, whatever the name (a lone surrogate), the
    context (nulls, NaN) and the data hold; with orjson_only it is that line or None."""
    frozen = FrozenContext(context)
    encoder = OrjsonEventEncoder()
    for index in range(2):
        event = {
            "name": name,
            "timestamp": datetime(2024, 5, 6, 7, 8, 9, index, tzinfo=timezone.utc),
            "context": frozen,
            "data": data,
        }
        line = encoder.encode(event)
        assert line == dumps_compact(event)
        assert encoder.encode(event, orjson_only=True) in (line, None)


@settings(max_examples=200, deadline=None)
@given(
    stamps=st.lists(
        st.datetimes(timezones=st.just(timezone.utc)).flatmap(
            # The same second again, with other microseconds (0 among them).
            lambda stamp: st.lists(
                st.integers(0, 999_999).map(lambda micro: stamp.replace(microsecond=micro)),
                max_size=3,
            ).map(lambda again: [stamp, *again])
        ),
        min_size=1,
        max_size=4,
    )
)
def test_utc_isoformat_is_isoformat(stamps: list[list[datetime]]) -> None:
    """utc_isoformat() writes what isoformat() writes for any UTC datetime (years
    before 1000, no microseconds), whichever second it wrote last."""
    for stamp in (stamp for group in stamps for stamp in group):
        assert utc_isoformat(stamp) == stamp.isoformat()
