"""Tests for eventtracking.routing (imported by 4.x code as eventtracking.backends.routing):
processors, backends, copying and trees."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from eventtracking import _copy
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking.backends.logger import LoggerBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.processors.exceptions import (
    EventEmissionExit,
    NoBackendEnabled,
    NoTransformerImplemented,
)
from eventtracking.processors.regex_filter import RegexFilter
from eventtracking.processors.whitelist import NameWhitelistProcessor
from eventtracking.routing import is_router, may_change_events, plan, routes_here, walk
from eventtracking.tracker import Tracker

ROUTING_LOG = "eventtracking.backends.routing"


class Keeping:
    """Keeps the very objects it is sent, and promises not to change them."""

    mutates_events = False

    def __init__(self, log: list[str] | None = None, label: str = "") -> None:
        self.received: list[Any] = []
        self.log = log
        self.label = label

    def send(self, event: Any) -> None:
        self.received.append(event)
        if self.log is not None:
            self.log.append(self.label)


class Mutating:
    """A 4.x-style backend: adds ``_id`` and edits nested data of the event it gets."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    def send(self, event: Any) -> None:
        event["_id"] = len(self.received)
        event["data"]["nested"]["value"] = "changed by backend"
        event["data"]["nested"]["list"].append("backend")
        event["context"]["added"] = True
        self.received.append(event)


class Raising:
    """A backend that raises the given exception on every send."""

    mutates_events = False

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def send(self, event: Any) -> None:
        raise self.exc


def sample_data() -> dict[str, Any]:
    return {"nested": {"value": "original", "list": [1, 2]}, "top": 1}


def make_event(data: Any = None) -> dict[str, Any]:
    return {"name": "e", "timestamp": None, "context": {"c": 1}, "data": data or sample_data()}


# -- registration -----------------------------------------------------------------------


def test_backends_are_registered_in_sorted_name_order() -> None:
    """Backends given to the constructor are kept, and sent to, in sorted name order."""
    order: list[str] = []
    names = ["charlie", "alpha", "bravo"]
    router = RoutingBackend({name: Keeping(order, name) for name in names})
    assert list(router.backends) == sorted(names)
    router.send(make_event())
    assert order == sorted(names)


@pytest.mark.parametrize("backend", [object(), type("NoCall", (), {"send": 5})()])
def test_register_backend_without_callable_send_raises(backend: Any) -> None:
    """register_backend raises ValueError when send is not callable: 4.x's sentence with the
    class name first, then the name it was registered under."""
    router = RoutingBackend()
    expected = f'Backend {type(backend).__name__} does not have a callable "send" method. '
    for register in (
        lambda: router.register_backend("bad", backend),
        lambda: RoutingBackend({"bad": backend}),
    ):
        with pytest.raises(ValueError) as caught:
            register()
        assert str(caught.value).startswith(expected)
        assert "registered as 'bad'" in str(caught.value)
    assert router.backends == {}


@pytest.mark.parametrize("processor", [None, 5, "name", {"a": 1}])
def test_register_processor_not_callable_raises(processor: Any) -> None:
    """register_processor raises ValueError for anything that is not callable: 4.x's
    sentence with the class name first, then the value."""
    router = RoutingBackend()
    expected = f"Processor {type(processor).__name__} is not callable. Got {processor!r};"
    for register in (
        lambda: router.register_processor(processor),
        lambda: RoutingBackend(processors=[processor]),
    ):
        with pytest.raises(ValueError) as caught:
            register()
        assert str(caught.value).startswith(expected)
    assert router.processors == []


def test_backend_registered_later_receives_events() -> None:
    """register_backend after construction adds a backend that receives later events."""
    router = RoutingBackend({"first": Keeping()})
    late = Keeping()
    router.register_backend("late", late)
    router.send(make_event())
    assert len(late.received) == 1


# -- processors -------------------------------------------------------------------------


