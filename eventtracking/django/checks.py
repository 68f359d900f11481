"""System checks (``manage.py check``) for the event-tracking settings and middleware.

Each problem has an id and a message template, kept here as module constants so that
tests and tools can match them:

=====================  =============================================================
eventtracking.E001     ``EVENT_TRACKING_BACKENDS`` is not a dict.
eventtracking.E002     ``EVENT_TRACKING_PROCESSORS`` is not a list or tuple.
eventtracking.E003     An entry has no ENGINE, or an empty or non-string one.
eventtracking.E004     An ENGINE path cannot be imported.
eventtracking.E005     An ENGINE is not a class with ``send`` (backends) or callable
                       instances (processors).
eventtracking.E006     OPTIONS that the ENGINE's constructor rejects.
eventtracking.E007     The tracker could not be built at start-up for another reason.
eventtracking.E008     ``TrackRequestEventMiddleware`` comes before
                       ``TrackRequestContextMiddleware``.
eventtracking.E009     An event-tracking middleware is listed more than once.
eventtracking.E010     A middleware or shutdown setting has an invalid value.
eventtracking.E011     An ENGINE needs a package that is not installed (such as
                       pymongo for MongoBackend).
eventtracking.E020     An ``EventBusRoutingBackend`` is configured without
                       openedx-events (the ``eventbus`` extra).
eventtracking.E021     A ``SegmentBackend`` is configured without
                       segment-analytics-python (the ``segment`` extra).
eventtracking.E022     ``EVENT_BUS_TRACKING_LOGS`` is not a list, tuple or set of names.
eventtracking.W001     ``TrackRequestEventMiddleware`` without
                       ``TrackRequestContextMiddleware``.
eventtracking.W002     A ``LoggerBackend`` whose logger writes nothing: not enabled for
                       its level, disabled, or without a handler.
eventtracking.W003     ``EVENT_TRACKING_BACKENDS`` is set but
                       ``EVENT_TRACKING_ENABLED`` is not.
eventtracking.W004     An event-tracking middleware is in ``MIDDLEWARE`` but the app is
                       not in ``INSTALLED_APPS``.
eventtracking.W020     The event bus is switched on but cannot publish: no
                       ``EVENT_BUS_PRODUCER``, no topic enabled for tracking logs in
                       ``EVENT_BUS_PRODUCER_CONFIG``, or a producer reached through the
                       signal without ``openedx_events`` in ``INSTALLED_APPS`` (events
                       wait in the spool).
eventtracking.E030     An AsyncRoutingBackend's ``backend_name`` names no top-level
                       backend, so workers cannot find its nested backends.
eventtracking.E031     An AsyncRoutingBackend is configured but Celery is not installed.
eventtracking.W030     An AsyncRoutingBackend's ``backend_name`` names another
                       top-level backend, whose nested backends workers deliver to.
=====================  =============================================================

W004 cannot come from the app, which is not installed then. The middleware registers
it when its module is imported, and logs the same warning when Django builds it.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterable, Iterator
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from eventtracking import _engines
from eventtracking.django import _settings
from eventtracking.django.django_tracker import (
    DJANGO_BACKEND_SETTING_NAME,
    DJANGO_PROCESSOR_SETTING_NAME,
)

__all__ = [
    "ASYNC_BACKEND_NAME_ELSEWHERE",
    "ASYNC_BACKEND_NAME_UNKNOWN",
    "ASYNC_CELERY_MISSING",
    "BACKENDS_NOT_A_DICT",
    "CONTEXT_MIDDLEWARE",
    "DUPLICATE_MIDDLEWARE",
    "E001",
    "E002",
    "E003",
    "E004",
    "E005",
    "E006",
    "E007",
    "E008",
    "E009",
    "E010",
    "E020",
    "E021",
    "E022",
    "E030",
    "E031",
    "ENGINE_MISSING",
    "ENGINE_NOT_FOUND",
    "ENGINE_WRONG_KIND",
    "EVENT_BUS_CANNOT_PUBLISH",
    "EVENT_BUS_EXTRA_MISSING",
    "EVENT_BUS_TRACKING_LOGS_INVALID",
    "EVENT_MIDDLEWARE",
    "EVENT_MIDDLEWARE_BEFORE_CONTEXT",
    "EVENT_MIDDLEWARE_WITHOUT_CONTEXT",
    "INVALID_SETTING",
    "OPTIONS_REJECTED",
    "PROCESSORS_NOT_A_LIST",
    "SEGMENT_EXTRA_MISSING",
    "TAG",
    "TRACKER_NOT_BUILT",
    "W001",
    "W020",
    "W030",
    "check_async_routing",
    "check_event_bus_settings",
    "check_middleware",
    "check_middleware_settings",
    "check_optional_extras",
    "check_tracker_settings",
    "register_checks",
]
__all__ += [
    "APP_NOT_INSTALLED",
    "DEPENDENCY_MISSING",
    "E011",
    "ENABLED_MISSING",
    "LOGGER_WRITES_NOTHING",
    "W002",
    "W003",
    "W004",
    "check_app_installed",
    "check_enabled_setting",
    "check_id_of",
    "check_logger_backends",
]

#: The tag of every check here: ``manage.py check --tag eventtracking``.
TAG = "eventtracking"

CONTEXT_MIDDLEWARE = "eventtracking.django.middleware.TrackRequestContextMiddleware"
EVENT_MIDDLEWARE = "eventtracking.django.middleware.TrackRequestEventMiddleware"

E001 = "eventtracking.E001"
BACKENDS_NOT_A_DICT = "{setting} must be a dict of backend name to ENGINE dict, not {type_name}."
BACKENDS_NOT_A_DICT_HINT = f"For example {{'logger': {_engines.EXAMPLE}}}."

E002 = "eventtracking.E002"
PROCESSORS_NOT_A_LIST = "{setting} must be a list of ENGINE dicts, not {type_name}."
PROCESSORS_NOT_A_LIST_HINT = f"For example [{_engines.EXAMPLE}]."

E003 = "eventtracking.E003"
ENGINE_MISSING = "{where} has no usable ENGINE."

E004 = "eventtracking.E004"
ENGINE_NOT_FOUND = "{where}: ENGINE {engine!r} cannot be imported."

E005 = "eventtracking.E005"
ENGINE_WRONG_KIND = "{where}: ENGINE {engine!r} cannot be used here."

E006 = "eventtracking.E006"
OPTIONS_REJECTED = "{where}: the OPTIONS do not suit ENGINE {engine!r}."

E007 = "eventtracking.E007"
TRACKER_NOT_BUILT = "The event tracker could not be built at start-up, so tracking is off."

E008 = "eventtracking.E008"
EVENT_MIDDLEWARE_BEFORE_CONTEXT = (
    "TrackRequestEventMiddleware comes before TrackRequestContextMiddleware in "
    "MIDDLEWARE, so its events miss the request context."
)
EVENT_MIDDLEWARE_BEFORE_CONTEXT_HINT = f"Move {EVENT_MIDDLEWARE!r} after {CONTEXT_MIDDLEWARE!r}."

E009 = "eventtracking.E009"
DUPLICATE_MIDDLEWARE = "{middleware} is listed {count} times in MIDDLEWARE."
DUPLICATE_MIDDLEWARE_HINT = "Keep one entry: each extra one repeats its work on every request."

E010 = "eventtracking.E010"
INVALID_SETTING = "{setting} has an invalid value."

W001 = "eventtracking.W001"
EVENT_MIDDLEWARE_WITHOUT_CONTEXT = (
    "TrackRequestEventMiddleware is in MIDDLEWARE without TrackRequestContextMiddleware, "
    "so its events carry no request context."
)
EVENT_MIDDLEWARE_WITHOUT_CONTEXT_HINT = f"Add {CONTEXT_MIDDLEWARE!r} before it."

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
E011 = "eventtracking.E011"
DEPENDENCY_MISSING = "{where}: ENGINE {engine!r} needs a package that is not installed."

W002 = "eventtracking.W002"
LOGGER_WRITES_NOTHING = "{where}: LoggerBackend writes nothing: {reason}."
LOGGER_WRITES_NOTHING_HINT = "Configure the logger in settings, for example:\n{snippet}"

W003 = "eventtracking.W003"
ENABLED_MISSING = (
    "EVENT_TRACKING_BACKENDS is set but EVENT_TRACKING_ENABLED is not, so no tracker is "
    "built and every event is dropped."
)
ENABLED_MISSING_HINT = (
    "Add EVENT_TRACKING_ENABLED = True to settings (or False, to keep tracking off "
    "without this warning)."
)

W004 = "eventtracking.W004"
APP_NOT_INSTALLED = (
    "{middleware} is in MIDDLEWARE but 'eventtracking.django' is not in INSTALLED_APPS, so "
    "no tracker is built from EVENT_TRACKING_BACKENDS and no event reaches them."
)
APP_NOT_INSTALLED_HINT = "Add 'eventtracking.django' to INSTALLED_APPS."

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

_BY_KIND = {
    _engines.MISSING: (E003, ENGINE_MISSING),
    _engines.IMPORT: (E004, ENGINE_NOT_FOUND),
    _engines.ROLE: (E005, ENGINE_WRONG_KIND),
    _engines.BAD_OPTIONS: (E006, OPTIONS_REJECTED),
    _engines.CONSTRUCT: (E006, OPTIONS_REJECTED),
    _engines.DEPENDENCY: (E011, DEPENDENCY_MISSING),
}


def _engine_error(error: _engines.EngineError) -> checks.CheckMessage:
    check_id, template = _BY_KIND[error.kind]
    msg = template.format(where=error.where, engine=error.engine)
    return checks.Error(msg, hint=str(error), id=check_id)


def check_tracker_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check ``EVENT_TRACKING_BACKENDS`` and ``EVENT_TRACKING_PROCESSORS`` without building.

    Also reports the error that stopped the tracker from being built at start-up, when
    the settings themselves show nothing wrong.
    """
    messages: list[checks.CheckMessage] = []
    backends = getattr(settings, DJANGO_BACKEND_SETTING_NAME, None)
    processors = getattr(settings, DJANGO_PROCESSOR_SETTING_NAME, None)
    if backends is not None and not isinstance(backends, dict):
        msg = BACKENDS_NOT_A_DICT.format(
            setting=DJANGO_BACKEND_SETTING_NAME, type_name=type(backends).__name__
        )
        messages.append(checks.Error(msg, hint=BACKENDS_NOT_A_DICT_HINT, id=E001))
    if processors is not None and not isinstance(processors, (list, tuple)):
        msg = PROCESSORS_NOT_A_LIST.format(
            setting=DJANGO_PROCESSOR_SETTING_NAME, type_name=type(processors).__name__
        )
        messages.append(checks.Error(msg, hint=PROCESSORS_NOT_A_LIST_HINT, id=E002))
    problems = _engines.setting_problems(
        backends, processors, DJANGO_BACKEND_SETTING_NAME, DJANGO_PROCESSOR_SETTING_NAME
    )
    messages.extend(_engine_error(error) for error in problems)
    if not messages:
        messages.extend(_startup_error())
    return messages


