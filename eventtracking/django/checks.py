"""System checks (``manage.py check``) for the event-tracking settings and middleware.

``docs/django.rst`` lists the ids. As in Django's own ``django.core.checks``, each check
is written beside its ids and message templates (module constants, which tests and
tools match by name) and registers itself with Django when its module is imported: the
tracker's settings and ``MIDDLEWARE`` here, particular backends (extras, the event bus,
async routing) in ``_backend_checks``, re-exported here. Adding a check is one function
in one of them. The app imports this module from ``ready()``.

W004 cannot come from the app, which is not installed then: the middleware module
registers it when it is imported, and logs the same warning when Django builds it.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from eventtracking._util import engines as _engines
from eventtracking.django import _backend_checks, _settings
from eventtracking.django._backend_checks import *  # noqa: F403 (its __all__, listed below)
from eventtracking.django._settings import TAG, system_check
from eventtracking.django.django_tracker import (
    DJANGO_BACKEND_SETTING_NAME,
    DJANGO_ENABLED_SETTING_NAME,
    DJANGO_PROCESSOR_SETTING_NAME,
)
from eventtracking.django.middleware import (
    APP_NOT_INSTALLED,
    APP_NOT_INSTALLED_HINT,
    CONTEXT_MIDDLEWARE,
    EVENT_MIDDLEWARE,
    W004,
    check_app_installed,
    listed_at,
)

__all__ = [
    "APP_NOT_INSTALLED",
    "APP_NOT_INSTALLED_HINT",
    "BACKENDS_NOT_A_DICT",
    "BACKENDS_NOT_A_DICT_HINT",
    "CONTEXT_MIDDLEWARE",
    "DEPENDENCY_MISSING",
    "DUPLICATE_MIDDLEWARE",
    "DUPLICATE_MIDDLEWARE_HINT",
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
    "E011",
    "ENABLED_MISSING",
    "ENABLED_MISSING_HINT",
    "ENGINE_MISSING",
    "ENGINE_NOT_FOUND",
    "ENGINE_WRONG_KIND",
    "EVENT_MIDDLEWARE",
    "EVENT_MIDDLEWARE_BEFORE_CONTEXT",
    "EVENT_MIDDLEWARE_BEFORE_CONTEXT_HINT",
    "EVENT_MIDDLEWARE_WITHOUT_CONTEXT",
    "EVENT_MIDDLEWARE_WITHOUT_CONTEXT_HINT",
    "INVALID_SETTING",
    "LOGGER_WRITES_NOTHING",
    "LOGGER_WRITES_NOTHING_HINT",
    "OPTIONS_REJECTED",
    "PROCESSORS_NOT_A_LIST",
    "PROCESSORS_NOT_A_LIST_HINT",
    "TAG",
    "TRACKER_NOT_BUILT",
    "W001",
    "W002",
    "W003",
    "W004",
    "check_app_installed",
    "check_enabled_setting",
    "check_id_of",
    "check_logger_backends",
    "check_middleware",
    "check_middleware_settings",
    "check_tracker_settings",
]
__all__ += _backend_checks.__all__

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

E011 = "eventtracking.E011"
DEPENDENCY_MISSING = "{where}: ENGINE {engine!r} needs a package that is not installed."

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


@system_check
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
    messages = [*_backend_checks.check_optional_extras(), *_backend_checks.check_async_routing()]
    extras = (_backend_checks.E020, _backend_checks.E021, _backend_checks.E031)
    return any(
        message.id in extras and str(message.msg).startswith((f"{where} ", f"{where}:"))
        for message in messages
    )


E010 = "eventtracking.E010"
INVALID_SETTING = "{setting} has an invalid value."


@system_check
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


W002 = "eventtracking.W002"
LOGGER_WRITES_NOTHING = "{where}: LoggerBackend writes nothing: {reason}."
LOGGER_WRITES_NOTHING_HINT = "Configure the logger in settings, for example:\n{snippet}"


@system_check
def check_logger_backends(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn about each LoggerBackend of the default tracker whose logger writes nothing.

    Runs after Django applied ``LOGGING``, so it sees the loggers as the site uses them.
    """
    from eventtracking import tracker as tracker_module
    from eventtracking._util.silent import hint_shown, logging_snippet, why_nothing_is_written
    from eventtracking.backends.logger import LoggerBackend
    from eventtracking.django._commands import walk_backends

    built = tracker_module.registered()
    if built is None:
        return []
    # The nested backends of an event-bus backend run only in the bus consumer: warn
    # there (consume_events runs the checks first), not where they are only declared.
    from eventtracking.backends.event_bus import EventBusRoutingBackend, _consumes_the_bus

    idle: tuple[str, ...] = ()
    if not _consumes_the_bus():
        idle = tuple(
            f"{path}."
            for path, backend in walk_backends(built.backends)
            if isinstance(backend, EventBusRoutingBackend)
        )
    messages: list[checks.CheckMessage] = []
    for path, backend in walk_backends(built.backends):
        if not isinstance(backend, LoggerBackend) or path.startswith(idle):
            continue
        reason = why_nothing_is_written(backend.event_logger, backend.level)
        if reason is None:
            continue
        where = f"{DJANGO_BACKEND_SETTING_NAME}[{path!r}]"
        snippet = logging_snippet(backend.event_logger, backend.level)
        hint_shown(backend.event_logger, backend.level)
        messages.append(
            checks.Warning(
                LOGGER_WRITES_NOTHING.format(where=where, reason=reason),
                hint=LOGGER_WRITES_NOTHING_HINT.format(snippet=snippet),
                id=W002,
            )
        )
    return messages


