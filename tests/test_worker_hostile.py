"""The Celery worker against messages written by someone hostile to it.

Whoever can write to the broker (or to Redis) chooses a message's ``backend_name``,
its entries, their leaf paths and their size. These tests send such messages to the
worker's tasks on a real redis-server (``tests/redis_support.py``), through
``Task.apply()`` or an in-process Celery worker, and check that what the worker holds
does not grow with the values chosen, that a message the spool cannot keep comes back
a bounded number of times and is then counted, that oversize messages are one dead
letter, and that log lines cannot be forged. The spool's side (dead letters give way,
and expire) is in test_spool.py, the ledger's (poisoned records) in
test_redis_ledger.py.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_support import Broker, in_process_worker, make_app, wait_until
from hypothesis import given
from hypothesis import strategies as st

from eventtracking import tasks, tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.celery import _wire
from eventtracking.backends.celery import _worker as _celery_worker
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.processors.exceptions import NoBackendEnabled
from eventtracking.spool import Spool, SpoolFullError

_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _spool_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead letters of unknown names go to the default spool: keep it in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def app(redis_url: str) -> Iterator[Any]:
    celery_app = make_app(Broker("redis", redis_url))
    yield celery_app
    celery_app.close()


class Counting:
    """A leaf that stores every event and notes when each arrived."""

    mutates_events = False

    def __init__(self) -> None:
        self.times: list[float] = []

    def send(self, event: Any) -> None:
        self.times.append(time.monotonic())


class Refusing:
    """A leaf that refuses every event for good: each becomes a dead letter at once."""

    mutates_events = False

    def send(self, event: Any) -> None:
        msg = "this leaf takes nothing"
        raise NoBackendEnabled(msg)


@pytest.fixture
def make_router(app: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[AsyncRoutingBackend] = []

    def build(**options: Any) -> AsyncRoutingBackend:
        name = f"hostile{next(_names)}"
        options.setdefault("backends", {"memory": InMemoryBackend()})
        options.setdefault("spool_dir", tmp_path / "spool")
        router = AsyncRoutingBackend(
            backend_name=name, app=app, flush_interval=0.05, ledger_grace=600, **options
        )
        made.append(router)
        tracker.register_tracker(tracker.Tracker({name: router}))
        return router

    yield build
    for router in made:
        router.close(1.0)


def entry(i: int = 0, pad: str = "", **fields: Any) -> str:
    event = _wire.encode_event({"name": f"e{i}", "data": {"i": i, "pad": pad}})
    return _wire.encode_entry(_wire.new_event_id(), event, **fields)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- 1. what a worker holds does not grow with the names a message chooses -----------


def test_unknown_backend_names_share_one_spool_and_one_broker_connection(
    app: Any, make_router: Any, redis_server: Any
) -> None:
    """200 messages with 200 distinct unknown names: the worker's open descriptors and
    its Redis connections stay flat, and every message is one counted dead letter."""
    make_router()
    client = redis_server.client()
    tasks.send_events.apply(args=("warm-up", [entry()]))
    fds, clients = open_fds(), len(client.client_list())
    before = _celery_worker.stats(_celery_worker.UNKNOWN)["dead_lettered"]
    for i in range(200):
        tasks.send_events.apply(args=(f"unknown-{i}", [entry(i)]))
    assert open_fds() <= fds + 2
    assert len(client.client_list()) <= clients + 1
    assert _celery_worker.stats(_celery_worker.UNKNOWN)["dead_lettered"] == before + 200
    assert not any(name.startswith("unknown-") for name in _celery_worker.stats())
    spool = Spool(Path(os.environ["XDG_CACHE_HOME"]) / "eventtracking" / "spool")
    letters = spool.dead_letters(_celery_worker.stream_for(_celery_worker.UNKNOWN))
    assert sum("'unknown-" in letter.reason for letter in letters) == 200
    assert set(spool.status()["streams"]) == {"celery:?"}


def test_counters_are_kept_by_the_worker_s_own_leaf_paths(make_router: Any) -> None:
    """20,000 entries naming 20,000 distinct leaf paths: ``failed`` keeps one key for
    all of them, and stats() stays small."""
    router = make_router(backends={"memory": InMemoryBackend()}, spool_max_bytes=None)
    for start in range(0, 20_000, 2_000):
        texts = [entry(i, leaves=[[f"path{i}"]]) for i in range(start, start + 2_000)]
        _celery_worker.deliver(router.backend_name, texts)
    worker = router.stats()["worker"]
    assert worker["failed"] == {"?": 20_000}
    assert worker["dead_letter_reasons"] == {"missing_leaf": 20_000}
    assert len(repr(router.stats())) < 5_000


def test_many_unknown_paths_in_one_entry_are_one_dead_letter(make_router: Any) -> None:
    """An entry naming 5,000 paths the worker lacks costs one dead letter, not 5,000."""
    router = make_router()
    paths = [[f"gone{i}"] for i in range(5_000)]
    _celery_worker.deliver(router.backend_name, [entry(leaves=paths)])
    (letter,) = router.spool.dead_letters(router.stream)
    assert "and 4995 more" in letter.reason
    assert len(_wire.decode_entry(letter.payload).leaves or ()) == 5_000


# -- 2. a message the spool cannot keep comes back a bounded number of times ---------


def fill_with_pending(spool: Spool) -> None:
    """Fill ``spool`` to its max_bytes with undelivered rows of another stream."""
    for size in (4_000, 400, 40, 1):
        try:
            while True:
                spool.append("backlog", [b"x" * size])
        except SpoolFullError:
            pass


def test_a_message_the_spool_cannot_keep_comes_back_with_backoff_then_is_counted(
    app: Any, make_router: Any, tmp_path: Path
) -> None:
    """With the spool full of undelivered rows, a message whose dead letter cannot be
    written goes back to the broker max_requeues times, each later than the last, and
    is then counted as dropped and acknowledged: its good leaf got it 1 + max_requeues
    times, not hundreds."""
    good = Counting()
    router = make_router(backends={"good": good, "refusing": Refusing()}, spool_max_bytes=200_000)
    own = router.worker_settings

    def settings() -> _celery_worker.WorkerSettings:
        return _dataclass_replace(own(), max_requeues=2, requeue_backoff=0.4)

    router.worker_settings = settings  # type: ignore[method-assign]
    fill_with_pending(Spool(router.spool.directory, max_bytes=200_000))
    with in_process_worker(app):
        router._retry_sink.publish(router.backend_name, [entry()])
        wait_until(lambda: router.stats()["worker"].get("dropped"), timeout=60)
        dropped = router.stats()["worker"]["dropped"]
        calls = list(good.times)
    assert dropped == {"spool_unavailable": 1}
    assert router.stats()["dropped"] == {"spool_unavailable": 1}
    assert router.stats()["worker"]["requeued"] == 2
    assert len(calls) == 3
    # backoff_delay: 0.4 s then 0.8 s, each with a jitter factor of 0.5 to 1.
    assert calls[1] - calls[0] >= 0.2
    assert calls[2] - calls[1] >= 0.4


def _dataclass_replace(settings: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(settings, **changes)


# -- 4. size limits on the worker side -------------------------------------------------


def test_a_message_of_too_many_entries_is_one_dead_letter_and_costs_no_memory(
    make_router: Any,
) -> None:
    """100,000 entries (25 MB): before any is read, the message becomes one dead letter
    describing it, its entries are counted as dropped, and the worker's peak memory
    grows by less than the message itself."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory})
    pad = "p" * 200
    texts = [
        _wire.encode_entry(_wire.new_event_id(), _wire.encode_event({"name": "e", "data": pad}))
        for _ in range(100_000)
    ]
    tracemalloc.start()
    try:
        tasks.send_events.apply(args=(router.backend_name, texts))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    assert memory.snapshot() == []
    (letter,) = router.spool.dead_letters(router.stream)
    assert letter.payload is None
    assert "100000 entries" in letter.reason
    assert "max_message_entries=10000" in letter.reason
    assert letter.detail is not None and letter.detail.startswith("100000 entries")
    worker = router.stats()["worker"]
    assert worker["dropped"] == {"oversize_message": 100_000}
    assert worker["dead_letter_reasons"] == {"oversize_message": 1}


