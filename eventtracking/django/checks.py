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
eventtracking.W031     An AsyncRoutingBackend's Celery app accepts pickle or YAML
                       messages, whose decoding runs code a broker writer chose.
=====================  =============================================================

W004 cannot come from the app, which is not installed then. The middleware registers
it when its module is imported, and logs the same warning when Django builds it.

This module is the checks' public face: every id, message and check function is
importable from here. They are written in private modules by subject: the messages in
``_check_messages``, the settings of the tracker and the middleware in
``_settings_checks``, ``MIDDLEWARE`` itself in ``_middleware_checks``, and particular
backends (extras, the event bus, async routing) in ``_backend_checks``.
"""

from __future__ import annotations

from django.core import checks

from eventtracking.django._backend_checks import (
    check_async_routing,
    check_event_bus_settings,
    check_optional_extras,
)
from eventtracking.django._check_messages import (
    APP_NOT_INSTALLED,
    APP_NOT_INSTALLED_HINT,
    ASYNC_BACKEND_NAME_ELSEWHERE,
    ASYNC_BACKEND_NAME_UNKNOWN,
    ASYNC_CELERY_MISSING,
    ASYNC_UNSAFE_CONTENT,
    ASYNC_UNSAFE_CONTENT_HINT,
    BACKENDS_NOT_A_DICT,
    BACKENDS_NOT_A_DICT_HINT,
    CONTEXT_MIDDLEWARE,
    DEPENDENCY_MISSING,
    DUPLICATE_MIDDLEWARE,
    DUPLICATE_MIDDLEWARE_HINT,
    E001,
    E002,
    E003,
    E004,
    E005,
    E006,
    E007,
    E008,
    E009,
    E010,
    E011,
    E020,
    E021,
    E022,
    E030,
    E031,
    ENABLED_MISSING,
    ENABLED_MISSING_HINT,
    ENGINE_MISSING,
    ENGINE_NOT_FOUND,
    ENGINE_WRONG_KIND,
    EVENT_BUS_CANNOT_PUBLISH,
    EVENT_BUS_EXTRA_MISSING,
    EVENT_BUS_EXTRA_MISSING_HINT,
    EVENT_BUS_TRACKING_LOGS_INVALID,
    EVENT_BUS_TRACKING_LOGS_INVALID_HINT,
    EVENT_MIDDLEWARE,
    EVENT_MIDDLEWARE_BEFORE_CONTEXT,
    EVENT_MIDDLEWARE_BEFORE_CONTEXT_HINT,
    EVENT_MIDDLEWARE_WITHOUT_CONTEXT,
    EVENT_MIDDLEWARE_WITHOUT_CONTEXT_HINT,
    INVALID_SETTING,
    LOGGER_WRITES_NOTHING,
    LOGGER_WRITES_NOTHING_HINT,
    OPTIONS_REJECTED,
    PROCESSORS_NOT_A_LIST,
    PROCESSORS_NOT_A_LIST_HINT,
    SEGMENT_EXTRA_MISSING,
    SEGMENT_EXTRA_MISSING_HINT,
    TAG,
    TRACKER_NOT_BUILT,
    W001,
    W002,
    W003,
    W004,
    W020,
    W030,
    W031,
)
from eventtracking.django._middleware_checks import check_app_installed, check_middleware
from eventtracking.django._settings_checks import (
    check_enabled_setting,
    check_id_of,
    check_logger_backends,
    check_middleware_settings,
    check_tracker_settings,
)

__all__ = [
    "APP_NOT_INSTALLED",
    "APP_NOT_INSTALLED_HINT",
    "ASYNC_BACKEND_NAME_ELSEWHERE",
    "ASYNC_BACKEND_NAME_UNKNOWN",
    "ASYNC_CELERY_MISSING",
    "ASYNC_UNSAFE_CONTENT",
    "ASYNC_UNSAFE_CONTENT_HINT",
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
    "E020",
    "E021",
    "E022",
    "E030",
    "E031",
    "ENABLED_MISSING",
    "ENABLED_MISSING_HINT",
    "ENGINE_MISSING",
    "ENGINE_NOT_FOUND",
    "ENGINE_WRONG_KIND",
    "EVENT_BUS_CANNOT_PUBLISH",
    "EVENT_BUS_EXTRA_MISSING",
    "EVENT_BUS_EXTRA_MISSING_HINT",
    "EVENT_BUS_TRACKING_LOGS_INVALID",
    "EVENT_BUS_TRACKING_LOGS_INVALID_HINT",
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
    "SEGMENT_EXTRA_MISSING",
    "SEGMENT_EXTRA_MISSING_HINT",
    "TAG",
    "TRACKER_NOT_BUILT",
    "W001",
    "W002",
    "W003",
    "W004",
    "W020",
    "W030",
    "W031",
    "check_app_installed",
    "check_async_routing",
    "check_enabled_setting",
    "check_event_bus_settings",
    "check_id_of",
    "check_logger_backends",
    "check_middleware",
    "check_middleware_settings",
    "check_optional_extras",
    "check_tracker_settings",
    "register_checks",
]


def register_checks() -> None:
    """Register the checks with Django; calling it again is harmless."""
    for check in (check_tracker_settings, check_middleware, check_middleware_settings):
        checks.register(check, TAG)
    for check in (check_optional_extras, check_event_bus_settings):
        checks.register(check, TAG)
    checks.register(check_async_routing, TAG)
    for check in (check_logger_backends, check_enabled_setting):
        checks.register(check, TAG)