def check_id_of(error: Exception) -> str:
    """The id of the check that reports ``error``, an error that stopped the tracker."""
    if isinstance(error, _engines.EngineError):
        return _BY_KIND[error.kind][0]
    return E007


def _startup_error() -> list[checks.CheckMessage]:
    try:
        config = apps.get_app_config("eventtracking_django")
    except LookupError:
        return []
    error = getattr(config, "startup_error", None)
    if error is None:
        return []
    if isinstance(error, _engines.EngineError):
        if error.kind == _engines.DEPENDENCY and _named_by_an_extras_check(error.where):
            return []  # E020/E021/E031 say the same of that entry, with the extra to install
        return [_engine_error(error)]
    return [checks.Error(TRACKER_NOT_BUILT, hint=f"{type(error).__name__}: {error}", id=E007)]


def _named_by_an_extras_check(where: str) -> bool:
    """Whether a check of one backend's extra (E020, E021, E031) reports the settings
    entry at ``where``."""
    messages = [*check_optional_extras(), *check_async_routing()]
    return any(
        message.id in (E020, E021, E031) and str(message.msg).startswith((f"{where} ", f"{where}:"))
        for message in messages
    )


def _middleware_classes(entries: Iterable[Any]) -> list[tuple[str, Any]]:
    """Each MIDDLEWARE entry with its class, or None when it cannot be imported."""
    resolved = []
    for entry in entries:
        cls = None
        if isinstance(entry, str):
            # A broken entry is Django's to report; it only means "not ours" here.
            with contextlib.suppress(Exception):
                cls = import_string(entry)
        resolved.append((entry, cls))
    return resolved