def appender(label: str, calls: list[str]) -> Any:
    """A processor that records its call and returns a new event with label appended."""

    def processor(event: Any) -> Any:
        calls.append(label)
        trail = [*event["data"].get("trail", []), label]
        return {**event, "data": {**event["data"], "trail": trail}}

    processor.mutates_events = False  # type: ignore[attr-defined]
    return processor


def test_processors_run_in_order_and_replacements_chain() -> None:
    """Processors run in order; each non-None return replaces the event for the next."""
    calls: list[str] = []
    keeping = Keeping()
    router = RoutingBackend(
        {"keep": keeping}, processors=[appender(label, calls) for label in ("p1", "p2", "p3")]
    )
    router.send(make_event({"x": 1}))
    assert calls == ["p1", "p2", "p3"]
    assert keeping.received[0]["data"] == {"x": 1, "trail": ["p1", "p2", "p3"]}


def test_processor_returning_none_keeps_the_event() -> None:
    """A processor that returns None leaves the event as it was."""
    keeping = Keeping()
    seen: list[Any] = []

    def observe(event: Any) -> None:
        seen.append(event)

    observe.mutates_events = False  # type: ignore[attr-defined]
    router = RoutingBackend({"keep": keeping}, processors=[observe])
    event = make_event()
    router.send(event)
    assert keeping.received == [event]
    assert seen[0] is keeping.received[0]


def test_event_emission_exit_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    """EventEmissionExit stops the chain: no later processor or backend sees the event,
    and it is counted as dropped.filtered, without an error log."""
    calls: list[str] = []
    keeping = Keeping()

    def drop(event: Any) -> None:
        calls.append("drop")
        raise EventEmissionExit

    router = RoutingBackend({"keep": keeping}, processors=[drop, appender("after", calls)])
    with caplog.at_level(logging.ERROR, logger=ROUTING_LOG):
        router.send(make_event())
    assert calls == ["drop"]
    assert keeping.received == []
    assert router.stats()["dropped"] == {"filtered": 1}
    assert caplog.records == []


def test_process_event_reraises_event_emission_exit() -> None:
    """process_event() lets EventEmissionExit through so callers can tell a drop."""

    def drop(event: Any) -> None:
        raise EventEmissionExit

    router = RoutingBackend(processors=[drop])
    with pytest.raises(EventEmissionExit):
        router.process_event(make_event())


def test_failing_processor_is_logged_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """A processor raising anything else is logged at ERROR and counted; the event goes on
    to the next processors and the backends without its change."""
    calls: list[str] = []
    keeping = Keeping()

    def broken(event: Any) -> None:
        event["data"]["half_done"] = True
        raise ValueError("processor bug")

    router = RoutingBackend(
        {"keep": keeping}, processors=[appender("before", calls), broken, appender("after", calls)]
    )
    with caplog.at_level(logging.ERROR, logger=ROUTING_LOG):
        router.send(make_event({"x": 1}))
        router.send(make_event({"x": 2}))
    assert calls == ["before", "after", "before", "after"]
    assert [e["data"]["trail"] for e in keeping.received] == [["before", "after"]] * 2
    assert router.stats()["failed"] == {"processor": 2}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "processor bug" in str(errors[0].exc_info[1])


# -- backends ---------------------------------------------------------------------------


