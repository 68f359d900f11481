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


def spool_bus_events(spool_dir: Path, prefix: str, count: int) -> None:
    """Send ``count`` events while the bus is unreachable: they end up in the spool."""
    with bus_settings("redis://127.0.0.1:1/0", prefix):
        down = EventBusRoutingBackend(spool_dir=spool_dir, flush_interval=0.05)
        for n in range(count):
            event = {"name": "course.viewed", "timestamp": datetime.datetime.now(UTC)}
            down.send({**event, "context": {}, "data": {"n": n}})
        down.close(0)
    assert down.spool.pending_count(down.stream) == count


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
    spool_bus_events(spool_dir, prefix, 40)
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


# -- manage.py eventtracking_emit --------------------------------------------------------


def test_emit_with_the_broker_down_says_the_event_is_spooled_and_succeeds(
    redis_factory: Any, tmp_path: Path, closing: list[Any]
) -> None:
    """With the broker down the test event waits safely in the spool: emit says so,
    once, with where it waits and what publishes it, and exits 0."""
    server = redis_factory()
    app = make_app(Broker("redis", server.url))
    server.kill()
    router = AsyncRoutingBackend(
        backends={"memory": InMemoryBackend()},
        backend_name="down",
        app=app,
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
    )
    closing.append(router)
    register_tracker(Tracker({"celery": router}))
    output = run("eventtracking_emit", "--timeout", "1")  # raises CommandError on failure
    assert router.spool.pending_count(router.stream) == 1
    lines = output.splitlines()
    (line,) = [line for line in lines if line.startswith("  celery (AsyncRoutingBackend): ")]
    assert line.endswith(": queued 1, spooled 1")
    (waits,) = [line for line in lines if "the event waits in the spool" in line]
    assert f" {router.spool.path} (stream {router.stream}, 1 pending)" in waits
    assert "until the Celery broker is reachable" in waits
    assert lines[-1].startswith("Spooled, not lost: 1 of 1 backend(s)")
    assert "manage.py eventtracking_spool replay" in lines[-1]
    assert "dropped" not in output
    assert "reached no backend" not in output and "Delivered" not in output


# -- output safety and progress ---------------------------------------------------------

HOSTILE = "evil\x1b]0;owned\x07\x1b[2J\nforged line"


def test_hostile_names_and_reasons_are_printed_escaped(tmp_path: Path, closing: list[Any]) -> None:
    """A stream name or a dead letter's reason holding escape codes or a newline (from a
    message anyone with access to the broker could write) is printed escaped by status
    and dead-letters: nothing reaches the terminal raw, no output line is forged."""
    from eventtracking._util.escape import escape_for_terminal

    app = make_app(Broker("redis", "redis://127.0.0.1:1/0"))
    router = AsyncRoutingBackend(
        backend_name="hostile", app=app, spool_dir=tmp_path / "spool", spool_stream=HOSTILE
    )
    closing.append(router)
    register_tracker(Tracker({"hostile": router}))
    router.spool.add_dead_letters(HOSTILE, [(b"{}", f"unknown backend {HOSTILE!s}", None)])
    for verb in ("status", "dead-letters"):
        output = run("eventtracking_spool", verb)
        assert "\x1b" not in output and "\x07" not in output, verb
        assert not any(line.startswith("forged") for line in output.splitlines()), verb
        assert escape_for_terminal(HOSTILE) in output, verb
    app.close()


def _read_all(leader: int) -> str:
    """All that was written to a pty whose other end is closed: one read may return
    only part of it."""
    import os

    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_replay_draws_progress_on_a_terminal_only(
    redis_url: str, redis_server: Any, tmp_path: Path, closing: list[Any]
) -> None:
    """On a terminal replay draws a progress line (count, rate, time left) and ends it
    before the summary; to a pipe or a file it writes the summary only."""
    import os
    import pty

    prefix = "t-replay-progress"
    spool_dir = tmp_path / "spool"
    spool_bus_events(spool_dir, prefix, 5)
    leader, follower = pty.openpty()
    terminal = os.fdopen(follower, "w")
    with bus_settings(redis_url, prefix):
        bus = EventBusRoutingBackend(spool_dir=spool_dir, flush_interval=0.05)
        closing.append(bus)
        register_tracker(Tracker({"bus": bus}))
        call_command("eventtracking_spool", "replay", stdout=terminal, stderr=terminal)
        terminal.flush()
        terminal.close()
        screen = _read_all(leader)
        os.close(leader)
        spool_bus_events(spool_dir, prefix, 5)
        piped = run("eventtracking_spool", "replay")
    assert "\rbus (stream " in screen
    assert ": 5 of 5 replayed, " in screen and "/s, 0 s left" in screen
    assert replayed(screen.replace("\r\n", "\n").split("\r")[-1], "bus") == (5, 0, 0)
    assert replayed(piped, "bus") == (5, 0, 0)
    assert "\r" not in piped and " of 5 replayed" not in piped


def test_emit_through_the_bus_is_delivered_when_the_bus_is_up(
    redis_url: str, redis_server: Any, tmp_path: Path, closing: list[Any]
) -> None:
    """An event published to the bus counts as delivered by the bus backend itself (it
    once counted as reaching no backend, the router having no local ones)."""
    prefix = "t-emit-bus"
    with bus_settings(redis_url, prefix):
        bus = EventBusRoutingBackend(spool_dir=tmp_path / "spool", flush_interval=0.05)
        closing.append(bus)
        register_tracker(Tracker({"bus": bus}))
        output = run("eventtracking_emit", "--name", "course.viewed", "--data", '{"n": 7}')
    assert eventbus_support.published_names(redis_server.client(), f"{prefix}-{TOPIC}") == [7]
    assert "  bus (EventBusRoutingBackend): queued 1, written 1\n" in output
    assert output.rstrip().endswith("Delivered: 1 of 1 backend(s) took it.")