def _positions(resolved: list[tuple[str, Any]], base_path: str) -> list[int]:
    base = import_string(base_path)
    return [
        index
        for index, (entry, cls) in enumerate(resolved)
        if entry == base_path or (isinstance(cls, type) and issubclass(cls, base))
    ]


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check where the event-tracking middleware sit in ``MIDDLEWARE``."""
    entries = getattr(settings, "MIDDLEWARE", None) or []
    resolved = _middleware_classes(entries)
    context_at = _positions(resolved, CONTEXT_MIDDLEWARE)
    event_at = _positions(resolved, EVENT_MIDDLEWARE)
    messages: list[checks.CheckMessage] = []
    for path, found in ((CONTEXT_MIDDLEWARE, context_at), (EVENT_MIDDLEWARE, event_at)):
        if len(found) > 1:
            msg = DUPLICATE_MIDDLEWARE.format(middleware=path, count=len(found))
            messages.append(checks.Error(msg, hint=DUPLICATE_MIDDLEWARE_HINT, id=E009))
    if event_at and not context_at:
        messages.append(
            checks.Warning(
                EVENT_MIDDLEWARE_WITHOUT_CONTEXT,
                hint=EVENT_MIDDLEWARE_WITHOUT_CONTEXT_HINT,
                id=W001,
            )
        )
    elif event_at and min(event_at) < min(context_at):
        messages.append(
            checks.Error(
                EVENT_MIDDLEWARE_BEFORE_CONTEXT,
                hint=EVENT_MIDDLEWARE_BEFORE_CONTEXT_HINT,
                id=E008,
            )
        )
    return messages


def check_middleware_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Parse every middleware and shutdown setting as the middleware will."""
    messages: list[checks.CheckMessage] = []
    for setting, parse in _settings.PARSERS.items():
        try:
            parse()
        except ImproperlyConfigured as error:
            msg = INVALID_SETTING.format(setting=setting)
            messages.append(checks.Error(msg, hint=str(error), id=E010))
    return messages


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
    import importlib

    base = getattr(importlib.import_module(module), name)
    return isinstance(target, type) and issubclass(target, base)


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package of a dotted name is missing
        return False


