"""What docs/eventbus.rst tells operators to run, run as written.

The consumer command is taken from the page's code block, so the test follows the
page: it must lose nothing when the consumer is killed and started again.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import eventbus_support
import pytest
from eventbus_support import TOPIC, bus_settings

from eventtracking.backends.event_bus import EventBusRoutingBackend

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bus_env")]

# pytest finds fixtures by module attribute.
bus_env = eventbus_support.bus_env

UTC = datetime.timezone.utc
TESTS_DIR = Path(__file__).resolve().parent
PAGE = TESTS_DIR.parent / "docs" / "eventbus.rst"
WAIT = 120.0


def documented_consumer_arguments() -> list[str]:
    """The arguments of ``consume_events`` in the page's Redis section code block."""
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index("Redis Streams\n~~~") : text.index("Kafka\n~~~")]
    blocks = re.findall(r"\.\. code-block:: sh\n\n((?:    .*\n|\n)+)", section)
    commands = [
        " ".join(block.replace("\\\n", " ").split())
        for block in blocks
        if "consume_events" in block
    ]
    assert len(commands) == 1, f"expected one consume_events command, found {commands}"
    words = shlex.split(commands[0])
    return words[words.index("consume_events") + 1 :]


class Consumer:
    """The documented consumer command, in a process of its own."""

    def __init__(self, arguments: list[str], env: dict[str, str], log: Path) -> None:
        self.arguments = arguments
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "consume_events", *self.arguments],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)


def received(path: Path) -> list[int]:
    """The ``data['n']`` of every event the consumer's nested backend wrote."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["data"]["n"] for line in lines if line.endswith("}")]


def wait_for(condition: Callable[[], bool], what: str, consumer: Consumer) -> None:
    """Poll ``condition`` until it holds; fail, with the consumer's output, after WAIT."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            output = consumer.log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{what} did not happen within {WAIT:.0f} s; consumer said:\n{output}")
        time.sleep(0.1)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[EventBusRoutingBackend]:
    backend = EventBusRoutingBackend(
        spool_dir=tmp_path / "producer-spool", publisher="redis", flush_interval=0.05
    )
    yield backend
    backend.close(0)


def test_the_documented_consumer_loses_nothing_when_restarted(
    redis_url: str, redis_server: Any, bus: EventBusRoutingBackend, tmp_path: Path
) -> None:
    """The consumer command of docs/eventbus.rst, killed (SIGKILL) and started again
    while events keep being published, delivers every event, those published while it
    was down included."""
    prefix = "docs-consumer"
    stream = f"{prefix}-{TOPIC}"
    output = tmp_path / "received.jsonl"
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "PYTHONPATH": str(TESTS_DIR),
        "DJANGO_SETTINGS_MODULE": "eventbus_consumer_settings",
        "EVENTBUS_TEST_URL": redis_url,
        "EVENTBUS_TEST_PREFIX": prefix,
        "EVENTBUS_TEST_SPOOL": str(tmp_path / "consumer-spool"),
        "EVENTBUS_TEST_RECEIVED": str(output),
    }
    arguments = documented_consumer_arguments()
    [group] = [arguments[arguments.index("-g") + 1]]
    consumer = Consumer(arguments, env, tmp_path / "consumer.log")
    client = redis_server.client()

    def group_exists() -> bool:
        try:
            return any(g["name"].decode() == group for g in client.xinfo_groups(stream))
        except Exception:  # the stream does not exist yet
            return False

    sent = 0

    def publish(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            bus.send(
                {
                    "name": "course.viewed",
                    "timestamp": datetime.datetime.now(UTC),
                    "context": {},
                    "data": {"n": sent},
                }
            )
            sent += 1
        assert bus.flush(30)

    try:
        with bus_settings(redis_url, prefix):
            consumer.start()
            wait_for(group_exists, "the consumer group's creation", consumer)
            publish(50)
            wait_for(lambda: len(received(output)) >= 50, "delivery of the first 50", consumer)
            for _ in range(2):
                consumer.kill()
                publish(50)  # while the consumer is down
                consumer.start()
                publish(10)
                wait_for(
                    lambda: set(received(output)) == set(range(sent)),
                    f"delivery of all {sent}",
                    consumer,
                )
    finally:
        consumer.kill()
    assert set(received(output)) == set(range(sent))
    assert sent == 170