def test_failing_backend_is_logged_counted_and_others_still_receive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend that raises is logged at ERROR with its name and counted; the others
    before and after it still get the event."""
    first, last = Keeping(), Keeping()
    router = RoutingBackend({"a": first, "b": Raising(RuntimeError("disk full")), "c": last})
    with caplog.at_level(logging.ERROR, logger=ROUTING_LOG):
        router.send(make_event())
        router.send(make_event())
    assert len(first.received) == len(last.received) == 2
    assert router.stats()["failed"] == {"b": 2}
    assert any("'b'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (NoTransformerImplemented("no"), "no_transformer"),
        (NoBackendEnabled("off"), "backend_disabled"),
    ],
)
def test_expected_backend_refusals_are_counted_as_drops(exc: Exception, reason: str) -> None:
    """NoTransformerImplemented and NoBackendEnabled count as drops, not failures, and do
    not stop the other backends."""
    other = Keeping()
    t = Tracker({"refusing": Raising(exc), "other": other})
    t.emit("x")
    stats = t.stats()
    assert stats["dropped"] == {reason: 1}
    assert stats["failed"] == {}
    assert len(other.received) == 1


def test_tracker_emit_survives_every_kind_of_failure() -> None:
    """Raising processors and backends never make Tracker.emit raise."""

    def broken(event: Any) -> None:
        raise KeyError("processor")

    memory = InMemoryBackend()
    t = Tracker({"bad": Raising(TypeError("backend")), "memory": memory}, processors=[broken])
    t.emit("x", {"a": 1})
    assert [e["data"] for e in memory.events] == [{"a": 1}]


# -- isolation --------------------------------------------------------------------------


@pytest.mark.parametrize("mutator_name", ["a_first", "z_last"])
def test_mutating_backend_is_never_seen_by_siblings_or_the_caller(mutator_name: str) -> None:
    """A backend that adds _id and edits nested data works on its own copy: siblings
    (before or after it) and the caller's data never see the change."""
    mutating = Mutating()
    keeping = Keeping()
    memory = InMemoryBackend()
    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    logger = logging.getLogger("tests.routing.isolation")
    logger.handlers[:] = [Collect()]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    t = Tracker(
        {
            mutator_name: mutating,
            "keep": keeping,
            "memory": memory,
            "log": LoggerBackend(name=logger.name, max_event_size=None),
        }
    )
    data = sample_data()
    original = copy.deepcopy(data)
    t.emit("x", data)
    t.emit("y", data)

    assert data == original
    assert len(mutating.received) == 2
    assert mutating.received[1]["data"]["nested"]["value"] == "changed by backend"
    for event in [*keeping.received, *memory.events]:
        assert "_id" not in event
        assert event["data"] == original
        assert event["context"] == {}
    assert len(logged) == 2
    assert all('"_id"' not in line and "changed by backend" not in line for line in logged)


def test_lone_mutating_backend_never_changes_later_events() -> None:
    """A lone backend adding _id to its event does not leak into the next event."""
    mutating = Mutating()
    t = Tracker({"only": mutating})
    t.emit("x", sample_data())
    t.emit("y", sample_data())
    assert [e["_id"] for e in mutating.received] == [0, 1]
    assert mutating.received[0] is not mutating.received[1]


def test_mutating_processor_never_changes_the_callers_data_or_context() -> None:
    """A processor editing the event in place works on a copy: the caller's data (nested
    too) and the entered context stay as they were; backends see the edit."""

    def scrub(event: Any) -> None:
        event["data"]["nested"]["value"] = "scrubbed"
        event["data"]["nested"]["list"].clear()
        event["data"]["added"] = True
        event["context"]["user"]["name"] = "anonymous"

    keeping = Keeping()
    t = Tracker({"keep": keeping}, processors=[scrub])
    user = {"name": "alice"}
    t.enter_context("request", {"user": user})
    data = sample_data()
    original = copy.deepcopy(data)
    t.emit("x", data)
    t.emit("y", data)

    assert data == original
    assert user == {"name": "alice"}
    assert t.resolve_context() == {"user": {"name": "alice"}}
    for event in keeping.received:
        assert event["data"] == {
            "nested": {"value": "scrubbed", "list": []},
            "top": 1,
            "added": True,
        }
        assert event["context"] == {"user": {"name": "anonymous"}}


class Uncopyable:
    """A value that refuses to be copied."""

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("cannot copy me")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("cannot pickle me")


