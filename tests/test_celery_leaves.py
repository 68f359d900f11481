"""Tests for eventtracking.backends.celery._leaves: one message's entries down to the leaves.

The worker works out what to do at each level of the tree once per message; these
tests check that every event of a message still gets what it got event by event: its
own copy for each leaf that may change it, and a nested router's processors.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_support import Reading

from eventtracking import tracker
from eventtracking.backends.celery import _wire
from eventtracking.backends.celery import _worker as _celery_worker
from eventtracking.processors.exceptions import NoBackendEnabled
from eventtracking.routing import RoutingBackend

_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _spool_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dead letters (none expected) go to the default spool: keep it in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield


class Changing:
    """A leaf that changes every event it gets (it says nothing of mutates_events)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        event["data"]["changed"] = True
        event["name"] = "changed"
        self.events.append(event)


def numbering() -> Any:
    seen = itertools.count()

    def process(event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "data": {**event["data"], "seen": next(seen)}}

    return process


def test_every_event_of_a_message_gets_its_own_copy_and_its_processors() -> None:
    """In one 50-entry message, a leaf that changes events changes its own copies only
    (a leaf beside it and a leaf after it see each event as sent), and a nested router's
    processor runs once for each event."""
    first, beside, after = Changing(), Reading(), Reading()
    nested = RoutingBackend(backends={"reading": beside}, processors=[numbering()])
    name = f"leaves{next(_names)}"
    top = RoutingBackend(backends={"first": first, "nested": nested, "after": after})
    tracker.register_tracker(tracker.Tracker({name: top}))
    entries = [
        _wire.encode_entry(
            _wire.new_event_id(), _wire.encode_event({"name": f"e{i}", "data": {"i": i}})
        )
        for i in range(50)
    ]
    _celery_worker.deliver(name, entries)
    assert [event["data"] for event in first.events] == [
        {"i": i, "changed": True} for i in range(50)
    ]
    assert [(event["name"], event["data"]) for event in beside.events] == [
        (f"e{i}", {"i": i, "seen": i}) for i in range(50)
    ]
    assert [(event["name"], event["data"]) for event in after.events] == [
        (f"e{i}", {"i": i}) for i in range(50)
    ]
    assert _celery_worker.stats(name)["delivered"] == 50


class Holding:
    """A leaf that keeps the events it takes, and notes, as each arrives, what other
    than itself still refers to the one before."""

    mutates_events = False

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.others: list[list[str]] = []

    def send(self, event: dict[str, Any]) -> None:
        if self.events:
            referrers = gc.get_referrers(self.events[-1])
            self.others.append(
                [type(holder).__name__ for holder in referrers if holder is not self.events]
            )
        self.events.append(event)


def test_the_worker_lets_go_of_each_event_once_its_leaves_have_it() -> None:
    """While a message is delivered, an event already delivered is held by nothing of
    the worker's (only by the leaf that kept it), so the events of a large message do
    not pile up for the garbage collector; a retry reads the entry's text again."""
    leaf = Holding()
    name = f"leaves{next(_names)}"
    tracker.register_tracker(tracker.Tracker({name: RoutingBackend(backends={"leaf": leaf})}))
    entries = [
        _wire.encode_entry(_wire.new_event_id(), _wire.encode_event({"name": "e", "data": {}}))
        for _ in range(20)
    ]
    _celery_worker.deliver(name, entries)
    assert len(leaf.events) == 20
    assert leaf.others == [[]] * 19


class LooksLikeARouter:
    """Not a router, though it has a ``backends`` mapping and a ``send``."""

    mutates_events = False

    def __init__(self, leaf: Reading) -> None:
        self.backends = {"leaf": leaf}

    def send(self, event: dict[str, Any]) -> None:
        pass


def test_the_worker_delivers_only_to_a_router_by_the_router_rule() -> None:
    """A message naming a top-level backend that is no router (by
    eventtracking.routing.is_router, the rule the tracker's walk follows) is not walked
    into, even when the backend has a ``backends`` mapping: its entries are dead
    letters, counted."""
    leaf = Reading()
    name = f"leaves{next(_names)}"
    tracker.register_tracker(tracker.Tracker({name: LooksLikeARouter(leaf)}))
    entries = [
        _wire.encode_entry(_wire.new_event_id(), _wire.encode_event({"name": "e", "data": {}}))
    ]
    _celery_worker.deliver(name, entries)
    assert leaf.events == []
    stats = _celery_worker.stats(name)
    assert (stats["delivered"], stats["dead_lettered"]) == (0, 1)
    assert stats["dead_letter_reasons"] == {"unknown_backend": 1}


