"""Tests for eventtracking.locator: which threads and asyncio tasks share a context stack."""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import sys
import threading
from collections import OrderedDict
from typing import Any

import pytest

from eventtracking.backends.memory import InMemoryBackend
from eventtracking.locator import (
    ContextVarLocator,
    DefaultContextLocator,
    ThreadLocalContextLocator,
    stack_reader,
)
from eventtracking.tracker import Tracker

LOCATORS = [DefaultContextLocator, ThreadLocalContextLocator, ContextVarLocator]
ISOLATING = [ThreadLocalContextLocator, ContextVarLocator]
WAIT = 10.0


def make_tracker(locator: Any) -> tuple[Tracker, InMemoryBackend]:
    memory = InMemoryBackend()
    return Tracker({"memory": memory}, context_locator=locator), memory


def run_threads(count: int, target: Any) -> None:
    """Start ``count`` threads running target(index), join them and re-raise any failure."""
    errors: list[BaseException] = []

    def wrapped(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_get_is_an_ordered_view_of_the_entered_contexts(locator_cls: type) -> None:
    """get() shows each name's innermost context, outermost name first, and compares equal
    to a dict or OrderedDict with the same items; copy() is a snapshot."""
    locator = locator_cls()
    t, _ = make_tracker(locator)
    t.enter_context("a", {"x": 1})
    t.enter_context("b", {"y": 2})
    view = locator.get()
    assert list(view.items()) == [("a", {"x": 1}), ("b", {"y": 2})]
    assert view == {"a": {"x": 1}, "b": {"y": 2}}
    assert view == OrderedDict([("a", {"x": 1}), ("b", {"y": 2})])
    assert ("a" in view, "z" in view, len(view)) == (True, False, 2)
    snapshot = view.copy()
    t.exit_context("a")
    assert isinstance(snapshot, OrderedDict)
    assert list(snapshot) == ["a", "b"]
    assert list(view) == ["b"]
    assert t.located_context == {"b": {"y": 2}}


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_editing_get_enters_and_leaves_contexts(locator_cls: type) -> None:
    """As in 4.x, get()[name] = ctx enters a context and del get()[name] leaves it; the
    tracker's events follow."""
    locator = locator_cls()
    t, memory = make_tracker(locator)
    locator.get()["course"] = {"course_id": "c1"}
    t.emit("inside")
    del locator.get()["course"]
    t.emit("outside")
    assert [event["context"] for event in memory.events] == [{"course_id": "c1"}, {}]
    assert locator.get() == {}
    with pytest.raises(KeyError):
        del locator.get()["course"]


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_assigning_an_entered_name_stacks_a_frame_over_it(locator_cls: type) -> None:
    """Assigning a name already entered puts the new context innermost, so it wins; deleting
    it uncovers the previous one at its old position."""
    locator = locator_cls()
    t, memory = make_tracker(locator)
    view = locator.get()
    view["a"] = {"k": "outer a"}
    view["b"] = {"k": "b"}
    view["a"] = {"k": "inner a"}
    t.emit("two a")
    assert list(view.items()) == [("b", {"k": "b"}), ("a", {"k": "inner a"})]
    del view["a"]
    t.emit("one a")
    assert list(view.items()) == [("a", {"k": "outer a"}), ("b", {"k": "b"})]
    assert [e["context"] for e in memory.events] == [{"k": "inner a"}, {"k": "b"}]


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_view_writes_copy_the_context_and_reject_non_mappings(locator_cls: type) -> None:
    """A context assigned through get() is copied one level deep, as enter_context does, and
    a value that is not a mapping raises TypeError naming the context."""
    locator = locator_cls()
    t, memory = make_tracker(locator)
    given = {"user_id": 1}
    locator.get()["user"] = given
    given["user_id"] = 2
    t.emit("e")
    assert memory.events[0]["context"] == {"user_id": 1}
    with pytest.raises(TypeError, match=r"'bad'.*list"):
        locator.get()["bad"] = ["not", "a", "mapping"]
    assert list(locator.get()) == ["user"]


@pytest.mark.parametrize("locator_cls", ISOLATING)
def test_edits_through_get_stay_in_their_thread(locator_cls: type) -> None:
    """Two threads each editing get() of one thread-isolating locator see only their own
    entries, while both are entered at once, and both can leave them."""
    locator = locator_cls()
    parent_ctx = {"who": "parent"}
    child_ctx = {"who": "child"}
    child_entered = threading.Event()
    parent_checked = threading.Event()
    seen: dict[str, Any] = {}

    def child() -> None:
        locator.get()["child"] = child_ctx
        seen["child while both entered"] = dict(locator.get())
        child_entered.set()
        assert parent_checked.wait(WAIT)
        del locator.get()["child"]
        seen["child after leaving"] = dict(locator.get())

    locator.get()["parent"] = parent_ctx
    thread = threading.Thread(target=child)
    thread.start()
    try:
        assert child_entered.wait(WAIT)
        seen["parent while both entered"] = dict(locator.get())
    finally:
        parent_checked.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    del locator.get()["parent"]
    assert seen == {
        "child while both entered": {"child": child_ctx},
        "parent while both entered": {"parent": parent_ctx},
        "child after leaving": {},
    }
    assert locator.get() == {}


def test_default_locator_view_edits_are_seen_by_every_thread() -> None:
    """DefaultContextLocator keeps one stack: an entry made through get() in one thread is
    seen in another."""
    locator = DefaultContextLocator()
    locator.get()["main"] = {"main": True}
    seen: list[Any] = []

    def work(index: int) -> None:
        seen.append(dict(locator.get()))
        locator.get()["thread"] = {"thread": index}

    run_threads(1, work)
    assert seen == [{"main": {"main": True}}]
    assert list(locator.get()) == ["main", "thread"]


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_entering_sets_a_new_stack_and_never_changes_the_old_one(locator_cls: type) -> None:
    """The stored value is immutable: a stack read before an enter is unchanged after it."""
    locator = locator_cls()
    t, _ = make_tracker(locator)
    t.enter_context("a", {"x": 1})
    before = locator.get_stack()
    t.enter_context("b", {"y": 2})
    t.exit_context("a")
    assert before.frames == (("a", {"x": 1}),)
    assert locator.get_stack() is not before


@pytest.mark.parametrize("locator_cls", LOCATORS)
def test_two_trackers_do_not_share_contexts(locator_cls: type) -> None:
    """Each locator instance has its own stack: two trackers never see each other's contexts."""
    first, first_memory = make_tracker(locator_cls())
    second, second_memory = make_tracker(locator_cls())
    first.enter_context("a", {"who": "first"})
    second.emit("x")
    first.emit("y")
    assert second_memory.events[0]["context"] == {}
    assert first_memory.events[0]["context"] == {"who": "first"}


@pytest.mark.parametrize("locator_cls", ISOLATING)
def test_threads_do_not_see_each_others_contexts(locator_cls: type) -> None:
    """With thread-isolating locators, contexts entered concurrently stay in their thread."""
    t, memory = make_tracker(locator_cls())
    count = 8
    entered = threading.Barrier(count, timeout=WAIT)
    emitted = threading.Barrier(count, timeout=WAIT)

    def work(index: int) -> None:
        with t.context("thread", {"thread": index}), t.context(f"only{index}", {f"k{index}": 1}):
            entered.wait()  # every thread has entered before any emits
            t.emit("e", {"index": index})
            emitted.wait()  # nobody leaves before everyone emitted

    t.enter_context("main", {"main": True})
    run_threads(count, work)
    assert len(memory.events) == count
    for event in memory.events:
        index = event["data"]["index"]
        assert event["context"] == {"thread": index, f"k{index}": 1}
    assert t.resolve_context() == {"main": True}


def test_default_locator_shares_one_stack_between_threads() -> None:
    """DefaultContextLocator: a thread sees the contexts entered elsewhere, and vice versa."""
    t, memory = make_tracker(DefaultContextLocator())
    t.enter_context("main", {"main": True})

    def work(index: int) -> None:
        t.emit("from.thread")
        t.enter_context("thread", {"thread": index})

    run_threads(1, work)
    assert memory.events[0]["context"] == {"main": True}
    assert t.resolve_context() == {"main": True, "thread": 0}


def test_default_locator_concurrent_enters_and_exits_lose_nothing() -> None:
    """Threads entering and leaving their own contexts at once on the shared default stack
    never lose a frame: no KeyError on leaving, and nothing is left entered."""
    t, _ = make_tracker(DefaultContextLocator())
    errors: list[KeyError] = []
    start = threading.Barrier(8, timeout=WAIT)

    def work(index: int) -> None:
        start.wait()
        for _ in range(1000):
            try:
                with t.context(f"thread{index}", {"thread": index}):
                    pass
            except KeyError as exc:
                errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to expose races
    try:
        run_threads(8, work)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert list(t.located_context) == []


def test_context_var_thread_started_in_a_copied_context_inherits_it() -> None:
    """A thread run in a copy of the current context starts with its contexts, and its
    own changes stay in the thread."""
    t, memory = make_tracker(ContextVarLocator())
    t.enter_context("request", {"request_id": "r1"})
    ctx = contextvars.copy_context()

    def work(index: int) -> None:
        def inner() -> None:
            t.enter_context("thread", {"thread": index})
            t.emit("from.thread")

        ctx.run(inner)

    run_threads(1, work)
    assert memory.events[0]["context"] == {"request_id": "r1", "thread": 0}
    assert t.resolve_context() == {"request_id": "r1"}


def test_asyncio_tasks_only_see_their_own_contexts() -> None:
    """ContextVarLocator: many interleaved asyncio tasks each emit with only their contexts."""
    t, memory = make_tracker(ContextVarLocator())
    count = 50

    async def task(index: int) -> None:
        with t.context("request", {"request_id": index}):
            await asyncio.sleep(0)
            with t.context(f"step{index}", {f"step{index}": index}):
                await asyncio.sleep(0)
                t.emit("inner", {"index": index})
            await asyncio.sleep(0)
            t.emit("outer", {"index": index})

    async def main() -> None:
        await asyncio.gather(*(task(i) for i in range(count)))

    asyncio.run(main())
    assert len(memory.events) == 2 * count
    for event in memory.events:
        index = event["data"]["index"]
        expected = {"request_id": index}
        if event["name"] == "inner":
            expected[f"step{index}"] = index
        assert event["context"] == expected
    assert t.resolve_context() == {}


def test_asyncio_child_task_starts_from_its_parent_and_does_not_leak_back() -> None:
    """A task created inside a context starts with it; what the task enters or leaves
    never reaches the parent."""
    t, memory = make_tracker(ContextVarLocator())

    async def child() -> None:
        t.emit("child.start")
        t.enter_context("child", {"child": True})
        t.exit_context("request")
        t.emit("child.end")

    async def main() -> None:
        with t.context("request", {"request_id": 1}):
            await asyncio.create_task(child())
            t.emit("parent")

    asyncio.run(main())
    contexts = {event["name"]: event["context"] for event in memory.events}
    assert contexts == {
        "child.start": {"request_id": 1},
        "child.end": {"child": True},
        "parent": {"request_id": 1},
    }


def test_thread_local_locator_under_asyncio_keeps_the_thread_stack() -> None:
    """ThreadLocalContextLocator keeps one stack per thread: a context entered in the
    thread before asyncio.run is seen inside tasks on it."""
    t, memory = make_tracker(ThreadLocalContextLocator())
    t.enter_context("process", {"pid": 1})

    async def main() -> None:
        t.emit("in.task")

    asyncio.run(main())
    assert memory.events[0]["context"] == {"pid": 1}


def test_thread_local_locator_first_used_by_two_threads_at_once_keeps_both_stacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two threads using a new ThreadLocalContextLocator at once share one storage, so a
    context one of them entered is still there when it emits."""
    import eventtracking.locator as locator_module

    a_entered, b_paused = threading.Event(), threading.Event()
    real_local = threading.local
    paused: list[str] = []

    class PausingLocal(real_local):  # type: ignore[misc]
        def __init__(self) -> None:
            # Thread "b" is caught creating the storage while thread "a" enters.
            if threading.current_thread().name == "b" and not paused:
                paused.append("b")
                b_paused.set()
                a_entered.wait(1.0)

    monkeypatch.setattr(locator_module.threading, "local", PausingLocal)
    t, memory = make_tracker(ThreadLocalContextLocator())

    def in_b() -> None:
        t.emit("from.b")

    def in_a() -> None:
        b_paused.wait(WAIT)
        t.enter_context("request", {"who": "a"})
        a_entered.set()
        b.join(WAIT)
        t.emit("from.a")

    b = threading.Thread(target=in_b, name="b")
    a = threading.Thread(target=in_a, name="a")
    b.start()
    a.start()
    a.join(WAIT)
    b.join(WAIT)
    contexts = {event["name"]: event["context"] for event in memory.events}
    assert contexts == {"from.a": {"who": "a"}, "from.b": {}}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_default_locator_works_in_a_child_forked_while_its_lock_was_held() -> None:
    """A fork while another thread holds the default locator's lock leaves the child able
    to enter contexts: the child gets a fresh lock instead of deadlocking."""
    locator = DefaultContextLocator()
    tracker = Tracker({"memory": InMemoryBackend()}, context_locator=locator)
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with locator._lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert holding.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: a deadlock here ends in SIGALRM, not a hung test
            signal.alarm(5)
            tracker.enter_context("child", {"forked": True})
            os._exit(0 if tracker.resolve_context() == {"forked": True} else 1)
    finally:
        release.set()
        holder.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"the child did not exit normally: status {status}"
    assert os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("locator_class", [DefaultContextLocator, ContextVarLocator])
def test_stack_reader_reads_the_current_stack_of_a_shipped_locator(locator_class: Any) -> None:
    """The tracker's reader of a shipped locator sees every push, pop and set_stack, and
    runs no Python code of the package (the tracker calls it on every emit)."""
    locator = locator_class()
    read = stack_reader(locator)
    assert not hasattr(read, "__code__")
    locator.push("outer", {"a": 1})
    assert read() is locator.get_stack()
    assert dict(read().merged()) == {"a": 1}
    locator.pop("outer")
    assert read() is locator.get_stack()
    assert dict(read().merged()) == {}


@pytest.mark.parametrize("locator_class", [DefaultContextLocator, ContextVarLocator])
def test_a_subclass_that_overrides_get_stack_is_read_through_it(locator_class: Any) -> None:
    """A locator subclass with its own get_stack is read through it, by the tracker too."""

    class Fixed(locator_class):  # type: ignore[misc, valid-type]
        def get_stack(self) -> Any:
            return super().get_stack().push("fixed", {"fixed": True})

    tracker, memory = make_tracker(Fixed())
    tracker.emit("e")
    assert memory.snapshot()[0]["context"] == {"fixed": True}