W003 = "eventtracking.W003"
ENABLED_MISSING = (
    "EVENT_TRACKING_BACKENDS is set but EVENT_TRACKING_ENABLED is not, so no tracker is "
    "built and every event is dropped."
)
ENABLED_MISSING_HINT = (
    "Add EVENT_TRACKING_ENABLED = True to settings (or False, to keep tracking off "
    "without this warning)."
)


@system_check
def check_enabled_setting(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when backends are configured but ``EVENT_TRACKING_ENABLED`` is not set at all."""
    if getattr(settings, DJANGO_BACKEND_SETTING_NAME, None) and not hasattr(
        settings, DJANGO_ENABLED_SETTING_NAME
    ):
        return [checks.Warning(ENABLED_MISSING, hint=ENABLED_MISSING_HINT, id=W003)]
    return []


E008 = "eventtracking.E008"
EVENT_MIDDLEWARE_BEFORE_CONTEXT = (
    "TrackRequestEventMiddleware comes before TrackRequestContextMiddleware in "
    "MIDDLEWARE, so its events miss the request context."
)
EVENT_MIDDLEWARE_BEFORE_CONTEXT_HINT = f"Move {EVENT_MIDDLEWARE!r} after {CONTEXT_MIDDLEWARE!r}."

E009 = "eventtracking.E009"
DUPLICATE_MIDDLEWARE = "{middleware} is listed {count} times in MIDDLEWARE."
DUPLICATE_MIDDLEWARE_HINT = "Keep one entry: each extra one repeats its work on every request."

W001 = "eventtracking.W001"
EVENT_MIDDLEWARE_WITHOUT_CONTEXT = (
    "TrackRequestEventMiddleware is in MIDDLEWARE without TrackRequestContextMiddleware, "
    "so its events carry no request context."
)
EVENT_MIDDLEWARE_WITHOUT_CONTEXT_HINT = f"Add {CONTEXT_MIDDLEWARE!r} before it."


@system_check
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check where the event-tracking middleware sit in ``MIDDLEWARE``."""
    context_at = listed_at(CONTEXT_MIDDLEWARE)
    event_at = listed_at(EVENT_MIDDLEWARE)
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
