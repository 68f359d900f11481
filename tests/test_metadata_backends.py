"""Documentation records stored beside the events: routing, memory, logger and MongoDB."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from eventtracking import metadata
from eventtracking.backends.logger import LoggerBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.metadata import METADATA_EVENT_NAME, REFERENCE_KEY, Registry
from eventtracking.tracker import Tracker


class ListHandler(logging.Handler):
    """Keeps every formatted line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Lines written to the ``tests.metadata.events`` logger during the test."""
    handler = ListHandler()
    logger = logging.getLogger("tests.metadata.events")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield handler.lines
    logger.removeHandler(handler)


def _registry() -> Registry:
    registry = Registry()
    registry.register(
        "navigation.request", "A page was opened.", fields={"url": "string"}, emitted_from="m:f"
    )
    registry.register_context("request", "The request.", fields={"user_id": "integer"})
    return registry


def test_logger_writes_one_metadata_line_per_version_before_its_events(
    log_lines: list[str],
) -> None:
    """Each version's record is one line named eventtracking.metadata, written once."""
    registry = _registry()
    tracker = Tracker({"log": LoggerBackend(name="tests.metadata.events", max_event_size=None)})
    metadata.set_validation(tracker, "warn", registry=registry)
    for n in range(3):
        tracker.emit("navigation.request", {"url": f"/{n}"})
    registry.register(
        "navigation.request", "Changed.", fields={"url": "string"}, emitted_from="m:f"
    )
    tracker.emit("navigation.request", {"url": "/3"})
    lines = [json.loads(line) for line in log_lines]
    names = [line["name"] for line in lines]
    assert names == [
        METADATA_EVENT_NAME,  # the context type, published with the first plan
        METADATA_EVENT_NAME,
        "navigation.request",
        "navigation.request",
        "navigation.request",
        METADATA_EVENT_NAME,
        "navigation.request",
    ]
    records = {
        line["data"]["id"]: line["data"] for line in lines if line["name"] == METADATA_EVENT_NAME
    }
    assert len(records) == 3
    # From any stored event, its reference finds the definition in force when emitted.
    for line in lines:
        if line["name"] == "navigation.request":
            record = records[line["context"][REFERENCE_KEY]]
            expected = 1 if line["data"]["url"] != "/3" else 2
            assert (record["name"], record["version"]) == ("navigation.request", expected)
    assert records[lines[6]["context"][REFERENCE_KEY]]["description"] == "Changed."
    context_record = lines[0]["data"]
    assert (context_record["kind"], context_record["name"]) == ("context_type", "request")


def test_metadata_lines_are_never_truncated_by_max_event_size(log_lines: list[str]) -> None:
    """A record longer than max_event_size is still written whole."""
    registry = Registry()
    registry.register("big", "x" * 2000, emitted_from="m")
    tracker = Tracker({"log": LoggerBackend(name="tests.metadata.events", max_event_size=100)})
    metadata.publish(tracker, registry)
    (line,) = (json.loads(text) for text in log_lines)
    assert line["data"]["description"] == "x" * 2000


def test_memory_backend_keeps_records_and_events_apart() -> None:
    """InMemoryBackend stores records in ``metadata`` and events in ``events``."""
    registry = _registry()
    backend = InMemoryBackend()
    tracker = Tracker({"memory": backend})
    metadata.set_validation(tracker, "warn", registry=registry)
    tracker.emit("navigation.request", {"url": "/"})
    tracker.emit("navigation.request", {"url": "/"})
    assert [r["name"] for r in backend.metadata] == ["request", "navigation.request"]
    assert [e["name"] for e in backend.events] == ["navigation.request"] * 2
    assert backend.metadata[1] == registry.get("navigation.request").record
    assert backend.metadata[1] is not registry.get("navigation.request").record


def test_records_travel_through_routing_trees_once_per_backend() -> None:
    """Nested routers pass each record on once; later backends get earlier records."""
    registry = _registry()
    leaf = InMemoryBackend()
    branch = RoutingBackend({"leaf": leaf})
    tracker = Tracker({"branch": branch})
    metadata.set_validation(tracker, "warn", registry=registry)
    tracker.emit("navigation.request", {"url": "/"})
    metadata.publish(tracker, registry)
    metadata.publish(tracker, registry)
    late = InMemoryBackend()
    branch.register_backend("late", late)
    assert [r["name"] for r in leaf.metadata] == ["request", "navigation.request"]
    assert sorted(r["id"] for r in late.metadata) == sorted(r["id"] for r in leaf.metadata)


def test_a_failing_metadata_backend_is_counted_and_spares_the_others() -> None:
    """A send_metadata that raises is logged and counted; siblings still get the record."""

    class Broken:
        mutates_events = False

        def send(self, event: Any) -> None:
            pass

        def send_metadata(self, record: Any) -> None:
            raise RuntimeError("disk full")

    good = InMemoryBackend()
    tracker = Tracker({"broken": Broken(), "good": good})
    assert metadata.publish(tracker, _registry()) == 2
    assert len(good.metadata) == 2
    assert tracker.stats()["failed"] == {"metadata:broken": 2}