def test_uncopyable_value_never_raises_and_the_event_is_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value whose copy raises is shared instead of copied, counted, and every
    processor and backend still receives the event; emit does not raise."""
    monkeypatch.setattr(_copy, "_RATE_LIMITED", RateLimitedLogger(_copy.LOG))

    def touch(event: Any) -> None:
        event["data"]["processed"] = True

    first, second = Mutating(), Mutating()
    memory = InMemoryBackend()
    t = Tracker({"m1": first, "m2": second, "memory": memory}, processors=[touch])
    value = Uncopyable()
    before = _copy.COPY_STATS.get("uncopyable")
    t.emit("x", {"odd": value, "nested": {"value": 1, "list": []}})
    assert _copy.COPY_STATS.get("uncopyable") > before
    for event in [first.received[0], second.received[0], memory.events[0]]:
        assert event["data"]["odd"] is value
        assert event["data"]["processed"] is True
    assert t.stats()["failed"] == {}


def test_non_mutating_components_share_one_object() -> None:
    """When every processor and backend promises not to mutate, nothing is copied: all
    of them, through a nested router too, get the very same event and the caller's data."""
    seen: list[Any] = []

    def watch(event: Any) -> None:
        seen.append(event)

    watch.mutates_events = False  # type: ignore[attr-defined]
    a, b, inner = Keeping(), Keeping(), Keeping()
    tree = RoutingBackend({"inner": inner}, processors=[NameWhitelistProcessor(["x"])])
    t = Tracker(
        {"a": a, "b": b, "tree": tree},
        processors=[watch, RegexFilter("allowlist", ["x"]), NameWhitelistProcessor(["x"])],
    )
    data = {"nested": {"k": [1]}}
    t.emit("x", data)
    event = seen[0]
    assert a.received[0] is event
    assert b.received[0] is event
    assert inner.received[0] is event
    assert event["data"] is data


def test_only_mutating_backends_get_copies() -> None:
    """Beside non-mutating siblings, a mutating backend gets a copy and the others share."""
    a, b, mutating = Keeping(), Keeping(), Mutating()
    router = RoutingBackend({"a": a, "b": b, "m": mutating})
    event = make_event()
    router.send(event)
    assert a.received[0] is event and b.received[0] is event
    assert mutating.received[0] is not event
    assert "_id" not in event


def test_a_router_never_mutates_what_it_is_given() -> None:
    """A router copies for its own components, so it says mutates_events is False
    whatever it holds, and the event it was given is unchanged afterwards."""
    routers = [
        RoutingBackend({"k": Keeping()}),
        RoutingBackend({"m": Mutating()}),
        RoutingBackend({"k": Keeping()}, processors=[lambda e: e["data"].clear()]),
        RoutingBackend({"tree": RoutingBackend({"m": Mutating()})}),
    ]
    for router in routers:
        assert router.mutates_events is False
        event = make_event()
        original = copy.deepcopy(event)
        router.send(event)
        assert event == original


def test_nested_router_with_mutator_is_isolated_from_a_sibling() -> None:
    """A nested router holding a mutating backend never leaks the change to the outer
    router's other backends."""
    keeping, mutating = Keeping(), Mutating()
    outer = RoutingBackend({"keep": keeping, "tree": RoutingBackend({"m": mutating})})
    event = make_event()
    original = copy.deepcopy(event)
    outer.send(event)
    assert keeping.received[0] == original
    assert mutating.received[0]["_id"] == 0


# -- trees: processors, flush, close and stats ------------------------------------------


def test_nested_tree_applies_branch_processors_to_that_branch_only() -> None:
    """A nested router's processors filter only its own branch."""
    everything, allowed = InMemoryBackend(), InMemoryBackend()
    branch = RoutingBackend({"allowed": allowed}, processors=[NameWhitelistProcessor(["keep"])])
    t = Tracker({"all": everything, "branch": branch})
    t.emit("keep")
    t.emit("other")
    assert [e["name"] for e in everything.events] == ["keep", "other"]
    assert [e["name"] for e in allowed.events] == ["keep"]
    stats = t.stats()
    assert stats["dropped"] == {}
    assert stats["backends"]["branch"]["dropped"] == {"filtered": 1}
    assert stats["backends"]["branch"]["backends"]["allowed"]["stored"] == 1


