"""Background delivery: batching, backoff, spooling, flush/close, fork and exit.

The sinks here are small real objects with ``write_batch``: the component under test
accepts any such sink. MongoDB itself is tested in test_mongodb.py.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from disk_support import run_on_small_disk

from eventtracking.delivery import BatchDelivery, Sink, backoff_delay
from eventtracking.spool import Spool

STREAM = "test-stream"

#: The ``make`` fixture: build a delivery from a sink and options.
Make = Callable[..., BatchDelivery]


class ListSink:
    """Keeps every batch in memory; can be taken down, held, or told to refuse items."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.down = False
        self.refuse: set[bytes] = set()
        self.calls = 0
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.changed = threading.Condition()

    def write_batch(self, items: Sequence[bytes]) -> dict[int, str]:
        self.entered.set()
        self.hold.wait(60)
        with self.changed:
            self.calls += 1
            if self.down:
                msg = "sink is down"
                raise ConnectionError(msg)
            refused = {
                i: "refused by the sink" for i, item in enumerate(items) if item in self.refuse
            }
            self.batches.append([item for item in items if item not in self.refuse])
            self.changed.notify_all()
        return refused

    @property
    def items(self) -> list[bytes]:
        with self.changed:
            return [item for batch in self.batches for item in batch]

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: sum(map(len, self.batches)) >= count, timeout)


def items(start: int, stop: int) -> list[bytes]:
    return [b"item-%d" % i for i in range(start, stop)]


@pytest.fixture
def deliveries() -> Iterator[list[BatchDelivery]]:
    """Deliveries made by a test, closed after it so no thread outlives it."""
    made: list[BatchDelivery] = []
    yield made
    for delivery in made:
        delivery.close(0)


@pytest.fixture
def make(deliveries: list[BatchDelivery], tmp_path: Path) -> Make:
    """Build a delivery with test-friendly defaults and a spool in tmp_path."""

    def build(sink: object, **options: object) -> BatchDelivery:
        options.setdefault("name", "test")
        options.setdefault("spool", Spool(tmp_path / "spool"))
        options.setdefault("stream", STREAM)
        options.setdefault("backoff_base", 0.01)
        options.setdefault("backoff_max", 0.05)
        delivery = BatchDelivery(sink, **options)  # type: ignore[arg-type]
        deliveries.append(delivery)
        return delivery

    return build


def test_list_sink_is_a_sink() -> None:
    """Anything with write_batch satisfies the Sink protocol."""
    assert isinstance(ListSink(), Sink)


def test_full_batches_leave_without_waiting_for_the_interval(make: Make) -> None:
    """With a long interval, each batch_size items are sent as one batch at once."""
    sink = ListSink()
    delivery = make(sink, batch_size=10, flush_interval=60)
    delivery.put_many(items(0, 30))
    assert sink.wait_for(30)
    assert [len(batch) for batch in sink.batches] == [10, 10, 10]
    assert sink.items == items(0, 30)


def test_a_sink_that_fell_behind_gets_bigger_batches_until_it_caught_up(make: Make) -> None:
    """While more than two batches wait, a batch takes half of them, up to
    catch_up_batches batches; once the queue is shorter, batches are batch_size again.
    Order is kept."""
    sink = ListSink()
    delivery = make(sink, batch_size=10, catch_up_batches=5, flush_interval=60)
    sink.hold.clear()
    delivery.put_many(items(0, 10))
    assert sink.entered.wait(10)  # the first batch is in the sink, which is slow
    delivery.put_many(items(10, 251))  # 241 wait: 24 batches, 12 of them are half
    sink.hold.set()
    assert delivery.flush(10) is True
    # Waiting before each batch, and the whole batches in its half: 241 (12, capped
    # at 5), 191 (9, capped), 141 (7, capped), 91 (4), 51 (2), 31, 21 and 11 (1), 1.
    assert [len(batch) for batch in sink.batches] == [10, 50, 50, 50, 40, 20, 10, 10, 10, 1]
    assert sink.items == items(0, 251)


