"""Tests for eventtracking.tracker: the event shape, contexts, the registry and stats."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from eventtracking import tracker
from eventtracking._util.delivery_api import remaining
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.locator import (
    ContextVarLocator,
    DefaultContextLocator,
    MappingLocatorAdapter,
    ThreadLocalContextLocator,
    as_stack_locator,
)
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.tracker import Tracker

LOCATORS = [DefaultContextLocator, ThreadLocalContextLocator, ContextVarLocator]


class LegacyLocator:
    """A locator written for 4.x: only get(), returning a mapping edited in place."""

    def __init__(self) -> None:
        self.contexts: OrderedDict[str, Any] = OrderedDict()

    def get(self) -> OrderedDict[str, Any]:
        return self.contexts


ALL_LOCATORS = [*LOCATORS, LegacyLocator]


class Keeping:
    """A backend that keeps the very objects it is sent and promises not to change them."""

    mutates_events = False

    def __init__(self) -> None:
        self.received: list[Any] = []

    def send(self, event: Any) -> None:
        self.received.append(event)


def make_tracker(locator_cls: type = DefaultContextLocator) -> tuple[Tracker, InMemoryBackend]:
    memory = InMemoryBackend()
    return Tracker({"memory": memory}, context_locator=locator_cls()), memory


# -- the event ---------------------------------------------------------------------------


@pytest.mark.parametrize("locator_cls", ALL_LOCATORS)
def test_event_has_exactly_the_four_keys(locator_cls: type) -> None:
    """An event is exactly {name, timestamp, context, data}, holding what was emitted."""
    t, memory = make_tracker(locator_cls)
    t.enter_context("request", {"user_id": 7})
    t.emit("video.play", {"position": 3})
    [event] = memory.events
    assert set(event) == {"name", "timestamp", "context", "data"}
    assert event["name"] == "video.play"
    assert event["context"] == {"user_id": 7}
    assert event["data"] == {"position": 3}


@pytest.mark.parametrize("name", [None, ""])
def test_missing_name_becomes_unknown(name: str | None) -> None:
    """An event emitted without a name is called 'unknown'."""
    t, memory = make_tracker()
    t.emit(name, {"a": 1})
    assert memory.events[0]["name"] == tracker.UNKNOWN_EVENT_TYPE == "unknown"


def test_emit_with_no_arguments() -> None:
    """emit() with no arguments produces an 'unknown' event with empty data."""
    t, memory = make_tracker()
    t.emit()
    assert memory.events[0]["name"] == "unknown"
    assert memory.events[0]["data"] == {}


@pytest.mark.parametrize("data", [None, {}, []])
def test_missing_data_becomes_an_empty_dict(data: Any) -> None:
    """Missing or empty data becomes a new empty dict."""
    t, memory = make_tracker()
    t.emit("x", data)
    assert memory.events[0]["data"] == {}
    assert isinstance(memory.events[0]["data"], dict)


@pytest.mark.parametrize("data", [[1, 2], "text", 5])
def test_non_dict_data_is_passed_through(data: Any) -> None:
    """Data that is not a dict is delivered as it is, not replaced or rejected."""
    t, memory = make_tracker()
    t.emit("x", data)
    assert memory.events[0]["data"] == data


def test_data_is_the_callers_object_when_nothing_may_change_it() -> None:
    """With backends that promise not to mutate, the event carries the caller's data object."""
    keeping = Keeping()
    t = Tracker({"keep": keeping})
    data = {"a": {"b": 1}}
    t.emit("x", data)
    assert keeping.received[0]["data"] is data


def test_timestamp_is_timezone_aware_utc() -> None:
    """The timestamp is an aware datetime in UTC, taken at emit time."""
    t, memory = make_tracker()
    before = datetime.now(timezone.utc)
    t.emit("x")
    after = datetime.now(timezone.utc)
    stamp = memory.events[0]["timestamp"]
    assert stamp.tzinfo is not None
    assert stamp.utcoffset() == timedelta(0)
    assert before <= stamp <= after


