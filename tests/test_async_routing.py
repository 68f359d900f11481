"""AsyncRoutingBackend and its tasks, with a real broker and an in-process Celery worker.

The worker runs in a thread of the test process (``celery.contrib.testing``), so the
web side and the worker share the tracker, as a web process and a worker built from
the same settings would. The fault tests with worker subprocesses, SIGKILLs and
MongoDB are in test_celery_faults.py.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_support import Broker, discard_app, in_process_worker, make_app, wait_until

from eventtracking import tasks, tracker
from eventtracking._orjson import HAVE_ORJSON, OrjsonEventEncoder
from eventtracking.backends.async_routing import CATCH_UP_BATCHES, AsyncRoutingBackend
from eventtracking.backends.celery import _wire
from eventtracking.backends.celery import _worker as _celery_worker
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.processors.exceptions import (
    EventEmissionExit,
    NoBackendEnabled,
    NoTransformerImplemented,
)
from eventtracking.processors.whitelist import NameWhitelistProcessor
from eventtracking.spool import Spool

UTC = datetime.timezone.utc
_names = itertools.count(1)

MakeRouter = Callable[..., AsyncRoutingBackend]

#: The brokers every test here runs against (RabbitMQ's cases are skipped, with the
#: reason shown, where no RabbitMQ can be had: see amqp_support).
BROKERS = ["redis", "amqp"]


@pytest.fixture(scope="module", params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
    """The session's Redis, and the session's RabbitMQ."""
    if request.param == "amqp":
        return Broker("amqp", request.getfixturevalue("amqp_url"))
    server = request.getfixturevalue("redis_server")
    return Broker("redis", server.url)


def test_rabbitmq_is_tested(amqp_url: str) -> None:
    """Every test here also runs on RabbitMQ: the one the tests start (Debian's
    rabbitmq-server package), or the one EVENTTRACKING_TEST_AMQP_URL names."""
    assert amqp_url.startswith(("amqp://", "amqps://", "pyamqp://"))


@pytest.fixture(scope="module")
def spool_home(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default spool directory (dead letters for unknown names) of this module's
    tests on one broker: each broker's cases have their own, so that a letter one of
    them left is never found by the other's."""
    home = tmp_path_factory.mktemp(f"xdg-cache-{broker.kind}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def app(broker: Broker, spool_home: Path) -> Iterator[Any]:
    celery_app = make_app(broker)
    yield celery_app
    discard_app(celery_app)


@pytest.fixture(scope="module")
def worker(app: Any) -> Iterator[Any]:
    with in_process_worker(app) as running:
        yield running


@pytest.fixture
def make_router(app: Any, tmp_path: Path) -> Iterator[MakeRouter]:
    """Build an AsyncRoutingBackend on the module's app, registered as the default
    tracker's backend under a name unique to the test; closed afterwards."""
    made: list[AsyncRoutingBackend] = []

    def build(register: bool = True, **options: Any) -> AsyncRoutingBackend:
        name = options.pop("key", f"async{next(_names)}")
        options.setdefault("backend_name", name)
        options.setdefault("app", app)
        options.setdefault("spool_dir", tmp_path / "spool")
        options.setdefault("flush_interval", 0.05)
        options.setdefault("retry_backoff", 0.05)
        options.setdefault("retry_backoff_max", 0.1)
        options.setdefault("delivery_timeout", 5.0)
        router = AsyncRoutingBackend(**options)
        made.append(router)
        if register:
            tracker.register_tracker(tracker.Tracker({name: router}))
        return router

    yield build
    for router in made:
        router.close(1.0)


def emit(name: str, data: Any = None) -> None:
    tracker.get_tracker().emit(name, data)


class Flaky:
    """A leaf that raises for its first ``failures`` events, then stores them."""

    mutates_events = False

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.events: list[Any] = []

    def send(self, event: Any) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            msg = f"leaf down (call {self.calls})"
            raise ConnectionError(msg)
        self.events.append(event)


class Refusing:
    """A leaf that always raises ``error``."""

    mutates_events = False

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def send(self, event: Any) -> None:
        self.calls += 1
        raise self.error


def dead_letters(router: AsyncRoutingBackend) -> list[Any]:
    return router.spool.dead_letters(router.stream)


# -- the 4.x surface ------------------------------------------------------------------


def test_the_4x_constructor_and_attributes_are_kept(make_router: MakeRouter) -> None:
    """processors, backends, backend_name in 4.x's order; .backends and .processors."""
    whitelist = NameWhitelistProcessor(whitelist=["a"])
    memory = InMemoryBackend()
    router = make_router(register=False, key="event_transformer")
    assert router.backend_name == "event_transformer"
    positional = AsyncRoutingBackend(
        [whitelist], {"xapi": memory}, "event_transformer", spool_dir=router.spool.directory
    )
    try:
        assert positional.processors[0].whitelist == {"a"}
        assert positional.backends["xapi"] is memory
        assert isinstance(positional, RoutingBackend)
    finally:
        positional.close(0)


def test_tasks_are_registered_under_their_4x_and_new_names(app: Any) -> None:
    """A 4.x web node's message names eventtracking.tasks.send_event: it is registered."""
    assert tasks.send_event.name == "eventtracking.tasks.send_event"
    assert tasks.send_events.name == "eventtracking.tasks.send_events"
    assert "eventtracking.tasks.send_event" in app.tasks
    for task in (tasks.send_event, tasks.send_events):
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
    assert tasks.MAX_RETRIES == 3
    assert tasks.COUNTDOWN == 30


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("backend_name", 3, "backend_name must be a string"),
        ("batch_size", 0, "batch_size must be a positive int"),
        ("publish_timeout", 0, "publish_timeout must be a positive number of seconds"),
        ("max_retries", -1, "max_retries must be an int >= 0"),
        ("max_event_size", "big", "max_event_size must be a positive int"),
        ("signing_keys", "one-key-not-a-list", r"signing_keys must be a list of keys"),
        ("signing_keys", ["short"], r"signing_keys\[0\] must be a str or bytes of at least 16"),
    ],
)
def test_invalid_options_raise_improperly_configured_naming_them(
    make_router: MakeRouter, option: str, value: Any, message: str
) -> None:
    """Each bad option is refused at construction with its name and value."""
    with pytest.raises(ImproperlyConfigured, match=message):
        make_router(register=False, **{option: value})


