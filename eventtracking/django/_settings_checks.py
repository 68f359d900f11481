"""System checks of the tracker's settings: backends, processors, the switch, loggers,
the middleware's own settings, and the error that stopped the tracker at start-up."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from eventtracking._util import engines as _engines
from eventtracking.django import _settings
from eventtracking.django._backend_checks import check_async_routing, check_optional_extras
from eventtracking.django._check_messages import (
    BACKENDS_NOT_A_DICT,
    BACKENDS_NOT_A_DICT_HINT,
    DEPENDENCY_MISSING,
    E001,
    E002,
    E003,
    E004,
    E005,
    E006,
    E007,
    E010,
    E011,
    E020,
    E021,
    E031,
    ENABLED_MISSING,
    ENABLED_MISSING_HINT,
    ENGINE_MISSING,
    ENGINE_NOT_FOUND,
    ENGINE_WRONG_KIND,
    INVALID_SETTING,
    LOGGER_WRITES_NOTHING,
    LOGGER_WRITES_NOTHING_HINT,
    OPTIONS_REJECTED,
    PROCESSORS_NOT_A_LIST,
    PROCESSORS_NOT_A_LIST_HINT,
    TRACKER_NOT_BUILT,
    W002,
    W003,
)
from eventtracking.django.django_tracker import (
    DJANGO_BACKEND_SETTING_NAME,
    DJANGO_PROCESSOR_SETTING_NAME,
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


def check_enabled_setting(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when backends are configured but ``EVENT_TRACKING_ENABLED`` is not set at all."""
    from eventtracking.django.django_tracker import DJANGO_ENABLED_SETTING_NAME

    if getattr(settings, DJANGO_BACKEND_SETTING_NAME, None) and not hasattr(
        settings, DJANGO_ENABLED_SETTING_NAME
    ):
        return [checks.Warning(ENABLED_MISSING, hint=ENABLED_MISSING_HINT, id=W003)]
    return []
