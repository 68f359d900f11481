"""``EVENT_TRACKING_METRICS``: the metrics of :mod:`eventtracking.metrics`, from settings.

Absent, ``None`` or ``False``: off; ``True``: OpenTelemetry's global ``MeterProvider``;
a dict with ``prometheus_port`` (and ``prometheus_addr``, ``prometheus_ports``,
``side``): served for Prometheus, as ``docs/metrics.rst`` describes (a dict without
``prometheus_port`` means the global provider). The app turns them
on in ``ready()``; a management command other than ``runserver``'s serving process
never starts the endpoint, which would take the port from the server. In a Celery
worker the main process serves on the port and each prefork pool process n on
port + n (:func:`eventtracking.metrics.serve_worker_processes`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SETTING = "EVENT_TRACKING_METRICS"
KEYS = ("prometheus_port", "prometheus_ports", "prometheus_addr", "side")
EXTRA = "pip install 'event-tracking[otel]'"


@dataclass(frozen=True)
class MetricsSetting:
    """The parsed setting: where the metrics go."""

    prometheus_port: int | None = None
    prometheus_addr: str = "127.0.0.1"
    side: str | None = None
    prometheus_ports: int = 1


def parse(value: Any, fail: Callable[[str, Any, str], Exception]) -> MetricsSetting | None:
    """The setting's meaning, or None when metrics are off.

    Raises what ``fail(setting, value, fix)`` returns (the settings module hands over
    the maker of its :class:`~eventtracking.django._settings.SettingError`) naming the
    bad value and the fix, and when OpenTelemetry (or its Prometheus exporter, for a
    port) is not installed, naming the extra.
    """
    if value is None or value is False:
        return None
    if value is True:
        parsed = MetricsSetting()
    elif isinstance(value, dict):
        unknown = sorted(map(str, set(value) - set(KEYS)))
        if unknown:
            fix = f"unknown key(s) {', '.join(unknown)}; the keys are {', '.join(KEYS)}."
            raise fail(SETTING, value, fix)
        port = value.get("prometheus_port")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise fail(SETTING, value, "prometheus_port must be a port number, 1 to 65535.")
        ports = value.get("prometheus_ports", 1)
        if isinstance(ports, bool) or not isinstance(ports, int) or ports < 1:
            raise fail(SETTING, value, "prometheus_ports must be a whole number, 1 or more.")
        if port is not None and port + ports - 1 > 65535:
            raise fail(SETTING, value, "prometheus_port + prometheus_ports - 1 is beyond 65535.")
        addr = value.get("prometheus_addr", "127.0.0.1")
        if not isinstance(addr, str) or not addr:
            raise fail(SETTING, value, "prometheus_addr must be an address to listen on.")
        side = value.get("side")
        if side not in (None, "web", "worker"):
            raise fail(SETTING, value, "side must be 'web' or 'worker' (or left out).")
        parsed = MetricsSetting(port, addr, side, ports)
    else:
        fix = "it must be True, False, None or a dict such as {'prometheus_port': 9464}."
        raise fail(SETTING, value, fix)
    needed = ["opentelemetry.sdk.metrics"]
    if parsed.prometheus_port is not None:
        needed.append("opentelemetry.exporter.prometheus")
    for module in needed:
        if not _installed(module):
            raise fail(SETTING, value, f"{module} is not installed: {EXTRA}.")
    return parsed


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or was unloaded
        return False


def start(setting: MetricsSetting, *, command: str | None) -> str:
    """Turn the metrics on as ``setting`` says; return what was done, for the log.

    ``command`` is the management command this process runs, or None.
    """
    from eventtracking import metrics

    if setting.prometheus_port is None:
        metrics.instrument(side=setting.side)
        return "reported to the global OpenTelemetry MeterProvider"
    if command is not None and not (command == "runserver" and os.environ.get("RUN_MAIN")):
        return f"not served: `{command}` is a management command"
    side = setting.side or metrics.detect_side()
    port, addr = setting.prometheus_port, setting.prometheus_addr
    endpoint = metrics.start_prometheus(port, addr, ports=setting.prometheus_ports, side=side)
    if side == "worker" and command is None:
        metrics.serve_worker_processes(port, addr)
        return f"served for Prometheus at {endpoint.url}, and by pool process n at port {port}+n"
    return f"served for Prometheus at {endpoint.url}"


def management_command() -> str | None:
    """The ``manage.py`` / ``django-admin`` command this process runs, or None."""
    if len(sys.argv) < 2:
        return None
    try:
        from django.core.management import get_commands

        return sys.argv[1] if sys.argv[1] in get_commands() else None
    except Exception:
        return None
