"""System checks of the event-bus and Segment backends: E020, E021, E022 and W020."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import django_support
import pytest
from django.test import override_settings
from django_support import REPO_DIR, TESTS_DIR

from eventtracking.django import checks

pytestmark = pytest.mark.usefixtures("django_env")

# pytest finds fixtures by module attribute: these come from django_support.
django_env = django_support.django_env

BUS = "eventtracking.backends.event_bus.EventBusRoutingBackend"
SEGMENT = "eventtracking.backends.segment.SegmentBackend"
ROUTING = "eventtracking.backends.routing.RoutingBackend"
EVENT_TYPE = "org.openedx.analytics.tracking.event.emitted.v1"

#: As edx-platform and Aspects configure them: Segment nested in a router, the bus on top.
BACKENDS = {
    "segmentio": {"ENGINE": ROUTING, "OPTIONS": {"backends": {"segment": {"ENGINE": SEGMENT}}}},
    "event_transformer": {"ENGINE": BUS, "OPTIONS": {"backend_name": "event_transformer"}},
}
PRODUCER_CONFIG = {
    EVENT_TYPE: {"analytics": {"event_key_field": "tracking_log.name", "enabled": True}}
}


def ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_installed_extras_raise_nothing() -> None:
    """With openedx-events and segment-analytics-python installed, the configured
    backends pass."""
    with override_settings(EVENT_TRACKING_BACKENDS=BACKENDS):
        assert checks.check_optional_extras() == []


CHECK_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"openedx_events", "segment", "analytics"}:
                raise ImportError(f"{name} is blocked by the test")
            return None

    sys.meta_path.insert(0, Block())
    logging.disable(logging.CRITICAL)
    import django
    from django.conf import settings
    import django_settings

    values = django_settings.as_dict()
    values["EVENT_TRACKING_BACKENDS"] = json.loads(sys.argv[1])
    settings.configure(**values)
    django.setup()
    from eventtracking.django import checks
    print(json.dumps([[m.id, m.msg, m.hint] for m in checks.check_optional_extras()]))
    """
)


def test_missing_extras_are_errors_naming_them() -> None:
    """Without the libraries, each configured backend is an error (E020, E021) that
    says where it is configured and what to install; the app still starts."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, json.dumps(BACKENDS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=str(TESTS_DIR),
        env={**django_support.server_env(TESTS_DIR), "PYTHONPATH": f"{TESTS_DIR}:{REPO_DIR}"},
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert [entry[0] for entry in found] == [checks.E021, checks.E020]
    segment, bus = found
    assert "EVENT_TRACKING_BACKENDS['segmentio']['OPTIONS']['backends']['segment']" in segment[1]
    assert segment[2] == checks.SEGMENT_EXTRA_MISSING_HINT
    assert "pip install 'event-tracking[segment]'" in segment[2]
    assert "EVENT_TRACKING_BACKENDS['event_transformer']" in bus[1]
    assert "pip install 'event-tracking[eventbus]'" in bus[2]


@pytest.mark.parametrize("value", ["course.viewed", {"course.viewed": True}, 3])
def test_e022_tracking_logs_of_the_wrong_type(value: Any) -> None:
    """EVENT_BUS_TRACKING_LOGS that is not a list, tuple or set is E022."""
    with override_settings(EVENT_TRACKING_BACKENDS=BACKENDS, EVENT_BUS_TRACKING_LOGS=value):
        messages = checks.check_event_bus_settings()
    assert ids(messages) == [checks.E022]
    assert type(value).__name__ in messages[0].msg


@pytest.mark.parametrize("value", [[], ("a",), {"a"}, frozenset()])
def test_e022_accepts_lists_tuples_and_sets(value: Any) -> None:
    with override_settings(EVENT_TRACKING_BACKENDS=BACKENDS, EVENT_BUS_TRACKING_LOGS=value):
        assert checks.check_event_bus_settings() == []


@pytest.mark.parametrize(
    ("producer", "config", "expected"),
    [
        (None, PRODUCER_CONFIG, "EVENT_BUS_PRODUCER is not set"),
        ("edx_event_bus_redis.create_producer", {}, "EVENT_BUS_PRODUCER_CONFIG enables no topic"),
        (
            "edx_event_bus_redis.create_producer",
            {EVENT_TYPE: {"analytics": {"event_key_field": "x", "enabled": False}}},
            "EVENT_BUS_PRODUCER_CONFIG enables no topic",
        ),
    ],
)
def test_w020_switched_on_but_cannot_publish(producer: Any, config: Any, expected: str) -> None:
    """With the switch on, a missing producer or no enabled topic is W020 (events would
    wait in the spool); with the switch off, the same settings raise nothing."""
    settings = {
        "EVENT_TRACKING_BACKENDS": BACKENDS,
        "EVENT_BUS_PRODUCER": producer,
        "EVENT_BUS_PRODUCER_CONFIG": config,
    }
    with override_settings(SEND_TRACKING_EVENT_EMITTED_SIGNAL=True, **settings):
        messages = checks.check_event_bus_settings()
    assert ids(messages) == [checks.W020]
    assert expected in messages[0].msg
    with override_settings(SEND_TRACKING_EVENT_EMITTED_SIGNAL=False, **settings):
        assert checks.check_event_bus_settings() == []


def test_w020_silent_when_ready_and_without_a_bus_backend() -> None:
    """Complete settings raise nothing, and without an EventBusRoutingBackend the bus
    settings are not looked at."""
    ready = {
        "SEND_TRACKING_EVENT_EMITTED_SIGNAL": True,
        "EVENT_BUS_PRODUCER": "edx_event_bus_redis.create_producer",
        "EVENT_BUS_PRODUCER_CONFIG": PRODUCER_CONFIG,
    }
    with override_settings(EVENT_TRACKING_BACKENDS=BACKENDS, **ready):
        assert checks.check_event_bus_settings() == []
    with override_settings(
        EVENT_BUS_TRACKING_LOGS="oops",
        EVENT_BUS_PRODUCER=None,
        **{k: v for k, v in ready.items() if k != "EVENT_BUS_PRODUCER"},
    ):
        assert checks.check_event_bus_settings() == []


def test_the_checks_are_registered() -> None:
    """manage.py check runs the new checks under the eventtracking tag."""
    from django.core import checks as django_checks

    registered = django_checks.registry.registry.get_checks()
    assert checks.check_optional_extras in registered
    assert checks.check_event_bus_settings in registered


def test_w020_signal_path_needs_openedx_events_installed_as_an_app() -> None:
    """A producer reached through the signal (Kafka, say) needs openedx-events' handler,
    which it connects only as an installed app; the Redis writer does not."""
    settings = {
        "SEND_TRACKING_EVENT_EMITTED_SIGNAL": True,
        "EVENT_BUS_PRODUCER": "edx_event_bus_kafka.create_producer",
        "EVENT_BUS_PRODUCER_CONFIG": PRODUCER_CONFIG,
    }
    with override_settings(EVENT_TRACKING_BACKENDS=BACKENDS, **settings):
        messages = checks.check_event_bus_settings()
    assert ids(messages) == [checks.W020]
    assert "INSTALLED_APPS" in messages[0].msg
    forced = {"ENGINE": BUS, "OPTIONS": {"publisher": "redis"}}
    with override_settings(EVENT_TRACKING_BACKENDS={"bus": forced}, **settings):
        assert checks.check_event_bus_settings() == []