def test_a_message_over_max_message_bytes_is_one_dead_letter_never_a_requeue(
    app: Any, make_router: Any
) -> None:
    """Five 1 MiB entries (over 4 MiB) on a real worker: one dead letter, acknowledged,
    no entry delivered, nothing requeued."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, max_event_size=2 * 1024 * 1024)
    big = [entry(i, pad="x" * (1024 * 1024)) for i in range(5)]
    with in_process_worker(app):
        app.send_task(tasks.send_events.name, args=(router.backend_name, big))
        (letter,) = wait_until(lambda: router.spool.dead_letters(router.stream))
    assert "max_message_bytes=4194304" in letter.reason
    assert letter.payload is None
    assert memory.snapshot() == []
    assert router.stats()["worker"]["requeued"] == 0
    assert router.stats()["worker"]["dropped"] == {"oversize_message": 5}
    assert router.stats()["dropped"] == {"oversize_message": 5}


def test_an_entry_over_max_event_size_is_a_dead_letter_alone(make_router: Any) -> None:
    """An entry over the worker's max_event_size is kept as a dead letter, with its
    payload; the entries beside it are delivered."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, max_event_size=1000)
    big = _wire.encode_entry(
        _wire.new_event_id(), _wire.encode_event({"name": "big", "data": "x" * 80_000})
    )
    tasks.send_events.apply(args=(router.backend_name, [entry(1), big, entry(2)]))
    assert [event["name"] for event in memory.snapshot()] == ["e1", "e2"]
    (letter,) = router.spool.dead_letters(router.stream)
    assert letter.payload == big.encode()
    assert "max_event_size=1000" in letter.reason
    assert router.stats()["worker"]["dead_letter_reasons"] == {"oversize_entry": 1}