def test_backends_without_send_metadata_are_skipped() -> None:
    """A backend that cannot store records simply does not receive them."""
    seen: list[Any] = []

    class Plain:
        mutates_events = False

        def send(self, event: Any) -> None:
            seen.append(event)

    tracker = Tracker({"plain": Plain()})
    metadata.set_validation(tracker, "warn", registry=_registry())
    tracker.emit("navigation.request", {"url": "/"})
    assert [event["name"] for event in seen] == ["navigation.request"]
    assert tracker.stats()["failed"] == {}


def test_publish_needs_a_tracker() -> None:
    """publish() with something that is not a tracker raises TypeError saying so."""
    with pytest.raises(TypeError, match="pass a Tracker"):
        metadata.publish(object(), Registry())


# -- MongoDB: the event_types collection beside the events ------------------------------


@pytest.fixture
def mongo_backends(mongo: Any, collection_name: str, tmp_path: Any) -> Iterator[Any]:
    """Builds MongoBackends on the test server, in a database of the test's own."""
    from eventtracking.backends.mongodb import MongoBackend

    made: list[Any] = []
    database = f"meta_{collection_name}"[:60]

    def build(**options: Any) -> Any:
        options.setdefault("uri", mongo.uri)
        options.setdefault("database", database)
        options.setdefault("collection", "events")
        options.setdefault("spool_dir", tmp_path / "spool")
        options.setdefault("flush_interval", 0.05)
        backend = MongoBackend(**options)
        made.append(backend)
        return backend

    build.database = mongo.client(tz_aware=True)[database]  # type: ignore[attr-defined]
    yield build
    for backend in made:
        backend.close(0)
    mongo.client().drop_database(database)


@pytest.mark.slow
def test_mongodb_keeps_each_version_in_event_types_and_events_find_theirs(
    mongo_backends: Any,
) -> None:
    """Every version's record is stored once by id; each stored event finds its own."""
    registry = _registry()
    backend = mongo_backends()
    tracker = Tracker({"mongo": backend})
    metadata.set_validation(tracker, "warn", registry=registry)
    tracker.emit("navigation.request", {"url": "/1"})
    tracker.emit("navigation.request", {"url": "/2"})
    second = registry.register(
        "navigation.request", "Now with a referrer.", fields={"url": "string", "ref": "string"}
    )
    tracker.emit("navigation.request", {"url": "/3", "ref": "/2"})
    assert tracker.flush(timeout=30)
    database = mongo_backends.database
    stored_records = {doc["_id"]: doc for doc in database.event_types.find()}
    expected = {d.id: d.record for d in registry.all_versions()}
    assert set(stored_records) == set(expected)
    for record_id, doc in stored_records.items():
        assert {k: v for k, v in doc.items() if k != "_id"} == expected[record_id]
    events = list(database.events.find().sort("data.url", 1))
    assert [e["data"]["url"] for e in events] == ["/1", "/2", "/3"]
    versions = [
        database.event_types.find_one({"_id": e["context"][REFERENCE_KEY]})["version"]
        for e in events
    ]
    assert versions == [1, 1, second.version]
    assert backend.stats()["metadata"]["stored"] == 3
    # Records are found by _id: only the events collection gets the events' indexes.
    index_keys = {
        name: {tuple(key) for key in info["key"]}
        for name, info in database.event_types.index_information().items()
    }
    assert index_keys == {"_id_": {("_id", 1)}}
    event_index_keys = [
        [(field, int(direction)) for field, direction in info["key"]]
        for info in database.events.index_information().values()
    ]
    assert [("timestamp", -1)] in event_index_keys
    assert [("name", 1)] in event_index_keys


@pytest.mark.slow
def test_mongodb_records_from_several_processes_are_stored_once(mongo_backends: Any) -> None:
    """A record another backend (another process) stored already is kept, not doubled."""
    registry = _registry()
    first, second = mongo_backends(), mongo_backends(spool_stream="other-process")
    for backend in (first, second):
        tracker = Tracker({"mongo": backend})
        assert metadata.publish(tracker, registry) == 2
        assert tracker.flush(timeout=30)
    assert mongo_backends.database.event_types.count_documents({}) == 2
    assert second.stats()["metadata"]["duplicates"] == 2


@pytest.mark.slow
def test_mongodb_records_wait_in_the_spool_while_the_server_is_unreachable(
    mongo_backends: Any,
) -> None:
    """With no server, send_metadata returns at once and the record is spooled on close."""
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = mongo_backends(uri=f"mongodb://127.0.0.1:{port}/?directConnection=true")
    record = _registry().get("navigation.request").record
    started = time.monotonic()
    backend.send_metadata(record)
    assert time.monotonic() - started < 1.0
    backend.close(0)
    streams = backend.spool.status()["streams"]
    (stream,) = [name for name in streams if name.endswith(".event_types")]
    assert streams[stream]["pending"] == 1
