"""Real servers: every event carries its own request's context under load.

gunicorn runs the WSGI app with threaded workers (gthread) that handle request after
request on the same threads; uvicorn runs the ASGI app, whose async views wait in the
middle of the request until a whole group of requests is in flight, so they interleave
on one event loop for certain. Some requests hit a view that enters a context and never
leaves it, to show that nothing leaks into the next request on that thread or task.

Events go to a backend that writes only when the tracker is flushed or closed, and the
servers are stopped with SIGTERM before the events are read: so these tests also show
that the app flushes the tracker when a worker exits, under gunicorn ``--preload`` too.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from django_support import Server, read_events, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REQUESTS = 300
LEAK_EVERY = 10


def rid_of(event: dict[str, Any]) -> str:
    """The rid the client sent, as the view or the request event recorded it."""
    data = event["data"]
    return data["rid"] if "rid" in data else data["query"]["rid"]


def check_every_event_has_its_own_context(
    events: list[dict[str, Any]], paths: dict[str, str]
) -> None:
    """Each event's request_id and path are those of the request that emitted it."""
    for event in events:
        rid = rid_of(event)
        context = event["context"]
        assert context["request_id"] == rid, event
        assert context["path"] == paths[rid], event
        # The request event of a leaking request is still inside that request.
        if paths[rid] == "/leak/":
            assert context["leaked_from"] == rid, event
        else:
            assert "leaked_from" not in context, event
        if event["name"] != "django.request":
            assert context["rid_seen" if "rid_seen" in context else "leaked_from"] == rid


@pytest.fixture
def gunicorn(tmp_path: Path) -> Any:
    """gunicorn --preload, 2 gthread workers of 8 threads, on a free loopback port."""
    server = start_server("gunicorn", tmp_path)
    yield server
    server.stop()


@pytest.fixture
def uvicorn(tmp_path: Path) -> Any:
    """uvicorn serving the ASGI app on a free loopback port."""
    server = start_server("uvicorn", tmp_path)
    yield server
    server.stop()


def test_gunicorn_threads_keep_each_request_context_apart(gunicorn: Server) -> None:
    """300 requests over 16 reused threads: each event has its own request's context."""
    plan = [("leak" if n % LEAK_EVERY == 0 else "emit", f"g{n}") for n in range(REQUESTS)]
    local = threading.local()
    clients: list[httpx.Client] = []
    clients_lock = threading.Lock()

    def call(item: tuple[str, str]) -> int:
        view, rid = item
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=gunicorn.url, timeout=30)
            with clients_lock:
                clients.append(client)
        response = client.get(f"/{view}/", params={"rid": rid}, headers={"X-Request-ID": rid})
        return response.status_code

    with httpx.Client(base_url=gunicorn.url, timeout=60) as probe:
        assert probe.get("/ping/").status_code == 200, gunicorn.output()
    try:
        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(call, plan))
    finally:
        for client in clients:
            client.close()
    assert statuses == [200] * REQUESTS, gunicorn.output()

    assert gunicorn.stop() == 0, gunicorn.output()
    events = read_events(gunicorn.events_dir)
    names = Counter(event["name"] for event in events)
    leaks = REQUESTS // LEAK_EVERY
    assert names == {
        "test.emit": REQUESTS - leaks,
        "test.leak": leaks,
        "django.request": REQUESTS,
    }, gunicorn.output()
    check_every_event_has_its_own_context(events, {rid: f"/{view}/" for view, rid in plan})
    # The point of the exercise: threads were reused for many requests each.
    workers = Counter(event["data"]["worker"] for event in events if "worker" in event["data"])
    assert len(workers) <= 16
    assert max(workers.values()) > 1


def test_uvicorn_interleaved_async_requests_keep_their_own_context(uvicorn: Server) -> None:
    """300 concurrent ASGI requests that wait mid-view: each event has its own context."""
    group_size = 45
    plan: list[tuple[str, str, dict[str, str]]] = []
    waiting = 0
    for n in range(REQUESTS):
        rid = f"u{n}"
        if n % LEAK_EVERY == 0:
            plan.append(("leak", rid, {"rid": rid}))
        else:
            group = f"wave{waiting // group_size}"
            plan.append(("aemit", rid, {"rid": rid, "group": group, "size": str(group_size)}))
            waiting += 1
    assert waiting % group_size == 0

    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
        async with httpx.AsyncClient(base_url=uvicorn.url, timeout=60, limits=limits) as client:
            assert (await client.get("/ping/")).status_code == 200
            responses = await asyncio.gather(
                *(
                    client.get(f"/{view}/", params=params, headers={"X-Request-ID": rid})
                    for view, rid, params in plan
                )
            )
        return [response.status_code for response in responses]

    statuses = asyncio.run(run())
    assert statuses == [200] * REQUESTS, uvicorn.output()

    # uvicorn shuts down gracefully, then re-raises SIGTERM: atexit handlers never run.
    # The events are there because eventtracking.django.asgi closes the tracker at
    # lifespan shutdown.
    assert uvicorn.stop() == -signal.SIGTERM, uvicorn.output()
    events = read_events(uvicorn.events_dir)
    names = Counter(event["name"] for event in events)
    leaks = REQUESTS // LEAK_EVERY
    assert names == {
        "test.aemit.before": waiting,
        "test.aemit.after": waiting,
        "test.aemit.thread": waiting,
        "test.leak": leaks,
        "django.request": REQUESTS,
    }, uvicorn.output()
    check_every_event_has_its_own_context(events, {rid: f"/{view}/" for view, rid, _ in plan})
