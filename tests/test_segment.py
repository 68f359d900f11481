"""SegmentBackend through segment-analytics-python, against a local HTTP endpoint.

The endpoint stands in for api.segment.io: segment-analytics-python posts its batches
to ``<host>/v1/batch`` (its ``host`` setting), and the test reads what arrived there.
"""

from __future__ import annotations

import datetime
import gzip
import json
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from eventtracking.backends.celery import _wire
from eventtracking.backends.segment import INSTALL_HINT, SegmentBackend, segment_context
from eventtracking.tracker import Tracker, register_tracker

analytics = pytest.importorskip("segment.analytics")

UTC = datetime.timezone.utc


class Endpoint:
    """An HTTP server on 127.0.0.1 that keeps the JSON bodies posted to /v1/batch."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        #: While set, each POST waits for this Event first: an API that hangs.
        self.hold: threading.Event | None = None
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if endpoint.hold is not None:
                    endpoint.hold.wait(30)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                if self.path == "/v1/batch":
                    endpoint.bodies.append(json.loads(raw))
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def messages(self) -> list[dict[str, Any]]:
        return [message for body in self.bodies for message in body["batch"]]

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


SETTINGS = ("write_key", "host", "on_error", "default_client", "send", "max_retries")


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """segment.analytics pointed at a local endpoint, with a fresh default client;
    the module's settings are restored afterwards."""
    saved = {name: getattr(analytics, name) for name in SETTINGS}
    server = Endpoint()
    analytics.write_key = "test-write-key"
    analytics.host = server.url
    analytics.on_error = None
    analytics.default_client = None
    analytics.send = True
    analytics.max_retries = 0
    yield server
    if analytics.default_client is not None:
        analytics.shutdown()
    for name, value in saved.items():
        setattr(analytics, name, value)
    server.close()


CONTEXT = {
    "user_id": 10,
    "client_id": "GA1.2.3",
    "ip": "203.0.113.9",
    "agent": "Mozilla/5.0",
    "host": "courses.example.com",
    "path": "/courses/x/",
    "referer": "https://search.example.org/",
    "course_id": "course-v1:X+Y+Z",
}


def test_a_tracked_event_arrives_with_the_4x_mapping(endpoint: Endpoint) -> None:
    """The event reaches Segment as a track call: the user id, the name, the whole event as
    properties (values JSON cannot carry written as the logs write them), and Segment's
    context built from the event's (ip, user agent, Google Analytics id, and a page URL
    from host and path)."""
    backend = SegmentBackend()
    tracker = Tracker({"segment": backend})
    marker = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with tracker.context("request", CONTEXT):
        tracker.emit("problem.checked", {"attempt": marker, "tags": {"b", "a"}})
    assert tracker.flush(None)

    [message] = endpoint.messages()
    assert message["type"] == "track"
    assert message["userId"] == "10"
    assert message["event"] == "problem.checked"
    properties = message["properties"]
    assert properties["name"] == "problem.checked"
    assert properties["data"] == {"attempt": str(marker), "tags": ["a", "b"]}
    assert properties["context"] == CONTEXT
    assert datetime.datetime.fromisoformat(properties["timestamp"]).tzinfo is not None
    context = message["context"]
    assert context["ip"] == "203.0.113.9"
    assert context["userAgent"] == "Mozilla/5.0"
    assert context["Google Analytics"] == {"clientId": "GA1.2.3"}
    assert context["page"] == {
        "path": "/courses/x/",
        "referrer": "https://search.example.org/",
        "url": "https://courses.example.com/courses/x/",
    }
    assert endpoint.bodies[0]["writeKey"] == "test-write-key"
    assert backend.stats()["sent"] == 1


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (
            {"page": "https://a/b", "path": "/p", "host": "h"},
            {"page": {"path": "/p", "url": "https://a/b"}},
        ),
        ({"path": "/p"}, {"page": {"path": "/p"}}),
        ({"host": "h"}, {}),
        ({"referer": "r"}, {"page": {"referrer": "r"}}),
        ({}, {}),
    ],
)
def test_page_information(context: dict[str, Any], expected: dict[str, Any]) -> None:
    """An explicit page wins over host and path; page fields appear only when given."""
    assert segment_context(context) == expected