def test_freezegun_freezes_the_timestamp() -> None:
    """Downstream suites freeze event time with freezegun; the event carries the frozen time."""
    t, memory = make_tracker()
    with freeze_time("2021-03-04 05:06:07"):
        t.emit("x")
    expected = datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    assert memory.events[0]["timestamp"] == expected
    assert memory.events[0]["timestamp"].utcoffset() == timedelta(0)


def test_patching_tracker_datetime_freezes_the_timestamp() -> None:
    """Patching eventtracking.tracker.datetime, as 4.x's own suite does, sets the timestamp."""
    t, memory = make_tracker()
    expected = datetime(2013, 10, 3, 8, 24, 55, tzinfo=timezone.utc)
    with mock.patch("eventtracking.tracker.datetime") as mock_datetime:
        mock_datetime.now.return_value = expected
        t.emit("x")
    assert memory.events[0]["timestamp"] == expected


def test_data_whose_truth_value_raises_is_still_delivered() -> None:
    """Data whose __bool__ raises is delivered as it is; emit does not raise."""

    class Falsy:
        def __bool__(self) -> bool:
            raise RuntimeError("no truth value")

    keeping = Keeping()
    t = Tracker({"keep": keeping})
    data = Falsy()
    t.emit("x", data)
    assert keeping.received[0]["data"] is data


def test_broken_locator_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """A locator that raises makes emit log the error and count failed.emit, never raise."""

    class Broken:
        def get(self) -> Any:
            raise RuntimeError("locator is broken")

    memory = InMemoryBackend()
    t = Tracker({"memory": memory}, context_locator=Broken())
    with caplog.at_level(logging.ERROR, logger="eventtracking.tracker"):
        t.emit("lost.event")
    assert memory.events == []
    assert t.stats()["failed"] == {"emit": 1}
    assert any("lost.event" in r.getMessage() for r in caplog.records)


def test_validator_replacement_is_routed() -> None:
    """A validator's non-None return value is the event that gets routed."""
    t, memory = make_tracker()
    t.validator = lambda event: {**event, "name": "validated"}
    t.emit("x")
    assert memory.events[0]["name"] == "validated"


def test_validator_error_reaches_the_caller() -> None:
    """A validator's exception (strict validation) is the one error emit lets through."""
    t, memory = make_tracker()

    def strict(event: Any) -> None:
        raise ValueError("bad event")

    t.validator = strict
    with pytest.raises(ValueError, match="bad event"):
        t.emit("x")
    assert memory.events == []


# -- the registry and module-level emit --------------------------------------------------


def test_register_and_get_tracker() -> None:
    """register_tracker stores under a name (default 'default'); get_tracker returns it."""
    default, named = Tracker(), Tracker()
    tracker.register_tracker(default)
    tracker.register_tracker(named, "other")
    assert tracker.get_tracker() is default
    assert tracker.get_tracker(tracker.DEFAULT_TRACKER_NAME) is default
    assert tracker.get_tracker("other") is named
    assert {"default": default, "other": named} == tracker.TRACKERS


def test_get_tracker_missing_raises_key_error() -> None:
    """get_tracker of an unregistered name other than the default raises KeyError, as in
    4.x, and registers nothing."""
    with pytest.raises(KeyError, match="nope"):
        tracker.get_tracker("nope")
    assert tracker.TRACKERS == {}


def test_unconfigured_default_tracker_prints_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With nothing registered, get_tracker() registers and returns a tracker that prints
    each event as one JSON line on standard output, and later calls return the same one."""
    default = tracker.get_tracker()
    assert tracker.get_tracker() is default
    assert list(tracker.TRACKERS.items()) == [("default", default)]
    with default.context("outer", {"user_id": 7}):
        default.emit("navigation.request", {"url": "/a"})
    tracker.emit("module.level")
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["name"], e["context"], e["data"]) for e in events] == [
        ("navigation.request", {"user_id": 7}, {"url": "/a"}),
        ("module.level", {}, {}),
    ]
    assert datetime.fromisoformat(events[0]["timestamp"]).tzinfo is not None
    assert default.stats()["backends"]["stdout"]["sent"] == 2


def test_module_emit_registers_the_fallback_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The module-level emit() with nothing registered goes through the same fallback,
    which get_tracker() then returns."""
    tracker.emit("first")
    fallback = tracker.TRACKERS["default"]
    assert tracker.get_tracker() is fallback
    assert json.loads(capsys.readouterr().out)["name"] == "first"