def test_without_celery_import_works_and_construction_names_the_extra(tmp_path: Path) -> None:
    """Celery is optional: the module imports, building one says which extra to install,
    and importing eventtracking.tasks says it too."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["celery"] = None  # as if not installed
        import eventtracking
        from eventtracking.backends.async_routing import CATCH_UP_BATCHES, AsyncRoutingBackend
        try:
            AsyncRoutingBackend(backend_name="x")
        except ImportError as exc:
            print("build:", exc)
        try:
            import eventtracking.tasks
        except ImportError as exc:
            print("tasks:", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "build: AsyncRoutingBackend needs Celery" in result.stdout
    assert "pip install 'event-tracking[celery]'" in result.stdout
    assert "tasks: AsyncRoutingBackend needs Celery" in result.stdout


# -- the web side ---------------------------------------------------------------------


def test_processors_run_in_the_web_process_and_dropped_events_never_reach_the_broker(
    make_router: MakeRouter, worker: Any
) -> None:
    """A whitelist drops an event before it is queued; the others arrive processed."""

    def tag(event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "data": {**event["data"], "tagged_in_web": True}}

    memory = InMemoryBackend()
    router = make_router(
        backends={"memory": memory},
        processors=[NameWhitelistProcessor(whitelist=["kept"]), tag],
    )
    emit("dropped", {"n": 1})
    emit("kept", {"n": 2})
    assert router.flush(10)
    wait_until(lambda: router.stats()["delivered"] == 1)
    assert [e["name"] for e in memory.snapshot()] == ["kept"]
    assert memory.snapshot()[0]["data"] == {"n": 2, "tagged_in_web": True}
    stats = router.stats()
    assert stats["dropped"]["filtered"] == 1
    assert stats["queued"] == 1
    assert stats["published"] == 1


def test_events_arrive_with_four_keys_an_aware_timestamp_and_the_loggers_encoding(
    make_router: MakeRouter, worker: Any
) -> None:
    """Whatever the kombu version, the timestamp arrives as the same aware datetime,
    and values JSON cannot carry arrive as the logger writes them, not lost."""
    memory = InMemoryBackend()
    make_router(backends={"memory": memory})
    with tracker.get_tracker().context("request", {"user_id": 5}):
        emit(
            "rich",
            {
                "tags": {"b", "a"},
                "price": decimal.Decimal("9.90"),
                "when": datetime.date(2024, 1, 2),
            },
        )
    tracker.get_tracker().flush(10)
    (event,) = wait_until(memory.snapshot)
    assert list(event) == ["name", "timestamp", "context", "data"]
    assert isinstance(event["timestamp"], datetime.datetime)
    assert event["timestamp"].tzinfo is UTC
    assert abs(event["timestamp"] - datetime.datetime.now(UTC)) < datetime.timedelta(minutes=5)
    assert event["context"] == {"user_id": 5}
    assert event["data"] == {"tags": ["a", "b"], "price": "9.90", "when": "2024-01-02"}


@pytest.mark.skipif(not HAVE_ORJSON, reason="orjson is not installed (the [fast] extra)")
def test_with_orjson_the_caller_encodes_events_in_its_compact_form(
    redis_factory: Any, tmp_path: Path
) -> None:
    """With the [fast] extra, send() encodes with orjson (a tenth of the caller's
    cost): the entry holds orjson's compact text of the event, which the worker's
    codec reads back to the same event."""
    server = redis_factory()
    down_app = make_app(Broker("redis", server.url))
    server.kill()  # what send() queued is then kept, as it was encoded, in the spool
    router = AsyncRoutingBackend(backend_name="compact", app=down_app, spool_dir=tmp_path)
    tracker.register_tracker(tracker.Tracker({"compact": router}))
    data = {"price": decimal.Decimal("9.90"), "tags": {"b", "a"}, "n": 1.5, "text": "é"}
    with tracker.get_tracker().context("request", {"user_id": 5}):
        emit("compact", data)
    router.close(1.0)
    claim = router.spool.claim(router.stream, 10)
    assert claim is not None
    (payload,) = claim.payloads
    entry = _wire.decode_entry(payload)
    event = {
        "name": "compact",
        "timestamp": entry.event["timestamp"],
        "context": {"user_id": 5},
        "data": data,
    }
    line = OrjsonEventEncoder().encode(event)
    assert payload.decode() == _wire.encode_entry(entry.id, line, int64=True)
    assert entry.event == _wire.decode_event(_wire.encode_event(event))
    down_app.close()


def test_many_events_travel_in_few_messages(make_router: MakeRouter, worker: Any) -> None:
    """Batching: 250 events with batch_size=100 need 3 messages, not 250."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, batch_size=100, flush_interval=5.0)
    for i in range(250):
        emit("many", {"i": i})
    assert router.flush(10)
    wait_until(lambda: len(memory.snapshot()) == 250)
    assert [e["data"]["i"] for e in memory.snapshot()] == list(range(250))
    assert router.stats()["publisher"]["messages"] == 3


