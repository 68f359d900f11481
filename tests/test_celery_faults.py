"""Fault tests of asynchronous routing, with real processes killed for real.

The web side is this test process: an AsyncRoutingBackend on the default tracker. The
worker is a Celery worker subprocess (tests/celery_worker_app.py) whose nested backend
is a MongoBackend on the SecantusDB server. The broker, Redis or RabbitMQ, runs in a
child process the tests kill and restart on the same data (or, for the tests that do
not crash it, is the session's RabbitMQ).

Every test checks the same three things: no event is lost (each ``data['i']`` is in
MongoDB), none is stored twice (each exactly once), and every drop is counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp_support import RabbitServer
from celery_support import (
    Broker,
    WorkerProcess,
    app_settings,
    discard_app,
    make_app,
    wait_until,
)

from eventtracking import tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.spool import Spool

pytestmark = pytest.mark.slow

DB = "eventtracking_faults"
#: The brokers every test runs against (RabbitMQ's cases are skipped, with the reason
#: shown, where no RabbitMQ can be had: see amqp_support).
BROKERS = ["redis", "amqp"]


class Setup:
    """A broker, a Celery app, a worker subprocess and the web side's backend."""

    def __init__(
        self,
        broker: Broker,
        server: Any,
        directory: Path,
        mongo: Any,
        collection: str,
        **web: Any,
    ) -> None:
        self.broker = broker
        #: The broker's server when the test started it (a RedisServer or a
        #: RabbitServer), None on the session's RabbitMQ.
        self.server = server
        self.directory = directory
        self.app = make_app(broker, visibility_timeout=2)
        self.collection = mongo.client()[DB][collection]
        self.mongo_config = {"uri": mongo.uri, "database": DB, "collection": collection}
        web.setdefault("flush_interval", 0.05)
        web.setdefault("batch_size", 50)
        self.router = AsyncRoutingBackend(
            backend_name="async", app=self.app, spool_dir=directory / "web-spool", **web
        )
        tracker.register_tracker(tracker.Tracker({"async": self.router}))
        self.workers: list[WorkerProcess] = []

    def worker(self, **config: Any) -> WorkerProcess:
        """A worker subprocess (not started) for this app, storing to MongoDB."""
        base: dict[str, Any] = {
            "app": app_settings(self.app),
            "spool_dir": str(self.directory / "worker-spool"),
            "mongo": self.mongo_config,
            "backend": {
                "retry_backoff": 0.1,
                "retry_backoff_max": 0.5,
                "delivery_timeout": 10,
                "ledger_grace": 1.0,
            },
        }
        base.update(config)
        worker = WorkerProcess(self.directory / f"worker{len(self.workers)}", base)
        self.workers.append(worker)
        return worker

    def emit(self, count: int, start: int = 0) -> None:
        for i in range(start, start + count):
            tracker.emit("fault.test", {"i": i})

    def stored(self) -> list[int]:
        return sorted(doc["data"]["i"] for doc in self.collection.find({}, {"data.i": 1}))

    def wait_stored(self, count: int, timeout: float = 90.0) -> None:
        def enough() -> bool:
            for worker in self.workers:
                worker.revive()  # a worker that exited is started again, as in production
            return self.collection.count_documents({}) >= count

        try:
            wait_until(enough, timeout, interval=0.1)
        except BaseException:
            self.explain(count)
            raise

    def explain(self, count: int) -> None:
        """Print what a failed wait needs to be understood: what is missing, and where."""
        stored = self.stored()
        missing = sorted(set(range(count)) - set(stored))
        print(f"stored {len(stored)} of {count}; missing {missing[:50]}")
        print(f"web stats: {json.dumps(self.router.stats(), default=str)}")
        if isinstance(self.server, RabbitServer) and self.server.running:
            print(f"rabbitmq queues: {self.server.queues()}")
        elif self.server is not None and self.server.running:
            client = self.server.client()
            for key in client.keys("*"):
                kind = client.type(key).decode()
                size = {"list": client.llen, "hash": client.hlen, "zset": client.zcard}.get(
                    kind, lambda _: "?"
                )(key)
                print(f"redis {key!r}: {kind} {size}")
        for worker in self.workers:
            if worker.alive:
                print(f"worker stats: {json.dumps(worker.stats(10), default=str)}")
            print(f"--- {worker.log_path} ---\n{worker.log()}")

    def assert_each_stored_once(self, count: int) -> None:
        """No event lost, none stored twice, nothing dropped or dead-lettered."""
        assert self.stored() == list(range(count))
        web = self.router.stats()
        assert web["dropped"] == {}
        assert web["dead_lettered"] == 0
        assert Spool(self.directory / "worker-spool").dead_letters() == []
        assert Spool(self.directory / "web-spool").dead_letters() == []

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.router.close(1)
        discard_app(self.app)


