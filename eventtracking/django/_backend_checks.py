"""System checks of particular backends: optional extras, the event bus, async routing.

Each check registers itself with Django when this module is imported, beside its ids
and message templates; :mod:`eventtracking.django.checks` imports it and re-exports
:data:`__all__`.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks

from eventtracking._util import engines as _engines
from eventtracking.django._settings import system_check
from eventtracking.django.django_tracker import DJANGO_BACKEND_SETTING_NAME

__all__ = [
    "ASYNC_BACKEND_NAME_ELSEWHERE",
    "ASYNC_BACKEND_NAME_UNKNOWN",
    "ASYNC_CELERY_MISSING",
    "ASYNC_UNSAFE_CONTENT",
    "ASYNC_UNSAFE_CONTENT_HINT",
    "E020",
    "E021",
    "E022",
    "E030",
    "E031",
    "EVENT_BUS_CANNOT_PUBLISH",
    "EVENT_BUS_EXTRA_MISSING",
    "EVENT_BUS_EXTRA_MISSING_HINT",
    "EVENT_BUS_TRACKING_LOGS_INVALID",
    "EVENT_BUS_TRACKING_LOGS_INVALID_HINT",
    "SEGMENT_EXTRA_MISSING",
    "SEGMENT_EXTRA_MISSING_HINT",
    "W020",
    "W030",
    "W031",
    "check_async_routing",
    "check_event_bus_settings",
    "check_optional_extras",
]


def _configured_engines(node: Any, where: str) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """Each ENGINE of a settings tree that imports: where it is, its target and its
    node. Those that do not import are skipped (check_tracker_settings reports them)."""
    if isinstance(node, dict):
        engine = node.get(_engines.ENGINE)
        if isinstance(engine, str):
            with contextlib.suppress(_engines.EngineError):
                yield where, _engines.import_engine(engine, where), node
        for key, value in node.items():
            yield from _configured_engines(value, f"{where}[{key!r}]")
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _configured_engines(value, f"{where}[{index}]")


def _subclass(target: Any, module: str, name: str) -> bool:
    base = getattr(importlib.import_module(module), name)
    return isinstance(target, type) and issubclass(target, base)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package of a dotted name is missing
        return False


def _backends_tree() -> Iterator[tuple[str, Any, dict[str, Any]]]:
    backends = getattr(settings, DJANGO_BACKEND_SETTING_NAME, None)
    return _configured_engines(backends, DJANGO_BACKEND_SETTING_NAME)


def _is_event_bus(target: Any) -> bool:
    return _subclass(target, "eventtracking.backends.event_bus", "EventBusRoutingBackend")


E020 = "eventtracking.E020"
EVENT_BUS_EXTRA_MISSING = (
    "{where} is an EventBusRoutingBackend, which needs openedx-events, and it is not installed."
)
EVENT_BUS_EXTRA_MISSING_HINT = "Install it with: pip install 'event-tracking[eventbus]'"

E021 = "eventtracking.E021"
SEGMENT_EXTRA_MISSING = (
    "{where} is a SegmentBackend, which needs segment-analytics-python, and it is not installed."
)
SEGMENT_EXTRA_MISSING_HINT = "Install it with: pip install 'event-tracking[segment]'"


@system_check
def check_optional_extras(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Find backends whose optional dependency is not installed (E020, E021)."""
    messages: list[checks.CheckMessage] = []
    has_events = _installed("openedx_events")
    has_segment = _installed("segment.analytics") or _installed("analytics")
    for where, target, _node in _backends_tree():
        if not has_events and _is_event_bus(target):
            msg = EVENT_BUS_EXTRA_MISSING.format(where=where)
            messages.append(checks.Error(msg, hint=EVENT_BUS_EXTRA_MISSING_HINT, id=E020))
        if not has_segment and _subclass(
            target, "eventtracking.backends.segment", "SegmentBackend"
        ):
            msg = SEGMENT_EXTRA_MISSING.format(where=where)
            messages.append(checks.Error(msg, hint=SEGMENT_EXTRA_MISSING_HINT, id=E021))
    return messages


