"""Middleware that puts each request's context on its events, and one event per request.

``TrackRequestContextMiddleware`` (first in ``MIDDLEWARE``) enters a context named
``django.request`` for the duration of each request, so every event emitted while
handling the request carries who asked for what; ``TrackRequestEventMiddleware`` is
optional. Both work under WSGI and ASGI, in Django's way (a separate ``__acall__`` that
never blocks the event loop), and a failure inside them never breaks the request: it is
logged, and re-raised only when ``DEBUG`` is true. ``docs/django.rst`` has the rest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from eventtracking import tracker as tracker_module
from eventtracking.django import _redact, _request, _settings
from eventtracking.django._request import RATE_LIMITED
from eventtracking.django._settings import system_check
from eventtracking.locator import as_stack_locator

__all__ = ["TrackRequestContextMiddleware", "TrackRequestEventMiddleware"]

GetResponse = Callable[[HttpRequest], Any]

LOG = logging.getLogger("eventtracking.django")


CONTEXT_MIDDLEWARE = f"{__name__}.TrackRequestContextMiddleware"
EVENT_MIDDLEWARE = f"{__name__}.TrackRequestEventMiddleware"


def listed_at(path: str) -> list[int]:
    """The indexes in ``MIDDLEWARE`` of the middleware at ``path`` or of a subclass."""
    base = import_string(path)
    found = []
    for index, entry in enumerate(getattr(settings, "MIDDLEWARE", None) or []):
        cls = None
        if isinstance(entry, str) and entry != path:
            # A broken entry is Django's to report; it only means "not ours" here.
            with contextlib.suppress(Exception):
                cls = import_string(entry)
        if entry == path or (isinstance(cls, type) and issubclass(cls, base)):
            found.append(index)
    return found


W004 = "eventtracking.W004"
APP_NOT_INSTALLED = (
    "{middleware} is in MIDDLEWARE but 'eventtracking.django' is not in INSTALLED_APPS, so "
    "no tracker is built from EVENT_TRACKING_BACKENDS and no event reaches them."
)
APP_NOT_INSTALLED_HINT = "Add 'eventtracking.django' to INSTALLED_APPS."


# Without the app nothing registers the app's checks; a project that lists the
# middleware imports this module, at the latest when Django builds it.
@system_check
def check_app_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when an event-tracking middleware is in ``MIDDLEWARE`` without the app."""
    if apps.is_installed("eventtracking.django"):
        return []
    return [
        checks.Warning(
            APP_NOT_INSTALLED.format(middleware=path.rpartition(".")[2]),
            hint=APP_NOT_INSTALLED_HINT,
            id=W004,
        )
        for path in (CONTEXT_MIDDLEWARE, EVENT_MIDDLEWARE)
        if listed_at(path)
    ]


_app_missing_lock = threading.Lock()
_app_missing_warned = False


def _warn_if_the_app_is_missing(middleware: str) -> None:
    """Log W004 once per process when the middleware runs without the app.

    Without the app no tracker is built from the settings. The fallback that prints
    events when nothing is configured is turned off too: a Django site's events must
    not end up on its standard output.
    """
    global _app_missing_warned
    if apps.is_installed("eventtracking.django"):
        return
    with _app_missing_lock:
        if _app_missing_warned:
            return
        _app_missing_warned = True
    message = APP_NOT_INSTALLED.format(middleware=middleware)
    tracker_module.set_fallback(None, f"'eventtracking.django' is not in INSTALLED_APPS ({W004})")
    LOG.warning("%s %s (%s)", message, APP_NOT_INSTALLED_HINT, W004)


def _failed(where: str, reraise: bool = True) -> None:
    """Log the exception being handled; re-raise it when DEBUG is true and ``reraise``."""
    RATE_LIMITED.error(where, "Event tracking middleware failed while %s", where, exc_info=True)
    if reraise and settings.DEBUG:
        raise


class _Entered:
    """One request's entry in a tracker's context stack, and how to undo it."""

    __slots__ = ("locator", "pushed", "saved")

    def __init__(self, tracker: Any, name: str, context: _request.RequestContext) -> None:
        # A 4.x-style locator comes wrapped in an adapter with the same protocol.
        locator = as_stack_locator(tracker.context_locator)
        # Push our mapping itself: Tracker.enter_context would copy it, reading the lazy
        # user and session fields now instead of when an event needs them.
        self.locator = locator
        self.saved = locator.get_stack()
        self.pushed = self.saved.push(name, context)
        locator.set_stack(self.pushed)

    def exit(self) -> None:
        """Restore the stack as it was before the request, discarding what leaked."""
        leaked = _leaked_names(self.pushed, self.locator.get_stack())
        if leaked:
            RATE_LIMITED.warning(
                "leaked",
                "A request left contexts entered (%s); they were discarded so that no "
                "other request sees them. Use `with tracker.context(...)`.",
                ", ".join(leaked),
            )
        self.locator.set_stack(self.saved)


