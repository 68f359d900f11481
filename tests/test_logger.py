"""Tests for eventtracking.backends.logger: one strict JSON line per event, whatever it holds."""

from __future__ import annotations

import enum
import itertools
import json
import logging
import math
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import UUID

import pytest
import pytz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventtracking import _copy, _json
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking.backends import logger as logger_module
from eventtracking.backends.logger import (
    MAX_EVENT_SIZE,
    OVERSIZED_KEY,
    DateTimeJSONEncoder,
    LoggerBackend,
)
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.tracker import Tracker

BACKEND_LOG = "eventtracking.backends.logger"
_logger_ids = itertools.count()


@pytest.fixture(autouse=True, params=["stdlib", "orjson"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with each encoder that encoder="auto" may choose."""
    if request.param == "orjson" and not logger_module.HAVE_ORJSON:
        pytest.skip("orjson is not installed: pip install 'event-tracking[fast]'")
    monkeypatch.setattr(logger_module, "HAVE_ORJSON", request.param == "orjson")
    return str(request.param)


def reject_constant(name: str) -> Any:
    """parse_constant hook: NaN and Infinity are not JSON, so a strict reader refuses them."""
    msg = f"non-standard JSON constant {name}"
    raise ValueError(msg)


def loads_strict(line: str) -> Any:
    return json.loads(line, parse_constant=reject_constant)


class Lines(logging.Handler):
    """Collects the records of one dedicated logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def lines(self) -> list[str]:
        return [record.getMessage() for record in self.records]


def dedicated_logger(level: int = logging.DEBUG) -> tuple[str, Lines]:
    """A fresh logger that does not propagate, with a collecting handler."""
    name = f"tests.logger.events{next(_logger_ids)}"
    logger = logging.getLogger(name)
    handler = Lines()
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(level)
    return name, handler


@pytest.fixture
def lines() -> Lines:
    """The handler of a dedicated logger; ``lines.logger_name`` is its name."""
    name, handler = dedicated_logger()
    handler.logger_name = name  # type: ignore[attr-defined]
    return handler


@pytest.fixture
def fresh_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reset the process-wide rate-limited warnings of the JSON and copy helpers."""
    monkeypatch.setattr(_json, "_RATE_LIMITED", RateLimitedLogger(_json.LOG))
    monkeypatch.setattr(_copy, "_RATE_LIMITED", RateLimitedLogger(_copy.LOG))


def emit_one(lines: Lines, data: Any, name: str = "test.event", **options: Any) -> Any:
    """Emit one event through a LoggerBackend and return its parsed JSON line."""
    options.setdefault("max_event_size", None)
    backend = LoggerBackend(name=lines.logger_name, **options)  # type: ignore[attr-defined]
    Tracker({"log": backend}).emit(name, data)
    assert len(lines.lines) == 1
    return loads_strict(lines.lines[0])


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


EASTERN = pytz.timezone("US/Eastern")
PLUS_TWO = timezone(timedelta(hours=2))
SAMPLE_UUID = UUID("12345678-1234-5678-1234-567812345678")

SUPPORTED = [
    pytest.param(datetime(2020, 1, 2, 3, 4, 5), "2020-01-02T03:04:05+00:00", id="naive"),
    pytest.param(
        datetime(2020, 1, 2, 3, 4, 5, 600, tzinfo=timezone.utc),
        "2020-01-02T03:04:05.000600+00:00",
        id="aware-utc",
    ),
    pytest.param(
        datetime(2020, 1, 2, 5, 4, 5, tzinfo=PLUS_TWO), "2020-01-02T03:04:05+00:00", id="plus2"
    ),
    pytest.param(
        EASTERN.localize(datetime(2020, 1, 1, 22, 0)), "2020-01-02T03:00:00+00:00", id="pytz"
    ),
    pytest.param(date(2020, 1, 2), "2020-01-02", id="date"),
    pytest.param(time(3, 4, 5), "03:04:05", id="time"),
    pytest.param(timedelta(minutes=1, seconds=30, microseconds=500000), 90.5, id="timedelta"),
    pytest.param(Decimal("1.10"), "1.10", id="decimal"),
    pytest.param(
        Decimal("0.1000000000000000000000000001"),
        "0.1000000000000000000000000001",
        id="decimal-precise",
    ),
    pytest.param(Decimal("1E+3"), "1E+3", id="decimal-exp"),
    pytest.param(SAMPLE_UUID, "12345678-1234-5678-1234-567812345678", id="uuid"),
    pytest.param({3, 1, 2}, [1, 2, 3], id="set"),
    pytest.param(frozenset({"b", "a"}), ["a", "b"], id="frozenset"),
    pytest.param(b"hello", "hello", id="bytes-utf8"),
    pytest.param("é".encode(), "é", id="bytes-utf8-multibyte"),
    pytest.param(b"\xff\xfe", "base64://4=", id="bytes-binary"),
    pytest.param(bytearray(b"abc"), "abc", id="bytearray"),
    pytest.param(Color.RED, "red", id="enum"),
    pytest.param(Level.HIGH, 3, id="intenum"),
    pytest.param(PurePosixPath("/var/log/x"), "/var/log/x", id="path"),
    pytest.param((1, "a"), [1, "a"], id="tuple"),
    pytest.param(float("nan"), "NaN", id="nan"),
    pytest.param(float("inf"), "Infinity", id="inf"),
    pytest.param(-math.inf, "-Infinity", id="-inf"),
    pytest.param(10**5000, hex(10**5000), id="huge-int"),
    pytest.param(None, None, id="none"),
    pytest.param({"deep": [1, {"x": True}]}, {"deep": [1, {"x": True}]}, id="plain"),
]


@pytest.mark.parametrize(("value", "expected"), SUPPORTED)
def test_logger_writes_each_supported_type(lines: Lines, value: Any, expected: Any) -> None:
    """Each supported type is written in its documented JSON form, in a strict JSON line."""
    event = emit_one(lines, {"value": value})
    assert event["data"] == {"value": expected}


def test_line_holds_the_whole_event(lines: Lines) -> None:
    """The line is the event: name, UTC ISO timestamp, merged context and data."""
    backend = LoggerBackend(name=lines.logger_name, max_event_size=None)  # type: ignore[attr-defined]
    t = Tracker({"log": backend})
    with t.context("request", {"user_id": 5}):
        t.emit("page.view", {"url": "/x"})
    event = loads_strict(lines.lines[0])
    assert set(event) == {"name", "timestamp", "context", "data"}
    assert event["name"] == "page.view"
    assert event["context"] == {"user_id": 5}
    assert event["data"] == {"url": "/x"}
    stamp = datetime.fromisoformat(event["timestamp"])
    assert stamp.utcoffset() == timedelta(0)


def test_unordered_set_is_still_written(lines: Lines) -> None:
    """A set whose items cannot be ordered is written as a list of all its items."""
    event = emit_one(lines, {"value": {1, "a"}})
    assert sorted(event["data"]["value"], key=repr) == sorted([1, "a"], key=repr)


def test_unknown_object_is_written_as_repr_with_warning(
    lines: Lines, fresh_rate_limits: None, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsupported object becomes its repr, with a WARNING naming its type and a count."""

    class Widget:
        def __repr__(self) -> str:
            return "<Widget 7>"

    before = _json.JSON_STATS.get("repr_fallback")
    with caplog.at_level(logging.WARNING, logger="eventtracking.json"):
        event = emit_one(lines, {"value": Widget()})
    assert event["data"] == {"value": "<Widget 7>"}
    assert _json.JSON_STATS.get("repr_fallback") == before + 1
    assert any("Widget" in r.getMessage() for r in caplog.records)


class Hostile:
    """Refuses everything: copying, repr, str, truth, iteration, comparison and paths."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("refused")

    __deepcopy__ = __copy__ = __reduce_ex__ = _refuse
    __repr__ = __str__ = __bool__ = __len__ = __iter__ = _refuse
    __eq__ = __lt__ = __gt__ = _refuse  # type: ignore[assignment]
    __hash__ = object.__hash__


class HostilePath(Hostile):
    """Claims to be a path but cannot say which."""

    def __fspath__(self) -> str:
        raise RuntimeError("no path")


@pytest.mark.parametrize("value_cls", [Hostile, HostilePath])
def test_object_refusing_copy_serialise_and_repr(
    lines: Lines, fresh_rate_limits: None, value_cls: type
) -> None:
    """An object that refuses to be copied, serialised or repr'd is written as a placeholder
    naming its type; the event and its other data survive."""
    memory = InMemoryBackend()
    backend = LoggerBackend(name=lines.logger_name, max_event_size=None)  # type: ignore[attr-defined]
    t = Tracker({"log": backend, "memory": memory})
    t.emit("x", {"value": value_cls(), "keep": 1})
    event = loads_strict(lines.lines[0])
    assert event["data"] == {"value": f"<unrepresentable {value_cls.__qualname__}>", "keep": 1}
    assert memory.events[0]["data"]["keep"] == 1


def test_set_whose_items_refuse_to_compare(lines: Lines, fresh_rate_limits: None) -> None:
    """A set of items whose comparison raises is still written, item by item."""
    event = emit_one(lines, {"value": {Hostile(), Hostile()}})
    assert event["data"]["value"] == ["<unrepresentable Hostile>"] * 2


def test_cycles_are_written_as_markers(lines: Lines) -> None:
    """A reference cycle becomes "<cycle>" where it closes; the rest is written."""
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    items: list[Any] = [1]
    items.append(items)
    event = emit_one(lines, {"dict": loop, "list": items})
    assert event["data"] == {"dict": {"name": "loop", "self": "<cycle>"}, "list": [1, "<cycle>"]}


#: orjson's nesting limit: for a cycle, orjson writes the data once per level up to it
#: before it gives up (its documented limit; no option changes it).
ORJSON_DEPTH_LIMIT = 255


class CountingSet(set):  # type: ignore[type-arg]
    """A set that counts how many times an encoder reads it."""

    reads = 0

    def __iter__(self) -> Any:
        CountingSet.reads += 1
        return super().__iter__()


def test_a_cycle_is_found_at_once_not_written_down_to_the_recursion_limit(
    lines: Lines, encoder: str
) -> None:
    """Data that holds itself is written again at every level by an encoder that does
    not look for cycles, until the recursion limit: a list holding 1 MB of text and
    itself took seconds and gigabytes. Each encoder reads the data a bounded number of
    times: the standard library finds the cycle at once, and the orjson encoder pays
    one orjson attempt (up to its depth limit) before that."""
    CountingSet.reads = 0
    items: list[Any] = [CountingSet({1})]
    items.append(items)
    event = emit_one(lines, {"list": items})
    assert event["data"] == {"list": [[1], "<cycle>"]}
    bound = 5 if encoder == "stdlib" else ORJSON_DEPTH_LIMIT + 5
    assert CountingSet.reads <= bound, CountingSet.reads


def test_shared_but_acyclic_values_are_written_in_full(lines: Lines) -> None:
    """The same object appearing twice (without a cycle) is written twice, not as a cycle."""
    shared = {"k": float("nan")}
    event = emit_one(lines, {"a": shared, "b": shared})
    assert event["data"] == {"a": {"k": "NaN"}, "b": {"k": "NaN"}}


def test_non_str_keys(lines: Lines) -> None:
    """Keys JSON allows are converted as json does; any other key becomes its repr."""
    data = {1: "int", 2.5: "float", False: "bool", None: "none", (1, 2): "tuple", "s": "str"}
    event = emit_one(lines, data)
    assert event["data"] == {
        "1": "int",
        "2.5": "float",
        "false": "bool",
        "null": "none",
        "(1, 2)": "tuple",
        "s": "str",
    }


def test_nan_key(lines: Lines) -> None:
    """A NaN key is written as a string rather than breaking the line."""
    event = emit_one(lines, {float("nan"): 1})
    assert event["data"] == {"nan": 1}


def test_very_deep_nesting(lines: Lines) -> None:
    """Data nested 10,000 levels deep is written, cut off with "<too deep>"."""
    deep: Any = "bottom"
    for _ in range(10_000):
        deep = {"d": [deep]}
    event = emit_one(lines, {"deep": deep})
    text = json.dumps(event["data"])
    assert "<too deep>" in text
    assert "bottom" not in text


def test_generator_is_written_as_repr(lines: Lines, fresh_rate_limits: None) -> None:
    """A generator in the data is written as its repr, not consumed or lost."""
    gen = (i for i in range(3))
    event = emit_one(lines, {"gen": gen})
    assert event["data"]["gen"].startswith("<generator object")
    assert list(gen) == [0, 1, 2]


@pytest.mark.parametrize(
    ("data", "expected"), [([1, "two"], [1, "two"]), (None, {}), ("text", "text")]
)
def test_data_that_is_not_a_dict(lines: Lines, data: Any, expected: Any) -> None:
    """Data that is a list, None or a scalar is written as given ({} for None)."""
    assert emit_one(lines, data)["data"] == expected


def test_oversized_event_becomes_a_placeholder_with_warning(
    lines: Lines, caplog: pytest.LogCaptureFixture
) -> None:
    """An event over max_event_size is logged as a placeholder keeping its name, timestamp
    and context, with a WARNING naming it and its size, and is counted."""
    unlimited_name, unlimited = dedicated_logger()
    data = {"blob": "x" * 500}
    limited = LoggerBackend(name=lines.logger_name, max_event_size=300)  # type: ignore[attr-defined]
    full = LoggerBackend(name=unlimited_name, max_event_size=None)
    t = Tracker({"limited": limited, "full": full})
    with caplog.at_level(logging.WARNING, logger=BACKEND_LOG), t.context("c", {"user": 1}):
        t.emit("big.event", data)
    size = len(unlimited.lines[0])
    record = loads_strict(lines.lines[0])
    original = loads_strict(unlimited.lines[0])
    assert record == {
        "name": "big.event",
        "timestamp": original["timestamp"],
        "context": {"user": 1},
        "data": {OVERSIZED_KEY: {"size": size, "max_event_size": 300}},
    }
    assert len(lines.lines[0]) <= 300
    assert limited.stats()["oversized"] == 1
    assert limited.stats()["sent"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == BACKEND_LOG]
    assert len(warnings) == 1
    assert "big.event" in warnings[0] and str(size) in warnings[0]


def test_oversized_placeholder_drops_a_large_context(lines: Lines) -> None:
    """When even the placeholder is too long, its context is emptied and flagged."""
    backend = LoggerBackend(name=lines.logger_name, max_event_size=250)  # type: ignore[attr-defined]
    t = Tracker({"log": backend})
    with t.context("c", {"big": "y" * 400}):
        t.emit("big.event", {"blob": "x" * 10})
    record = loads_strict(lines.lines[0])
    assert record["name"] == "big.event"
    assert record["context"] == {}
    assert record["data"][OVERSIZED_KEY]["context_dropped"] is True
    assert record["data"][OVERSIZED_KEY]["max_event_size"] == 250


def test_default_max_event_size_is_1024(lines: Lines) -> None:
    """By default an event whose JSON is over 1024 characters becomes a placeholder."""
    assert MAX_EVENT_SIZE == 1024
    backend = LoggerBackend(name=lines.logger_name)  # type: ignore[attr-defined]
    assert backend.max_event_size == 1024
    t = Tracker({"log": backend})
    t.emit("small", {"blob": "x" * 100})
    t.emit("large", {"blob": "x" * 2000})
    small, large = (loads_strict(line) for line in lines.lines)
    assert small["data"] == {"blob": "x" * 100}
    assert OVERSIZED_KEY in large["data"]


def test_no_limit_when_max_event_size_is_none(lines: Lines) -> None:
    """max_event_size=None writes events of any size in full."""
    event = emit_one(lines, {"blob": "x" * 200_000}, max_event_size=None)
    assert event["data"] == {"blob": "x" * 200_000}


@pytest.mark.parametrize(
    ("level", "levelno"),
    [
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warning", logging.WARNING),
        ("WARN", logging.WARNING),
        ("error", logging.ERROR),
        ("critical", logging.CRITICAL),
    ],
)
def test_level_option(lines: Lines, level: str, levelno: int) -> None:
    """The level option sets the level of every record written (case-insensitive)."""
    emit_one(lines, {"a": 1}, level=level)
    assert lines.records[0].levelno == levelno


def test_default_level_is_info(lines: Lines) -> None:
    """Records are written at INFO unless told otherwise."""
    emit_one(lines, {"a": 1})
    assert lines.records[0].levelno == logging.INFO


@pytest.mark.parametrize("level", ["verbose", "", 20, None])
def test_invalid_level_raises_improperly_configured(level: Any) -> None:
    """An unknown level raises ImproperlyConfigured naming it and the valid choices."""
    with pytest.raises(ImproperlyConfigured, match="debug"):
        LoggerBackend(level=level)


@pytest.mark.parametrize("size", [0, -5, 1.5, "1024", True])
def test_invalid_max_event_size_raises(size: Any) -> None:
    """max_event_size must be a positive int or None; anything else is ImproperlyConfigured."""
    with pytest.raises(ImproperlyConfigured, match="max_event_size"):
        LoggerBackend(max_event_size=size)


def test_unknown_option_raises() -> None:
    """An unknown keyword option raises ImproperlyConfigured naming it."""
    with pytest.raises(ImproperlyConfigured, match="colour"):
        LoggerBackend(colour="red")


def test_logger_below_level_writes_nothing() -> None:
    """When the logger is not enabled for the level, nothing is written or counted as sent."""
    name, handler = dedicated_logger(level=logging.WARNING)
    backend = LoggerBackend(name=name, level="info")
    Tracker({"log": backend}).emit("x")
    assert handler.records == []
    assert backend.stats()["sent"] == 0


def test_name_none_logs_to_the_root_logger() -> None:
    """name=None sends records to the root logger."""
    assert LoggerBackend().event_logger is logging.getLogger()


def test_stats_shape(lines: Lines) -> None:
    """stats() counts lines sent and oversized, plus the process-wide encoder fallbacks."""
    backend = LoggerBackend(name=lines.logger_name, max_event_size=200)  # type: ignore[attr-defined]
    t = Tracker({"log": backend})
    t.emit("a")
    t.emit("b", {"blob": "x" * 300})
    stats = backend.stats()
    assert stats["sent"] == 2
    assert stats["oversized"] == 1
    assert {"repr_fallback", "cleaned"} <= set(stats)
    assert t.stats()["backends"]["log"] == stats


def test_logger_backend_does_not_mutate_events(lines: Lines) -> None:
    """LoggerBackend promises not to mutate events, and leaves them unchanged."""
    assert LoggerBackend.mutates_events is False
    backend = LoggerBackend(name=lines.logger_name, max_event_size=50)  # type: ignore[attr-defined]
    event = {"name": "x", "timestamp": None, "context": {}, "data": {"blob": "y" * 100}}
    backend.send(event)
    assert event == {"name": "x", "timestamp": None, "context": {}, "data": {"blob": "y" * 100}}


# -- DateTimeJSONEncoder ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2020, 1, 2, 3, 4, 5), '"2020-01-02T03:04:05+00:00"'),
        (datetime(2020, 1, 2, 5, 4, 5, tzinfo=PLUS_TWO), '"2020-01-02T03:04:05+00:00"'),
        (date(2020, 1, 2), '"2020-01-02"'),
        (Decimal("2.50"), '"2.50"'),
        (SAMPLE_UUID, '"12345678-1234-5678-1234-567812345678"'),
        ({"b", "a"}, '["a", "b"]'),
        (b"hi", '"hi"'),
    ],
)
def test_datetime_json_encoder(value: Any, expected: str) -> None:
    """DateTimeJSONEncoder works with json.dumps(cls=...) for every supported type."""
    assert json.dumps(value, cls=DateTimeJSONEncoder) == expected


def test_datetime_json_encoder_rejects_unknown_objects() -> None:
    """Like the standard encoder, DateTimeJSONEncoder raises TypeError for unknown objects."""
    with pytest.raises(TypeError, match="object"):
        json.dumps(object(), cls=DateTimeJSONEncoder)


# -- hypothesis: bad data never breaks emit or the JSON line -----------------------------


class Evil:
    """Raises from whichever special method it is told to, and is hashable."""

    def __init__(self, where: str) -> None:
        self.where = where

    def _maybe(self, name: str) -> None:
        if self.where in (name, "all"):
            raise RuntimeError(f"refused {name}")

    def __repr__(self) -> str:
        self._maybe("repr")
        return f"Evil({self.where})"

    def __deepcopy__(self, memo: Any) -> Any:
        self._maybe("deepcopy")
        return Evil(self.where)

    def __eq__(self, other: object) -> bool:
        self._maybe("eq")
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        self._maybe("bool")
        return True

    def __iter__(self) -> Iterator[Any]:
        self._maybe("iter")
        return iter(())

    def __lt__(self, other: object) -> bool:
        self._maybe("lt")
        return id(self) < id(other)


def cyclic(children: Any) -> Any:
    """Containers that contain themselves."""

    def close_dict(value: dict[Any, Any]) -> dict[Any, Any]:
        value["self"] = value
        return value

    def close_list(value: list[Any]) -> list[Any]:
        value.append(value)
        return value

    return st.one_of(
        st.dictionaries(st.text(max_size=3), children, max_size=3).map(close_dict),
        st.lists(children, max_size=3).map(close_list),
    )


def deep(levels: int) -> Any:
    value: Any = [0]
    for _ in range(levels):
        value = {"d": value}
    return value


DEEP = deep(10_000)
EVIL = st.sampled_from(["repr", "deepcopy", "eq", "bool", "iter", "lt", "all", "none"]).map(Evil)
HASHABLE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.tuples(st.integers(), st.text(max_size=2)),
    EVIL,
)
LEAVES = st.one_of(
    HASHABLE,
    st.integers(4400, 4500).map(lambda digits: 10**digits),
    st.datetimes(timezones=st.none() | st.just(timezone.utc) | st.just(PLUS_TWO)),
    st.dates(),
    st.timedeltas(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
    st.sampled_from([Color.RED, Level.HIGH, Path("a/b"), object()]),
    st.builds(lambda: DEEP),
    st.builds(lambda n: (i for i in range(n)), st.integers(0, 3)),
)
BAD_DATA = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.dictionaries(HASHABLE, children, max_size=4),
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.sets(HASHABLE, max_size=4),
        st.frozensets(HASHABLE, max_size=3),
        cyclic(children),
    ),
    max_leaves=25,
)


class MutatingBackend:
    """A 4.x-style backend that stamps ``_id`` on the event it receives."""

    def __init__(self) -> None:
        self.count = 0

    def send(self, event: Any) -> None:
        event["_id"] = self.count
        self.count += 1


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    name=st.one_of(st.none(), st.text(max_size=10)),
    data=st.one_of(BAD_DATA, st.none()),
    context=st.dictionaries(st.text(max_size=3), BAD_DATA, max_size=2),
)
def test_bad_data_never_raises_and_writes_one_strict_json_line(
    name: str | None, data: Any, context: dict[str, Any]
) -> None:
    """Generated hostile data never raises from emit, and the logger still writes exactly
    one line per event that a strict JSON parser accepts, with the event's four keys and
    no sibling's _id."""
    logger_name, handler = dedicated_logger()
    mutating = MutatingBackend()
    memory = InMemoryBackend()
    t = Tracker(
        {
            "log": LoggerBackend(name=logger_name, max_event_size=None),
            "memory": memory,
            "mutating": mutating,
        },
        processors=[lambda event: None],
    )
    with t.context("generated", context):
        t.emit(name, data)
    assert len(handler.lines) == 1
    event = loads_strict(handler.lines[0])
    assert set(event) == {"name", "timestamp", "context", "data"}
    assert event["name"] == (name or "unknown")
    assert mutating.count == 1
    assert len(memory.events) == 1
    assert "_id" not in memory.events[0]
    assert t.stats()["failed"] == {}


def test_limit_too_small_for_a_placeholder_drops_with_warning_and_count(
    lines: Lines, caplog: pytest.LogCaptureFixture
) -> None:
    """With a limit smaller than any placeholder, no line over the limit is written (as
    4.x): the event is dropped, never silently: a warning names it, and
    stats()['dropped_oversized'] counts it."""
    backend = LoggerBackend(name=lines.logger_name, max_event_size=10)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger=BACKEND_LOG):
        Tracker({"log": backend}).emit("tiny.limit", {"a": 1})
    assert lines.lines == []
    assert backend.stats()["dropped_oversized"] == 1
    assert backend.stats()["oversized"] == 1
    assert any(
        "tiny.limit" in r.getMessage() and "nothing was logged" in r.getMessage()
        for r in caplog.records
    )


# -- how lines reach logging: 4.x's call pattern, and the prepared record ------------------


def test_4x_call_pattern_with_a_patched_logging_module(encoder: str) -> None:
    """With eventtracking.backends.logger.logging replaced by a mock, as 4.x tests do,
    the backend calls logging.getLogger(name) once when built and logger.<level>(line)
    once per event, the line being json.dumps(event) with the standard encoder."""
    from unittest import mock

    with mock.patch("eventtracking.backends.logger.logging") as fake_logging:
        backend = LoggerBackend(name="tracking", level="warning", encoder="stdlib")
        fake_logging.getLogger.assert_called_once_with("tracking")
        fake_logger = fake_logging.getLogger.return_value
        backend.send({"a": 1})
        backend.send({"b": [2]})
    assert fake_logger.warning.call_args_list == [
        mock.call(json.dumps({"a": 1})),
        mock.call(json.dumps({"b": [2]})),
    ]
    assert not fake_logger.info.called
    assert backend.stats()["sent"] == 2


def test_a_logger_subclass_gets_the_level_call() -> None:
    """A Logger of another class (logging.setLoggerClass) is called as logger.info(line),
    so that whatever it overrides still runs."""
    calls: list[str] = []

    class Custom(logging.Logger):
        def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
            calls.append(str(msg))

    name = f"tests.logger.custom{next(_logger_ids)}"
    custom = Custom(name)
    custom.setLevel(logging.INFO)
    backend = LoggerBackend(name=name, max_event_size=None)
    backend.event_logger = custom
    backend.log = custom.info
    backend._template = None
    backend.send({"x": 1})
    assert [json.loads(line) for line in calls] == [{"x": 1}]


def test_record_is_what_logging_would_make(lines: Lines) -> None:
    """The record built from the prepared template has exactly the attributes, and the
    same fixed values, as the one logger.makeRecord makes; time, thread and process are
    those of the moment."""
    backend = LoggerBackend(name=lines.logger_name, max_event_size=None)  # type: ignore[attr-defined]
    logger = logging.getLogger(lines.logger_name)  # type: ignore[attr-defined]
    before = datetime.now().timestamp()
    backend.send({"x": 1})
    ours = lines.records[0]
    model = logger.makeRecord(
        logger.name, logging.INFO, "(eventtracking)", 0, ours.msg, (), None, "send"
    )
    assert type(ours) is logging.LogRecord
    # "message" is added later, by whichever handler formats the record.
    assert set(vars(ours)) - {"message"} == set(vars(model))
    changing = {"created", "msecs", "relativeCreated"}
    for key in set(vars(model)) - changing:
        assert getattr(ours, key) == getattr(model, key), key
    assert before - 1 <= ours.created <= model.created
    assert ours.msecs == int((ours.created - int(ours.created)) * 1000)
    assert ours.getMessage() == ours.msg


def test_a_record_factory_is_respected(lines: Lines) -> None:
    """With logging.setLogRecordFactory, records come from that factory."""
    made: list[logging.LogRecord] = []
    original = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = original(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(factory)
    try:
        LoggerBackend(name=lines.logger_name).send({"x": 1})  # type: ignore[attr-defined]
    finally:
        logging.setLogRecordFactory(original)
    assert len(made) == 1 and lines.records == made


def test_the_loggers_filters_still_decide(lines: Lines) -> None:
    """A filter on the backend's logger sees every record and can drop it, as with
    logger.info(); without filters the records still reach the handlers."""
    logger = logging.getLogger(lines.logger_name)  # type: ignore[attr-defined]
    backend = LoggerBackend(name=lines.logger_name, max_event_size=None)  # type: ignore[attr-defined]
    backend.send({"keep": False})
    seen: list[str] = []

    def only_kept(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return bool(json.loads(record.getMessage())["keep"])

    logger.addFilter(only_kept)
    try:
        backend.send({"keep": False})
        backend.send({"keep": True})
    finally:
        logger.removeFilter(only_kept)
    assert [json.loads(line) for line in seen] == [{"keep": False}, {"keep": True}]
    assert [json.loads(line) for line in lines.lines] == [  # type: ignore[attr-defined]
        {"keep": False},
        {"keep": True},
    ]


def test_stdlib_line_is_byte_identical_to_json_dumps(lines: Lines) -> None:
    """encoder="stdlib" writes exactly json.dumps of the event (timestamp in ISO UTC)."""
    backend = LoggerBackend(name=lines.logger_name, encoder="stdlib", max_event_size=None)  # type: ignore[attr-defined]
    t = Tracker({"log": backend})
    with t.context("request", {"user": "ädä", "n": 2}):
        t.emit("x", {"list": [1, 2.5, None, True], "text": "ünïcode"})
    event = json.loads(lines.lines[0])
    assert lines.lines[0] == json.dumps(event)
    assert "\\u00fc" in lines.lines[0]


def test_orjson_line_holds_the_same_values_in_compact_form(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """encoder="orjson" writes the same values as the stdlib encoder, without spaces and
    with non-ASCII text as UTF-8."""
    pytest.importorskip("orjson")
    monkeypatch.setattr(logger_module, "HAVE_ORJSON", True)
    stdlib_name, stdlib_lines = dedicated_logger()
    backends = {
        "a": LoggerBackend(name=lines.logger_name, encoder="orjson", max_event_size=None),  # type: ignore[attr-defined]
        "b": LoggerBackend(name=stdlib_name, encoder="stdlib", max_event_size=None),
    }
    t = Tracker(backends)
    data = {"list": [1, 2.5, None], "text": "ünïcode", "when": date(2020, 1, 2)}
    with t.context("request", {"user": "ädä"}):
        t.emit("x", data)
        t.emit("y", {**data, "nan": math.nan, "big": 2**70, "keys": {1: True}})
    for fast, slow in zip(lines.lines, stdlib_lines.lines, strict=True):
        assert loads_strict(fast) == loads_strict(slow)
        assert ": " not in fast
    # A line that needed cleaning is written by the standard library, which escapes.
    assert "ünïcode" in lines.lines[0] and "ünïcode" not in lines.lines[1]
    assert loads_strict(lines.lines[1])["data"]["nan"] == "NaN"


@pytest.mark.parametrize("bad", ["ujson", "", None, 3])
def test_unknown_encoder_raises(bad: Any) -> None:
    """An encoder other than auto, orjson or stdlib is refused, naming the choices."""
    with pytest.raises(ImproperlyConfigured, match="auto, orjson, stdlib"):
        LoggerBackend(encoder=bad)


def test_orjson_encoder_without_orjson_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """encoder="orjson" without orjson installed names the extra to install; "auto"
    then uses the standard library."""
    monkeypatch.setattr(logger_module, "HAVE_ORJSON", False)
    with pytest.raises(ImproperlyConfigured, match=r"event-tracking\[fast\]"):
        LoggerBackend(encoder="orjson")
    assert LoggerBackend().encoder == "stdlib"


def test_unserialisable_value_warning_names_event_and_key_path(
    lines: Lines, fresh_rate_limits: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning for a value written as its repr names the event and where in it the
    value is, and the value is counted."""

    class Handle:
        def __repr__(self) -> str:
            return "<Handle>"

    before = _json.JSON_STATS.get("repr_fallback")
    with caplog.at_level(logging.WARNING, logger="eventtracking.json"):
        event = emit_one(lines, {"player": {"items": [1, Handle()]}}, name="video.played")
    assert event["data"] == {"player": {"items": [1, "<Handle>"]}}
    assert _json.JSON_STATS.get("repr_fallback") == before + 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "'video.played'" in m and "data.player.items[1]" in m and "Handle" in m for m in messages
    ), messages


def test_placeholder_cuts_a_very_long_name_to_fit(lines: Lines) -> None:
    """An event whose very name is longer than the limit is still logged, as a
    placeholder with the start of its name, marked name_truncated, within the limit."""
    backend = LoggerBackend(name=lines.logger_name, max_event_size=300)  # type: ignore[attr-defined]
    Tracker({"log": backend}).emit("é" + "n" * 2000, {"a": 1})
    [line] = lines.lines
    assert len(line) <= 300
    record = loads_strict(line)
    assert record["name"].startswith("én") and len(record["name"]) < 300
    assert record["data"][OVERSIZED_KEY]["name_truncated"] is True
    assert backend.stats()["oversized"] == 1 and backend.stats()["dropped_oversized"] == 0
