"""``manage.py eventtracking_spool replay``: every stream goes back to where it belongs.

The backends are built as a site builds them, the spools filled while their server is
down, and the command replays them to a real Redis: the event bus's Redis Streams, and
a Celery broker with a worker that receives the events.
"""

from __future__ import annotations

import datetime
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eventbus_support
import pytest
from celery_support import Broker, in_process_worker, make_app, wait_until
from django.core.management import call_command
from eventbus_support import TOPIC, bus_settings

from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.event_bus import EventBusRoutingBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.tracker import Tracker, register_tracker

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bus_env")]

# pytest finds fixtures by module attribute.
bus_env = eventbus_support.bus_env

UTC = datetime.timezone.utc


def run(*args: Any) -> str:
    """Run a management command; return what it printed."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def replayed(output: str, name: str) -> tuple[int, int, int]:
    """The counts of the replay line of backend ``name``: replayed, dead, pending."""
    match = re.search(
        rf"^{re.escape(name)} \(stream [^)]*\): replayed (\d+) event\(s\) to [^,]+, "
        r"(\d+) new dead letter\(s\), (\d+) still pending$",
        output,
        re.MULTILINE,
    )
    assert match, output
    return int(match[1]), int(match[2]), int(match[3])


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Backends to close when the test ends."""
    made: list[Any] = []
    yield made
    for backend in made:
        backend.close(0)


def test_bus_events_are_replayed_to_the_bus_and_counted(
    redis_url: str, redis_server: Any, tmp_path: Path, closing: list[Any]
) -> None:
    """Events spooled while the bus was down are published by replay, which counts
    every one of them (it once said 0 for a bus stream it had published)."""
    prefix = "t-replay-bus"
    spool_dir = tmp_path / "spool"
    with bus_settings("redis://127.0.0.1:1/0", prefix):
        first = EventBusRoutingBackend(spool_dir=spool_dir, flush_interval=0.05)
        for n in range(40):
            event = {"name": "course.viewed", "timestamp": datetime.datetime.now(UTC)}
            first.send({**event, "context": {}, "data": {"n": n}})
        first.close(0)
    assert first.spool.pending_count(first.stream) == 40
    with bus_settings(redis_url, prefix):
        bus = EventBusRoutingBackend(spool_dir=spool_dir, flush_interval=0.05)
        closing.append(bus)
        register_tracker(Tracker({"bus": bus}))
        output = run("eventtracking_spool", "replay", "--timeout", "30")
    published = eventbus_support.published_names(redis_server.client(), f"{prefix}-{TOPIC}")
    assert published == list(range(40))
    assert replayed(output, "bus") == (len(published), 0, 0)
    assert "to the event bus" in output


def test_celery_events_are_replayed_to_the_broker_and_reach_the_worker(
    redis_factory: Any, tmp_path: Path, closing: list[Any]
) -> None:
    """Events spooled while the broker was down are published by replay and reach the
    worker's backend, in order; the counts are those the worker received."""
    server = redis_factory()
    app = make_app(Broker("redis", server.url))
    received = InMemoryBackend()
    options: dict[str, Any] = {
        "backends": {"memory": received},
        "backend_name": "replayed",
        "app": app,
        "spool_dir": tmp_path / "spool",
        "flush_interval": 0.05,
    }
    server.kill()
    first = AsyncRoutingBackend(**options)
    for n in range(30):
        first.send({"name": "spooled", "timestamp": datetime.datetime.now(UTC), "data": {"n": n}})
    first.close(0)
    assert first.spool.pending_count(first.stream) == 30
    server.start()
    router = AsyncRoutingBackend(**options)
    closing.append(router)
    register_tracker(Tracker({"replayed": router}))
    with in_process_worker(app):
        output = run("eventtracking_spool", "replay", "--timeout", "30")
        wait_until(lambda: len(received.snapshot()) >= 30)
    assert [event["data"]["n"] for event in received.snapshot()] == list(range(30))
    assert replayed(output, "replayed") == (len(received.snapshot()), 0, 0)
    assert "to the Celery broker" in output
    app.close()