def test_a_spool_backlog_is_replayed_in_bigger_batches(make: Make, tmp_path: Path) -> None:
    """Rows waiting in the spool (spilled from a full queue, or left by an earlier
    process) are replayed by the same rule as the queue: half of what waits, up to
    catch_up_batches batches, in order."""
    spool = Spool(tmp_path / "backlog")
    spool.append(STREAM, items(0, 241))
    sink = ListSink()
    delivery = make(sink, spool=spool, batch_size=10, catch_up_batches=5, flush_interval=60)
    assert delivery.flush(10) is True
    assert [len(batch) for batch in sink.batches] == [50, 50, 50, 40, 20, 10, 10, 10, 1]
    assert sink.items == items(0, 241)
    assert delivery.stats()["replayed"] == 241


def test_a_partial_batch_leaves_after_the_interval(make: Make) -> None:
    """Fewer items than batch_size are sent once flush_interval has passed, without flush()."""
    sink = ListSink()
    delivery = make(sink, batch_size=1000, flush_interval=0.05)
    delivery.put_many(items(0, 3))
    assert sink.wait_for(3)
    assert sink.batches == [items(0, 3)]


def test_flush_delivers_now_and_says_whether_all_was_stored(make: Make) -> None:
    """flush() sends a partial batch at once and returns True when the sink took it."""
    sink = ListSink()
    delivery = make(sink, batch_size=1000, flush_interval=60)
    delivery.put_many(items(0, 5))
    assert delivery.flush(10) is True
    assert sink.items == items(0, 5)
    assert delivery.stats()["stored"] == 5


def test_flush_times_out_while_the_sink_is_down_and_nothing_is_lost(make: Make) -> None:
    """While the sink fails, flush returns False at its timeout; once back, all arrive once."""
    sink = ListSink()
    sink.down = True
    delivery = make(sink, batch_size=10, flush_interval=60)
    delivery.put_many(items(0, 25))
    start = time.monotonic()
    assert delivery.flush(0.3) is False
    assert time.monotonic() - start < 5
    stats = delivery.stats()
    assert stats["retries"] >= 1
    assert stats["spooled"] == 25
    assert stats["queue_size"] == 0  # spooled, not held in memory
    assert stats["last_error"] == "ConnectionError: sink is down"
    sink.down = False
    assert delivery.flush(10) is True
    assert sink.items == items(0, 25)  # in order, each once
    stats = delivery.stats()
    assert (stats["stored"], stats["replayed"]) == (25, 25)


