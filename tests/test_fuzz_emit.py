"""Property tests: ``emit`` with hostile data, in every configuration users combine.

For each backend (logger, memory, MongoDB on the SecantusDB server), hypothesis draws
the data, the event name and a configuration (validation off, warn or strict; an
observer attached or not; ``max_event_size`` or not). The data mixes reference cycles,
huge strings, deep nesting, NaN, keys of every type and objects whose ``repr``,
``__eq__``, ``__bool__``, copying or iteration raise. Every example must:

* return from ``emit`` within :data:`LIMIT` seconds (a hang fails the test instead of
  stopping the run);
* raise nothing into the caller, except ValidationError in strict mode;
* deliver the event, or count it: as a drop, a failure, a dead letter or an invalid
  event; and neither the validator nor the observer may fail on it.

The whole module takes about 15 s. ``FUZZ_EXAMPLES=3000`` runs more examples per
backend (the MongoDB one runs half as many); ``FUZZ_LOGS=1`` keeps the library's
errors in the report of a failing example.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hang_support import call_within, fuzz_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventtracking import metadata
from eventtracking.backends.logger import LoggerBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.exceptions import ValidationError
from eventtracking.metadata import Registry
from eventtracking.metadata.discovery import EventObserver
from eventtracking.tracker import Tracker

pytestmark = pytest.mark.slow

#: Seconds one emit may take. Each should take well under a millisecond; this only has
#: to tell a hang from a slow, shared CI machine.
LIMIT = 10.0

FUZZ_LOGGER = "tests.fuzz.events"


# -- hostile values -------------------------------------------------------------------


class BadRepr:
    """repr() and str() raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


class BadEq:
    """Comparing raises (``==``, ``in``, ``list.index``); hashing works."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    __hash__ = object.__hash__


class BadCopy:
    """Copying and pickling raise."""

    def __deepcopy__(self, memo: Any) -> Any:
        raise RuntimeError("no copy")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise RuntimeError("no pickle")


class BadBool:
    """Its truth value raises (emit tests ``data if data else {}``)."""

    def __bool__(self) -> bool:
        raise RuntimeError("no bool")


class BadList(list):  # type: ignore[type-arg]
    """A list whose iteration raises."""

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("no iter")


class BadDict(dict):  # type: ignore[type-arg]
    """A dict whose items() and keys() raise."""

    def items(self) -> Any:
        raise RuntimeError("no items")

    def keys(self) -> Any:
        raise RuntimeError("no keys")


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**64, -(2**200)]),
    # Too long for Python to write in decimal (built lazily: hypothesis shows values).
    st.integers(4400, 6000).map(lambda digits: 10**digits),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
    st.text(max_size=30),
    st.integers(100_000, 1_000_000).map(lambda size: "x" * size),
    st.binary(max_size=20),
    st.datetimes(timezones=st.sampled_from([None, datetime.timezone.utc])),
    st.dates(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
    st.builds(BadRepr),
    st.builds(BadEq),
    st.builds(BadCopy),
    st.builds(BadBool),
    st.builds(object),
)

KEYS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "a.b", "x[]", "__proto__", "$where", "_id", "a\x00b", "é" * 50]),
    st.integers(),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.frozensets(st.integers(), max_size=3),
    st.builds(BadEq),
    st.builds(BadRepr),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(KEYS, children, max_size=5),
        st.sets(st.one_of(st.integers(), st.text(max_size=5)), max_size=5),
        st.lists(children, max_size=3).map(BadList),
        st.dictionaries(st.text(max_size=5), children, max_size=3).map(BadDict),
    )


NESTED = st.recursive(SCALARS, _containers, max_leaves=25)


def _containers_in(value: Any, found: list[Any], depth: int = 0) -> None:
    if depth > 20:
        return
    if type(value) in (dict, list):
        found.append(value)
        items = value.values() if isinstance(value, dict) else value
        for item in list(items):
            _containers_in(item, found, depth + 1)


class Hostile:
    """Drawn data, with a repr hypothesis can print: the data itself may have none, or
    be too deep to print."""

    def __init__(self, value: Any, description: str) -> None:
        self.value = value
        self.description = description

    def __repr__(self) -> str:
        return f"<hostile data: {self.description}>"


@st.composite
def hostile_data(draw: st.DrawFn) -> Hostile:
    """Nested data, maybe with cycles back to the root, maybe wrapped deep."""
    value = draw(st.one_of(st.dictionaries(st.text(max_size=8), NESTED, max_size=6), NESTED))
    cycle = draw(st.sampled_from(["none", "root", "inner"]))
    if cycle != "none":
        if type(value) not in (dict, list):
            value = {"value": value}
        holders: list[Any] = []
        _containers_in(value, holders)
        # A container holding the root two or three times: a naive walk of the data
        # takes about 2**depth steps.
        holder = value if cycle == "root" else draw(st.sampled_from(holders))
        for _ in range(draw(st.integers(2, 3))):
            if isinstance(holder, dict):
                holder[f"cycle{len(holder)}"] = value
            else:
                holder.append(value)
    depth = draw(st.sampled_from([0, 0, 0, 50, 150, 1500, 5000]))
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return Hostile(value, f"{_shape(value, depth)}, cycle {cycle}, wrapped {depth} deep")


def _shape(value: Any, depth: int) -> str:
    """Types along the first path into the data, for the failure report."""
    kinds = []
    for _ in range(depth + 12):
        kinds.append(type(value).__name__)
        if type(value) is dict and value:
            value = next(iter(value.values()))
        elif type(value) is list and value:
            value = value[0]
        else:
            break
    return ">".join(kinds[depth:]) if depth else ">".join(kinds)


NAMES = st.one_of(
    st.sampled_from(["fuzz.documented", "fuzz.open", "fuzz.schema", "fuzz.unknown"]),
    st.text(max_size=40),
    st.just("n" * 5000),
    st.sampled_from(["", None, 42, "line\nbreak", "\x1b[31mred"]),
)


@dataclass(frozen=True)
class Setup:
    """One configuration: validation mode, observer, validator size limit."""

    mode: str
    observer: bool
    max_event_size: int | None


SETUPS = st.builds(
    Setup,
    mode=st.sampled_from(["off", "warn", "strict"]),
    observer=st.booleans(),
    max_event_size=st.sampled_from([None, 300, 100_000]),
)


def _registry() -> Registry:
    registry = Registry()
    registry.register(
        "fuzz.documented",
        "Every field type.",
        fields={
            "a": "string",
            "b": {"type": ["integer", "null"], "required": False},
            "c": "any",
            "d[]": "number",
            "e": {"fields": {"f": "datetime", "g[]": {"fields": {"h": "uuid"}}}},
            "i": {"type": "object", "required": False},
        },
    )
    registry.register("fuzz.open", "Anything.", additional_fields=True)
    registry.register(
        "fuzz.schema",
        "A JSON Schema with a local reference.",
        schema={
            "type": "object",
            "$defs": {"n": {"type": "number"}},
            "properties": {"a": {"$ref": "#/$defs/n"}},
        },
    )
    return registry


# -- accounting -----------------------------------------------------------------------


def _total(value: Any) -> int:
    """The sum of every count in a (nested) stats dict."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return sum(_total(item) for item in value.values())
    return 0