@pytest.fixture
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, mongo: Any, collection_name: str
) -> Iterator[Callable[..., Setup]]:
    """Build the Setup of a test on a broker of ``kind``: a Redis of its own, the
    session's RabbitMQ, or (``own_broker``, for tests that crash it) a RabbitMQ of its
    own."""
    made: list[Setup] = []

    def build(kind: str = "redis", own_broker: bool | str = False, **web: Any) -> Setup:
        # own_broker="down": a RabbitMQ of its own not started yet (a cold start costs
        # seconds; a Redis starts in milliseconds, and is killed by the test).
        server = None
        if kind == "amqp" and not own_broker:
            broker = Broker("amqp", request.getfixturevalue("amqp_url"))
        else:
            if kind == "amqp":
                server = request.getfixturevalue("rabbitmq_factory")(own_broker != "down")
            else:
                server = request.getfixturevalue("redis_factory")()
            broker = Broker(kind, server.url)
        made.append(Setup(broker, server, tmp_path, mongo, collection_name, **web))
        return made[-1]

    yield build
    for item in made:
        item.close()


@pytest.mark.parametrize("kind", BROKERS)
def test_a_worker_sigkilled_mid_batch_loses_nothing_and_stores_nothing_twice(
    setup: Callable[..., Setup], tmp_path: Path, kind: str
) -> None:
    """The worker dies after storing part of a batch, before acknowledging it. The
    message is delivered again to the next worker, which stores the rest; what was
    stored already is recognised by its _id and not stored twice."""
    env = setup(kind)
    progress = tmp_path / "progress"
    # The slow leaf stops for good at event 75, in the second batch of 50, after
    # MongoBackend (sorted first) was given events 50..75.
    first = env.worker(slow={"progress": str(progress), "block_at": 75})
    env.emit(300)
    assert env.router.flush(30)
    first.start()
    env.wait_stored(76)
    assert env.collection.count_documents({}) == 76  # batch 2 is half stored, unacknowledged
    first.kill()

    second = env.worker(slow={"progress": str(progress)})
    second.start()
    env.wait_stored(300)
    env.assert_each_stored_once(300)
    worker_stats = second.stats()["tracker"]["backends"]["async"]
    # The redelivered batch met events 50..75 already stored: recognised, not copied.
    # (On a loaded machine a batch may outlast the 2 s visibility timeout and be handed
    # out twice: more duplicates then, never fewer, and still each event stored once.)
    assert worker_stats["backends"]["mongo"]["duplicates"] >= 26
    assert worker_stats["worker"]["received"] >= 250
    print(
        f"{kind}: {env.router.stats()['published']} events published; the second worker "
        f"received {worker_stats['worker']['received']} events, "
        f"{worker_stats['backends']['mongo']['duplicates']} of them stored already"
    )
    assert worker_stats["delivered"] == worker_stats["worker"]["received"]