class Buffered:
    """A backend that buffers: records flush/close timeouts and can fail or raise."""

    mutates_events = False

    def __init__(self, flush_result: Any = True, raise_on: str = "") -> None:
        self.flush_result = flush_result
        self.raise_on = raise_on
        self.flushes: list[float | None] = []
        self.closes: list[float | None] = []

    def send(self, event: Any) -> None:
        pass

    def flush(self, timeout: float | None = None) -> Any:
        self.flushes.append(timeout)
        if self.raise_on == "flush":
            raise RuntimeError("flush failed")
        return self.flush_result

    def close(self, timeout: float | None = None) -> None:
        self.closes.append(timeout)
        if self.raise_on == "close":
            raise RuntimeError("close failed")

    def stats(self) -> dict[str, Any]:
        if self.raise_on == "stats":
            raise RuntimeError("stats failed")
        return {"queued": 0}


def test_flush_and_close_reach_every_backend_in_a_tree() -> None:
    """Tracker.flush and close call flush/close on backends nested at any depth, each
    with a timeout no larger than the one given."""
    top, deep = Buffered(), Buffered()
    tree = RoutingBackend({"deep": RoutingBackend({"leaf": deep}), "plain": Keeping()})
    t = Tracker({"top": top, "tree": tree})
    assert t.flush(2.0) is True
    t.close(3.0)
    for backend, limit in ((top, 2.0), (deep, 2.0)):
        assert len(backend.flushes) == 1
        assert 0 < backend.flushes[0] <= limit
    for backend in (top, deep):
        assert len(backend.closes) == 1
        assert 0 < backend.closes[0] <= 3.0


@pytest.mark.parametrize(("result", "expected"), [(True, True), (None, True), (False, False)])
def test_flush_result_in_a_tree(result: Any, expected: bool) -> None:
    """flush() is True unless a backend anywhere in the tree returns False; None is success."""
    t = Tracker({"tree": RoutingBackend({"leaf": Buffered(flush_result=result)})})
    assert t.flush(1.0) is expected


