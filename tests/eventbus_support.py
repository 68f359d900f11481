"""The Open edX event bus for tests: edx-event-bus-redis on the embedded Redis.

Django is configured once for the session (django_support), then edx-event-bus-redis
is imported: it reads some settings at import, such as the consumer's poll timeout,
which must be short here so that a consumer stops within a second of being asked to.
Each test then sets the bus settings it needs with :func:`bus_settings`.

The consumer is edx-event-bus-redis's own, run in the main thread (it uses SIGALRM)
by :func:`consume`, which stops it once it has handled the expected number of messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django_support
import pytest

EVENT_TYPE = "org.openedx.analytics.tracking.event.emitted.v1"
TOPIC = "analytics"
REDIS_PRODUCER = "edx_event_bus_redis.create_producer"

#: Settings edx-event-bus-redis reads when it is imported.
IMPORT_TIME_SETTINGS = {
    "EVENT_BUS_REDIS_CONSUMER_POLL_TIMEOUT": 1,
    "EVENT_BUS_REDIS_CONSUMER_POLL_FAILURE_SLEEP": 0.1,
    "EVENT_BUS_REDIS_STREAM_MAX_LEN": 100_000,
    # No New Relic here: without this, edx-django-utils warns on every message.
    "OPENEDX_TELEMETRY": [],
}

_state: dict[str, bool] = {}


def configure() -> None:
    """Django for the session, then edx-event-bus-redis imported with the short timeouts."""
    import sys

    from django.conf import settings

    django_support.configure()
    if _state.get("configured"):
        return
    if "edx_event_bus_redis" in sys.modules:
        msg = "edx_event_bus_redis was imported before its settings were set"
        raise RuntimeError(msg)
    for name, value in IMPORT_TIME_SETTINGS.items():
        setattr(settings, name, value)
    import edx_event_bus_redis  # noqa: F401 - reads the settings above
    from edx_event_bus_redis.internal import consumer

    assert consumer.CONSUMER_POLL_TIMEOUT == 1
    _state["configured"] = True


@pytest.fixture(scope="session")
def bus_env() -> None:
    """Django and edx-event-bus-redis, configured for the event-bus tests."""
    configure()


def producer_config(*topics: str) -> dict[str, Any]:
    """``EVENT_BUS_PRODUCER_CONFIG`` enabling tracking logs on ``topics``."""
    return {
        EVENT_TYPE: {
            topic: {"event_key_field": "tracking_log.name", "enabled": True} for topic in topics
        }
    }


@contextmanager
def bus_settings(
    url: str,
    prefix: str,
    *,
    names: Iterable[str] = ("course.viewed", "video.played"),
    switched_on: bool = True,
    producer: str | None = REDIS_PRODUCER,
    topics: tuple[str, ...] = (TOPIC,),
    **extra: Any,
) -> Iterator[None]:
    """The settings of a deployment publishing tracking logs to Redis Streams."""
    from django.test import override_settings

    values: dict[str, Any] = {
        "SEND_TRACKING_EVENT_EMITTED_SIGNAL": switched_on,
        "EVENT_BUS_TRACKING_LOGS": set(names),
        "EVENT_BUS_PRODUCER": producer,
        "EVENT_BUS_CONSUMER": "edx_event_bus_redis.RedisEventConsumer",
        "EVENT_BUS_REDIS_CONNECTION_URL": url,
        "EVENT_BUS_TOPIC_PREFIX": prefix,
        "EVENT_BUS_PRODUCER_CONFIG": producer_config(*topics),
    }
    values.update(extra)
    with override_settings(**values):
        yield


@contextmanager
def producing_handler() -> Iterator[None]:
    """Connect openedx-events' producing handler, as its app does for the configured
    types when it is in INSTALLED_APPS (the test settings leave it out)."""
    from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
    from openedx_events.apps import general_signal_handler

    TRACKING_EVENT_EMITTED.connect(general_signal_handler)
    try:
        yield
    finally:
        TRACKING_EVENT_EMITTED.disconnect(general_signal_handler)


def consume(
    expected: int,
    *,
    group: str,
    timeout: float = 60.0,
    on_message: Callable[[Any], None] | None = None,
) -> int:
    """Run edx-event-bus-redis's consumer in this (main) thread until it has handled
    ``expected`` messages from the bus, or ``timeout`` seconds have passed.

    Returns how many it handled. The receivers connected to the signal (the one under
    test among them) run for each message, before the counting receiver that stops
    the loop.
    """
    from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
    from openedx_events.event_bus import make_single_consumer

    consumer = make_single_consumer(
        topic=TOPIC, group_id=group, consumer_name=f"{group}-1", check_backlog=True
    )
    handled = [0]

    def count(sender: Any, signal: Any = None, **kwargs: Any) -> None:
        if kwargs.get("from_event_bus"):
            handled[0] += 1
            if on_message is not None:
                on_message(kwargs)
            if handled[0] >= expected:
                consumer._shut_down()

    uid = f"eventbus-tests-count-{group}"
    TRACKING_EVENT_EMITTED.connect(count, dispatch_uid=uid, weak=False)
    safety = threading.Timer(timeout, consumer._shut_down)
    safety.daemon = True
    safety.start()
    try:
        if expected > 0:
            consumer.consume_indefinitely()
    finally:
        safety.cancel()
        TRACKING_EVENT_EMITTED.disconnect(dispatch_uid=uid)
    return handled[0]


def stream_messages(client: Any, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every message of a Redis stream, oldest first."""
    return list(client.xrange(stream))


def decode_message(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A Redis Streams message of the bus as the consumer reads it: id and tracking log."""
    from edx_event_bus_redis.internal.message import RedisMessage
    from openedx_events.event_bus.avro.deserializer import deserialize_bytes_to_event_data
    from openedx_events.tooling import OpenEdxPublicSignal

    message = RedisMessage.parse((b"0-0", fields), "stream")
    signal = OpenEdxPublicSignal.get_signal_by_type(message.event_metadata.event_type)
    data = deserialize_bytes_to_event_data(message.event_data, signal)
    return {"id": str(message.event_metadata.id), "tracking_log": data["tracking_log"]}


def published_names(client: Any, stream: str) -> list[str]:
    """The ``data['n']`` of each message in ``stream``, in order (the tests number events)."""
    import json

    return [
        json.loads(decode_message(fields)["tracking_log"].data)["n"]
        for _, fields in stream_messages(client, stream)
    ]


def spool_dir(tmp_path: Path) -> Path:
    """A spool directory of the test's own."""
    return tmp_path / "spool"
