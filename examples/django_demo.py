"""Run the demo Django site under uvicorn, send it real requests, show the stored events.

1. start an embedded MongoDB-compatible server (SecantusDB) on a free loopback port;
2. start examples/django_site under uvicorn (ASGI), pointed at it;
3. make a few HTTP requests, some at the same time, some with an X-Request-ID;
4. stop the site (its lifespan shutdown flushes the events to MongoDB);
5. print the stored events request by request, with their per-request context.

Run it with ``make demo`` or ``.venv/bin/python examples/django_demo.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import httpx
import pymongo
from secantus import SecantusDBServer

SITE = Path(__file__).resolve().parent / "django_site"
REPO = SITE.parent.parent
#: Request context fields printed once per request.
SHOWN = ("request_id", "method", "path", "ip", "agent")
#: Every field the middleware adds; the rest of an event's context came from the views.
MIDDLEWARE_FIELDS = {
    *SHOWN, "user_id", "username", "session", "host", "referer", "accept_language",
}  # fmt: skip


def start_site(mongo_uri: str, spool_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start uvicorn on a socket bound here, so the port is known and free."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="demo_site.settings",
        EVENTTRACKING_MONGO_URI=mongo_uri,
        EVENTTRACKING_SPOOL_DIR=spool_dir,
        PYTHONPATH=os.pathsep.join([str(SITE), str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    command = [
        sys.executable, "-m", "uvicorn", "demo_site.asgi:application",
        "--fd", str(listener.fileno()), "--lifespan", "on", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=SITE, pass_fds=(listener.fileno(),))
    listener.close()
    return process, f"http://127.0.0.1:{port}"


async def make_requests(url: str) -> None:
    """A few requests: one after the other, then three at the same time."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        # The first request waits in the socket's backlog until the site is up.
        response = await client.get("/", headers={"User-Agent": "demo-browser/1.0"})
        response.raise_for_status()
        print(f"GET /                          -> {response.status_code}")
        response = await client.get(
            "/courses/intro-101/enroll/", params={"mode": "verified"},
            headers={"X-Request-ID": "enroll-42"},
        )  # fmt: skip
        response.raise_for_status()
        print(f"GET /courses/intro-101/enroll/ -> {response.status_code} (X-Request-ID enroll-42)")
        queries = ["django", "asyncio", "mongodb"]
        responses = await asyncio.gather(
            *(
                client.get("/search/", params={"q": q}, headers={"X-Request-ID": f"search-{q}"})
                for q in queries
            )
        )
        for query, response in zip(queries, responses, strict=True):
            response.raise_for_status()
            print(f"GET /search/?q={query:<14} -> {response.status_code} (concurrent)")


def print_events(collection: pymongo.collection.Collection) -> int:
    """Print the stored events grouped by request, oldest request first; return the count."""
    by_request: dict[str, list[dict]] = defaultdict(list)
    # ObjectIds are given in emission order within a process; timestamps tie at the
    # millisecond MongoDB stores.
    for event in collection.find().sort("_id", pymongo.ASCENDING):
        by_request[event["context"]["request_id"]].append(event)
    total = sum(len(events) for events in by_request.values())
    print(f"\n{total} events stored in {collection.full_name}, by request:")
    for events in by_request.values():
        context = events[0]["context"]
        fields = ", ".join(f"{key}={context[key]!r}" for key in SHOWN)
        print(f"\nrequest {fields}")
        for event in events:
            own = {k: v for k, v in event["context"].items() if k not in MIDDLEWARE_FIELDS}
            extra = f" view context {own}" if own else ""
            print(f"  {event['name']:<22} data {event['data']}{extra}")
    return total


def say(text: str) -> None:
    """Tell the reader what the demo does, before it does it."""
    print(text, flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="eventtracking-demo-") as workdir:
        server = SecantusDBServer(storage_path=os.path.join(workdir, "mongo"), port=0)
        server.start()
        say(
            f"\nStarted an embedded MongoDB-compatible server (SecantusDB) at {server.uri}, "
            f"storing in the temporary directory {workdir}, which is removed when this demo "
            "ends."
        )
        try:
            site, url = start_site(server.uri, os.path.join(workdir, "spool"))
            say(
                f"Started the demo Django site (examples/django_site) under uvicorn at {url}. "
                "Its middleware puts each request's context on the events, and a "
                "MongoBackend stores them in that server. Sending it requests:"
            )
            try:
                asyncio.run(make_requests(url))
            finally:
                site.send_signal(signal.SIGTERM)
                try:
                    site.wait(30)
                except subprocess.TimeoutExpired:
                    site.kill()
                    site.wait()
            say("Stopped uvicorn; its lifespan shutdown flushed the events to MongoDB.")
            client = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10_000)
            try:
                stored = print_events(client["eventtracking_demo"]["events"])
            finally:
                client.close()
        finally:
            server.stop()
    say("\nStopped SecantusDB and removed its directory.")
    if not stored:
        print("No events were stored: see the site's output above.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
