"""The Redis ledger: messages Redis loses on their way to a worker are published again.

kombu takes a message off its Redis list (BRPOP) before it records it as
unacknowledged; a crash between the two loses it. These tests lose a message that way
on purpose (by popping it off the list themselves) and check that a worker's sweep
finds it and publishes it again, and that messages merely waiting or held are left
alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_support import Broker, in_process_worker, make_app, wait_until

from eventtracking import tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.celery import _ledger as _redis_ledger
from eventtracking.backends.celery import _wire
from eventtracking.backends.celery._ledger import LEDGER_KEY, LEDGER_TTL, LedgerError, RedisLedger
from eventtracking.backends.celery._sink import record
from eventtracking.backends.memory import InMemoryBackend


@pytest.fixture(autouse=True)
def _spool_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead letters for unknown backends go to the default spool: keep it in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def app(redis_url: str) -> Iterator[Any]:
    celery_app = make_app(Broker("redis", redis_url))
    yield celery_app
    celery_app.close()


@pytest.fixture
def router(app: Any, tmp_path: Path) -> Iterator[AsyncRoutingBackend]:
    backend = AsyncRoutingBackend(
        backends={"memory": InMemoryBackend()},
        backend_name="ledgered",
        app=app,
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
        # The tests sweep by hand (with no grace); the sweeper thread stays idle.
        ledger_grace=600,
    )
    tracker.register_tracker(tracker.Tracker({"ledgered": backend}))
    yield backend
    backend.close(1)


def redis_client(app: Any) -> Any:
    import redis

    return redis.Redis.from_url(app.conf.broker_url)


def prefix(app: Any) -> str:
    return str(app.conf.broker_transport_options["global_keyprefix"])


def ledger_size(app: Any) -> int:
    return int(redis_client(app).hlen(prefix(app) + LEDGER_KEY))


def entries(count: int) -> list[str]:
    return [
        _wire.encode_entry(_wire.new_event_id(), _wire.encode_event({"name": f"e{i}", "data": {}}))
        for i in range(count)
    ]


def test_a_message_lost_on_its_way_to_a_worker_is_published_again(
    app: Any, router: AsyncRoutingBackend
) -> None:
    """A message popped off its list and never recorded as unacknowledged (as when
    Redis dies right after BRPOP) is found by the sweep and delivered once."""
    memory = router.backends["memory"]
    router._sink.publish("ledgered", entries(3))
    queue = prefix(app) + app.conf.task_default_queue
    client = redis_client(app)
    assert client.rpop(queue) is not None  # the message is gone: lost in transit
    assert ledger_size(app) == 1
    with in_process_worker(app):
        assert router._retry_sink.sweep(0.0) == 3
        wait_until(lambda: len(memory.snapshot()) == 3)
        wait_until(lambda: ledger_size(app) == 0)
    assert [e["name"] for e in memory.snapshot()] == ["e0", "e1", "e2"]
    assert router._retry_sink.stats()["recovered"] == 3


def test_a_message_waiting_in_its_queue_is_not_taken_for_lost(
    app: Any, router: AsyncRoutingBackend
) -> None:
    """With no worker running, a message sits in its queue: old, but not lost."""
    router._sink.publish("ledgered", entries(2))
    assert router._retry_sink.sweep(0.0) == 0
    assert redis_client(app).llen(prefix(app) + app.conf.task_default_queue) == 1
    assert ledger_size(app) == 1


def test_a_message_held_unacknowledged_is_not_taken_for_lost(redis_url: str) -> None:
    """A message a worker holds (its task id among the unacknowledged) is left alone,
    as is one younger than the grace period; one nowhere and old enough is lost."""
    import redis

    client = redis.Redis.from_url(redis_url)
    ledger = RedisLedger(client, "t:")
    now = time.time()
    record(ledger, "held", "q", "b", ["x"], due=now - 10)
    record(ledger, "young", "q", "b", ["x"], due=now)
    record(ledger, "gone", "q", "b", ["x"], due=now - 10)
    lost = ledger.lost(grace=5, queue_size=lambda queue: 0, unacked_task_ids=lambda: ["held"])
    assert [record.task_id for record in lost] == ["gone"]
    busy = ledger.lost(grace=5, queue_size=lambda queue: 1, unacked_task_ids=lambda: [])
    assert busy == []


def test_delivered_messages_leave_the_ledger(app: Any, router: AsyncRoutingBackend) -> None:
    """The worker takes each message out of the ledger once its leaves hold it."""
    memory = router.backends["memory"]
    with in_process_worker(app):
        for i in range(20):
            tracker.emit("delivered", {"i": i})
        assert router.flush(10)
        wait_until(lambda: len(memory.snapshot()) == 20)
        wait_until(lambda: ledger_size(app) == 0)
    assert router.stats()["published"] == 20


def test_the_ledger_can_be_switched_off(app: Any, tmp_path: Path) -> None:
    """ledger=False publishes without recording anything."""
    backend = AsyncRoutingBackend(
        backend_name="plain", app=app, spool_dir=tmp_path / "spool", ledger=False
    )
    backend._sink.publish("plain", entries(1))
    assert ledger_size(app) == 0
    assert backend._retry_sink.sweep(1.0) is None
    backend.close(1)


def test_the_ledger_record_holds_what_the_sweep_needs(
    app: Any, router: AsyncRoutingBackend
) -> None:
    """Each record names the queue, the backend and the entries, as JSON."""
    texts = entries(1)
    router._sink.publish("ledgered", texts)
    (raw,) = redis_client(app).hvals(prefix(app) + LEDGER_KEY)
    assert json.loads(raw) == {
        "queue": app.conf.task_default_queue,
        "backend_name": "ledgered",
        "texts": texts,
    }


def test_every_text_reads_back_from_its_record_as_it_was_written(redis_url: str) -> None:
    """Whichever encoder writes a record (orjson with the [fast] extra, else the
    standard library), the sweep reads back the texts as they were, even one with a
    lone surrogate (a worker's retry of a message that held one), which orjson
    refuses."""
    import redis

    from eventtracking.backends.celery._ledger import LedgerRecord

    ledger = RedisLedger(redis.Redis.from_url(redis_url), prefix="read-back.")
    texts = [*entries(2), 'quotes " and \\ backslash, é, 😀', "lone \ud800 surrogate"]
    record(ledger, "task-1", "q", "backend", texts, due=0.0)
    (found,) = ledger.lost(grace=0, queue_size=lambda queue: 0, unacked_task_ids=list)
    assert found == LedgerRecord("task-1", "q", "backend", texts)


@pytest.mark.parametrize("kind", ["unknown backend", "malformed"])
def test_a_message_kept_as_a_dead_letter_leaves_the_ledger(
    app: Any, router: AsyncRoutingBackend, kind: str
) -> None:
    """A message the worker keeps as dead letters is dealt with: the sweep must not
    publish it again."""
    with in_process_worker(app):
        if kind == "unknown backend":
            router._retry_sink.publish("no-such-backend", entries(1))
        else:
            router._retry_sink.publish("ledgered", "not a list")  # type: ignore[arg-type]
        wait_until(lambda: ledger_size(app) == 0)
    assert router._retry_sink.sweep(0.0) == 0


# -- records written by someone else ---------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"queue": [1], "backend_name": "ledgered", "texts": []}),
        json.dumps({"queue": "q", "backend_name": 7, "texts": []}),
        json.dumps({"queue": "q", "backend_name": "ledgered", "texts": [1]}),
        json.dumps(["not", "an", "object"]),
        "{not json",
    ],
)
def test_a_poisoned_ledger_record_is_dropped_and_counted_and_the_sweep_goes_on(
    app: Any, router: AsyncRoutingBackend, raw: str
) -> None:
    """One record that is not what publishers write is dropped from the ledger and
    counted; the genuinely lost message beside it is still published again."""
    memory = router.backends["memory"]
    router._sink.publish("ledgered", entries(2))
    client = redis_client(app)
    assert client.rpop(prefix(app) + app.conf.task_default_queue) is not None  # lost
    ledger_key = prefix(app) + LEDGER_KEY
    client.hset(ledger_key, "poison", raw)
    client.zadd(ledger_key + ".due", {"poison": time.time() - 100})
    before = _redis_ledger.stats()["invalid"]
    with in_process_worker(app):
        assert router._retry_sink.sweep(0.0) == 2
        wait_until(lambda: len(memory.snapshot()) == 2)
    assert _redis_ledger.stats()["invalid"] == before + 1
    assert client.hget(ledger_key, "poison") is None
    assert router.stats()["ledger"]["invalid"] == before + 1


def test_ledger_keys_expire_and_records_due_too_far_ahead_are_dropped(redis_url: str) -> None:
    """Both keys carry a TTL of LEDGER_TTL; a record due further ahead than that is
    dropped by the next sweep, and counted."""
    import redis

    client = redis.Redis.from_url(redis_url)
    ledger = RedisLedger(client, "t:")
    now = time.time()
    record(ledger, "far", "q", "b", ["x"], due=now + 10 * LEDGER_TTL)
    assert 0 < client.ttl("t:" + LEDGER_KEY) <= LEDGER_TTL
    assert 0 < client.ttl("t:" + LEDGER_KEY + ".due") <= LEDGER_TTL
    before = _redis_ledger.stats()["too_far_ahead"]
    ledger.lost(grace=0, queue_size=lambda queue: 0, unacked_task_ids=lambda: [])
    assert client.zscore("t:" + LEDGER_KEY + ".due", "far") is None
    assert _redis_ledger.stats()["too_far_ahead"] == before + 1


def test_forget_removes_a_record_without_a_transaction(redis_url: str) -> None:
    """forget takes the record and its due time out in one pipeline without MULTI/EXEC
    (a worker forgets once per message); a sweep that meets a due time whose record is
    already gone (a forget seen half done) takes it out and does not publish it."""
    import redis

    client = redis.Redis.from_url(redis_url)
    ledger = RedisLedger(client, "f:")
    now = time.time()
    record(ledger, "done", "q", "b", ["x"], due=now - 10)
    record(ledger, "half", "q", "b", ["x"], due=now - 10)
    client.config_resetstat()
    ledger.forget("done")
    ledger.settle()
    calls = client.info("commandstats")
    assert "cmdstat_multi" not in calls
    assert calls["cmdstat_hdel"]["calls"] == calls["cmdstat_zrem"]["calls"] == 1
    assert client.hget("f:" + LEDGER_KEY, "done") is None
    assert client.zscore("f:" + LEDGER_KEY + ".due", "done") is None
    client.hdel("f:" + LEDGER_KEY, "half")
    lost = ledger.lost(grace=5, queue_size=lambda queue: 0, unacked_task_ids=lambda: [])
    assert lost == []
    assert client.zscore("f:" + LEDGER_KEY + ".due", "half") is None


def test_forget_does_not_wait_for_redis_and_the_next_call_raises_a_refusal(
    redis_url: str,
) -> None:
    """forget sends its removals without waiting for Redis's reply (a worker forgets
    once per message); Redis carries them out, and a removal Redis refused is raised,
    as LedgerError, by the next forget or settle()."""
    import redis

    client = redis.Redis.from_url(redis_url)
    ledger = RedisLedger(client, "w:")
    record(ledger, "sent", "q", "b", ["x"], due=time.time())
    client.client_pause(30_000, all=False)  # Redis holds back every write for 30 s
    began = time.monotonic()
    ledger.forget("sent")
    returned = time.monotonic() - began
    client.client_unpause()
    assert returned < 15  # a forget that waited for Redis would still be blocked
    ledger.settle()
    assert client.hget("w:" + LEDGER_KEY, "sent") is None
    client.delete("w:" + LEDGER_KEY)
    client.set("w:" + LEDGER_KEY, "not a hash")  # HDEL now fails with WRONGTYPE
    ledger.forget("refused")  # returns before Redis answers
    with pytest.raises(LedgerError, match="WRONGTYPE"):
        ledger.settle()
    client.delete("w:" + LEDGER_KEY)
    record(ledger, "after", "q", "b", ["x"], due=time.time())
    ledger.forget("after")  # on a new connection
    ledger.settle()
    assert client.hget("w:" + LEDGER_KEY, "after") is None


def test_forget_goes_on_after_its_connection_broke(redis_url: str) -> None:
    """When forget's connection is closed under it (Redis's idle timeout, a restart),
    the removals whose replies were not read yet are sent again on a new connection:
    the message is still taken out."""
    import redis

    client = redis.Redis.from_url(redis_url)
    ledger = RedisLedger(client, "k:")
    for task_id in ("one", "two"):
        record(ledger, task_id, "q", "b", ["x"], due=time.time())
    ledger.forget("one")
    ledger.settle()
    client.client_kill_filter(_type="normal", skipme=True)
    ledger.forget("two")
    ledger.settle()
    assert client.hlen("k:" + LEDGER_KEY) == 0


def _forget_in_child(redis_url: str, ledger: RedisLedger, done: Any) -> None:
    ledger.forget("child")
    ledger.settle()
    done.put("settled")


def test_a_forked_child_forgets_on_its_own_connection(redis_url: str) -> None:
    """A child forked while its parent's removals await their replies sends and
    settles its own removals on a connection of its own: it does not wait for the
    parent's replies, and both messages are taken out."""
    import multiprocessing

    import redis

    client = redis.Redis.from_url(redis_url)
    ledger = RedisLedger(client, "p:")
    for task_id in ("parent", "child"):
        record(ledger, task_id, "q", "b", ["x"], due=time.time())
    ledger.forget("parent")  # not settled when the child is forked
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    child = context.Process(target=_forget_in_child, args=(redis_url, ledger, done))
    child.start()
    assert done.get(timeout=20) == "settled"
    child.join(20)
    assert child.exitcode == 0
    ledger.settle()
    assert client.hlen("p:" + LEDGER_KEY) == 0