@pytest.mark.parametrize("where", ["flush", "close", "stats"])
def test_raising_flush_close_or_stats_is_logged_and_others_go_on(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend whose flush, close or stats raises is logged; the others are still
    reached, and a raising flush makes flush() return False."""
    bad, good = Buffered(raise_on=where), Buffered()
    t = Tracker({"a_bad": bad, "b_good": good})
    with caplog.at_level(logging.ERROR, logger="eventtracking"):
        flushed = t.flush(1.0)
        stats = t.stats()
        t.close(1.0)
    assert flushed is (where != "flush")
    assert len(good.flushes) == len(good.closes) == 1
    assert ("a_bad" in stats["backends"]) is (where != "stats")
    assert stats["backends"]["b_good"] == {"queued": 0}
    assert any("a_bad" in r.getMessage() for r in caplog.records)


def test_router_stats_shape() -> None:
    """RoutingBackend.stats() has dropped and failed groups and backends' own stats."""
    router = RoutingBackend({"memory": InMemoryBackend(), "keep": Keeping()})
    router.send(make_event())
    assert router.stats() == {
        "dropped": {},
        "failed": {},
        "backends": {"memory": {"stored": 1, "discarded": 0}},
    }


# -- editing backends and processors directly, as 4.x code does --------------------------


def test_backends_edited_directly_are_used() -> None:
    """A backend added to tracker.backends directly receives events, and one deleted or
    popped from it no longer does."""
    first, second, third = InMemoryBackend(), InMemoryBackend(), InMemoryBackend()
    t = Tracker({"first": first, "third": third})
    t.backends["second"] = second
    del t.backends["first"]
    t.emit("x")
    t.backends.pop("third")
    t.emit("y")
    assert first.events == []
    assert [e["name"] for e in second.events] == ["x", "y"]
    assert [e["name"] for e in third.events] == ["x"]


def test_backend_replaced_directly_gets_its_own_copy() -> None:
    """Replacing a backend directly with one that mutates events updates the copy plan:
    the sibling never sees its change."""
    keeping = Keeping()
    t = Tracker({"keep": keeping, "other": Keeping()})
    t.backends["other"] = Mutating()
    t.emit("x", sample_data())
    assert "_id" not in keeping.received[0]
    assert keeping.received[0]["data"] == sample_data()


def test_processor_appended_directly_never_changes_the_callers_data() -> None:
    """A mutating processor appended to tracker.processors directly still works on a
    copy, and one removed directly no longer runs."""
    calls: list[str] = []

    def scrub(event: Any) -> None:
        calls.append("scrub")
        event["data"]["nested"]["value"] = "scrubbed"

    keeping = Keeping()
    t = Tracker({"keep": keeping})
    t.processors.append(scrub)
    data = sample_data()
    t.emit("x", data)
    assert data == sample_data()
    assert keeping.received[0]["data"]["nested"]["value"] == "scrubbed"
    t.processors.remove(scrub)
    t.emit("y", data)
    assert calls == ["scrub"]
    assert keeping.received[1]["data"] is data


# -- copies: a 4.x-style backend, and how many copies a fan-out makes ----------------------


class EditsData:
    """A backend written for 4.x: no flag, and it edits event['data'] in place."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    def send(self, event: Any) -> None:
        event["data"]["nested"]["value"] = "edited"
        event["data"]["nested"]["list"].append("edited")
        event["data"]["new"] = True
        event["context"]["edited"] = True
        self.received.append(event)


def test_lone_4x_backend_editing_data_never_changes_the_callers_data() -> None:
    """A single backend without the flag that edits event['data'] (and its nested dicts
    and lists) works on its own copy: the caller's dict is unchanged, as under 4.x."""
    backend = EditsData()
    t = Tracker({"only": backend})
    t.enter_context("request", {"user": "ada"})
    data = sample_data()
    original = copy.deepcopy(data)
    t.emit("x", data)
    t.emit("y", data)
    assert data == original
    assert t.resolve_context() == {"user": "ada"}
    assert [e["data"]["nested"]["value"] for e in backend.received] == ["edited", "edited"]
    assert backend.received[0]["data"]["nested"]["list"] == [1, 2, "edited"]
    assert backend.received[0]["data"] is not data


class CountingCopier:
    """A Copier that counts the copiers made and the copies they hand out."""

    made = 0
    handed_out = 0

    def __init__(self, value: Any, hint: Any = None) -> None:
        CountingCopier.made += 1
        self._copier = _copy.Copier(value, hint)

    @property
    def hint(self) -> Any:
        return self._copier.hint

    def copy(self) -> Any:
        CountingCopier.handed_out += 1
        return self._copier.copy()

    def copies(self, count: int) -> list[Any]:
        made = self._copier.copies(count)
        CountingCopier.handed_out += len(made)
        return made


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingCopier]:
    """Routers make their copies through CountingCopier."""
    import eventtracking.routing as routing

    CountingCopier.made = CountingCopier.handed_out = 0
    monkeypatch.setattr(routing, "Copier", CountingCopier)
    return CountingCopier


def test_each_4x_backend_gets_its_own_copy(counting: type[CountingCopier]) -> None:
    """Sixteen backends without the flag each get a distinct copy, none sees another's
    edits, and the caller's data is untouched: 16 copies from one walk of the event."""
    backends = [EditsData() for _ in range(16)]
    t = Tracker({f"b{i:02}": backend for i, backend in enumerate(backends)})
    data = sample_data()
    original = copy.deepcopy(data)
    t.emit("x", data)
    assert data == original
    received = [backend.received[0] for backend in backends]
    assert len({id(event) for event in received}) == 16
    assert len({id(event["data"]["nested"]["list"]) for event in received}) == 16
    for event in received:
        assert event["data"]["nested"]["list"] == [1, 2, "edited"]
    assert (counting.made, counting.handed_out) == (1, 16)


