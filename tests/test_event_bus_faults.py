"""The event bus when Redis fails: down from the start, killed mid-stream, hung.

Each test runs a Redis of its own, which it stops, kills (SIGKILL) and restarts on the
same data and port, or pauses (SIGSTOP). Both publishers are tested: the backend's own
Redis Streams writer, and the signal through edx-event-bus-redis's producer, which
only logs its errors. Every test checks that no event is lost (each one is in the
stream, in order), that nothing was dropped without a count, and that sending never
waited on Redis.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import eventbus_support
import pytest
from eventbus_support import TOPIC, bus_settings, consume, decode_message
from redis_support import RedisServer, free_port, redis_binary

from eventtracking.backends.event_bus import EventBusRoutingBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.tracker import Tracker, register_tracker

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bus_env")]

# pytest finds fixtures by module attribute.
bus_env = eventbus_support.bus_env

UTC = datetime.timezone.utc
PUBLISHERS = ["redis", "signal"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own on a reserved port, not started yet."""
    binary = redis_binary()
    if binary is None:
        pytest.skip("no Redis server to test against (see tests/redis_support.py)")
    redis = RedisServer(tmp_path / "redis", binary=binary)
    redis.port = free_port()
    yield redis
    redis.resume()
    redis.kill()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return "f-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40]


@pytest.fixture
def make_bus(tmp_path: Path) -> Iterator[Callable[..., EventBusRoutingBackend]]:
    made: list[EventBusRoutingBackend] = []

    def build(**options: Any) -> EventBusRoutingBackend:
        options.setdefault("spool_dir", tmp_path / "spool")
        options.setdefault("flush_interval", 0.02)
        backend = EventBusRoutingBackend(**options)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close(0)


def event(n: int) -> dict[str, Any]:
    return {
        "name": "course.viewed",
        "timestamp": datetime.datetime.now(UTC),
        "context": {"user_id": n % 7},
        "data": {"n": n},
    }


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.005)


def read_stream(server: RedisServer, prefix: str) -> list[tuple[int, str]]:
    """(n, message id) of each message in the stream, in stream order."""
    import json

    with server.client() as client:
        messages = client.xrange(f"{prefix}-{TOPIC}")
    result = []
    for _, fields in messages:
        decoded = decode_message(fields)
        result.append((json.loads(decoded["tracking_log"].data)["n"], decoded["id"]))
    return result


def assert_all_once_in_order(messages: list[tuple[int, str]], count: int) -> int:
    """Every n in range(count) is there, first copies in order, and every copy of an n
    carries the same message id (so a consumer can drop it). Returns the copies."""
    first_seen: dict[int, str] = {}
    order = []
    for n, message_id in messages:
        if n in first_seen:
            assert first_seen[n] == message_id, f"event {n} published twice with two ids"
            continue
        first_seen[n] = message_id
        order.append(n)
    assert order == list(range(count))
    return len(messages) - count


def assert_nothing_dropped(stats: dict[str, Any]) -> None:
    producer = stats["producer"]
    assert producer["dropped"] == {}
    assert producer["dead_lettered"] == 0


@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_redis_down_from_the_start(
    publisher: str, server: RedisServer, prefix: str, make_bus: Callable[..., Any]
) -> None:
    """With Redis down from the start, events are kept in the spool (counted), and all
    are published, in order, once Redis comes up."""
    with bus_settings(server.url, prefix), eventbus_support.producing_handler():
        bus = make_bus(publisher=publisher, batch_size=20)
        for n in range(200):
            bus.send(event(n))
        assert not bus.flush(0.5)
        down = bus.stats()["producer"]
        assert down["retries"] >= 1
        assert down["published"] == 0
        assert down["spooled"] >= 1
        assert "Connection" in down["last_error"] or "connect" in down["last_error"]
        server.start()
        assert bus.flush(60)
    copies = assert_all_once_in_order(read_stream(server, prefix), 200)
    assert copies == 0
    stats = bus.stats()
    assert_nothing_dropped(stats)
    assert stats["producer"]["published"] == 200
    assert stats["producer"]["replayed"] >= 1


@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_redis_killed_mid_stream_and_restarted(
    publisher: str, server: RedisServer, prefix: str, make_bus: Callable[..., Any]
) -> None:
    """Redis SIGKILLed while batches are being published, and restarted on the same data:
    every event is in the stream, in order; a batch cut off by the kill may be there
    twice, with the same message ids; and a consumer delivers each event once."""
    server.start()
    remote = InMemoryBackend()
    with bus_settings(server.url, prefix), eventbus_support.producing_handler():
        # Small batches: many round trips, so the kill lands while they are under way.
        bus = make_bus(publisher=publisher, batch_size=5, backends={"remote": remote})
        register_tracker(Tracker({"bus": bus}))
        for n in range(800):
            bus.send(event(n))

        def publishing() -> bool:
            producer = bus.stats()["producer"]
            return bool(producer["published"] >= 50 and producer["in_flight"])

        wait_until(publishing)
        server.kill()
        at_kill = bus.stats()["producer"]["published"]
        for n in range(800, 1000):
            bus.send(event(n))
        # Publishing goes on against the dead server: it fails, and keeps the events.
        assert not bus.flush(0.5)
        assert bus.stats()["producer"]["retries"] >= 1
        server.start()
        assert bus.flush(60)
        messages = read_stream(server, prefix)
        copies = assert_all_once_in_order(messages, 1000)
        assert at_kill < 800, "the kill came after the first events were all published"
        assert_nothing_dropped(bus.stats())
        if publisher == "redis":
            handled = consume(len(messages), group=f"{prefix}-g")
            assert handled == len(messages)
            assert sorted(e["data"]["n"] for e in remote.snapshot()) == list(range(1000))
            from eventtracking import handlers

            assert handlers.stats()["duplicates"] >= copies


@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_redis_hung_never_blocks_the_sender(
    publisher: str, server: RedisServer, prefix: str, make_bus: Callable[..., Any]
) -> None:
    """While Redis is paused (SIGSTOP) with a publish call stuck on it, sending goes on
    without waiting for that call, flush gives up at its timeout, and everything is
    published in order once Redis resumes."""
    server.start()
    # Long timeouts keep the call stuck for the whole test: the sends below must not wait.
    url = f"{server.url}?socket_timeout=60&socket_connect_timeout=60"
    with bus_settings(url, prefix), eventbus_support.producing_handler():
        bus = make_bus(publisher=publisher, publish_timeout=60)
        bus.send(event(0))
        assert bus.flush(30)
        server.pause()
        bus.send(event(1))
        wait_until(lambda: bus.stats()["producer"]["in_flight"] == 1)
        batches = bus.stats()["producer"]["batches"]
        for n in range(2, 502):
            bus.send(event(n))
        stuck = bus.stats()["producer"]
        assert stuck["in_flight"] == 1
        assert stuck["batches"] == batches
        assert not bus.flush(0.2)
        server.resume()
        assert bus.flush(60)
    assert assert_all_once_in_order(read_stream(server, prefix), 502) == 0
    assert_nothing_dropped(bus.stats())
