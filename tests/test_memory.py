"""Tests for eventtracking.backends.memory: a thread-safe in-memory backend."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from eventtracking.backends.memory import InMemoryBackend
from eventtracking.tracker import Tracker

WAIT = 10.0


def test_events_are_stored_in_order() -> None:
    """Every event sent is stored in ``events``, in the order sent."""
    memory = InMemoryBackend()
    t = Tracker({"memory": memory})
    for index in range(5):
        t.emit(f"e{index}", {"index": index})
    assert [(e["name"], e["data"]) for e in memory.events] == [
        (f"e{index}", {"index": index}) for index in range(5)
    ]


def test_stored_events_are_snapshots() -> None:
    """A stored event is a copy: changing the caller's data afterwards does not change it."""
    memory = InMemoryBackend()
    data = {"nested": {"value": 1}, "items": [1]}
    Tracker({"memory": memory}).emit("x", data)
    data["nested"]["value"] = 2
    data["items"].append(2)
    assert memory.events[0]["data"] == {"nested": {"value": 1}, "items": [1]}


def test_many_threads_emitting_store_every_event() -> None:
    """Events emitted from many threads at once are all stored, none lost or duplicated,
    and each thread's events keep their order."""
    memory = InMemoryBackend()
    t = Tracker({"memory": memory})
    threads_count, per_thread = 8, 400
    start = threading.Barrier(threads_count, timeout=WAIT)

    def work(thread: int) -> None:
        start.wait()
        for index in range(per_thread):
            t.emit("e", {"thread": thread, "index": index})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    with memory.lock:
        events = list(memory.events)
    assert len(events) == threads_count * per_thread
    for thread in range(threads_count):
        indexes = [e["data"]["index"] for e in events if e["data"]["thread"] == thread]
        assert indexes == list(range(per_thread))
    assert memory.stats() == {"stored": threads_count * per_thread, "discarded": 0}


def test_clear_forgets_every_event() -> None:
    """clear() empties the store; later events are stored again."""
    memory = InMemoryBackend()
    t = Tracker({"memory": memory})
    t.emit("a")
    t.emit("b")
    memory.clear()
    assert memory.events == []
    t.emit("c")
    assert [e["name"] for e in memory.events] == ["c"]


def test_max_events_discards_the_oldest_and_counts() -> None:
    """With max_events, only the newest events are kept; the discarded ones are counted."""
    memory = InMemoryBackend(max_events=3)
    t = Tracker({"memory": memory})
    for index in range(7):
        t.emit(f"e{index}")
    assert [e["name"] for e in memory.events] == ["e4", "e5", "e6"]
    assert memory.stats() == {"stored": 3, "discarded": 4}
    assert t.stats()["backends"]["memory"] == {"stored": 3, "discarded": 4}


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_invalid_max_events_raises(bad: Any) -> None:
    """max_events must be a positive int or None; anything else raises ValueError naming it."""
    with pytest.raises(ValueError, match="max_events"):
        InMemoryBackend(max_events=bad)


def test_send_batch_stores_each_event_in_order() -> None:
    """send_batch() stores copies of several events, in order."""
    memory = InMemoryBackend()
    batch = [{"name": "a", "data": [1]}, {"name": "b", "data": [2]}]
    memory.send_batch(batch)
    batch[0]["data"].append(9)
    assert memory.events == [{"name": "a", "data": [1]}, {"name": "b", "data": [2]}]


def test_snapshot_is_a_new_list() -> None:
    """snapshot() returns a new list: later events do not appear in it."""
    memory = InMemoryBackend()
    memory.send({"name": "a"})
    snapshot = memory.snapshot()
    memory.send({"name": "b"})
    assert snapshot == [{"name": "a"}]
    assert len(memory.events) == 2


def test_flush_is_always_true() -> None:
    """Nothing is buffered, so flush() reports success at once."""
    assert InMemoryBackend().flush(0.0) is True


def test_lock_guards_events() -> None:
    """``lock`` is the lock send() takes: while a reader holds it, senders wait."""
    memory = InMemoryBackend()
    sent = threading.Event()

    def sender() -> None:
        memory.send({"name": "late"})
        sent.set()

    with memory.lock:
        thread = threading.Thread(target=sender)
        thread.start()
        assert not sent.wait(0.2)
        assert memory.events == []
    assert sent.wait(WAIT)
    thread.join(WAIT)
    assert memory.events == [{"name": "late"}]


def test_memory_backend_promises_not_to_mutate() -> None:
    """InMemoryBackend declares mutates_events = False, so routers share events with it."""
    assert InMemoryBackend.mutates_events is False


def test_events_share_a_plain_read_only_context() -> None:
    """Events stored under the same plain contexts share one read-only context object,
    while their data is each event's own copy; a context holding a mutable value is
    copied per event instead."""
    from eventtracking._contextstack import FrozenContext

    memory = InMemoryBackend()
    t = Tracker({"memory": memory})
    data = {"list": [1]}
    with t.context("request", {"user": "ada", "n": 1}):
        t.emit("a", data)
        t.emit("b", data)
    with t.context("request", {"roles": ["x"]}):
        t.emit("c", data)
    first, second, third = memory.events
    assert first["context"] is second["context"]
    assert type(first["context"]) is FrozenContext
    assert first["data"] is not data and first["data"]["list"] is not data["list"]
    assert type(third["context"]) is dict
    third["context"]["roles"].append("y")
    assert t.resolve_context() == {}
    assert [list(e) for e in memory.events] == [["name", "timestamp", "context", "data"]] * 3
