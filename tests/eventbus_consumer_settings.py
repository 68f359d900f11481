"""Django settings of the bus consumer that tests start as a process of its own.

``python -m django consume_events ...`` with ``DJANGO_SETTINGS_MODULE`` naming this
module: the Redis settings of docs/eventbus.rst, read from the environment
(``EVENTBUS_TEST_URL``, ``EVENTBUS_TEST_PREFIX``), and an
``EventBusRoutingBackend`` whose nested backend appends each event it receives, at
once, as a JSON line to ``EVENTBUS_TEST_RECEIVED`` (a consumer killed with SIGKILL
keeps what it wrote).
"""

from __future__ import annotations

import json
import os
from typing import Any

from eventtracking.backends.logger import DateTimeJSONEncoder

SECRET_KEY = "eventtracking-tests-only"
USE_TZ = True
INSTALLED_APPS = ["openedx_events", "eventtracking.django"]
DATABASES: dict[str, Any] = {}
LOGGING_CONFIG = None

EVENT_BUS_CONSUMER = "edx_event_bus_redis.RedisEventConsumer"
EVENT_BUS_REDIS_CONNECTION_URL = os.environ.get("EVENTBUS_TEST_URL", "")
EVENT_BUS_TOPIC_PREFIX = os.environ.get("EVENTBUS_TEST_PREFIX", "")
EVENT_BUS_REDIS_CONSUMER_POLL_TIMEOUT = 1
EVENT_BUS_REDIS_AUDIT_LOGGING_ENABLED = False
OPENEDX_TELEMETRY: list[str] = []

EVENT_TRACKING_ENABLED = True
EVENT_TRACKING_BACKENDS = {
    "event_transformer": {
        "ENGINE": "eventtracking.backends.event_bus.EventBusRoutingBackend",
        "OPTIONS": {
            "backend_name": "event_transformer",
            "spool_dir": os.environ.get("EVENTBUS_TEST_SPOOL", ""),
            "backends": {
                "received": {
                    "ENGINE": "eventbus_consumer_settings.AppendFileBackend",
                    "OPTIONS": {"path": os.environ.get("EVENTBUS_TEST_RECEIVED", "")},
                },
            },
        },
    },
}


class AppendFileBackend:
    """Append each event to a file as one JSON line, before ``send`` returns."""

    mutates_events = False

    def __init__(self, path: str) -> None:
        self.path = path

    def send(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, cls=DateTimeJSONEncoder) + "\n"
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(line)
