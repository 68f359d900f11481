"""Views that emit events inside nested contexts.

The middleware has already entered the request context; each view adds its own on
top, and every event carries both.
"""

import asyncio

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from eventtracking import tracker


def home(request: HttpRequest) -> HttpResponse:
    """Emit one event in the request context only."""
    tracker.emit("demo.home.viewed", {"greeting": "hello"})
    return HttpResponse("Welcome to the demo site.\n")


def enroll(request: HttpRequest, course_id: str) -> JsonResponse:
    """Two nested contexts: the course, then the enrollment step."""
    events = tracker.get_tracker()
    with events.context("course", {"course_id": course_id}):
        tracker.emit("demo.course.viewed", {})
        with events.context("enrollment", {"mode": request.GET.get("mode", "audit")}):
            tracker.emit("demo.course.enrolled", {"seats_left": 41})
    return JsonResponse({"enrolled": course_id})


async def search(request: HttpRequest) -> JsonResponse:
    """An async view: it awaits mid-request and emits from the loop and from a thread."""
    query = request.GET.get("q", "")
    with tracker.get_tracker().context("search", {"query": query}):
        tracker.emit("demo.search.started", {})
        await asyncio.sleep(0.05)  # stands in for awaiting a search service
        hits = [f"{query}-{n}" for n in range(3)]
        await sync_to_async(tracker.emit)("demo.search.finished", {"hits": len(hits)})
    return JsonResponse({"hits": hits})