def test_items_put_during_an_outage_are_spooled_and_replayed_in_order(make: Make) -> None:
    """Items arriving while the sink is down go to the spool after the failed ones, in order."""
    sink = ListSink()
    sink.down = True
    delivery = make(sink, batch_size=5, flush_interval=0.01, backoff_base=0.2, backoff_max=0.2)
    delivery.put_many(items(0, 5))
    assert delivery.flush(0.1) is False
    delivery.put_many(items(5, 40))
    assert delivery.flush(0.1) is False
    sink.down = False
    assert delivery.flush(10) is True
    assert sink.items == items(0, 40)


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    """Each failure doubles the wait, times a random factor in [0.5, 1], never above the cap."""
    rng = random.Random(7)
    delays = [backoff_delay(n, base=0.5, cap=30.0, rng=rng) for n in range(1, 11)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(30.0, 0.5 * 2 ** (n - 1))
        assert ceiling * 0.5 <= delay <= ceiling
    factors = [delay / min(30.0, 0.5 * 2 ** (n - 1)) for n, delay in enumerate(delays, start=1)]
    assert len({round(f, 6) for f in factors}) == len(factors)  # jittered, not fixed
    assert backoff_delay(10_000, base=0.5, cap=30.0, rng=rng) <= 30.0


def test_retries_are_counted_and_errors_logged_at_a_limited_rate(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """A sink failing again and again is retried each time but logged once per interval."""
    sink = ListSink()
    sink.down = True
    delivery = make(sink, backoff_base=0.001, backoff_max=0.002)
    with caplog.at_level(logging.ERROR, logger="eventtracking.delivery"):
        delivery.put(b"x")
        assert delivery.flush(0.5) is False
    retries = delivery.stats()["retries"]
    assert retries >= 3
    failures = [r for r in caplog.records if "send failed" in r.getMessage()]
    assert len(failures) == 1
    assert "ConnectionError: sink is down" in failures[0].getMessage()


def test_a_full_queue_moves_its_oldest_items_to_the_spool(make: Make) -> None:
    """When the queue is full, put() spools the oldest queued items; order and all are kept."""
    sink = ListSink()
    sink.hold.clear()
    delivery = make(sink, batch_size=1, flush_interval=0.01, max_queue_size=5)
    delivery.put(b"first")
    assert sink.entered.wait(10)  # the thread holds "first" inside the sink
    delivery.put_many(items(0, 8))
    stats = delivery.stats()
    assert (stats["overflowed"], stats["spooled"], stats["queue_size"]) == (3, 3, 5)
    sink.hold.set()
    assert delivery.flush(10) is True
    assert sink.items == [b"first", *items(0, 8)]


def count_yields(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count put()'s gifts of the GIL (they still happen)."""
    import eventtracking.delivery as delivery_module

    yields: list[int] = []
    real = delivery_module._let_others_run
    monkeypatch.setattr(delivery_module, "_let_others_run", lambda: (yields.append(1), real()))
    return yields


def test_put_gives_up_the_gil_while_the_queue_is_more_than_half_full(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that emits without pause would keep the GIL from the thread for a switch
    interval at each of the thread's round trips: past half of max_queue_size, while
    the sink answers, put() gives it up once (os.sched_yield()); below, it does not."""
    yields = count_yields(monkeypatch)
    sink = ListSink()
    delivery = make(sink, batch_size=1, flush_interval=0.01, max_queue_size=40)
    delivery.put(b"first")
    assert delivery.flush(10) is True  # the sink answered
    sink.hold.clear()
    sink.entered.clear()
    delivery.put(b"second")
    assert sink.entered.wait(10)  # the thread is held in the sink: the queue only grows
    delivery.put_many(items(0, 20))  # 20 queued: half of 40, no more
    assert yields == []
    delivery.put_many(items(20, 25))  # 21 to 25 queued
    assert len(yields) == 5
    sink.hold.set()
    assert delivery.flush(10) is True
    assert sink.items == [b"first", b"second", *items(0, 25)]
    assert delivery.stats()["spooled"] == 0


def test_put_keeps_the_gil_for_a_sink_that_has_not_answered(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink down from the start, or a write hanging on a server that cannot be
    reached, gains nothing from the caller's GIL: put() does not give it up, however
    full the queue."""
    yields = count_yields(monkeypatch)
    sink = ListSink()
    sink.hold.clear()
    delivery = make(sink, batch_size=1, flush_interval=0.01, max_queue_size=40)
    delivery.put(b"first")
    assert sink.entered.wait(10)  # its first batch hangs
    delivery.put_many(items(0, 39))
    assert yields == []
    sink.hold.set()
    assert delivery.flush(10) is True
    assert sink.items == [b"first", *items(0, 39)]


def test_without_a_spool_a_full_queue_drops_counts_and_logs(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """No spool: items beyond the queue are dropped, each one counted, logged at a limited rate."""
    sink = ListSink()
    sink.hold.clear()
    delivery = make(sink, spool=None, batch_size=1, flush_interval=0.01, max_queue_size=5)
    with caplog.at_level(logging.ERROR, logger="eventtracking.delivery"):
        delivery.put(b"first")
        assert sink.entered.wait(10)
        delivery.put_many(items(0, 8))
    assert delivery.stats()["dropped"] == {"queue_full": 3}
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1
    sink.hold.set()
    assert delivery.flush(10) is True
    assert sink.items == [b"first", *items(0, 5)]


def test_durable_items_are_on_the_spool_before_put_returns(make: Make, tmp_path: Path) -> None:
    """With durable=True, another reader sees the item in the spool as soon as put() returns."""
    sink = ListSink()
    sink.hold.clear()
    delivery = make(sink, durable=True, batch_size=100, flush_interval=60)
    delivery.put(b"precious")
    assert Spool(tmp_path / "spool").pending_count(STREAM) == 1
    sink.hold.set()
    assert delivery.flush(10) is True
    assert sink.items == [b"precious"]
    assert Spool(tmp_path / "spool").pending_count(STREAM) == 0


def test_rows_left_in_the_spool_by_another_process_are_delivered(
    make: Make, tmp_path: Path
) -> None:
    """A new delivery replays what an earlier process left in its stream, before new items."""
    Spool(tmp_path / "spool").append(STREAM, items(0, 3))
    Spool(tmp_path / "spool").append("another-stream", [b"not mine"])
    sink = ListSink()
    delivery = make(sink)
    delivery.put(b"new")
    assert delivery.flush(10) is True
    assert sink.items == [*items(0, 3), b"new"]


def test_a_delivery_that_is_given_nothing_starts_no_thread_and_leaves_the_spool_alone(
    make: Make, tmp_path: Path
) -> None:
    """Building a delivery starts no thread: rows an earlier process left wait for this one's
    first put() or flush(), and closing an unused delivery sends nothing."""
    Spool(tmp_path / "spool").append(STREAM, items(0, 3))
    sink = ListSink()
    name = f"idle-{uuid.uuid4().hex[:8]}"
    delivery = make(sink, name=name)
    assert f"eventtracking-delivery-{name}" not in {t.name for t in threading.enumerate()}
    delivery.close(10)
    assert sink.calls == 0
    assert Spool(tmp_path / "spool").pending_count(STREAM) == 3


def test_the_first_flush_replays_what_an_earlier_process_left(make: Make, tmp_path: Path) -> None:
    """flush() on a delivery that was given nothing delivers the rows left in its stream
    (how the replay commands work)."""
    Spool(tmp_path / "spool").append(STREAM, items(0, 3))
    sink = ListSink()
    assert make(sink).flush(10) is True
    assert sink.items == items(0, 3)


def test_items_a_full_spool_refuses_are_counted_as_dropped(make: Make, tmp_path: Path) -> None:
    """With the sink down and the spool at its size cap, what memory cannot hold is dropped
    and counted (spool_full), and the spool counts its refusals; the rest is delivered."""
    sink = ListSink()
    sink.down = True
    spool = Spool(tmp_path / "capped", max_bytes=64 * 1024)
    delivery = make(sink, spool=spool, batch_size=10, max_queue_size=20)
    sent = [b"%04d" % n + b"." * 1000 for n in range(300)]
    delivery.put_many(sent)
    sink.down = False
    assert delivery.flush(30) is True
    stats = delivery.stats()
    dropped = stats["dropped"].get("spool_full", 0)
    assert dropped > 0
    assert stats["spool"]["refused"]["max_bytes"] >= dropped
    delivered = set(sink.items)
    assert delivered <= set(sent)
    assert len(delivered) + dropped == len(sent)
    assert stats["queued"] == len(sent)


_FULL_DISK_DELIVERY_SCRIPT = """
import json, os, sys
from pathlib import Path
from eventtracking.delivery import BatchDelivery
from eventtracking.spool import Spool

class Sink:
    def __init__(self):
        self.down, self.items = True, []
    def write_batch(self, items):
        if self.down:
            raise ConnectionError("the server is down")
        self.items.extend(items)

disk = Path(sys.argv[1])
sink = Sink()
delivery = BatchDelivery(sink, name="disk", spool=Spool(disk / "spool"), stream="s",
                         batch_size=50, max_queue_size=100, backoff_base=0.01, backoff_max=0.05)
n = 0
while sum(delivery.stats()["dropped"].values()) < 100:  # until the disk is full
    delivery.put(b"%08d" % n + b"." * 992)
    n += 1
fd = os.open(disk / "logs", os.O_WRONLY | os.O_CREAT)  # and other files take the rest
try:
    while os.write(fd, bytes(65536)):
        pass
except OSError:
    pass
sink.down = False  # the server is back
flushed = delivery.flush(30)
stats = delivery.stats()
print(json.dumps({"put": n, "flushed": flushed, "stored": len(sink.items),
                  "unique": len(set(sink.items)), "dropped": stats["dropped"],
                  "spool": stats.get("spool")}))
delivery.close(0)
"""


def test_delivery_resumes_from_a_spool_that_filled_the_disk(tmp_path: Path) -> None:
    """After an outage that filled the disk (a small tmpfs), the server's return drains the
    spool: every event is stored or counted as dropped, and flush() says all is done."""
    done = run_on_small_disk(tmp_path, _FULL_DISK_DELIVERY_SCRIPT, size="24m")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["flushed"] is True
    assert result["stored"] > 1000
    assert result["dropped"] == {"spool_full": result["put"] - result["stored"]}
    assert result["unique"] == result["stored"]
    assert result["stored"] + sum(result["dropped"].values()) == result["put"]
    assert result["spool"]["refused"]["disk"] > 0


def test_refused_items_become_dead_letters_and_the_rest_is_stored(
    make: Make, tmp_path: Path
) -> None:
    """Items the sink refuses go to the dead-letter table with the reason; others are stored."""
    sink = ListSink()
    sink.refuse = {b"item-2", b"item-4"}
    delivery = make(sink, batch_size=10, flush_interval=60)
    delivery.put_many(items(0, 6))
    delivery.dead_letter(None, "could not be encoded", "{'bad': object}")
    assert delivery.flush(10) is True
    assert sink.items == [b"item-0", b"item-1", b"item-3", b"item-5"]
    letters = Spool(tmp_path / "spool").dead_letters(STREAM)
    assert sorted((letter.payload, letter.reason) for letter in letters if letter.payload) == [
        (b"item-2", "refused by the sink"),
        (b"item-4", "refused by the sink"),
    ]
    assert [letter.detail for letter in letters if letter.payload is None] == ["{'bad': object}"]
    assert delivery.stats()["dead_lettered"] == 3


def test_close_is_idempotent_and_later_items_go_to_the_spool(make: Make, tmp_path: Path) -> None:
    """close() twice is harmless; items put after close are spooled for the next process."""
    sink = ListSink()
    delivery = make(sink)
    delivery.put(b"before")
    delivery.close(10)
    delivery.close(10)
    assert sink.items == [b"before"]
    delivery.put(b"after")
    assert not any(t.name == "eventtracking-delivery-test" for t in threading.enumerate())
    assert Spool(tmp_path / "spool").pending_count(STREAM) == 1
    later = ListSink()
    make(later, name="later").flush(10)
    assert later.items == [b"after"]


def test_close_while_the_sink_is_down_spools_the_queue_without_waiting(
    make: Make, tmp_path: Path
) -> None:
    """close() does not wait out its timeout for a failing sink: the queue goes to the spool."""
    sink = ListSink()
    sink.down = True
    delivery = make(sink, batch_size=5, flush_interval=60, backoff_base=30, backoff_max=30)
    delivery.put_many(items(0, 20))
    start = time.monotonic()
    delivery.close(30)
    assert time.monotonic() - start < 10
    assert Spool(tmp_path / "spool").pending_count(STREAM) == 20


def test_close_with_a_stuck_sink_spools_the_batch_in_flight(make: Make, tmp_path: Path) -> None:
    """A sink that hangs past close's timeout does not lose the batch it holds."""
    sink = ListSink()
    sink.hold.clear()
    delivery = make(sink, batch_size=3, flush_interval=0.01)
    delivery.put_many(items(0, 3))
    assert sink.entered.wait(10)
    delivery.put_many(items(3, 5))
    delivery.close(0.2)
    spool = Spool(tmp_path / "spool")
    claim = spool.claim(STREAM, 100)
    assert claim is not None and sorted(claim.payloads) == items(0, 5)
    spool.release(claim)
    sink.hold.set()  # let the stuck thread finish


def test_one_named_daemon_thread_per_delivery(make: Make) -> None:
    """Each delivery runs exactly one daemon thread, named after it, however many items."""
    sink = ListSink()
    # Names of this test's own: deliveries of earlier tests may still be winding down.
    alpha, beta = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("alpha", "beta"))
    make(sink, name=alpha).put_many(items(0, 1000))
    make(sink, name=beta).put_many(items(0, 1000))
    expected = {f"eventtracking-delivery-{alpha}", f"eventtracking-delivery-{beta}"}
    threads = [t for t in threading.enumerate() if t.name in expected]
    assert sorted(t.name for t in threads) == sorted(expected)
    assert all(t.daemon for t in threads)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be a positive int, got 0"),
        ("batch_size", 1.5, "batch_size must be a positive int, got 1.5"),
        ("max_queue_size", -1, "max_queue_size must be a positive int, got -1"),
        ("catch_up_batches", 0, "catch_up_batches must be a positive int, got 0"),
        ("flush_interval", 0, "flush_interval must be a positive number of seconds, got 0"),
        ("exit_timeout", -1, "exit_timeout must be a number of seconds >= 0, got -1"),
        ("exit_timeout", True, "exit_timeout must be a number of seconds >= 0, got True"),
    ],
)
def test_options_out_of_range_are_refused(option: str, value: object, message: str) -> None:
    """A bad option raises ValueError naming it and the value."""
    with pytest.raises(ValueError, match=message):
        BatchDelivery(ListSink(), name="bad", **{option: value})  # type: ignore[arg-type]


def test_durable_needs_a_spool_and_the_sink_needs_write_batch() -> None:
    """durable=True without a spool, or a sink without write_batch, is refused."""
    with pytest.raises(ValueError, match="durable=True needs a spool"):
        BatchDelivery(ListSink(), name="bad", durable=True)
    with pytest.raises(TypeError, match="has no write_batch"):
        BatchDelivery(object(), name="bad")


# -- processes ----------------------------------------------------------------------------

# A sink that appends each item as a line to a file: visible across processes.
FILE_SINK = textwrap.dedent(
    """
    class FileSink:
        def __init__(self, path, down=False):
            self.path, self.down = path, down
        def write_batch(self, items):
            if self.down:
                raise ConnectionError("down")
            with open(self.path, "ab") as f:
                f.write(b"".join(item + b"\\n" for item in items))
    """
)


def file_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def test_a_forked_child_delivers_its_own_items(tmp_path: Path) -> None:
    """After fork, the child starts its own thread and delivers its items, not the parent's."""
    namespace: dict[str, object] = {}
    exec(FILE_SINK, namespace)
    out = tmp_path / "out"
    sink = namespace["FileSink"](out)  # type: ignore[operator]
    delivery = BatchDelivery(
        sink, name="fork", spool=Spool(tmp_path / "spool"), stream=STREAM, flush_interval=60
    )
    try:
        delivery.put(b"parent-sent")
        assert delivery.flush(10)
        delivery.put(b"parent-queued")  # still queued when the child is forked
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                delivery.put(b"child")
                code = 0 if delivery.flush(10) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert file_lines(out) == [b"parent-sent", b"child"]
        assert delivery.flush(10)
        assert sorted(file_lines(out)) == [b"child", b"parent-queued", b"parent-sent"]
    finally:
        delivery.close(0)


def run_script(body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = FILE_SINK + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


def test_exit_flushes_what_is_queued(tmp_path: Path) -> None:
    """A process that exits without close() still delivers its queue (atexit flush)."""
    out = tmp_path / "out"
    done = run_script(
        f"""
        from eventtracking.delivery import BatchDelivery
        from eventtracking.spool import Spool
        d = BatchDelivery(FileSink({str(out)!r}), name="exit", spool=Spool({str(tmp_path)!r}),
                          flush_interval=60)
        for i in range(10):
            d.put(b"item-%d" % i)
        """
    )
    assert done.returncode == 0, done.stderr
    assert file_lines(out) == items(0, 10)


def test_exit_of_a_process_that_put_nothing_neither_replays_nor_waits(tmp_path: Path) -> None:
    """A process that never put anything leaves the rows of earlier processes in the spool
    at exit, and never calls the sink."""
    Spool(tmp_path).append("s", items(0, 5))
    out = tmp_path / "out"
    done = run_script(
        f"""
        from eventtracking.delivery import BatchDelivery
        from eventtracking.spool import Spool
        d = BatchDelivery(FileSink({str(out)!r}), name="idle", spool=Spool({str(tmp_path)!r}),
                          stream="s", exit_timeout=30)
        """
    )
    assert done.returncode == 0, done.stderr
    assert not out.exists()
    assert Spool(tmp_path).status()["streams"]["s"]["pending"] == 5
    assert Spool(tmp_path).status()["streams"]["s"]["claimed"] == 0


def test_exit_spools_what_it_cannot_deliver_within_exit_timeout(tmp_path: Path) -> None:
    """At exit with the sink down, the queue is spooled and the exit takes a bounded time."""
    start = time.monotonic()
    done = run_script(
        f"""
        from eventtracking.delivery import BatchDelivery
        from eventtracking.spool import Spool
        d = BatchDelivery(FileSink("unused", down=True), name="exit", flush_interval=60,
                          spool=Spool({str(tmp_path)!r}), stream="s", exit_timeout=1.0)
        for i in range(10):
            d.put(b"item-%d" % i)
        """
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 30
    spool = Spool(tmp_path)
    claim = spool.claim("s", 100)
    assert claim is not None and list(claim.payloads) == items(0, 10)
