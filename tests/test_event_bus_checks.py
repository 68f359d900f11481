"""The Django system checks as they concern EventBusRoutingBackend."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import eventbus_support
import pytest
from django.test import override_settings

from eventtracking.django import checks

pytestmark = pytest.mark.usefixtures("bus_env")

# pytest finds fixtures by module attribute.
bus_env = eventbus_support.bus_env

LOGGER = "eventtracking.backends.logger.LoggerBackend"
BUS = "eventtracking.backends.event_bus.EventBusRoutingBackend"


def backends(spool_dir: Path) -> dict[str, Any]:
    """A silent LoggerBackend at the top, and one nested in an event-bus backend."""
    silent = {"ENGINE": LOGGER, "OPTIONS": {"name": "tracking.w002.bus"}}
    return {
        "tracking_logs": silent,
        "event_transformer": {
            "ENGINE": BUS,
            "OPTIONS": {"spool_dir": str(spool_dir), "backends": {"logger": silent}},
        },
    }


@pytest.mark.parametrize(
    ("argv", "warned"),
    [
        (["manage.py", "lms", "check"], ["tracking_logs"]),
        (["manage.py", "lms", "runserver"], ["tracking_logs"]),
        (
            ["manage.py", "lms", "consume_events", "-t", "analytics", "-g", "erb"],
            ["tracking_logs", "event_transformer.logger"],
        ),
    ],
)
def test_w002_for_a_nested_logger_only_where_the_bus_is_consumed(
    argv: list[str], warned: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A silent LoggerBackend nested in an EventBusRoutingBackend runs only in the bus
    consumer: W002 names it there (consume_events runs the checks), not in the
    producer's ``manage.py check`` or web process, where it is only declared. A
    top-level one is warned about everywhere."""
    from eventtracking.django.django_tracker import override_default_tracker

    monkeypatch.setattr(sys, "argv", argv)
    with override_settings(EVENT_TRACKING_BACKENDS=backends(tmp_path / "spool")):
        override_default_tracker()
        messages = checks.check_logger_backends()
    assert [message.id for message in messages] == [checks.W002] * len(warned)
    named = [str(message.msg).split("]")[0] for message in messages]
    assert sorted(named) == sorted(f"EVENT_TRACKING_BACKENDS[{path!r}" for path in warned)