E022 = "eventtracking.E022"
EVENT_BUS_TRACKING_LOGS_INVALID = (
    "EVENT_BUS_TRACKING_LOGS must be a list, tuple or set of event names, not {type_name}."
)
EVENT_BUS_TRACKING_LOGS_INVALID_HINT = (
    "For example EVENT_BUS_TRACKING_LOGS = {'edx.course.enrollment.activated'}."
)

W020 = "eventtracking.W020"
EVENT_BUS_CANNOT_PUBLISH = (
    "SEND_TRACKING_EVENT_EMITTED_SIGNAL is on, but tracking logs cannot reach the event "
    "bus: {problem} They wait in the local spool until this is fixed."
)


@system_check
def check_event_bus_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check the settings an EventBusRoutingBackend publishes with (E022, W020).

    Only when such a backend is configured: the event-bus settings mean nothing else.
    """
    engines = [node for _where, target, node in _backends_tree() if _is_event_bus(target)]
    if not engines:
        return []
    messages: list[checks.CheckMessage] = []
    names = getattr(settings, "EVENT_BUS_TRACKING_LOGS", [])
    if not isinstance(names, (list, tuple, set, frozenset)):
        msg = EVENT_BUS_TRACKING_LOGS_INVALID.format(type_name=type(names).__name__)
        messages.append(checks.Error(msg, hint=EVENT_BUS_TRACKING_LOGS_INVALID_HINT, id=E022))
    if not getattr(settings, "SEND_TRACKING_EVENT_EMITTED_SIGNAL", False):
        return messages
    problem = _cannot_publish(engines)
    if problem is not None:
        msg = EVENT_BUS_CANNOT_PUBLISH.format(problem=problem)
        messages.append(checks.Warning(msg, id=W020))
    return messages


def _cannot_publish(engines: list[dict[str, Any]]) -> str | None:
    """Why tracking logs would not reach the bus, or None."""
    from eventtracking.backends.event_bus._envelope import (
        REDIS_PRODUCERS,
        PublishError,
        enabled_topics,
    )

    producer = getattr(settings, "EVENT_BUS_PRODUCER", None)
    if not producer:
        return (
            "EVENT_BUS_PRODUCER is not set; set it to 'edx_event_bus_redis.create_producer' "
            "or 'edx_event_bus_kafka.create_producer'."
        )
    try:
        enabled_topics()
    except PublishError as error:
        return str(error).replace(" Events are kept until it does.", "")
    for node in engines:
        options = node.get(_engines.OPTIONS) or {}
        publisher = options.get("publisher", "auto") if isinstance(options, dict) else "auto"
        signal = publisher == "signal" or (publisher == "auto" and producer not in REDIS_PRODUCERS)
        if signal and not apps.is_installed("openedx_events"):
            return (
                f"events are sent as a signal to {producer!r}, whose handler openedx-events "
                "connects only when 'openedx_events' is in INSTALLED_APPS; add it."
            )
    return None


def _async_routers(backends: dict[Any, Any]) -> list[tuple[str, Any, Any, Any]]:
    """Each AsyncRoutingBackend of the backends setting whose ENGINE imports: (where,
    its top-level key or None, its ``backend_name``, its ``app`` option)."""
    keys = {f"{DJANGO_BACKEND_SETTING_NAME}[{key!r}]": key for key in backends}
    found = []
    for where, target, node in _backends_tree():
        options = node.get(_engines.OPTIONS) or {}
        module = "eventtracking.backends.celery._backend"
        if isinstance(options, dict) and _subclass(target, module, "AsyncRoutingBackend"):
            found.append(
                (where, keys.get(where), options.get("backend_name", ""), options.get("app"))
            )
    return found


E030 = "eventtracking.E030"
ASYNC_BACKEND_NAME_UNKNOWN = (
    "{where}: backend_name {name!r} names no top-level backend, so Celery workers cannot "
    "find the backends to deliver to."
)

E031 = "eventtracking.E031"
ASYNC_CELERY_MISSING = "{where}: AsyncRoutingBackend needs Celery, which is not installed."

W030 = "eventtracking.W030"
ASYNC_BACKEND_NAME_ELSEWHERE = (
    "{where}: backend_name {name!r} names another top-level backend; workers deliver its "
    "events to the nested backends of {name!r}, not to the ones configured here."
)

W031 = "eventtracking.W031"
ASYNC_UNSAFE_CONTENT = (
    "{where}: the Celery app of this AsyncRoutingBackend accepts {formats} messages; "
    "reading one runs whatever code its writer chose, so anyone who can write to the "
    "broker can run code on its workers."
)
ASYNC_UNSAFE_CONTENT_HINT = (
    "This library's tasks send JSON only: set accept_content = ['json'] (Celery's "
    "default) on the app its workers run, or route these tasks to workers of an app "
    "that accepts JSON only."
)


@system_check
def check_async_routing(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check every AsyncRoutingBackend in ``EVENT_TRACKING_BACKENDS``, without building it.

    Its ``backend_name`` must be the key of a top-level backend (an empty one is
    replaced by the backend's own key, which only a top-level backend has), Celery
    must be installed, and its Celery app should accept neither pickle nor YAML.
    """
    backends = getattr(settings, DJANGO_BACKEND_SETTING_NAME, None)
    if not isinstance(backends, dict):
        return []
    from eventtracking.backends.celery._sink import INSTALL_HINT

    messages: list[checks.CheckMessage] = []
    found = _async_routers(backends)
    if found and importlib.util.find_spec("celery") is None:
        messages.append(
            checks.Error(
                ASYNC_CELERY_MISSING.format(where=found[0][0]),
                hint=f"Install it with: {INSTALL_HINT}",
                id=E031,
            )
        )
    tops = ", ".join(repr(key) for key in backends) or "none"
    for where, key, name, app in found:
        formats = _unsafe_content(app)
        if formats:
            msg = ASYNC_UNSAFE_CONTENT.format(where=where, formats=" and ".join(formats))
            messages.append(checks.Warning(msg, hint=ASYNC_UNSAFE_CONTENT_HINT, id=W031))
        own = f"its own key, {key!r}" if key is not None else "the key of a top-level backend"
        if not isinstance(name, str):
            continue  # the tracker refuses it when built; E006/E007 report it
        if name == "" and key is not None:
            continue  # the worker is given the backend's own key
        if name not in backends:
            msg = ASYNC_BACKEND_NAME_UNKNOWN.format(where=where, name=name)
            hint = f"The top-level backends are {tops}. Set backend_name to {own}."
            messages.append(checks.Error(msg, hint=hint, id=E030))
        elif key is not None and name != key:
            msg = ASYNC_BACKEND_NAME_ELSEWHERE.format(where=where, name=name)
            hint = f"Set backend_name to {own} unless this is intended."
            messages.append(checks.Warning(msg, hint=hint, id=W030))
    return messages


# Content types whose decoding can run code: Celery's names and their MIME types.
_UNSAFE_CONTENT = {
    "pickle": "pickle",
    "application/x-python-serialize": "pickle",
    "yaml": "YAML",
    "application/x-yaml": "YAML",
}


def _unsafe_content(app_option: Any) -> list[str]:
    """The code-running formats (pickle, YAML) the Celery app accepts; [] when none,
    or when the app cannot be found (the tracker's own checks report that)."""
    if importlib.util.find_spec("celery") is None:
        return []
    from eventtracking.backends.celery._sink import resolve_app

    try:
        accepted = resolve_app(app_option).conf.accept_content or ()
    except Exception:  # a wrong dotted path: building the tracker says so
        return []
    found = {_UNSAFE_CONTENT[kind] for kind in accepted if kind in _UNSAFE_CONTENT}
    return [name for name in ("pickle", "YAML") if name in found]
