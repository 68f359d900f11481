"""The walk of one event from emit() to a Celery leaf stays short (tests/walk_support.py)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis
from celery_support import Broker, Reading, discard_app, make_app
from walk_support import WALK_LIMIT, files_entered, walk

from eventtracking import tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.celery import _wire, _worker
from eventtracking.backends.celery._ledger import LEDGER_KEY
from eventtracking.backends.celery._sink import CelerySink
from eventtracking.delivery import BatchDelivery
from eventtracking.routing import RoutingBackend


def test_one_event_crosses_few_package_files_from_emit_to_a_celery_leaf(
    redis_url: str, tmp_path: Path
) -> None:
    """Through a real publisher thread, Redis and worker, the event enters at most
    WALK_LIMIT files of the package, both sides and the leaf counted."""
    found = walk(redis_url, tmp_path / "spool")
    assert found.files[0] == "tracker.py"
    assert found.files[-1] == "backends/memory.py"
    assert "backends/celery/_worker.py" in found.files  # the worker's side was traced
    assert len(found.files) <= WALK_LIMIT, found.report()


def test_a_message_delivered_in_full_takes_no_detour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message whose every entry reaches its leaf enters neither the escaping of log
    text (nothing failed, nothing is logged) nor the general timestamp parser (the
    timestamps are in the form the library writes), and comes out whole."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    leaf = Reading()
    tracker.register_tracker(tracker.Tracker({"walked": RoutingBackend(backends={"leaf": leaf})}))
    stamp = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)
    event = {"name": "e", "timestamp": stamp, "context": {}, "data": {"i": 1}}
    entries = [_wire.encode_entry(_wire.new_event_id(), _wire.encode_event(event))] * 3
    _worker.deliver("walked", entries)  # first use: imports and caches
    leaf.events.clear()
    files = files_entered(_worker.deliver, "walked", entries)
    assert leaf.events == [event] * 3
    assert "_util/escape.py" not in files, files
    assert "_util/timestamps.py" not in files, files


class Dropping:
    """A sink that takes every batch."""

    def write_batch(self, items: Sequence[bytes]) -> None:
        pass


def test_queueing_an_entry_enters_the_delivery_module_alone() -> None:
    """BatchDelivery.put, which runs once per event on the caller's thread, checks for a
    fork inline: no call into the fork helpers."""
    delivery = BatchDelivery(Dropping(), name="walk", flush_interval=60)
    try:
        delivery.put(b"warm")  # first use: starts the thread
        assert files_entered(delivery.put, b"entry") == ["delivery/__init__.py"]
    finally:
        delivery.close(5)


def test_the_web_side_makes_an_entry_without_the_stores_id_helpers(
    redis_url: str, tmp_path: Path
) -> None:
    """AsyncRoutingBackend.send makes the event's id in the wire format's own module: it
    enters neither the helpers the stores read ids with nor the fork helpers."""
    app = make_app(Broker("redis", redis_url))
    router = AsyncRoutingBackend(
        backend_name="walk", backends={}, app=app, spool_dir=tmp_path, flush_interval=60
    )
    event = {"name": "e", "timestamp": datetime.datetime.now(datetime.timezone.utc), "data": {}}
    try:
        router.send(event)  # first use: imports, the app, the delivery thread
        files = files_entered(router.send, event)
    finally:
        router.close(5)
        discard_app(app)
    assert "backends/celery/_wire.py" in files
    assert "_util/event_ids.py" not in files, files
    assert "_util/fork.py" not in files, files


def test_celery_runs_the_task_bodies_of_the_worker_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The functions Celery runs for both tasks are the worker's: running a task enters
    the module that declares it only to declare it, not on each message."""
    from eventtracking import tasks

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    leaf = Reading()
    tracker.register_tracker(tracker.Tracker({"walked": RoutingBackend(backends={"leaf": leaf})}))
    stamp = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    event = {"name": "e", "timestamp": stamp, "context": {}, "data": {"i": 1}}
    entries = [_wire.new_entry(_wire.encode_event(event))]
    tasks.send_events.apply(args=("walked", entries))  # first use: imports and caches
    files = files_entered(tasks.send_events.apply, ("walked", entries))
    files += files_entered(tasks.send_event.apply, ("walked", event))
    assert leaf.events == [event] * 3
    assert "backends/celery/_worker.py" in files
    assert "backends/celery/_tasks.py" not in files, files


def test_publishing_a_batch_counts_it_without_a_call_into_the_counters(redis_url: str) -> None:
    """The Celery sink counts what it publishes in its own ints, under the lock it
    publishes with, and records each message in the Redis ledger beside the publish;
    its stats() keys and values are those of before."""
    app = make_app(Broker("redis", redis_url))
    sink = CelerySink(lambda: "walk", app=app)
    event = {"name": "e", "timestamp": datetime.datetime.now(datetime.timezone.utc), "data": {}}
    entry = _wire.new_entry(_wire.encode_event(event)).encode()
    try:
        sink.write_batch([entry, entry])  # first use: the connection and the ledger
        files = files_entered(sink.write_batch, [entry])
        assert sink.stats() == {"messages": 2, "published_entries": 3, "eager": 0, "recovered": 0}
        prefix = app.conf.broker_transport_options["global_keyprefix"]
        recorded = redis.Redis.from_url(redis_url).hlen(prefix + LEDGER_KEY)
    finally:
        sink.close()
        discard_app(app)
    assert recorded == 2  # both messages are in the Redis ledger
    assert "_util/stats.py" not in files, files
    assert "backends/celery/_ledger.py" not in files, files  # recorded beside the publish