def _leaked_names(pushed: Any, current: Any) -> list[str]:
    """Names of the frames on ``current`` that the request pushed and never popped.

    Frames are told apart by name and context object, not by the frame tuple: an adapted
    4.x-style locator builds new tuples on every read.
    """
    if current is pushed:
        return []
    ours = {(name, id(context)) for name, context in pushed.frames}
    return [name for name, context in current.frames if (name, id(context)) not in ours]


class TrackRequestContextMiddleware:
    """Enter the request context around each request.

    The fields, the hook, when the user is read and what is redacted are described in
    ``docs/django.rst`` ("Request context"). The context is left when the response is
    returned, even when the view raises, and anything the view entered and forgot to
    leave is discarded.

    Raises :class:`~eventtracking.django._settings.SettingError`, Django's
    ImproperlyConfigured and the library's, when Django builds it, for a bad setting.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        _warn_if_the_app_is_missing(type(self).__name__)
        self.get_response = get_response
        self.config = _settings.ContextConfig.from_settings()
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
            if self.config.wants_user:
                # Django calls process_view after every middleware has seen the request,
                # whatever the order, so the authentication middleware has run.
                self.process_view: Callable[..., Awaitable[None]] = self._load_user

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        entered = self._enter(request)
        try:
            response = self.get_response(request)
        except BaseException:
            self._exit(entered, reraise=False)
            raise
        self._exit(entered, reraise=True)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        entered = self._enter(request)
        try:
            response: HttpResponseBase = await self.get_response(request)
        except BaseException:
            self._exit(entered, reraise=False)
            raise
        self._exit(entered, reraise=True)
        return response

    def _enter(self, request: HttpRequest) -> _Entered | None:
        tracker = tracker_module.registered()
        if tracker is None:
            return None
        try:
            context = _request.build_context(request, self.config)
            return _Entered(tracker, self.config.name, context)
        except Exception:
            _failed("entering the request context")
            return None

    @staticmethod
    def _exit(entered: _Entered | None, reraise: bool) -> None:
        if entered is None:
            return
        try:
            entered.exit()
        except Exception:
            _failed("leaving the request context", reraise)

    async def _load_user(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> None:
        """Load the user off the event loop, where events emitted by async views can see it.

        Only a request that carries a session cookie can have a user, so a visitor
        without one costs nothing.
        """
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return
        if _request.loaded_user(request, may_block=False) is not _request.NOT_LOADED:
            return
        try:
            auser = getattr(request, "auser", None)
            if callable(auser):
                await auser()
            else:
                await sync_to_async(_request.loaded_user)(request, True)
        except Exception:
            _failed("loading the user")


class TrackRequestEventMiddleware:
    """Emit one event per request, named ``EVENT_TRACKING_REQUEST_EVENT_NAME``.

    Its data is ``{'method', 'path', 'query', 'status', 'duration_ms'}``, with secret
    query values blanked and path tokens redacted, as ``docs/django.rst`` ("One event per
    request") describes. Paths matching one of the ``EVENT_TRACKING_REQUEST_EVENT_SKIP``
    regexes emit nothing. A view that raises is reported with status 500.

    Place it after :class:`TrackRequestContextMiddleware`, so that the event carries the
    request context.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        _warn_if_the_app_is_missing(type(self).__name__)
        self.get_response = get_response
        self.name = _settings.event_name()
        self.skip = _settings.skip_patterns()
        self.secrets = _settings.secret_keys()
        self.redactions = _settings.redact_paths()
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        if self._skipped(request):
            return self.get_response(request)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        except BaseException:
            self._emit(request, None, started, reraise=False)
            raise
        self._emit(request, response, started, reraise=True)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self._skipped(request):
            skipped: HttpResponseBase = await self.get_response(request)
            return skipped
        started = time.perf_counter()
        try:
            response: HttpResponseBase = await self.get_response(request)
        except BaseException:
            self._emit(request, None, started, reraise=False)
            raise
        self._emit(request, response, started, reraise=True)
        return response

    def _skipped(self, request: HttpRequest) -> bool:
        path = request.path
        return any(pattern.match(path) for pattern in self.skip)

    def _emit(
        self,
        request: HttpRequest,
        response: HttpResponseBase | None,
        started: float,
        reraise: bool,
    ) -> None:
        try:
            query, omitted = _redact.query_data(request, self.secrets)
            data = {
                "method": request.method,
                "path": _redact.redact_path(request.path, self.redactions),
                "query": query,
                "status": 500 if response is None else response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
            }
            if omitted is not None:
                data["query_omitted"] = omitted
            tracker_module.emit(self.name, data)
        except Exception:
            _failed("emitting the request event", reraise)