def test_a_burst_the_publisher_is_behind_on_travels_in_bigger_messages(
    make_router: MakeRouter, worker: Any
) -> None:
    """While more than two batches wait, a message carries half of them, up to
    CATCH_UP_BATCHES batches: 1,000 events queued behind a slow publish need a few
    messages, not 100; every event arrives once, in order."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, batch_size=10, flush_interval=5.0)
    with router._sink.lock:  # the publisher's first publish waits: a slow broker
        for i in range(10):
            emit("burst", {"i": i})
        wait_until(lambda: router.stats()["queue_size"] == 0)
        for i in range(10, 1010):
            emit("burst", {"i": i})
    assert router.flush(10)
    wait_until(lambda: len(memory.snapshot()) == 1010)
    assert [e["data"]["i"] for e in memory.snapshot()] == list(range(1010))
    # The first batch, then half of what waits in whole batches of 10, at most
    # CATCH_UP_BATCHES (40) of them: 400, 300, 150, 70, 40, 20, 10 and 10 events.
    assert CATCH_UP_BATCHES == 40
    assert router.stats()["publisher"]["messages"] == 1 + 8


def test_no_message_carries_more_entries_than_a_worker_takes(
    make_router: MakeRouter, worker: Any
) -> None:
    """A batch is split into messages of at most max_message_entries entries (the
    backend's option, which its workers enforce), in order, whatever the delivery hands
    the sink."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, flush_interval=5.0, max_message_entries=3)
    for i in range(7):
        emit("split", {"i": i})
    assert router.flush(10)
    wait_until(lambda: len(memory.snapshot()) == 7)
    assert [e["data"]["i"] for e in memory.snapshot()] == list(range(7))
    assert router.stats()["publisher"]["messages"] == 3


def test_an_empty_backend_name_is_taken_from_the_trackers_key(
    make_router: MakeRouter, worker: Any
) -> None:
    """4.x's default backend_name='' would fail on the worker; ours finds its own key."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, backend_name="")
    emit("unnamed")
    router.flush(10)
    wait_until(memory.snapshot)
    assert router.stats()["delivered"] == 1


def test_an_event_over_max_event_size_is_dead_lettered_alone(
    make_router: MakeRouter, worker: Any
) -> None:
    """The big event becomes a dead letter in the web process; its neighbours arrive."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, max_event_size=2000)
    emit("small", {"i": 1})
    emit("big", {"blob": "x" * 5000})
    emit("small", {"i": 2})
    router.flush(10)
    wait_until(lambda: len(memory.snapshot()) == 2)
    (letter,) = dead_letters(router)
    assert "over max_event_size=2000" in letter.reason
    assert _wire.decode_entry(letter.payload).event["name"] == "big"
    assert router.stats()["dead_lettered"] == 1


def test_an_app_path_that_cannot_be_imported_keeps_the_events_and_says_why(
    tmp_path: Path,
) -> None:
    """A wrong ``app`` dotted path never raises into emit: events are spooled, and the
    error is in the counters."""
    router = AsyncRoutingBackend(
        backends={"memory": InMemoryBackend()},
        backend_name="lost_app",
        app="no_such_module.celery_app",
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
    )
    tracker.register_tracker(tracker.Tracker({"lost_app": router}))
    for i in range(3):
        emit("kept", {"i": i})
    assert router.delivery.flush(0.5) is False
    router.close(1)
    assert router.spool.pending_count(router.stream) == 3
    stats = router.stats()
    assert "no_such_module" in str(stats["last_error"])
    assert stats["dropped"] == {}


# -- the worker side ------------------------------------------------------------------


@pytest.mark.parametrize("keys", [None, ["a-signing-key-of-32-characters!!"]], ids=["", "signed"])
def test_a_failing_leaf_is_retried_alone_and_its_sibling_gets_each_event_once(
    make_router: MakeRouter, worker: Any, keys: list[str] | None
) -> None:
    """Retries fire (4.x's never did), and only for the leaf that failed; with
    signing_keys, the worker signs the retries it publishes."""
    memory = InMemoryBackend()
    flaky = Flaky(failures=2)
    router = make_router(
        backends={"memory": memory, "flaky": flaky}, max_retries=3, signing_keys=keys
    )
    for i in range(3):
        emit("retry.me", {"i": i})
    router.flush(10)
    wait_until(lambda: len(flaky.events) == 3)
    assert sorted(e["data"]["i"] for e in flaky.events) == [0, 1, 2]
    assert [e["data"]["i"] for e in memory.snapshot()] == [0, 1, 2]
    stats = router.stats()
    assert stats["retried"] == 2
    assert stats["delivered"] == 3
    assert stats["worker"]["failed"] == {"flaky": 2}
    assert stats["dead_lettered"] == 0


def test_a_retry_the_broker_refuses_waits_in_the_spool_and_is_published_later(
    make_router: MakeRouter, worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the worker cannot publish a retry, it keeps it in its spool before the
    message is acknowledged, and its publisher sends it once it can."""
    flaky = Flaky(failures=1)
    router = make_router(backends={"flaky": flaky})
    real_publish = router._retry_sink.publish
    refused: list[int] = []

    def refuse_once(*args: Any, **kwargs: Any) -> None:
        if not refused:
            refused.append(1)
            msg = "broker refused the retry"
            raise ConnectionError(msg)
        real_publish(*args, **kwargs)

    monkeypatch.setattr(router._retry_sink, "publish", refuse_once)
    emit("retried.later", {"i": 1})
    router.delivery.flush(10)
    wait_until(lambda: flaky.events)
    stats = router.stats()
    assert stats["worker"]["spooled"] == 1
    assert stats["replayed"] == 1
    assert stats["delivered"] == 1
    assert router.spool.pending_count(router.stream) == 0


def test_after_the_last_retry_the_event_is_a_dead_letter_with_its_reason(
    make_router: MakeRouter, worker: Any
) -> None:
    """max_retries=2: three attempts, then a dead letter naming the leaf and the error."""
    memory = InMemoryBackend()
    broken = Refusing(ConnectionError("LRS unreachable"))
    router = make_router(backends={"lrs": broken, "memory": memory}, max_retries=2)
    emit("doomed", {"i": 1})
    router.flush(10)
    (letter,) = wait_until(lambda: dead_letters(router))
    assert broken.calls == 3
    assert "leaf lrs failed 3 time(s)" in letter.reason
    assert "ConnectionError: LRS unreachable" in letter.reason
    entry = _wire.decode_entry(letter.payload)
    assert entry.leaves == (("lrs",),)
    assert entry.event["name"] == "doomed"
    assert len(memory.snapshot()) == 1
    # The worker counts a dead letter once the spool holds it: wait for the count.
    stats = wait_until(lambda: router.stats()["dead_lettered"] and router.stats())
    assert stats["retried"] == 2
    assert stats["dead_lettered"] == 1
    assert stats["worker"]["dead_letter_reasons"] == {"retries_exhausted": 1}


def test_a_redriven_dead_letter_goes_to_its_leaf_only(make_router: MakeRouter, worker: Any) -> None:
    """After the leaf is fixed, `spool redrive` publishes the letter again, to it alone."""
    memory = InMemoryBackend()
    flaky = Flaky(failures=1)
    router = make_router(backends={"flaky": flaky, "memory": memory}, max_retries=0)
    emit("later", {"i": 1})
    router.flush(10)
    wait_until(lambda: dead_letters(router))
    assert router.spool.redrive(router.stream) == 1
    router.flush(10)
    wait_until(lambda: flaky.events)
    assert len(memory.snapshot()) == 1
    assert dead_letters(router) == []


def test_a_letter_for_a_leaf_removed_since_is_kept_with_why(
    make_router: MakeRouter, worker: Any
) -> None:
    """An entry for a nested backend that no longer exists is kept, not dropped."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory})
    event_id = _wire.new_event_id()
    entry = _wire.encode_entry(event_id, _wire.encode_event({"name": "x"}), leaves=[["gone"]])
    router._retry_sink.publish(router.backend_name, [entry])
    (letter,) = wait_until(lambda: dead_letters(router))
    assert letter.reason.startswith("leaf gone refused the event: no nested backend")
    assert _wire.decode_entry(letter.payload).leaves == (("gone",),)
    assert memory.snapshot() == []
    assert router.stats()["worker"]["dead_letter_reasons"] == {"missing_leaf": 1}


@pytest.mark.parametrize("error", [NoTransformerImplemented("no xAPI for it"), NoBackendEnabled()])
def test_errors_a_retry_cannot_fix_are_dead_letters_at_once(
    make_router: MakeRouter, worker: Any, error: Exception
) -> None:
    """NoTransformerImplemented and NoBackendEnabled are never retried."""
    refusing = Refusing(error)
    router = make_router(backends={"xapi": refusing}, max_retries=3)
    emit("untransformable")
    router.flush(10)
    (letter,) = wait_until(lambda: dead_letters(router))
    assert refusing.calls == 1
    assert type(error).__name__ in letter.reason
    stats = router.stats()
    assert stats["retried"] == 0
    assert stats["worker"]["dead_letter_reasons"] == {type(error).__name__: 1}


def test_a_leaf_that_cannot_confirm_is_retried(make_router: MakeRouter, worker: Any) -> None:
    """A leaf whose flush() returns False has not stored the batch: it is retried."""

    class Unconfirmed(InMemoryBackend):
        def __init__(self) -> None:
            super().__init__()
            self.flushes = 0

        def flush(self, timeout: float | None = None) -> bool:
            self.flushes += 1
            return self.flushes > 1

    leaf = Unconfirmed()
    router = make_router(backends={"store": leaf})
    emit("unsure")
    router.delivery.flush(10)  # only the publisher: router.flush() would ask the leaf too
    wait_until(lambda: router.stats()["delivered"] == 1)
    assert len(leaf.snapshot()) == 2  # the first copy was not confirmed, so it came again
    assert router.stats()["retried"] == 1


def test_nested_routers_run_their_processors_on_the_worker(
    make_router: MakeRouter, worker: Any
) -> None:
    """A nested router's processors run on the worker; its EventEmissionExit is counted."""

    def only_b(event: dict[str, Any]) -> None:
        if event["name"] != "b":
            raise EventEmissionExit

    memory_a, memory_b = InMemoryBackend(), InMemoryBackend()
    nested = RoutingBackend(backends={"b": memory_b}, processors=[only_b])
    router = make_router(backends={"all": memory_a, "only_b": nested})
    emit("a")
    emit("b")
    router.flush(10)
    wait_until(lambda: router.stats()["delivered"] == 2)
    assert [e["name"] for e in memory_a.snapshot()] == ["a", "b"]
    assert [e["name"] for e in memory_b.snapshot()] == ["b"]
    assert router.stats()["filtered"] == 1


def test_an_unknown_backend_name_is_a_dead_letter_at_once(
    make_router: MakeRouter, worker: Any, spool_home: Path
) -> None:
    """A message for a name the worker's tracker lacks is kept, with the names it has,
    in the one stream (and under the one counter) of every unknown name."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory})
    name = f"missing{next(_names)}"
    entry = _wire.encode_entry(_wire.new_event_id(), _wire.encode_event({"name": "x"}))
    before = _celery_worker.stats(_celery_worker.UNKNOWN).get("dead_lettered", 0)
    router._retry_sink.publish(name, [entry])
    spool = Spool(spool_home / "eventtracking" / "spool")
    stream = _celery_worker.stream_for(_celery_worker.UNKNOWN)

    def letters() -> list[Any]:
        return [letter for letter in spool.dead_letters(stream) if name in letter.reason]

    (letter,) = wait_until(letters)
    assert f"unknown backend_name {name!r}" in letter.reason
    assert repr(router.backend_name) in letter.reason
    assert letter.payload == entry.encode()
    # Counted once the spool holds it, so a moment after it can be seen there.
    counted = _celery_worker.UNKNOWN
    assert wait_until(lambda: _celery_worker.stats(counted).get("dead_lettered", 0) == before + 1)
    assert _celery_worker.stats(name) == {}


def test_a_malformed_entry_is_dead_lettered_alone_and_its_batch_is_delivered(
    make_router: MakeRouter, worker: Any, app: Any
) -> None:
    """Junk beside good entries: the good ones arrive, each bad one is its own letter."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory})
    good = [
        _wire.encode_entry(_wire.new_event_id(), _wire.encode_event({"name": f"ok{i}"}))
        for i in range(2)
    ]
    junk = ["{not json", '{"id": "nothex", "event": {}}', 42]
    app.send_task(tasks.send_events.name, args=(router.backend_name, [good[0], *junk, good[1]]))
    wait_until(lambda: len(dead_letters(router)) == 3)
    wait_until(lambda: len(memory.snapshot()) == 2)
    reasons = [letter.reason for letter in dead_letters(router)]
    assert all(reason.startswith("malformed entry") for reason in reasons)
    assert router.stats()["worker"]["dead_letter_reasons"] == {"malformed": 3}


@pytest.mark.parametrize(
    "payload",
    [
        # A lone surrogate, as Python writes it with "surrogatepass": not UTF-8.
        b'{"id": "%s", "event": {"name": "\xed\xa0\x80"}}',
        b"\xff\xfe%s not text at all",
    ],
)
def test_a_redriven_letter_that_cannot_be_read_is_set_aside_and_holds_nothing_up(
    make_router: MakeRouter, worker: Any, payload: bytes
) -> None:
    """A dead letter whose bytes are not UTF-8, re-driven with `spool redrive`, is a
    counted dead letter again on its own: the events emitted after it are published
    and delivered instead of waiting behind it for ever."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory})
    bad = payload % _wire.new_event_id().encode()
    router.spool.add_dead_letters(router.stream, [(bad, "kept for the test", None)])
    assert router.spool.redrive(router.stream) == 1
    for i in range(3):
        emit("after.the.bad.one", {"i": i})
    assert router.flush(10)
    wait_until(lambda: len(memory.snapshot()) == 3)
    assert sorted(event["data"]["i"] for event in memory.snapshot()) == [0, 1, 2]
    (letter,) = dead_letters(router)
    assert letter.payload == bad
    assert "not UTF-8" in letter.reason
    assert router.stats()["dead_lettered"] == 1


NEW_KEY = "the-new-signing-key-0123456789"
OLD_KEY = b"the-old-signing-key-0123456789"


def test_a_worker_with_signing_keys_refuses_forged_and_unsigned_messages(
    make_router: MakeRouter, worker: Any, app: Any
) -> None:
    """With signing_keys, what the backend publishes is signed and delivered; a
    message written by someone else (no signature, a signature that does not match
    its entries, a forged event under the id of one to come) is a counted dead letter,
    and the real event under that id is still delivered. A message signed with an
    older key still listed is delivered (rotation)."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, signing_keys=[NEW_KEY, OLD_KEY])
    name = router.backend_name
    emit("real", {"grade": "C"})
    assert router.flush(10)
    wait_until(lambda: len(memory.snapshot()) == 1)

    coming_id = _wire.new_event_id()
    forged = _wire.encode_entry(coming_id, _wire.encode_event({"name": "real", "data": "A+"}))
    honest = _wire.encode_entry(coming_id, _wire.encode_event({"name": "real", "data": "D"}))
    app.send_task(tasks.send_events.name, args=(name, [forged]))
    stolen = _wire.sign(_wire.normalise_keys([NEW_KEY]), name, [honest])
    app.send_task(tasks.send_events.name, args=(name, [forged]), headers={_wire.HEADER: stolen})
    wait_until(lambda: len(dead_letters(router)) == 2)
    router._retry_sink.publish(name, [honest])
    old = _wire.encode_entry(_wire.new_event_id(), _wire.encode_event({"name": "old-key"}))
    signature = _wire.sign(_wire.normalise_keys([OLD_KEY]), name, [old])
    app.send_task(tasks.send_events.name, args=(name, [old]), headers={_wire.HEADER: signature})
    wait_until(lambda: len(memory.snapshot()) == 3)
    assert [event["data"] for event in memory.snapshot()[:2]] == [{"grade": "C"}, "D"]
    assert memory.snapshot()[2]["name"] == "old-key"
    assert router.stats()["worker"]["dead_letter_reasons"] == {"unsigned": 1, "bad_signature": 1}
    assert [json.loads(letter.payload or b"") for letter in dead_letters(router)] == [
        [name, [forged]]
    ] * 2


def test_a_worker_without_keys_takes_signed_and_unsigned_messages(
    make_router: MakeRouter, worker: Any, app: Any
) -> None:
    """Signing is optional: a worker without signing_keys delivers both."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory})
    entries = [
        _wire.encode_entry(_wire.new_event_id(), _wire.encode_event({"name": f"e{i}"}))
        for i in range(2)
    ]
    signature = _wire.sign(_wire.normalise_keys([NEW_KEY]), router.backend_name, entries[:1])
    headers = {_wire.HEADER: signature}
    app.send_task(tasks.send_events.name, args=(router.backend_name, entries[:1]), headers=headers)
    app.send_task(tasks.send_events.name, args=(router.backend_name, entries[1:]))
    wait_until(lambda: len(memory.snapshot()) == 2)
    assert dead_letters(router) == []


NAME = object()  # stands for the test's backend_name in the parametrised arguments


@pytest.mark.parametrize(
    ("task", "args"),
    [
        ("send_events", (NAME, "not a list")),
        ("send_events", (NAME,)),
        ("send_events", (NAME, [], "extra")),
        ("send_event", (NAME, ["not", "a", "dict"])),
    ],
)
def test_a_message_of_the_wrong_shape_is_one_dead_letter(
    make_router: MakeRouter, worker: Any, app: Any, task: str, args: tuple[Any, ...]
) -> None:
    """A message whose arguments are wrong is kept whole as a dead letter, not dropped."""
    router = make_router(backends={"memory": InMemoryBackend()})
    args = tuple(router.backend_name if arg is NAME else arg for arg in args)
    app.send_task(f"eventtracking.tasks.{task}", args=args)
    (letter,) = wait_until(lambda: dead_letters(router))
    assert "malformed message" in letter.reason
    assert router.stats()["worker"]["dead_letter_reasons"] == {"malformed": 1}


def test_a_message_without_a_backend_name_is_kept_in_the_default_spool(
    worker: Any, app: Any, spool_home: Path
) -> None:
    """A message whose backend_name is not even a string is kept under the name '?'."""
    app.send_task(tasks.send_events.name, args=(42, []))
    spool = Spool(spool_home / "eventtracking" / "spool")

    def letters() -> list[Any]:
        return [
            letter
            for letter in spool.dead_letters(_celery_worker.stream_for("?"))
            if json.loads(letter.payload) == [42, []]
        ]

    (letter,) = wait_until(letters)
    assert "malformed message" in letter.reason


@pytest.mark.parametrize(
    "stamp",
    [
        datetime.datetime(2024, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),  # kombu >= 5.3
        "2024-03-04T05:06:07.890000Z",  # kombu <= 5.2 turned datetimes into this
    ],
)
def test_a_4x_message_from_an_old_web_node_is_consumed(
    make_router: MakeRouter, worker: Any, app: Any, stamp: Any
) -> None:
    """send_event(backend_name, event), as 4.x publishes it, reaches the leaves with an
    aware datetime, during a rolling upgrade."""
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory})
    event = {"name": "old.node", "timestamp": stamp, "context": {"c": 1}, "data": {"d": 2}}
    app.send_task("eventtracking.tasks.send_event", args=(router.backend_name, event))
    (received,) = wait_until(memory.snapshot)
    assert received == {
        "name": "old.node",
        "timestamp": datetime.datetime(2024, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
        "context": {"c": 1},
        "data": {"d": 2},
    }
    assert router.stats()["delivered"] == 1


@pytest.mark.parametrize("keys", [None, [NEW_KEY]], ids=["unsigned", "signed"])
def test_under_task_always_eager_events_are_delivered_before_send_returns(
    make_router: MakeRouter, broker: Broker, keys: list[str] | None
) -> None:
    """Test settings with task_always_eager get 4.x's synchronous delivery, signed or not."""
    eager_app = make_app(broker, task_always_eager=True)
    memory = InMemoryBackend()
    router = make_router(backends={"memory": memory}, app=eager_app, signing_keys=keys)
    emit("eager", {"i": 1})
    assert [e["name"] for e in memory.snapshot()] == ["eager"]
    assert router.stats()["published"] == 1
    assert router.stats()["delivered"] == 1
    discard_app(eager_app)


def test_a_worker_without_the_ledger_says_when_web_nodes_fill_it(
    make_router: MakeRouter, worker: Any, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Web nodes with ledger=True record each message in Redis; a worker with
    ledger=False never takes the records out. It looks once, warns, and reports in
    stats() how many records of its backend it found."""
    if broker.kind != "redis":
        pytest.skip("the ledger is Redis's only")
    name = f"mixed{next(_names)}"
    web = make_router(register=False, key=name, backends={"memory": InMemoryBackend()})
    memory = InMemoryBackend()
    on_worker = make_router(key=name, backends={"memory": memory}, ledger=False)
    web.send({"name": "recorded", "timestamp": datetime.datetime.now(UTC), "data": {}})
    assert web.flush(10)
    wait_until(lambda: len(memory.snapshot()) == 1)
    assert on_worker.stats()["ledger_left_behind"] == 1
    warnings = [r.getMessage() for r in caplog.records if "ledger=False" in r.getMessage()]
    assert len(warnings) == 1
    assert "some web nodes run with ledger=True" in warnings[0]
    web.send({"name": "recorded", "timestamp": datetime.datetime.now(UTC), "data": {}})
    assert web.flush(10)
    wait_until(lambda: len(memory.snapshot()) == 2)
    assert len([r for r in caplog.records if "ledger=False" in r.getMessage()]) == 1


def test_stats_report_both_sides(make_router: MakeRouter, worker: Any) -> None:
    """published, spooled, replayed, retried, dead_lettered and delivered are reported."""
    router = make_router(backends={"memory": InMemoryBackend()})
    emit("counted")
    router.flush(10)
    wait_until(lambda: router.stats()["delivered"] == 1)
    stats = router.stats()
    for key in ("published", "spooled", "replayed", "retried", "dead_lettered", "delivered"):
        assert isinstance(stats[key], int), key
    assert stats["published"] == 1
    assert stats["backends"]["memory"]["stored"] == 1
    assert json.dumps(stats, default=str)


# -- MongoDB on the worker ------------------------------------------------------------


def test_mongodb_on_the_worker_stores_a_redelivered_event_once(
    make_router: MakeRouter,
    worker: Any,
    app: Any,
    mongo: Any,
    collection_name: str,
    tmp_path: Path,
) -> None:
    """The event id travels with the event and becomes its _id: a message delivered
    twice (a redelivery after a crash) stores each event once."""
    import bson

    from eventtracking.backends.mongodb import MongoBackend

    store = MongoBackend(
        uri=mongo.uri,
        database="eventtracking_tests",
        collection=collection_name,
        spool_dir=tmp_path / "mongo-spool",
        flush_interval=0.05,
    )
    router = make_router(backends={"mongo": store})
    ids = [_wire.new_event_id() for _ in range(3)]
    entries = [
        _wire.encode_entry(i, _wire.encode_event({"name": "twice", "data": {"n": n}}))
        for n, i in enumerate(ids)
    ]
    for _ in range(2):
        app.send_task(tasks.send_events.name, args=(router.backend_name, entries))
    wait_until(lambda: router.stats()["delivered"] == 6)
    collection = mongo.client()["eventtracking_tests"][collection_name]
    stored = list(collection.find({}, sort=[("data.n", 1)]))
    assert [doc["_id"] for doc in stored] == [bson.ObjectId(i) for i in ids]
    # The second copy of each reached MongoDB and was recognised as already stored.
    assert router.stats()["backends"]["mongo"]["duplicates"] == 3
    store.close(1)


def test_a_4x_message_delivered_twice_is_stored_once(
    make_router: MakeRouter,
    worker: Any,
    app: Any,
    mongo: Any,
    collection_name: str,
    tmp_path: Path,
) -> None:
    """A 4.x message has no event id: one derived from its message id keeps a
    redelivered copy from being stored twice."""
    from eventtracking.backends.mongodb import MongoBackend

    store = MongoBackend(
        uri=mongo.uri,
        database="eventtracking_tests",
        collection=collection_name,
        spool_dir=tmp_path / "mongo-spool",
        flush_interval=0.05,
    )
    router = make_router(backends={"mongo": store})
    event = {"name": "legacy", "timestamp": datetime.datetime.now(UTC), "context": {}, "data": {}}
    for _ in range(2):
        app.send_task(
            "eventtracking.tasks.send_event", args=(router.backend_name, event), task_id="fixed-id"
        )
    wait_until(lambda: router.stats()["delivered"] == 2)
    collection = mongo.client()["eventtracking_tests"][collection_name]
    assert collection.count_documents({}) == 1
    store.close(1)


# -- the broker down or hung ----------------------------------------------------------


def test_emit_while_the_broker_is_down_spools_then_replays_in_order(
    redis_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Redis refusing connections, emits return at once and every event is
    spooled; once Redis is back, a worker receives all of them, in order.

    Redis only: on RabbitMQ, a second in-process worker beside the module's never
    started (start_worker waited until pytest-timeout, in a run of the whole module).
    test_celery_faults runs this case on RabbitMQ, with a worker subprocess.
    """
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = redis_factory()
    down_app = make_app(Broker("redis", server.url))
    memory = InMemoryBackend()
    router = AsyncRoutingBackend(
        backends={"memory": memory},
        backend_name="down",
        app=down_app,
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
        batch_size=50,
    )
    tracker.register_tracker(tracker.Tracker({"down": router}))
    server.kill()
    for i in range(200):
        emit("while.down", {"i": i})
    assert router.flush(1.0) is False
    stats = router.stats()
    assert stats["published"] == 0
    assert stats["spooled"] + stats["queue_size"] == 200
    server.start()
    with in_process_worker(down_app):
        assert router.flush(30)
        wait_until(lambda: len(memory.snapshot()) == 200)
    assert [e["data"]["i"] for e in memory.snapshot()] == list(range(200))
    stats = router.stats()
    assert stats["published"] == 200
    assert stats["replayed"] == stats["spooled"] > 0
    assert stats["dropped"] == {}
    router.close(1)
    discard_app(down_app)


def test_a_hung_broker_never_blocks_emit(redis_factory: Any, tmp_path: Path) -> None:
    """Redis stopped with SIGSTOP accepts connections but never answers: emit returns
    at once, the publisher gives up after publish_timeout, and nothing is lost."""
    server = redis_factory()
    hung_app = make_app(Broker("redis", server.url))
    memory = InMemoryBackend()
    router = AsyncRoutingBackend(
        backends={"memory": memory},
        backend_name="hung",
        app=hung_app,
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
        publish_timeout=0.5,
    )
    tracker.register_tracker(tracker.Tracker({"hung": router}))
    emit("before")
    assert router.flush(10)
    server.pause()
    for i in range(100):
        emit("while.hung", {"i": i})
    wait_until(lambda: router.stats()["publisher"]["retries"] >= 1)
    server.resume()
    with in_process_worker(hung_app):
        assert router.flush(30)
        wait_until(lambda: len(memory.snapshot()) >= 101)
    # A publish that timed out waiting for Redis's answer may have been stored by
    # Redis all the same, and is then published again: at least once, never lost.
    hung = [e["data"]["i"] for e in memory.snapshot() if e["name"] == "while.hung"]
    assert sorted(set(hung)) == list(range(100))
    assert router.stats()["dropped"] == {}
    router.close(1)
    discard_app(hung_app)


def _queued_messages(server_url: str, app: Any) -> list[dict[str, Any]]:
    """The messages waiting in the app's default queue on Redis, as kombu stored them."""
    import redis

    prefix = app.conf.broker_transport_options["global_keyprefix"]
    raw = redis.Redis.from_url(server_url).lrange(prefix + app.conf.task_default_queue, 0, -1)
    return [json.loads(item) for item in raw]


@pytest.mark.skipif(not HAVE_ORJSON, reason="the [fast] extra (orjson) is not installed")
def test_with_orjson_message_bodies_are_json_written_by_orjson(
    redis_factory: Any, tmp_path: Path
) -> None:
    """With the [fast] extra and Celery's default task_serializer (json), the publisher
    writes each message's body with orjson: the content type stays application/json in
    UTF-8, so any worker reads it with Celery's own json, to the same arguments."""
    import base64

    import orjson
    from kombu.serialization import loads as kombu_loads

    server = redis_factory()
    app = make_app(Broker("redis", server.url))
    router = AsyncRoutingBackend(backend_name="bodies", app=app, spool_dir=tmp_path)
    tracker.register_tracker(tracker.Tracker({"bodies": router}))
    for i in range(5):
        emit("body", {"i": i, "text": "é\u2028"})
    assert router.flush(10)
    (message,) = _queued_messages(server.url, app)
    assert message["content-type"] == "application/json"
    assert message["content-encoding"] == "utf-8"
    body = base64.b64decode(message["body"])
    args, _kwargs, _embed = kombu_loads(body, "application/json", "utf-8")
    assert args[0] == "bodies" and len(args[1]) == 5
    assert [_wire.decode_entry(text).event["data"]["i"] for text in args[1]] == list(range(5))
    assert body == orjson.dumps(json.loads(body))
    router.close(1.0)
    app.close()


def test_a_task_serializer_set_by_the_user_is_kept(redis_factory: Any, tmp_path: Path) -> None:
    """A Celery app configured with another task_serializer publishes with it."""
    server = redis_factory()
    app = make_app(Broker("redis", server.url), task_serializer="pickle")
    router = AsyncRoutingBackend(backend_name="pickled", app=app, spool_dir=tmp_path)
    tracker.register_tracker(tracker.Tracker({"pickled": router}))
    emit("body", {"i": 1})
    assert router.flush(10)
    (message,) = _queued_messages(server.url, app)
    assert message["content-type"] == "application/x-python-serialize"
    router.close(1.0)
    app.close()