def _counts(stats: dict[str, Any]) -> dict[str, int]:
    """The counts that say where an event went, other than delivered."""
    validation = stats.get("validation") or {}
    return {
        "dropped": _total(stats["dropped"]),
        "sink failed": _total(stats["failed"].get("sink", 0)),
        "emit or routing failed": _total(
            {key: value for key, value in stats["failed"].items() if key in ("emit", "routing")}
        ),
        "observer failed": _total(stats["failed"].get("observer", 0)),
        "invalid": validation.get("invalid_events", 0),
        "validator errors": validation.get("errors", 0),
    }


class Lines(logging.Handler):
    """Counts the lines the logger backend writes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _run(
    sink: Any,
    delivered: Callable[[], int],
    registry: Registry,
    setup: Setup,
    name: Any,
    data: Hostile,
    flush: bool = False,
) -> None:
    """Emit once in ``setup`` and check the three promises."""
    backends: dict[str, Any] = {"sink": sink}
    if setup.observer:
        backends["observer"] = EventObserver()
    tracker = Tracker(backends)
    metadata.set_validation(
        tracker, setup.mode, registry=registry, max_event_size=setup.max_event_size
    )
    before_delivered = delivered()
    before = _counts(tracker.stats())
    outcome = call_within(LIMIT, tracker.emit, name, data.value)
    refused = setup.mode == "strict" and isinstance(outcome.error, ValidationError)
    if outcome.error is not None and not refused:
        raise AssertionError(f"emit raised into the caller: {outcome.error!r}")
    if flush:
        flushed = tracker.flush(timeout=30)
        assert flushed, f"the backend did not deliver in time: {sink.stats()}"
    after = _counts(tracker.stats())
    change = {key: after[key] - before[key] for key in after}
    # Neither the observer nor the validator may fail on any data: a validator that
    # fails lets the event through unchecked, which strict mode must not allow.
    assert change["observer failed"] == 0, change
    assert change["validator errors"] == 0, change
    if refused:
        assert change["invalid"] == 1, change
        return
    accounted = delivered() - before_delivered
    accounted += change["dropped"] + change["sink failed"] + change["emit or routing failed"]
    assert accounted >= 1, f"the event was neither delivered nor counted: {change}"
    if setup.observer:
        # The observer recorded the event (or counted it) without hanging or raising.
        observer = backends["observer"]
        observer.drafts()
        assert observer.stats()["events"] >= (1 if isinstance(name, str) and name else 0)


FUZZ = fuzz_settings(300)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return _registry()


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Keep the expected warnings and errors of hostile events out of the test output."""
    root = logging.getLogger("eventtracking")
    old = root.level
    root.setLevel(logging.ERROR if os.environ.get("FUZZ_LOGS") else logging.CRITICAL)
    yield
    root.setLevel(old)