def test_threads_racing_for_the_fallback_share_one_tracker() -> None:
    """Threads calling get_tracker() at once with nothing registered all get one tracker."""
    import threading

    start = threading.Barrier(8, timeout=10)
    got: list[Any] = []

    def work() -> None:
        start.wait()
        got.append(tracker.get_tracker())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(got) == 8
    assert len({id(t) for t in got}) == 1


def test_a_registered_default_is_never_replaced_by_the_fallback() -> None:
    """get_tracker() returns the registered default, whatever the fallback."""
    t, _ = make_tracker()
    tracker.register_tracker(t)
    assert tracker.get_tracker() is t


def test_without_a_fallback_get_tracker_raises_key_error_as_in_4x() -> None:
    """set_fallback(None) restores 4.x: get_tracker() raises KeyError for the default."""
    tracker.set_fallback(None)
    with pytest.raises(KeyError, match="default"):
        tracker.get_tracker()
    assert tracker.TRACKERS == {}


def test_set_fallback_takes_any_factory() -> None:
    """The fallback factory decides what the unconfigured default tracker is."""
    memory = InMemoryBackend()
    tracker.set_fallback(lambda: Tracker({"memory": memory}))
    tracker.emit("x")
    assert [e["name"] for e in memory.events] == ["x"]


def test_module_emit_goes_to_the_default_tracker() -> None:
    """Module-level emit() sends through the tracker registered as 'default'."""
    t, memory = make_tracker()
    tracker.register_tracker(t)
    tracker.register_tracker(make_tracker()[0], "other")
    tracker.emit("x", {"a": 1})
    assert [(e["name"], e["data"]) for e in memory.events] == [("x", {"a": 1})]