@pytest.mark.parametrize("kind", BROKERS)
def test_the_broker_sigkilled_mid_stream_and_restarted_on_its_data_loses_nothing(
    setup: Callable[..., Setup], kind: str
) -> None:
    """The broker dies while events are being published and consumed, and comes back
    on its data (Redis: its append-only file; RabbitMQ: its durable queue). Publishing
    fails fast and spools, the worker reconnects, and every event is stored once."""
    env = setup(kind, own_broker=True, batch_size=20)
    server = env.server
    worker = env.worker()
    worker.start()
    env.emit(500)
    env.wait_stored(100)  # the stream is flowing: some stored, the rest on its way
    server.kill()
    env.emit(500, start=500)  # published into the void: spooled
    wait_until(lambda: env.router.stats()["spooled"] > 0)
    server.start()
    env.emit(500, start=1000)
    assert env.router.flush(60)
    env.wait_stored(1500)
    env.assert_each_stored_once(1500)
    stats = env.router.stats()
    assert stats["replayed"] == stats["spooled"] > 0
    # A publish cut short by the kill may have reached the broker and be published again.
    assert stats["published"] >= 1500
    # What the broker handed out twice after its crash (docs/scale.rst quotes these).
    received = worker.stats()["tracker"]["backends"]["async"]
    print(
        f"{kind}: {stats['published']} events published, "
        f"{received['worker']['received']} received by the worker, "
        f"{received['backends']['mongo']['duplicates']} of them stored already"
    )


@pytest.mark.parametrize("kind", BROKERS)
def test_with_the_broker_down_from_the_start_events_wait_and_are_all_delivered(
    setup: Callable[..., Setup], kind: str
) -> None:
    """No broker at all while the web side emits: every event goes to the spool, and
    once the broker and a worker start, every one is published and stored once."""
    env = setup(kind, own_broker="down")
    server = env.server
    server.kill()  # Redis was started; RabbitMQ was not
    env.emit(400)
    assert env.router.flush(1) is False  # nowhere to publish
    stats = env.router.stats()
    assert stats["published"] == 0
    server.start()
    worker = env.worker()
    worker.start()
    assert env.router.flush(60)
    env.wait_stored(400)
    env.assert_each_stored_once(400)
    stats = env.router.stats()
    assert stats["published"] == 400
    assert stats["spooled"] == stats["replayed"] == 400


@pytest.mark.parametrize("kind", BROKERS)
def test_malformed_messages_are_dead_lettered_and_the_rest_is_stored_once(
    setup: Callable[..., Setup], tmp_path: Path, kind: str
) -> None:
    """Messages a broken or hostile producer sent to the queue become counted dead
    letters with their reasons; the good entries in the same message, and the events
    around them, are stored once."""
    from eventtracking.backends.celery import _wire

    env = setup(kind)
    worker = env.worker()
    worker.start()
    env.emit(100)
    good = [
        _wire.encode_entry(
            _wire.new_event_id(), _wire.encode_event({"name": "x", "data": {"i": i}})
        )
        for i in (100, 101)
    ]
    send = env.app.send_task
    send("eventtracking.tasks.send_events", args=("async", [good[0], "{broken", 7, good[1]]))
    send("eventtracking.tasks.send_events", args=("async", "not a list"))
    send("eventtracking.tasks.send_events", args=("async",))
    send("eventtracking.tasks.send_event", args=("async", "not an event"))
    env.emit(100, start=102)
    assert env.router.flush(30)
    env.wait_stored(202)
    spool = Spool(tmp_path / "worker-spool")
    letters = wait_until(lambda: len(spool.dead_letters()) == 5 and spool.dead_letters())
    reasons = sorted(letter.reason.split(":")[0] for letter in letters)
    assert reasons == ["malformed entry"] * 2 + ["malformed message"] * 3
    assert env.stored() == list(range(202))
    # The worker counts dead letters once the spool holds them: wait for the count.
    counted = wait_until(
        lambda: (stats := worker.stats()["tasks"]["async"])["dead_lettered"] >= 5 and stats
    )
    assert counted["dead_lettered"] == 5
    assert counted["dead_letter_reasons"] == {"malformed": 5}
    # Each letter keeps what it refused: the junk entry itself, or the whole message.
    payloads = [letter.payload for letter in letters]
    assert b"{broken" in payloads
    assert json.loads(next(p for p in payloads if b"not a list" in p)) == ["async", "not a list"]