def test_what_segment_does_not_get_is_counted(endpoint: Endpoint) -> None:
    """Events without a name or a user id are skipped, and ones Segment's client refuses
    (a user id of the wrong type) are counted; none raises into the caller."""
    backend = SegmentBackend()
    timestamp = datetime.datetime.now(UTC)
    backend.send({"name": "a", "timestamp": timestamp, "context": {}, "data": {}})
    backend.send({"name": None, "timestamp": timestamp, "context": {"user_id": 1}, "data": {}})
    backend.send({"name": "a", "timestamp": timestamp, "context": {"user_id": [1]}, "data": {}})
    backend.send({"name": "a", "timestamp": timestamp, "context": {"user_id": 2}, "data": {}})
    backend.send("not an event")  # type: ignore[arg-type]
    assert backend.flush(None)
    stats = backend.stats()
    assert stats["skipped"] == {"no_user_id": 1, "no_name": 1}
    assert stats["refused"] == {"AssertionError": 1, "not_an_event": 1}
    assert stats["sent"] == 1
    assert [message["userId"] for message in endpoint.messages()] == ["2"]


def test_uploads_segment_gives_up_on_are_counted(endpoint: Endpoint) -> None:
    """A batch the endpoint refuses for good (HTTP 400) is reported by Segment's client
    and counted in upload_failures, with its events."""
    endpoint.status = 400
    backend = SegmentBackend()
    before = backend.stats()
    for user in (1, 2):
        backend.send(
            {
                "name": "a",
                "timestamp": datetime.datetime.now(UTC),
                "context": {"user_id": user},
                "data": {},
            }
        )
    assert backend.flush(None)
    after = backend.stats()
    assert after["upload_failures"] - before["upload_failures"] == 1
    assert after["upload_failed_events"] - before["upload_failed_events"] == 2


def test_a_full_queue_is_counted(endpoint: Endpoint) -> None:
    """When Segment's own queue is full it drops the event; the backend counts it."""
    client = analytics.Client("test-write-key", host=endpoint.url, max_queue_size=1)
    client.join()  # stops its upload thread: nothing drains the queue now
    backend = SegmentBackend(client=client)
    for user in (1, 2):
        backend.send(
            {
                "name": "a",
                "timestamp": datetime.datetime.now(UTC),
                "context": {"user_id": user},
                "data": {},
            }
        )
    stats = backend.stats()
    assert (stats["sent"], stats["dropped"]) == (1, {"queue_full": 1})
    assert stats["upload_failures"] is None


def test_the_applications_own_error_hook_is_left_alone(endpoint: Endpoint) -> None:
    """An on_error the application set stays in place, and the backend says it cannot
    count failed uploads itself."""

    def mine(error: Any, batch: Any) -> None:
        pass

    analytics.on_error = mine
    backend = SegmentBackend()
    assert analytics.on_error is mine
    assert backend.stats()["upload_failures"] is None


def flush_threads() -> int:
    return sum(thread.name == "eventtracking-segment-flush" for thread in threading.enumerate())


def test_flushes_during_an_outage_share_one_thread(endpoint: Endpoint) -> None:
    """While Segment's API hangs, 100 flush(timeout) calls each return False in time,
    and together leave one flush thread waiting, not one each; once the API answers,
    the flush finishes and the next call returns True."""
    endpoint.hold = threading.Event()
    backend = SegmentBackend()
    backend.send({"name": "a", "timestamp": datetime.datetime.now(UTC), "context": {"user_id": 1}})
    assert [backend.flush(0.001) for _ in range(100)] == [False] * 100
    assert flush_threads() == 1
    endpoint.hold.set()
    assert backend.flush(30)
    assert [message["userId"] for message in endpoint.messages()] == ["1"]


