"""Tests for eventtracking._util.stats: the counters behind every stats() method."""

from __future__ import annotations

import threading

from eventtracking._util.stats import Counters, FastCounter, merge_into

WAIT = 10.0


def run_threads(count: int, target: object) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_fast_counter_counts_exactly_across_threads() -> None:
    """FastCounter.value is exactly the number of incr() calls, even from many threads."""
    counter = FastCounter()
    assert counter.value == 0
    start = threading.Barrier(8, timeout=WAIT)

    def work() -> None:
        start.wait()
        for _ in range(5000):
            counter.incr()

    run_threads(8, work)
    assert counter.value == 40_000


def test_counters_add_several_at_once_exactly_across_threads() -> None:
    """add(a=n, b=m) adds to each named plain counter, and many threads adding at once
    lose nothing."""
    counters = Counters("received", "delivered")
    start = threading.Barrier(8, timeout=WAIT)

    def work() -> None:
        start.wait()
        for _ in range(2000):
            counters.add(received=3, delivered=2)

    run_threads(8, work)
    counters.add(received=1, delivered=0)
    assert counters.snapshot() == {"received": 48_001, "delivered": 32_000}


def test_counters_plain_and_grouped() -> None:
    """incr(name) bumps a plain counter; incr(name, reason) bumps an entry of a group."""
    counters = Counters("sent", groups=("dropped",))
    counters.incr("sent")
    counters.incr("sent", amount=4)
    counters.incr("dropped", "filtered")
    counters.incr("dropped", "filtered")
    counters.incr("dropped", "full", amount=3)
    assert counters.get("sent") == 5
    assert counters.get("dropped", "filtered") == 2
    assert counters.get("dropped", "full") == 3
    assert counters.get("never") == 0
    assert counters.get("dropped", "never") == 0
    assert counters.snapshot() == {"sent": 5, "dropped": {"filtered": 2, "full": 3}}


def test_declared_counters_and_groups_start_at_zero() -> None:
    """Declared counters show as 0 and declared groups as {} before any increment."""
    assert Counters("a", "b", groups=("g",)).snapshot() == {"a": 0, "b": 0, "g": {}}


def test_set_records_gauges() -> None:
    """set() records a gauge-like value that snapshot() reports as it is."""
    counters = Counters("sent")
    counters.set("last_error", "timeout")
    counters.set("queue", 3)
    counters.set("queue", 1)
    assert counters.snapshot() == {"sent": 0, "last_error": "timeout", "queue": 1}


def test_snapshot_is_a_copy() -> None:
    """Changing a snapshot, groups included, never changes the counters."""
    counters = Counters(groups=("dropped",))
    counters.incr("dropped", "x")
    snapshot = counters.snapshot()
    snapshot["dropped"]["x"] = 100  # type: ignore[index]
    assert counters.get("dropped", "x") == 1


def test_counters_are_exact_across_threads() -> None:
    """Concurrent increments of plain and grouped counters are never lost."""
    counters = Counters("n", groups=("g",))
    start = threading.Barrier(8, timeout=WAIT)

    def work() -> None:
        start.wait()
        for _ in range(2000):
            counters.incr("n")
            counters.incr("g", "r")

    run_threads(8, work)
    assert counters.snapshot() == {"n": 16_000, "g": {"r": 16_000}}


def test_merge_into_sums_counts_and_merges_groups() -> None:
    """merge_into adds ints, merges groups reason by reason and takes other values as given."""
    target: dict[str, object] = {
        "emitted": 2,
        "dropped": {"filtered": 1},
        "healthy": True,
        "last_error": "old",
    }
    merge_into(
        target,
        {
            "emitted": 3,
            "dropped": {"filtered": 2, "full": 1},
            "failed": {"b": 1},
            "healthy": False,
            "last_error": "new",
        },
    )
    assert target == {
        "emitted": 5,
        "dropped": {"filtered": 3, "full": 1},
        "failed": {"b": 1},
        "healthy": False,
        "last_error": "new",
    }


def test_merge_into_does_not_change_the_source_groups() -> None:
    """Merging a group copies it: later merges never write into the dict passed in."""
    source = {"dropped": {"x": 1}}
    target: dict[str, object] = {}
    merge_into(target, source)
    merge_into(target, {"dropped": {"x": 5}})
    assert source == {"dropped": {"x": 1}}
    assert target == {"dropped": {"x": 6}}