def test_private_event_goes_to_the_last_backend_without_a_copy(
    counting: type[CountingCopier],
) -> None:
    """After a processor chain that works on a private copy, N backends without the flag
    need N - 1 copies: the last one gets the processed event itself."""
    processed: list[Any] = []

    def stamp(event: Any) -> None:
        event["data"]["stamped"] = True
        processed.append(event)

    backends = [EditsData() for _ in range(4)]
    t = Tracker({f"b{i}": backend for i, backend in enumerate(backends)}, processors=[stamp])
    data = sample_data()
    t.emit("x", data)
    assert "stamped" not in data
    assert backends[-1].received[0] is processed[0]
    assert all(b.received[0] is not processed[0] for b in backends[:-1])
    assert all(b.received[0]["data"]["nested"]["list"] == [1, 2, "edited"] for b in backends)
    assert counting.handed_out == 3


def test_flagged_backend_after_the_last_mutator_never_sees_its_edits() -> None:
    """The private event goes uncopied only to the very last backend: a flagged
    backend after a mutator still sees the event as the processors left it."""

    def stamp(event: Any) -> None:
        event["data"]["stamped"] = True

    keeping = Keeping()
    t = Tracker({"a_edits": EditsData(), "z_keeps": keeping}, processors=[stamp])
    t.emit("x", sample_data())
    assert keeping.received[0]["data"] == {**sample_data(), "stamped": True}


def test_router_tree_copies_once_per_leaf_from_one_walk(
    counting: type[CountingCopier],
) -> None:
    """A 4x4 tree of routers with 4.x leaves makes one copy per leaf and walks the
    event once for the whole tree; no leaf sees another's edits, nor does the caller."""
    leaves = [[EditsData() for _ in range(4)] for _ in range(4)]
    tree = {
        f"r{i}": RoutingBackend({f"l{j}": leaf for j, leaf in enumerate(row)})
        for i, row in enumerate(leaves)
    }
    t = Tracker(tree)
    data = sample_data()
    original = copy.deepcopy(data)
    t.emit("x", data)
    assert data == original
    received = [leaf.received[0] for row in leaves for leaf in row]
    assert len({id(event) for event in received}) == 16
    assert all(event["data"]["nested"]["list"] == [1, 2, "edited"] for event in received)
    assert (counting.made, counting.handed_out) == (1, 16)


def test_branch_processor_copies_once_then_hands_its_copy_down(
    counting: type[CountingCopier],
) -> None:
    """A branch whose processor may change events copies once for the chain; its single
    4.x leaf then receives that private copy without another one."""
    seen: list[Any] = []

    def stamp(event: Any) -> None:
        event["data"]["branch"] = True
        seen.append(event)

    leaf, sibling = EditsData(), Keeping()
    t = Tracker({"a": sibling, "branch": RoutingBackend({"leaf": leaf}, processors=[stamp])})
    data = sample_data()
    t.emit("x", data)
    assert leaf.received[0] is seen[0]
    assert "branch" not in data and "branch" not in sibling.received[0]["data"]
    assert counting.handed_out == 0


def test_processor_returning_a_shared_object_is_not_handed_out_as_private() -> None:
    """A processor that returns an object it keeps (a module constant, say) does not make
    it private: a backend that edits events gets a copy, and the constant is unchanged."""
    constant = {"name": "constant", "timestamp": None, "context": {}, "data": sample_data()}
    kept = copy.deepcopy(constant)

    def replace(event: Any) -> Any:
        event["data"]["touched"] = True  # a mutating processor: the chain is private
        return constant

    backend = EditsData()
    Tracker({"only": backend}, processors=[replace]).emit("x", {"a": 1})
    assert constant == kept
    assert backend.received[0]["data"]["new"] is True


class Legacy(RoutingBackend):
    """A RoutingBackend subclass written for 4.x, overriding process_event."""

    def process_event(self, event: Any) -> Any:
        event = super().process_event(event)
        return {**event, "data": {**event["data"], "legacy": True}}