def _backends_tree() -> Iterator[tuple[str, Any, dict[str, Any]]]:
    backends = getattr(settings, DJANGO_BACKEND_SETTING_NAME, None)
    return _configured_engines(backends, DJANGO_BACKEND_SETTING_NAME)


def _is_event_bus(target: Any) -> bool:
    return _subclass(target, "eventtracking.backends.event_bus", "EventBusRoutingBackend")


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
    from eventtracking._eventbus import REDIS_PRODUCERS, PublishError, enabled_topics

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
def check_logger_backends(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn about each LoggerBackend of the default tracker whose logger writes nothing.

    Runs after Django applied ``LOGGING``, so it sees the loggers as the site uses them.
    """
    from eventtracking import tracker as tracker_module
    from eventtracking._silent import logging_snippet, why_nothing_is_written
    from eventtracking.backends.logger import LoggerBackend
    from eventtracking.django._commands import walk_backends

    built = tracker_module.TRACKERS.get(tracker_module.DEFAULT_TRACKER_NAME)
    if built is None:
        return []
    messages: list[checks.CheckMessage] = []
    for path, backend in walk_backends(built.backends):
        if not isinstance(backend, LoggerBackend):
            continue
        reason = why_nothing_is_written(backend.event_logger, backend.level)
        if reason is None:
            continue
        where = f"{DJANGO_BACKEND_SETTING_NAME}[{path!r}]"
        snippet = logging_snippet(backend.event_logger, backend.level)
        messages.append(
            checks.Warning(
                LOGGER_WRITES_NOTHING.format(where=where, reason=reason),
                hint=LOGGER_WRITES_NOTHING_HINT.format(snippet=snippet),
                id=W002,
            )
        )
    return messages


def check_enabled_setting(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when backends are configured but ``EVENT_TRACKING_ENABLED`` is not set at all."""
    from eventtracking.django.django_tracker import DJANGO_ENABLED_SETTING_NAME

    if getattr(settings, DJANGO_BACKEND_SETTING_NAME, None) and not hasattr(
        settings, DJANGO_ENABLED_SETTING_NAME
    ):
        return [checks.Warning(ENABLED_MISSING, hint=ENABLED_MISSING_HINT, id=W003)]
    return []


def check_app_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when an event-tracking middleware is in ``MIDDLEWARE`` without the app."""
    if apps.is_installed("eventtracking.django"):
        return []
    resolved = _middleware_classes(getattr(settings, "MIDDLEWARE", None) or [])
    found = [
        path
        for path in (CONTEXT_MIDDLEWARE, EVENT_MIDDLEWARE)
        if _positions(resolved, path)
    ]
    return [
        checks.Warning(
            APP_NOT_INSTALLED.format(middleware=path.rpartition(".")[2]),
            hint=APP_NOT_INSTALLED_HINT,
            id=W004,
        )
        for path in found
    ]


def _async_routers(node: Any, where: str, key: str | None) -> Iterable[tuple[str, str | None, Any]]:
    """Each AsyncRoutingBackend in a settings tree: (where, top-level key or None, name).

    Only nodes whose ENGINE imports are inspected; the other checks report the rest.
    """
    from eventtracking.backends.async_routing import AsyncRoutingBackend

    if not isinstance(node, dict) or _engines.ENGINE not in node:
        return
    target = None
    with contextlib.suppress(Exception):
        target = import_string(node[_engines.ENGINE])
    options = node.get(_engines.OPTIONS) or {}
    if not isinstance(options, dict):
        return
    if isinstance(target, type) and issubclass(target, AsyncRoutingBackend):
        yield where, key, options.get("backend_name", "")
    nested = options.get("backends")
    if isinstance(nested, dict):
        for name, child in nested.items():
            yield from _async_routers(child, f"{where}['OPTIONS']['backends'][{name!r}]", None)


def check_async_routing(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check every AsyncRoutingBackend in ``EVENT_TRACKING_BACKENDS``, without building it.

    Its ``backend_name`` must be the key of a top-level backend (an empty one is
    replaced by the backend's own key, which only a top-level backend has), and Celery
    must be installed.
    """
    backends = getattr(settings, DJANGO_BACKEND_SETTING_NAME, None)
    if not isinstance(backends, dict):
        return []
    from eventtracking._celery_sink import INSTALL_HINT

    messages: list[checks.CheckMessage] = []
    found = [
        router
        for key, node in backends.items()
        for router in _async_routers(node, f"{DJANGO_BACKEND_SETTING_NAME}[{key!r}]", key)
    ]
    if found and importlib.util.find_spec("celery") is None:
        messages.append(
            checks.Error(
                ASYNC_CELERY_MISSING.format(where=found[0][0]),
                hint=f"Install it with: {INSTALL_HINT}",
                id=E031,
            )
        )
    tops = ", ".join(repr(key) for key in backends) or "none"
    for where, key, name in found:
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


def register_checks() -> None:
    """Register the checks with Django; calling it again is harmless."""
    for check in (check_tracker_settings, check_middleware, check_middleware_settings):
        checks.register(check, TAG)
    for check in (check_optional_extras, check_event_bus_settings):
        checks.register(check, TAG)
    checks.register(check_async_routing, TAG)
    for check in (check_logger_backends, check_enabled_setting):
        checks.register(check, TAG)