def test_module_emit_without_tracker_warns_once_and_counts(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no tracker and no fallback, emit() does not raise, warns once and counts every
    drop."""
    tracker.set_fallback(None)
    monkeypatch.setattr(tracker, "_warned_no_tracker", False)
    before = tracker.stats()["dropped"].get("no_tracker", 0)
    with caplog.at_level(logging.WARNING, logger="eventtracking.tracker"):
        tracker.emit("first.event", {"a": 1})
        tracker.emit("second.event")
        tracker.emit()
    after = tracker.stats()["dropped"]["no_tracker"]
    assert after - before == 3
    warnings = [r for r in caplog.records if r.name == "eventtracking.tracker"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "first.event" in warnings[0].getMessage()


# -- contexts ----------------------------------------------------------------------------


@pytest.mark.parametrize("locator_cls", ALL_LOCATORS)
def test_anonymous_context_form(locator_cls: type) -> None:
    """context({...}) with only a dict enters an anonymous context for the block."""
    t, memory = make_tracker(locator_cls)
    t.enter_context("outer", {"user_id": 1, "org": "x"})
    with t.context({"user_id": 2}):
        t.emit("inside")
        with t.context({"session": "s"}):
            t.emit("nested")
    t.emit("after")
    contexts = [e["context"] for e in memory.events]
    assert contexts == [
        {"user_id": 2, "org": "x"},
        {"user_id": 2, "org": "x", "session": "s"},
        {"user_id": 1, "org": "x"},
    ]


@pytest.mark.parametrize("locator_cls", ALL_LOCATORS)
def test_reentering_a_name_makes_it_innermost(locator_cls: type) -> None:
    """Entering a name that is already entered moves it innermost, so its keys win."""
    t, _ = make_tracker(locator_cls)
    t.enter_context("a", {"k": "a-old"})
    t.enter_context("b", {"k": "b"})
    t.enter_context("a", {"k": "a-new"})
    assert t.resolve_context() == {"k": "a-new"}
    assert list(t.located_context) == ["b", "a"]


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_nested_same_name_restores_the_outer(locator_cls: type) -> None:
    """Leaving an inner context of the same name uncovers the outer one, without KeyError."""
    t, memory = make_tracker(locator_cls)
    with t.context("course", {"course_id": "outer"}):
        with t.context("course", {"course_id": "inner"}):
            t.emit("inner")
        t.emit("outer")
    t.emit("none")
    assert [e["context"] for e in memory.events] == [
        {"course_id": "inner"},
        {"course_id": "outer"},
        {},
    ]


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_leaving_a_reentered_name_uncovers_it_at_its_old_position(locator_cls: type) -> None:
    """After a re-entered name is left, its earlier frame counts again where it was."""
    t, _ = make_tracker(locator_cls)
    t.enter_context("a", {"k": "a-old"})
    t.enter_context("b", {"k": "b"})
    t.enter_context("a", {"k": "a-new"})
    t.exit_context("a")
    assert t.resolve_context() == {"k": "b"}
    assert list(t.located_context.items()) == [("a", {"k": "a-old"}), ("b", {"k": "b"})]


@pytest.mark.parametrize("locator_cls", ALL_LOCATORS)
def test_exit_unknown_context_raises_key_error(locator_cls: type) -> None:
    """exit_context of a name that is not entered raises KeyError."""
    t, _ = make_tracker(locator_cls)
    t.enter_context("a", {})
    with pytest.raises(KeyError):
        t.exit_context("b")
    assert list(t.located_context) == ["a"]


@pytest.mark.parametrize("locator_cls", ALL_LOCATORS)
@pytest.mark.parametrize("bad", [["k", "v"], "text", None, 5])
def test_entering_a_non_mapping_raises_type_error(locator_cls: type, bad: Any) -> None:
    """Entering a context that is not a mapping raises TypeError naming it; nothing is entered."""
    t, _ = make_tracker(locator_cls)
    with pytest.raises(TypeError, match="mapping"):
        t.enter_context("bad", bad)
    with pytest.raises(TypeError), t.context("bad", bad):
        pass
    assert list(t.located_context) == []


def test_context_with_a_name_and_no_mapping_raises_type_error() -> None:
    """context('name') without a context mapping raises TypeError."""
    t, _ = make_tracker()
    with pytest.raises(TypeError, match="context"):
        t.context("request")


@pytest.mark.parametrize("locator_cls", ALL_LOCATORS)
def test_context_is_snapshotted_at_enter(locator_cls: type) -> None:
    """Changing the caller's dict after entering it does not change later events."""
    t, memory = make_tracker(locator_cls)
    ctx = {"user_id": 1}
    with t.context("request", ctx):
        ctx["user_id"] = 2
        ctx["extra"] = True
        t.emit("x")
    assert memory.events[0]["context"] == {"user_id": 1}


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_resolve_context_returns_a_new_dict(locator_cls: type) -> None:
    """resolve_context() returns a new dict each time; changing it changes nothing. A
    stored event's context is read-only (it is shared), and a copy of it can be changed
    without changing later events."""
    t, memory = make_tracker(locator_cls)
    t.enter_context("a", {"k": 1})
    resolved = t.resolve_context()
    resolved["k"] = 99
    assert t.resolve_context() == {"k": 1}
    t.emit("x")
    with pytest.raises(TypeError, match=r"dict\(event\['context'\]\)"):
        memory.events[0]["context"]["k"] = 100
    thawed = dict(memory.events[0]["context"])
    thawed["k"] = 100
    t.emit("y")
    assert memory.events[1]["context"] == {"k": 1}


@pytest.mark.parametrize("locator_cls", ALL_LOCATORS)
def test_context_as_decorator(locator_cls: type) -> None:
    """context(...) decorates a function: the context is entered for every call only."""
    t, memory = make_tracker(locator_cls)

    @t.context("task", {"task_id": 5})
    def work(value: int) -> int:
        t.emit("work")
        return value * 2

    assert work(3) == 6
    assert work(4) == 8
    t.emit("outside")
    assert [e["context"] for e in memory.events] == [{"task_id": 5}, {"task_id": 5}, {}]
    assert work.__name__ == "work"


@pytest.mark.parametrize("locator_cls", [DefaultContextLocator, ContextVarLocator])
def test_context_as_decorator_of_a_coroutine_function(locator_cls: type) -> None:
    """On an async function the context covers the coroutine's run, awaits included."""
    t, memory = make_tracker(locator_cls)

    @t.context("job", {"job_id": 7})
    async def job(value: int) -> int:
        await asyncio.sleep(0)
        t.emit("job.step")
        return value + 1

    async def main() -> int:
        result = await job(1)
        t.emit("after")
        return result

    assert asyncio.run(main()) == 2
    assert [(e["name"], e["context"]) for e in memory.events] == [
        ("job.step", {"job_id": 7}),
        ("after", {}),
    ]
    assert inspect.iscoroutinefunction(job)


@pytest.mark.parametrize("locator_cls", ALL_LOCATORS)
def test_context_is_left_when_the_block_raises(locator_cls: type) -> None:
    """An exception inside a context block still leaves the context and propagates."""
    t, _ = make_tracker(locator_cls)
    with pytest.raises(RuntimeError), t.context("request", {"a": 1}):
        raise RuntimeError("boom")
    assert t.resolve_context() == {}


def test_legacy_locator_is_edited_in_place() -> None:
    """A 4.x locator with only get() keeps working: the tracker edits its mapping."""
    locator = LegacyLocator()
    memory = InMemoryBackend()
    t = Tracker({"memory": memory}, context_locator=locator)
    t.enter_context("outer", {"a": 1})
    with t.context("inner", {"b": 2}):
        assert list(locator.contexts) == ["outer", "inner"]
        t.emit("x")
    assert list(locator.contexts) == ["outer"]
    assert memory.events[0]["context"] == {"a": 1, "b": 2}
    assert t.located_context is locator.contexts


def test_legacy_locator_edits_made_directly_reach_the_events() -> None:
    """Code that edits a 4.x locator's mapping itself, bypassing the tracker, changes the
    events, including a context changed in place after it was entered."""
    locator = LegacyLocator()
    memory = InMemoryBackend()
    t = Tracker({"memory": memory}, context_locator=locator)
    course = {"course_id": "c1"}
    locator.contexts["course"] = course
    t.emit("first")
    course["course_id"] = "c2"
    t.emit("second")
    del locator.contexts["course"]
    t.emit("third")
    assert [e["context"] for e in memory.events] == [
        {"course_id": "c1"},
        {"course_id": "c2"},
        {},
    ]


def test_stack_protocol_locators_are_used_as_they_are() -> None:
    """as_stack_locator returns the shipped locators themselves and wraps a 4.x one."""
    for locator in (DefaultContextLocator(), ThreadLocalContextLocator(), ContextVarLocator()):
        assert as_stack_locator(locator) is locator
    legacy = LegacyLocator()
    adapter = as_stack_locator(legacy)
    assert isinstance(adapter, MappingLocatorAdapter)
    assert adapter.locator is legacy


def test_adapter_set_stack_rewrites_the_legacy_mapping() -> None:
    """set_stack on an adapted 4.x locator leaves its mapping holding the stack's effective
    contexts in order, and restoring a saved stack restores the mapping."""
    legacy = LegacyLocator()
    adapter = as_stack_locator(legacy)
    adapter.push("a", {"x": 1})
    saved = adapter.get_stack()
    adapter.set_stack(saved.push("b", {"y": 2}).push("a", {"x": 3}))
    assert list(legacy.contexts.items()) == [("b", {"y": 2}), ("a", {"x": 3})]
    adapter.set_stack(saved)
    assert list(legacy.contexts.items()) == [("a", {"x": 1})]


def test_an_object_that_is_no_locator_is_refused_at_construction() -> None:
    """A context_locator with neither the stack protocol nor get() raises TypeError that
    names what a locator needs."""
    with pytest.raises(TypeError, match=r"get_stack\(\).*get\(\)"):
        Tracker({}, context_locator=object())


# -- hypothesis: contexts against a reference model -------------------------------------


class ModelStack:
    """The reference model: a list of (name, ctx) frames, innermost last."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, dict[str, int]]] = []

    def enter(self, name: str, ctx: dict[str, int]) -> None:
        self.frames.append((name, dict(ctx)))

    def exit(self, name: str) -> None:
        for index in range(len(self.frames) - 1, -1, -1):
            if self.frames[index][0] == name:
                del self.frames[index]
                return
        raise KeyError(name)

    @contextlib.contextmanager
    def block(self, name: str, ctx: dict[str, int]) -> Iterator[None]:
        self.enter(name, ctx)
        try:
            yield
        finally:
            self.exit(name)

    def observe(self) -> tuple[dict[str, int], list[tuple[str, dict[str, int]]], dict[str, int]]:
        innermost = {name: index for index, (name, _) in enumerate(self.frames)}
        effective = [
            frame for index, frame in enumerate(self.frames) if innermost[frame[0]] == index
        ]
        merged: dict[str, int] = {}
        for _, ctx in effective:
            merged.update(ctx)
        return merged, effective, merged


def run_program(program: list[Any], enter: Any, exit_: Any, block: Any, observe: Any) -> list:
    """Run enter/exit/with operations, recording KeyErrors and what is observed after each."""
    trace: list[Any] = []
    for op in program:
        try:
            if op[0] == "enter":
                enter(op[1], op[2])
            elif op[0] == "exit":
                exit_(op[1])
            else:
                with block(op[1], op[2]):
                    trace.append(run_program(op[3], enter, exit_, block, observe))
        except KeyError:
            trace.append("KeyError")
        trace.append(observe())
    return trace


NAMES = st.sampled_from(["a", "b", "c"])
CONTEXTS = st.dictionaries(st.sampled_from(["k", "x", "y"]), st.integers(0, 9), max_size=3)
OPERATIONS = st.recursive(
    st.one_of(
        st.tuples(st.just("enter"), NAMES, CONTEXTS),
        st.tuples(st.just("exit"), NAMES),
    ),
    lambda inner: st.tuples(st.just("with"), NAMES, CONTEXTS, st.lists(inner, max_size=4)),
    max_leaves=16,
)


@pytest.mark.parametrize("locator_cls", LOCATORS)
@settings(max_examples=150, deadline=None)
@given(program=st.lists(OPERATIONS, max_size=10))
def test_contexts_match_the_reference_model(locator_cls: type, program: list[Any]) -> None:
    """Random enter/exit/with sequences give the model's resolve_context, located_context
    and event context after every step, and KeyError exactly where the model does."""
    t, memory = make_tracker(locator_cls)

    def observe_tracker() -> tuple[Any, Any, Any]:
        t.emit("probe")
        return t.resolve_context(), list(t.located_context.items()), memory.events[-1]["context"]

    model = ModelStack()
    expected = run_program(program, model.enter, model.exit, model.block, model.observe)
    actual = run_program(program, t.enter_context, t.exit_context, t.context, observe_tracker)
    assert actual == expected


# -- backends, processors and delivery --------------------------------------------------


def test_backends_are_sorted_by_name_and_found_by_get_backend() -> None:
    """backends is ordered by sorted name; get_backend returns one, KeyError when missing."""
    backends = {name: InMemoryBackend() for name in ("zeta", "alpha", "mid")}
    t = Tracker(backends)
    assert list(t.backends) == ["alpha", "mid", "zeta"]
    assert t.get_backend("mid") is backends["mid"]
    with pytest.raises(KeyError):
        t.get_backend("missing")


def test_processors_property_lists_them_in_order() -> None:
    """processors lists the processors given, in the order they run."""

    def first(event: Any) -> None:
        return None

    def second(event: Any) -> None:
        return None

    t = Tracker(processors=[first, second])
    assert t.processors == [first, second]


def test_stats_shape() -> None:
    """stats() gives emitted, dropped and failed counts and each backend's own stats."""

    class Failing:
        mutates_events = False

        def send(self, event: Any) -> None:
            raise RuntimeError("down")

    def drop_secret(event: Any) -> Any:
        if event["name"] == "secret":
            raise EventEmissionExit
        return None

    memory = InMemoryBackend()
    t = Tracker({"memory": memory, "failing": Failing()}, processors=[drop_secret])
    for name in ("a", "secret", "b"):
        t.emit(name)
    stats = t.stats()
    assert stats == {
        "emitted": 3,
        "dropped": {"filtered": 1},
        "failed": {"failing": 2},
        "backends": {"memory": {"stored": 2, "discarded": 0}},
    }


class FlushRecorder:
    """A buffering backend that records the timeouts it is given and can move a fake clock."""

    mutates_events = False

    def __init__(self, clock: list[float], cost: float = 0.0, result: Any = True) -> None:
        self.clock = clock
        self.cost = cost
        self.result = result
        self.flushes: list[float | None] = []
        self.closes: list[float | None] = []

    def send(self, event: Any) -> None:
        pass

    def flush(self, timeout: float | None = None) -> Any:
        self.flushes.append(timeout)
        self.clock[0] += self.cost
        return self.result

    def close(self, timeout: float | None = None) -> None:
        self.closes.append(timeout)
        self.clock[0] += self.cost


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A monotonic clock that only moves when a test backend says so."""
    clock = [1000.0]

    class FakeTime:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

    from eventtracking._util import delivery_api as _delivery_api

    monkeypatch.setattr(_delivery_api, "time", FakeTime)
    return clock


def test_flush_shares_one_deadline(fake_clock: list[float]) -> None:
    """Tracker.flush(timeout) gives each backend what is left of one shared deadline."""
    a = FlushRecorder(fake_clock, cost=2.0)
    b = FlushRecorder(fake_clock, cost=1.0)
    c = FlushRecorder(fake_clock)
    t = Tracker({"a": a, "b": b, "c": c})
    assert t.flush(5.0) is True
    assert (a.flushes, b.flushes, c.flushes) == ([5.0], [3.0], [2.0])


def test_flush_without_timeout_passes_none(fake_clock: list[float]) -> None:
    """Tracker.flush() with no timeout passes None (no limit) to every backend."""
    a = FlushRecorder(fake_clock, cost=2.0)
    t = Tracker({"a": a})
    assert t.flush() is True
    assert a.flushes == [None]
    assert remaining(None) is None


def test_flush_reports_false_when_a_backend_does() -> None:
    """flush() returns False when any backend reports it could not deliver everything."""
    clock = [0.0]
    t = Tracker({"ok": FlushRecorder(clock), "late": FlushRecorder(clock, result=False)})
    assert t.flush(1.0) is False


def test_close_is_idempotent_and_shares_the_deadline(fake_clock: list[float]) -> None:
    """close(timeout) closes every backend once within one deadline; a second call does nothing."""
    a = FlushRecorder(fake_clock, cost=4.0)
    b = FlushRecorder(fake_clock)
    t = Tracker({"a": a, "b": b})
    t.close(10.0)
    t.close(10.0)
    assert (a.closes, b.closes) == ([10.0], [6.0])


def test_registered_finds_a_tracker_and_never_builds_the_fallback() -> None:
    """``registered()`` returns the tracker registered under a name, or None; unlike
    ``get_tracker()`` it never registers the fallback that prints events."""
    assert tracker.registered() is None
    assert tracker.registered_trackers() == []
    built = tracker.Tracker({"memory": InMemoryBackend()})
    tracker.register_tracker(built, "other")
    assert tracker.registered("other") is built
    assert tracker.registered() is None
    assert tracker.registered_trackers() == [("other", built)]


def test_the_fallback_prints_with_the_backend_the_package_hands_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback tracker is built with the backend given to ``set_console_backend``
    (the package gives the stream backend), and the tracker module imports none."""
    monkeypatch.setattr(tracker, "_console_backend", tracker._console_backend)
    memory = InMemoryBackend()
    tracker.set_console_backend(lambda: memory)
    tracker.emit("handed.over", {"i": 1})
    assert [event["name"] for event in memory.snapshot()] == ["handed.over"]