def entries_of(*names: str) -> list[str]:
    return [
        _wire.new_entry(_wire.encode_event({"name": name, "data": {}, "context": {}}))
        for name in names
    ]


def names_in(leaf: Reading) -> list[str]:
    return [event["name"] for event in leaf.events]


def test_the_next_message_sees_a_tree_changed_or_replaced_since_the_last() -> None:
    """What the worker keeps between messages (the target, the top level's plan) is
    for the same objects only: a leaf added or replaced in place, a router replaced
    under the same name and a new tracker each get the next message."""
    name = f"leaves{next(_names)}"
    old, added, replacing, nested_leaf, new_tracker_leaf = (Reading() for _ in range(5))
    top = RoutingBackend(backends={"old": old})
    tracker.register_tracker(tracker.Tracker({name: top}))
    _celery_worker.deliver(name, entries_of("first"))
    top.backends["added"] = added
    _celery_worker.deliver(name, entries_of("second"))
    top.backends["old"] = replacing
    _celery_worker.deliver(name, entries_of("third"))
    tracker.registered().backends[name] = RoutingBackend(backends={"n": nested_leaf})  # type: ignore[union-attr]
    _celery_worker.deliver(name, entries_of("fourth"))
    tracker.register_tracker(
        tracker.Tracker({name: RoutingBackend(backends={"t": new_tracker_leaf})})
    )
    _celery_worker.deliver(name, entries_of("fifth"))
    assert names_in(old) == ["first", "second"]
    assert names_in(added) == ["second", "third"]
    assert names_in(replacing) == ["third"]
    assert names_in(nested_leaf) == ["fourth"]
    assert names_in(new_tracker_leaf) == ["fifth"]


def test_a_message_looks_at_the_registered_tracker_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task finds its target once per message, for the signature check and the
    delivery both."""
    from eventtracking import tasks

    name = f"leaves{next(_names)}"
    leaf = Reading()
    tracker.register_tracker(tracker.Tracker({name: RoutingBackend(backends={"leaf": leaf})}))
    tasks.send_events.apply(args=(name, entries_of("warm")))
    looks = itertools.count()
    registered = tracker.registered

    def counting(*args: Any) -> Any:
        next(looks)
        return registered(*args)

    monkeypatch.setattr(tracker, "registered", counting)
    tasks.send_events.apply(args=(name, entries_of("a", "b")))
    assert names_in(leaf) == ["warm", "a", "b"]
    assert next(looks) == 1


class IdReading:
    """A leaf that notes the event id it is delivered under."""

    def __init__(self, fails: frozenset[str] = frozenset()) -> None:
        self.ids: list[str | None] = []
        self.fails = fails

    def send(self, event: dict[str, Any]) -> None:
        self.ids.append(_wire.current_event_id.get())
        if event["name"] in self.fails:
            # A refusal is a dead letter at once (in the spool under tmp_path): any
            # other error would be published again, to whichever Celery app is current.
            raise NoBackendEnabled


def test_each_leaf_sees_its_events_id_and_the_id_is_put_back_after_the_message() -> None:
    """Leaves of a flat tree and of a nested one read each event's own id while they
    take it, a failing event included; after the message the id is what it was."""
    name = f"leaves{next(_names)}"
    flat, nested_leaf = IdReading(fails=frozenset({"b"})), IdReading()
    tracker.register_tracker(tracker.Tracker({name: RoutingBackend(backends={"flat": flat})}))
    entries = entries_of("a", "b", "c")
    ids = [_wire.read_entry(text)[0] for text in entries]
    with _wire.delivering("0123456789abcdef01234567"):
        _celery_worker.deliver(name, entries)
        assert _wire.current_event_id.get() == "0123456789abcdef01234567"
    assert flat.ids == ids
    stats = _celery_worker.stats(name)
    assert stats["dead_letter_reasons"] == {"NoBackendEnabled": 1}
    assert stats["retried"] == 0  # nothing was published
    nested = RoutingBackend(backends={"leaf": nested_leaf})
    tracker.register_tracker(tracker.Tracker({name: RoutingBackend(backends={"n": nested})}))
    _celery_worker.deliver(name, entries)
    assert nested_leaf.ids == ids
    assert _wire.current_event_id.get() is None
