"""Views and URLs of the Django test site (``ROOT_URLCONF`` of django_settings).

Every view that emits puts the ``rid`` query parameter in its event data, so a test can
check that the event's context (``request_id``, ``path``) belongs to the same request.
"""

from __future__ import annotations

import asyncio
import os
import threading

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from eventtracking import tracker


def ping(request: HttpRequest) -> HttpResponse:
    """Answer at once; servers are ready when this answers."""
    return HttpResponse("pong")


def worker() -> str:
    """Which process and thread is handling the request."""
    return f"{os.getpid()}:{threading.get_ident()}"


def emit(request: HttpRequest) -> HttpResponse:
    """Emit one event inside a nested view context."""
    rid = request.GET.get("rid", "")
    with tracker.get_tracker().context("view", {"view": "emit", "rid_seen": rid}):
        tracker.emit("test.emit", {"rid": rid, "worker": worker()})
    return HttpResponse("ok")


def boom(request: HttpRequest) -> HttpResponse:
    """Emit, then raise."""
    tracker.emit("test.boom", {"rid": request.GET.get("rid", "")})
    raise RuntimeError("boom")


def leak(request: HttpRequest) -> HttpResponse:
    """Enter a context and never leave it, as buggy code might."""
    rid = request.GET.get("rid", "")
    tracker.get_tracker().enter_context("leaky", {"leaked_from": rid})
    tracker.emit("test.leak", {"rid": rid, "worker": worker()})
    return HttpResponse("leaked")


def login_then_emit(request: HttpRequest) -> HttpResponse:
    """Log a user in during the request, then emit inside a new context."""
    from django.contrib.auth import get_user_model, login

    user = get_user_model().objects.get(username=request.GET["username"])
    login(request, user)
    with tracker.get_tracker().context("after_login", {}):
        tracker.emit("test.after_login", {})
    return HttpResponse("ok")


_arrived: dict[str, int] = {}
_released: dict[str, asyncio.Event] = {}


async def aemit(request: HttpRequest) -> HttpResponse:
    """Emit, wait until ``size`` requests of ``group`` are all inside, emit again.

    The wait makes the requests of a group interleave on the event loop for certain.
    Also emits once from a worker thread through sync_to_async.
    """
    rid = request.GET.get("rid", "")
    group = request.GET.get("group", "")
    size = int(request.GET.get("size", "1"))
    with tracker.get_tracker().context("view", {"view": "aemit", "rid_seen": rid}):
        tracker.emit("test.aemit.before", {"rid": rid})
        released = _released.setdefault(group, asyncio.Event())
        _arrived[group] = _arrived.get(group, 0) + 1
        if _arrived[group] >= size:
            released.set()
        try:
            await asyncio.wait_for(released.wait(), timeout=20)
        except asyncio.TimeoutError:
            return HttpResponse("barrier timed out", status=504)
        tracker.emit("test.aemit.after", {"rid": rid})
        await sync_to_async(tracker.emit)("test.aemit.thread", {"rid": rid})
    return HttpResponse("ok")


async def aboom(request: HttpRequest) -> HttpResponse:
    """Emit from an async view, then raise."""
    tracker.emit("test.aboom", {"rid": request.GET.get("rid", "")})
    await asyncio.sleep(0)
    raise RuntimeError("aboom")


def flush(request: HttpRequest) -> JsonResponse:
    """Flush the default tracker and say whether it finished."""
    return JsonResponse({"flushed": tracker.get_tracker().flush(timeout=10)})


urlpatterns = [
    path("ping/", ping),
    path("emit/", emit),
    path("boom/", boom),
    path("leak/", leak),
    path("login-then-emit/", login_then_emit),
    path("aemit/", aemit),
    path("aboom/", aboom),
    path("flush/", flush),
]
