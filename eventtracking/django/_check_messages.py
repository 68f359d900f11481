"""The ids, messages and hints of the system checks, as module constants.

:mod:`eventtracking.django.checks` lists them and re-exports them, so that tests and
tools match them by name.
"""

from __future__ import annotations

from eventtracking._util import engines as _engines

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