def test_an_event_delivered_again_goes_with_the_same_message_id(endpoint: Endpoint) -> None:
    """Under the id an event travelled with (a Celery worker's retry of it), Segment
    gets the same messageId each time, and drops the copies; events sent outside a
    delivery each get a messageId of their own."""
    backend = SegmentBackend()
    event = {"name": "graded", "timestamp": datetime.datetime.now(UTC), "context": {"user_id": 1}}
    event_id = _wire.new_event_id()
    for _ in range(3):
        with _wire.delivering(event_id):
            backend.send(event)
    backend.send(event)
    backend.send(event)
    assert backend.flush(None)
    ids = [message["messageId"] for message in endpoint.messages()]
    assert len(ids) == 5
    assert ids[:3] == [event_id] * 3
    assert len(set(ids[2:])) == 3


def test_a_worker_retrying_a_slow_segment_leaf_sends_one_message_id(
    endpoint: Endpoint, redis_server: Any, tmp_path: Path
) -> None:
    """On a Celery worker, a Segment leaf whose flush does not finish in
    delivery_timeout (the API hangs) is retried, and tracks the event again each time;
    every copy carries the event's id as its messageId, so Segment keeps one."""
    from celery_support import Broker, in_process_worker, make_app, wait_until

    from eventtracking.backends.async_routing import AsyncRoutingBackend

    endpoint.hold = threading.Event()
    app = make_app(Broker("redis", redis_server.url_for(2)))
    router = AsyncRoutingBackend(
        backends={"segment": SegmentBackend()},
        backend_name="segmented",
        app=app,
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
        retry_backoff=0.05,
        retry_backoff_max=0.1,
        delivery_timeout=0.5,
        max_retries=2,
    )
    tracker = Tracker({"segmented": router})
    register_tracker(tracker)
    try:
        with in_process_worker(app):
            with tracker.context("request", {"user_id": 5}):
                tracker.emit("graded", {"grade": "C"})
            assert router.delivery.flush(10)  # published (the leaf's own flush would hang)
            (letter,) = wait_until(lambda: router.spool.dead_letters(router.stream))
        endpoint.hold.set()
        assert SegmentBackend().flush(30)
    finally:
        router.close(1.0)
        app.close()
    copies = [m for m in endpoint.messages() if m["event"] == "graded"]
    assert len(copies) == 3  # the first try and two retries
    assert {copy["messageId"] for copy in copies} == {_wire.decode_entry(letter.payload).id}


def test_a_client_without_track_is_refused() -> None:
    """client must have a track() method."""
    with pytest.raises(TypeError, match="track"):
        SegmentBackend(client=object())


BLOCKED_SCRIPT = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"segment", "analytics"}:
                raise ImportError(f"{name} is blocked by the test")
            return None

    sys.meta_path.insert(0, Block())
    from eventtracking.backends.segment import SegmentBackend
    try:
        SegmentBackend()
    except ImportError as error:
        print(error)
    """
)


def test_without_segment_building_names_the_extra() -> None:
    """Without segment-analytics-python the module imports, and building the backend
    raises ImportError naming the extra (4.x silently sent nothing)."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert INSTALL_HINT in result.stdout


def test_tests_written_for_4x_can_patch_the_module_attribute() -> None:
    """``patch('eventtracking.backends.segment.analytics')``, as 4.x's tests do, reaches
    a backend built under it: the fake gets the track call with 4.x's arguments."""
    from unittest import mock

    event = {"name": "page.viewed", "context": {"user_id": 7, "ip": "10.0.0.1"}, "data": {}}
    with mock.patch("eventtracking.backends.segment.analytics") as fake:
        backend = SegmentBackend()
        backend.send(event)
    fake.track.assert_called_once_with(7, "page.viewed", event, context={"ip": "10.0.0.1"})
    assert backend.stats()["sent"] == 1