@FUZZ
@given(data=hostile_data(), name=NAMES, setup=SETUPS)
def test_memory_backend_survives_hostile_data(
    registry: Registry, quiet_logs: None, data: Hostile, name: Any, setup: Setup
) -> None:
    """InMemoryBackend: emit returns, raises only strict ValidationError, and counts."""
    memory = InMemoryBackend()
    _run(memory, lambda: memory.stats()["stored"], registry, setup, name, data)


@FUZZ
@given(
    data=hostile_data(),
    name=NAMES,
    setup=SETUPS,
    line_limit=st.sampled_from([None, 1024, 50_000]),
)
def test_logger_backend_survives_hostile_data(
    registry: Registry,
    quiet_logs: None,
    data: Hostile,
    name: Any,
    setup: Setup,
    line_limit: int | None,
) -> None:
    """LoggerBackend, with and without its own max_event_size: every event is a line."""
    logger = logging.getLogger(FUZZ_LOGGER)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    lines = Lines()
    logger.addHandler(lines)
    try:
        backend = LoggerBackend(name=FUZZ_LOGGER, max_event_size=line_limit)
        _run(backend, lambda: lines.count, registry, setup, name, data)
    finally:
        logger.removeHandler(lines)


@pytest.fixture(scope="module")
def mongo_sink(mongo_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One MongoBackend on the session's SecantusDB server for every example."""
    from eventtracking.backends.mongodb import MongoBackend

    mongo_server.start()
    spool: Path = tmp_path_factory.mktemp("fuzz-spool")
    backend = MongoBackend(
        uri=mongo_server.uri,
        database="eventtracking_fuzz",
        collection=f"fuzz_{uuid.uuid4().hex[:8]}",
        flush_interval=0.05,
        spool_dir=spool,
    )
    yield backend
    backend.close(10)


def _mongo_handled(backend: Any) -> int:
    stats = backend.stats()
    return int(stats.get("stored", 0)) + int(stats.get("dead_lettered", 0))


@settings(FUZZ, max_examples=max(FUZZ.max_examples // 2, 1))
@given(data=hostile_data(), name=NAMES, setup=SETUPS)
def test_mongo_backend_survives_hostile_data(
    mongo_sink: Any,
    registry: Registry,
    quiet_logs: None,
    data: Hostile,
    name: Any,
    setup: Setup,
) -> None:
    """MongoBackend on a real server: each event is stored, or a counted dead letter."""
    _run(mongo_sink, lambda: _mongo_handled(mongo_sink), registry, setup, name, data, flush=True)


def test_hostile_data_includes_what_the_issue_lists() -> None:
    """The strategies reach cycles, huge strings, deep nesting, NaN, odd keys and objects
    whose repr or __eq__ raises (a guard against a strategy that silently narrows)."""
    seen: set[str] = set()

    def kinds(value: Any, depth: int = 0, active: frozenset[int] = frozenset()) -> None:
        if depth > 40:
            seen.add("deep")
            return
        if isinstance(value, float) and math.isnan(value):
            seen.add("nan")
        if isinstance(value, str) and len(value) >= 100_000:
            seen.add("huge")
        if isinstance(value, BadRepr):
            seen.add("bad repr")
        if isinstance(value, BadEq):
            seen.add("bad eq")
        if type(value) in (dict, list):
            if id(value) in active:
                seen.add("cycle")
                return
            inner = active | {id(value)}
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        seen.add("odd key")
                    kinds(key, depth + 1, inner)
                    kinds(item, depth + 1, inner)
            else:
                for item in value:
                    kinds(item, depth + 1, inner)

    # The same 400 examples every run: drawn at random, they missed NaN now and then
    # (seen under a busy `make test`), a failure that said nothing about the strategies.
    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(data=hostile_data())
    def collect(data: Hostile) -> None:
        kinds(data.value)

    collect()
    assert seen >= {"cycle", "huge", "deep", "nan", "odd key", "bad repr", "bad eq"}, seen
