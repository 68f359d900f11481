"""EVENT_TRACKING_METRICS: the metrics of eventtracking.metrics turned on by a setting."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import django_support
import pytest
from django.test import override_settings
from redis_support import free_port
from test_metrics import Reader, key, scrape

from eventtracking import metrics, tracker
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.django import _metrics, apps, checks

pytestmark = pytest.mark.usefixtures("django_env")

# pytest finds fixtures by module attribute: this one comes from django_support.
django_env = django_support.django_env


@pytest.fixture
def endpoint() -> Iterator[None]:
    yield
    metrics.stop_prometheus()


def e010(value: Any) -> list[Any]:
    with override_settings(EVENT_TRACKING_METRICS=value):
        return [m for m in checks.check_middleware_settings() if m.id == checks.E010]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("on", "it must be True, False, None or a dict"),
        ({"port": 9464}, "unknown key(s) port; the keys are prometheus_port"),
        ({"prometheus_port": 0}, "prometheus_port must be a port number, 1 to 65535"),
        ({"prometheus_port": "9464"}, "prometheus_port must be a port number"),
        ({"prometheus_addr": ""}, "prometheus_addr must be an address"),
        ({"prometheus_port": 9464, "prometheus_ports": 0}, "prometheus_ports must be a whole"),
        ({"prometheus_port": 65535, "prometheus_ports": 2}, "is beyond 65535"),
        ({"side": "api"}, "side must be 'web' or 'worker'"),
    ],
)
def test_a_bad_value_is_e010_naming_the_fix(value: Any, says: str) -> None:
    (message,) = e010(value)
    assert message.msg == checks.INVALID_SETTING.format(setting="EVENT_TRACKING_METRICS")
    assert says in message.hint
    assert repr(value) in message.hint


@pytest.mark.parametrize(
    "value",
    [None, False, True, {"prometheus_port": 9464, "prometheus_ports": 4, "side": "web"}],
)
def test_good_values_pass_the_checks(value: Any) -> None:
    assert e010(value) == []


def test_without_the_extra_the_check_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.startswith("opentelemetry.exporter"):
            monkeypatch.setitem(sys.modules, name, None)
    (message,) = e010({"prometheus_port": 9464})
    assert "pip install 'event-tracking[otel]'" in message.hint
    assert e010(True) == []


def test_a_port_serves_the_metrics_when_the_app_starts(endpoint: None) -> None:
    """{'prometheus_port': N}: a scrape of the port shows the tracker's stats()."""
    events = tracker.Tracker({"memory": InMemoryBackend()})
    tracker.register_tracker(events)
    port = free_port()
    with override_settings(EVENT_TRACKING_METRICS={"prometheus_port": port, "side": "web"}):
        apps._start_metrics()
    for _ in range(4):
        events.emit("served", {})
    points = scrape(f"http://127.0.0.1:{port}/metrics")
    stats = events.stats()
    assert points[key("eventtracking_events_emitted_total", side="web")] == stats["emitted"] == 4
    stored = key("eventtracking_events_stored_total", side="web", backend="memory")
    assert points[stored] == stats["backends"]["memory"]["stored"] == 4


def test_a_management_command_does_not_take_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """`manage.py migrate` next to a running server must not start a second endpoint."""
    monkeypatch.setattr(sys, "argv", ["manage.py", "migrate"])
    setting = _metrics.MetricsSetting(prometheus_port=free_port())
    done = _metrics.start(setting, command=_metrics.management_command())
    assert done == "not served: `migrate` is a management command"
    assert metrics._endpoint is None


def test_true_reports_to_the_global_meter_provider() -> None:
    """True: a site's own OpenTelemetry set-up (here an in-memory reader) gets them."""
    from opentelemetry import metrics as otel_metrics

    reader = Reader()
    otel_metrics.set_meter_provider(reader.provider)
    events = tracker.Tracker({"memory": InMemoryBackend()})
    tracker.register_tracker(events)
    with override_settings(EVENT_TRACKING_METRICS=True):
        apps._start_metrics()
    events.emit("global", {})
    points = reader.collect()
    assert points[key("eventtracking.events.emitted", side="web")] == events.stats()["emitted"]