def test_subclass_overriding_process_event_is_still_called() -> None:
    """A 4.x subclass that overrides process_event, top-level or nested, keeps working:
    its override runs before its backends receive the event."""
    top_leaf, nested_leaf = Keeping(), Keeping()
    t = Tracker({"legacy": Legacy({"leaf": nested_leaf}), "plain": Keeping()})
    t.emit("x", {"a": 1})
    assert nested_leaf.received[0]["data"] == {"a": 1, "legacy": True}
    Legacy({"leaf": top_leaf}).send(make_event({"b": 2}))
    assert top_leaf.received[0]["data"] == {"b": 2, "legacy": True}


class SendsElsewhere(RoutingBackend):
    """A router that does not hand events to its nested backends itself (as the Celery
    and event-bus routers do): it keeps them."""

    def __init__(self, backends: Any) -> None:
        super().__init__(backends)
        self.kept: list[Any] = []

    def send(self, event: Any) -> None:
        self.kept.append(event)


def tree() -> dict[str, Any]:
    return {
        "b": RoutingBackend({"leaf": Keeping(), "deep": Legacy({"x": EditsData()})}),
        "a": SendsElsewhere({"y": Keeping()}),
        "c": Keeping(),
    }


def test_walk_visits_every_backend_parents_first_into_every_router() -> None:
    """routing.walk yields each backend of a tree once, before its nested ones, with
    the path of names down to it, going into every router (one that sends elsewhere
    included) and into nothing else."""
    backends = tree()
    found = [(node.path, node.backend) for node in walk(backends)]
    inner = backends["b"].backends
    assert found == [
        (("b",), backends["b"]),
        (("b", "deep"), inner["deep"]),
        (("b", "deep", "x"), inner["deep"].backends["x"]),
        (("b", "leaf"), inner["leaf"]),
        (("a",), backends["a"]),
        (("a", "y"), backends["a"].backends["y"]),
        (("c",), backends["c"]),
    ]


def test_walk_into_routes_here_follows_the_events_of_this_process() -> None:
    """With into=routes_here the walk stops at a router that sends its events
    elsewhere; a 4.x subclass overriding only process_event is still gone into."""
    paths = [node.path for node in walk(tree(), into=routes_here)]
    assert ("b", "deep", "x") in paths
    assert ("a",) in paths
    assert ("a", "y") not in paths


def test_plan_says_how_each_backend_of_a_level_is_reached() -> None:
    """routing.plan gives, for one level, whether a delivering walk goes into each
    backend (routes_here) and whether it gets a copy of its own (may_change_events)."""
    backends = tree()
    nodes = {node.path: node for node in plan(backends, ("top",))}
    assert list(nodes) == [("top", "b"), ("top", "a"), ("top", "c")]
    assert (nodes[("top", "b")].inline, nodes[("top", "b")].copies) == (True, False)
    assert (nodes[("top", "a")].inline, nodes[("top", "a")].copies) == (False, False)
    assert (nodes[("top", "c")].inline, nodes[("top", "c")].copies) == (False, False)
    edits = {node.path[-1]: node for node in plan(backends["b"].backends["deep"].backends)}
    assert edits["x"].copies is True
    assert may_change_events(EditsData()) is True
    assert may_change_events(Keeping()) is False
    assert is_router(backends["a"]) and not routes_here(backends["a"])
    assert routes_here(backends["b"].backends["deep"])
    assert not is_router(backends["c"])


def test_nested_subclass_overriding_process_event_is_routed_in_the_tree() -> None:
    """A nested 4.x router that overrides only process_event goes through the parent's
    walk: its override runs once, its copying backend gets a copy and the caller's
    event is unchanged."""
    leaf, plain = EditsData(), Keeping()
    event = make_event({"nested": {"value": 1, "list": []}})
    RoutingBackend({"legacy": Legacy({"leaf": leaf}), "plain": plain}).send(event)
    assert leaf.received[0]["data"] == {
        "nested": {"value": "edited", "list": ["edited"]},
        "legacy": True,
        "new": True,
    }
    assert plain.received == [event]
    assert event["data"] == {"nested": {"value": 1, "list": []}}