def test_an_oversize_4x_event_is_a_dead_letter(make_router: Any) -> None:
    """A 4.x send_event message whose event is over max_event_size is kept as a dead
    letter, not delivered."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, max_event_size=1000)
    event = {"name": "old", "data": {"pad": "x" * 100_000}}
    tasks.send_event.apply(args=(router.backend_name, event))
    assert memory.snapshot() == []
    (letter,) = router.spool.dead_letters(router.stream)
    assert "max_event_size=1000" in letter.reason


# -- 8. values from a message cannot forge log lines -----------------------------------


@pytest.mark.parametrize("where", ["backend_name", "leaf path"])
def test_a_newline_in_a_message_never_reaches_the_log_raw(
    make_router: Any, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """A backend_name or leaf path holding a newline and an escape sequence is logged
    escaped: no log line of the worker holds either character."""
    router = make_router()
    hostile = "x\nCRITICAL forged: all is well\x1b[2J"
    caplog.set_level(logging.DEBUG, logger="eventtracking")
    _ratelimit_reset()
    if where == "backend_name":
        tasks.send_events.apply(args=(hostile, [entry()]))
    else:
        tasks.send_events.apply(args=(router.backend_name, [entry(leaves=[[hostile]])]))
    messages = [record.getMessage() for record in caplog.records]
    assert any("forged" in message for message in messages)
    assert not any("\n" in message or "\x1b" in message for message in messages)


def _ratelimit_reset() -> None:
    """Let the worker's rate-limited lines through again, for this test's capture."""
    from eventtracking.backends.celery import _leaves as _celery_leaves

    for limiter in (_celery_worker._LOG, _celery_leaves._LOG):
        limiter._last.clear()
        limiter._suppressed.clear()


@given(
    st.lists(
        st.text(max_size=40)
        | st.text(alphabet="a\u00e9\u20ac\U0001f600\ud800", max_size=40)
        | st.binary(max_size=40)
        | st.integers(),
        max_size=8,
    ),
    st.integers(min_value=0, max_value=600),
)
def test_the_message_size_cap_counts_the_bytes_the_broker_carried(
    texts: list[Any], cap: int
) -> None:
    """A message is over the cap exactly when the bytes of its entries (UTF-8, lone
    surrogates kept) are, whatever the entries are: the look at the whole message
    agrees with counting entry by entry."""
    total = sum(
        len(text.encode("utf-8", "surrogatepass"))
        if isinstance(text, str)
        else len(text)
        if isinstance(text, bytes)
        else len(_wire.encode_value(text))
        for text in texts
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_celery_worker, "_SLACK", 0)  # a cap small texts can reach
        settings = _celery_worker.WorkerSettings(
            spool=Spool.__new__(Spool),
            stream="s",
            publish=lambda *args: None,
            max_message_bytes=cap,
            max_event_size=0,
        )
        assert settings.message_limit == cap
        over = _celery_worker._oversize(texts, settings) is not None
    assert over is (total > cap)
