"""MongoBackend against a real server (SecantusDB in a subprocess), faults included.

The fault tests kill the server or the writing process for real, and check what ended
up stored: every event exactly once.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from mongo_support import AUTH_DATABASE, AUTH_USERS, MongoServer
from redis_support import free_port

from eventtracking.backends.memory import InMemoryBackend
from eventtracking.backends.mongodb import (
    INSTALL_HINT,
    MAX_DOCUMENT_SIZE,
    MAX_NESTING,
    MongoBackend,
)
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.spool import Spool, UnsafeSpoolError
from eventtracking.tracker import Tracker

DB = "eventtracking_tests"
UTC = datetime.timezone.utc

#: Builds a MongoBackend against the test server with a spool in tmp_path; closed after.
MakeBackend = Callable[..., MongoBackend]


@pytest.fixture
def make_backend(mongo: MongoServer, collection_name: str, tmp_path: Path) -> Iterator[MakeBackend]:
    made: list[MongoBackend] = []

    def build(**options: Any) -> MongoBackend:
        options.setdefault("uri", mongo.uri)
        options.setdefault("database", DB)
        options.setdefault("collection", collection_name)
        options.setdefault("spool_dir", tmp_path / "spool")
        backend = MongoBackend(**options)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close(0)


@pytest.fixture
def stored(mongo: MongoServer, collection_name: str) -> Any:
    """The test's collection, read through a client of the test's own."""
    return mongo.client(tz_aware=True)[DB][collection_name]


def seqs(collection: Any, **query: Any) -> list[int]:
    return sorted(doc["data"]["seq"] for doc in collection.find(query, {"data.seq": 1}))


# -- storing --------------------------------------------------------------------------


def test_events_are_stored_with_an_id_of_their_own(make_backend: MakeBackend, stored: Any) -> None:
    """An emitted event is stored with its four keys and a client-side ObjectId."""
    tracker = Tracker({"mongo": make_backend()})
    tracker.emit("navigation.request", {"url": "/courses", "n": 1})
    assert tracker.flush(10)
    [doc] = list(stored.find())
    assert isinstance(doc["_id"], bson.ObjectId)
    assert doc["name"] == "navigation.request"
    assert doc["data"] == {"url": "/courses", "n": 1}
    assert isinstance(doc["context"], dict)
    assert abs(doc["timestamp"] - datetime.datetime.now(UTC)) < datetime.timedelta(minutes=1)


def test_the_event_is_never_changed_and_later_changes_are_not_stored(
    make_backend: MakeBackend, stored: Any
) -> None:
    """send() leaves the event alone (no _id), and changing it afterwards stores nothing new."""
    backend = make_backend(flush_interval=60)
    event = {
        "name": "x",
        "timestamp": datetime.datetime.now(UTC),
        "context": {"user_id": 1},
        "data": {"value": "original"},
    }
    backend.send(event)
    assert sorted(event) == ["context", "data", "name", "timestamp"]
    event["data"]["value"] = "changed after send"
    assert backend.flush(10)
    assert stored.find_one()["data"] == {"value": "original"}


def test_send_batch_queues_events_in_order_and_dead_letters_the_bad_one(
    make_backend: MakeBackend, stored: Any
) -> None:
    """send_batch() stores its events in order; one that cannot be encoded is set aside."""
    backend = make_backend()
    events = [{"name": "batch", "data": {"seq": seq}} for seq in range(5)]
    # BSON documents have string keys only.
    events.insert(2, {"name": "batch", "data": {"seq": 99, 1: "int key"}})
    backend.send_batch(events)
    assert backend.flush(10)
    assert [doc["data"]["seq"] for doc in stored.find(sort=[("_id", 1)])] == list(range(5))
    [letter] = backend.spool.dead_letters()
    assert letter.reason.startswith("BSON cannot encode the event")


def test_sibling_backends_never_see_the_mongo_id(make_backend: MakeBackend, stored: Any) -> None:
    """Another backend of the same tracker gets the event without any _id."""
    memory = InMemoryBackend()
    tracker = Tracker({"memory": memory, "mongo": make_backend()})
    tracker.emit("shared", {"n": 1})
    assert tracker.flush(10)
    assert "_id" not in memory.events[0]
    assert stored.count_documents({"name": "shared"}) == 1


def test_values_bson_lacks_are_stored_as_their_nearest_type(
    make_backend: MakeBackend, stored: Any
) -> None:
    """Decimal becomes Decimal128, a date a UTC midnight datetime, a set a list."""
    backend = make_backend()
    backend.send(
        {
            "name": "types",
            "data": {
                "price": decimal.Decimal("19.99"),
                "day": datetime.date(2024, 2, 29),
                "tags": {"a"},
            },
        }
    )
    assert backend.flush(10)
    data = stored.find_one()["data"]
    assert data["price"] == bson.Decimal128("19.99")
    assert data["day"] == datetime.datetime(2024, 2, 29, tzinfo=UTC)
    assert data["tags"] == ["a"]


def test_the_4x_attributes_are_there(make_backend: MakeBackend, collection_name: str) -> None:
    """connection, database and collection are pymongo objects for the configured names."""
    backend = make_backend()
    backend.send({"name": "attrs"})
    assert backend.flush(10)
    assert backend.database.name == DB
    assert backend.collection.name == collection_name
    assert backend.connection[DB][collection_name].find_one()["name"] == "attrs"


def test_indexes_on_timestamp_and_name_are_created_by_the_writer(
    make_backend: MakeBackend, stored: Any
) -> None:
    """Once the server answers, the writer creates {'timestamp': -1} and {'name': 1}."""
    backend = make_backend()
    backend.send({"name": "first"})
    assert backend.flush(10)
    keys = [info["key"] for info in stored.index_information().values()]
    assert [("timestamp", -1)] in keys
    assert [("name", 1)] in keys


def test_index_errors_are_logged_and_counted_never_raised(
    make_backend: MakeBackend, stored: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An index conflict is logged and counted; events are stored and the other index made."""
    stored.create_index([("timestamp", 1)], name="timestamp_-1")
    backend = make_backend()
    with caplog.at_level(logging.ERROR, logger="eventtracking.backends.mongodb"):
        backend.send({"name": "still stored"})
        assert backend.flush(10)
    assert stored.count_documents({"name": "still stored"}) == 1
    assert backend.stats()["index_errors"] == 1
    assert [("name", 1)] in [info["key"] for info in stored.index_information().values()]
    assert any("Creating the index" in r.getMessage() for r in caplog.records)


def test_replica_set_uri(make_backend: MakeBackend, mongo: MongoServer, stored: Any) -> None:
    """A replica-set URI works as the uri option."""
    backend = make_backend(uri=f"mongodb://127.0.0.1:{mongo.port}/?replicaSet=secantus")
    backend.send({"name": "rs"})
    assert backend.flush(10)
    assert stored.count_documents({"name": "rs"}) == 1


def test_host_and_port_options_of_4x_still_work(
    make_backend: MakeBackend, mongo: MongoServer, stored: Any
) -> None:
    """host and port, without uri, reach the server as in 4.x."""
    backend = make_backend(uri=None, host="127.0.0.1", port=mongo.port)
    backend.send({"name": "hostport"})
    assert backend.flush(10)
    assert stored.count_documents({"name": "hostport"}) == 1


def test_a_partly_stored_batch_stores_only_the_rest_on_replay(
    make_backend: MakeBackend, stored: Any, tmp_path: Path
) -> None:
    """Replaying events already in the collection stores the others; duplicates are ignored."""
    backend = make_backend()
    docs = [{"_id": bson.ObjectId(), "name": "replay", "data": {"seq": i}} for i in range(6)]
    stored.insert_many(docs[:3])  # stored before a crash, never acknowledged to the spool
    Spool(tmp_path / "spool").append(backend.stream, [bson.encode(doc) for doc in docs])
    assert backend.flush(10)
    assert seqs(stored) == list(range(6))
    stats = backend.stats()
    assert (stats["replayed"], stats["duplicates"], stats["dead_lettered"]) == (6, 3, 0)


def test_bad_documents_are_dead_lettered_while_the_rest_of_the_batch_is_stored(
    make_backend: MakeBackend, stored: Any, tmp_path: Path
) -> None:
    """Unencodable, oversized and validator-refused events become dead letters; others stored."""
    stored.database.create_collection(
        stored.name,
        validator={
            "$jsonSchema": {"properties": {"data": {"properties": {"seq": {"maximum": 99}}}}}
        },
    )
    backend = make_backend(batch_size=100, flush_interval=60)
    tracker = Tracker({"mongo": backend})
    for seq in range(8):
        tracker.emit("good", {"seq": seq})
    tracker.emit("refused", {"seq": 500})  # the validator refuses it, server side
    tracker.emit("unencodable", {"seq": 8, 1: "BSON has string keys only"})
    tracker.emit("huge", {"seq": 9, "blob": "x" * MAX_DOCUMENT_SIZE})
    tracker.emit("good", {"seq": 10})
    assert tracker.flush(30)
    assert seqs(stored) == [*range(8), 10]
    stats = backend.stats()
    assert stats["batches"] == 1  # the refused document was in the stored batch
    assert stats["dead_lettered"] == 3
    letters = {letter.reason.split(":")[0]: letter for letter in backend.spool.dead_letters()}
    assert len(letters) == 3
    refused = next(v for k, v in letters.items() if "code 121" in k)
    assert refused.payload is not None and bson.decode(refused.payload)["data"] == {"seq": 500}
    unencodable = letters["BSON cannot encode the event"]
    assert unencodable.payload is None and "'unencodable'" in (unencodable.detail or "")
    assert any(f"at most {MAX_DOCUMENT_SIZE} bytes" in reason for reason in letters)

    # Once the validator is relaxed, re-driving the refused one stores it.
    stored.database.command("collMod", stored.name, validator={})
    assert backend.spool.redrive(ids=[refused.id]) == 1
    assert backend.flush(30) is True
    assert stored.count_documents({"name": "refused"}) == 1
    assert len(backend.spool.dead_letters()) == 2


def _lone_surrogate_document() -> bytes:
    """BSON whose name is a lone surrogate, written as Python's "surrogatepass" does."""
    good = bson.encode({"_id": bson.ObjectId(), "name": "AAA", "data": {"seq": -1}})
    return good.replace(b"AAA", b"\xed\xa0\x80")


@pytest.mark.parametrize(
    "bad",
    [_lone_surrogate_document(), b"\x05\x00\x00\x00 not BSON at all"],
    ids=["lone-surrogate", "not-bson"],
)
def test_a_redriven_letter_that_cannot_be_read_is_set_aside_and_holds_nothing_up(
    make_backend: MakeBackend, stored: Any, tmp_path: Path, bad: bytes
) -> None:
    """A dead letter that is not valid BSON (a lone surrogate in a string, or junk),
    re-driven with `spool redrive`, becomes a counted dead letter again on its own:
    the events emitted after it are stored instead of waiting behind it for ever."""
    backend = make_backend(batch_size=100, flush_interval=0.05)
    backend.spool.add_dead_letters(backend.stream, [(bad, "kept for the test", None)])
    assert backend.spool.redrive(backend.stream) == 1
    tracker = Tracker({"mongo": backend})
    for seq in range(3):
        tracker.emit("after.the.bad.one", {"seq": seq})
    assert tracker.flush(30)
    assert seqs(stored) == [0, 1, 2]
    (letter,) = backend.spool.dead_letters(backend.stream)
    assert letter.payload == bad
    assert "not valid BSON" in letter.reason
    assert backend.stats()["dead_lettered"] == 1


def test_events_nested_deeper_than_mongodb_stores_are_dead_lettered_at_send(
    make_backend: MakeBackend, stored: Any
) -> None:
    """An event nested deeper than MongoDB stores never reaches the server.

    mongod refuses documents nested deeper than 180 levels and closes the connection
    on messages deeper than 200, which looks like a network failure: the batch would
    be retried forever, and every later event held behind it (found by
    tests/test_fuzz_emit.py). Events within the limit, even large ones, are stored.
    """
    deep: Any = "bottom"
    for level in range(MAX_NESTING):
        deep = [deep] if level % 2 else {"d": deep}
    backend = make_backend(flush_interval=0.05)
    tracker = Tracker({"mongo": backend})
    tracker.emit("too.deep", {"deep": deep})
    # The document is the first level: with 179 more, this one is at the limit.
    tracker.emit("deep.enough", deep[0])
    tracker.emit("wide", {f"k{number}": [number] * 20 for number in range(500)})
    assert tracker.flush(30)
    assert sorted(stored.distinct("name")) == ["deep.enough", "wide"]
    (letter,) = backend.spool.dead_letters()
    assert f"nested deeper than {MAX_NESTING} levels" in letter.reason
    assert backend.stats()["dead_lettered"] == 1


def test_stats_count_what_happened(make_backend: MakeBackend) -> None:
    """stats() reports queued, stored, spooled, replayed, dead letters, retries, last error."""
    backend = make_backend()
    for seq in range(5):
        backend.send({"name": "counted", "data": {"seq": seq}})
    backend.send({"name": "bad", "data": {1: "BSON has string keys only"}})
    assert backend.flush(10)
    stats = backend.stats()
    assert stats["queued"] == 5
    assert stats["stored"] == 5
    assert stats["dead_lettered"] == 1
    for key in ("spooled", "replayed", "retries", "duplicates", "dropped", "last_error"):
        assert key in stats


# -- options --------------------------------------------------------------------------


def test_extra_is_copied_never_changed(make_backend: MakeBackend, stored: Any) -> None:
    """The extra mapping is passed to MongoClient and left exactly as given."""
    extra = {"journal": True, "w": 1}
    backend = make_backend(extra=extra, user=None)
    backend.send({"name": "journaled"})
    assert backend.flush(10)
    assert extra == {"journal": True, "w": 1}
    assert stored.count_documents({"name": "journaled"}) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"uri": "mongodb://a.example:27017/", "host": "b.example"},
            "which the URI does not name. Pass only uri",
        ),
        (
            {"uri": "mongodb://a.example:27017/", "port": 27018},
            "which the URI does not name",
        ),
        (
            {"uri": "mongodb://a.example/", "host": "mongodb://b.example/"},
            "two different URIs",
        ),
        ({"uri": "http://a.example/"}, "uri must start with 'mongodb://' or 'mongodb\\+srv://'"),
        ({"extra": {"host": "a.example"}}, "extra sets 'host'; pass it as the host option"),
        ({"user": "me"}, "user and password go together"),
        (
            {"uri": "mongodb://alice:pw@a.example/", "user": "bob", "password": "x"},
            "uri names one user and the user option another",
        ),
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"spool_max_bytes": 0}, "spool_max_bytes must be a positive int .bytes. or None"),
        ({"collection": ""}, "collection must be a non-empty string"),
        ({"extra": ["journal"]}, "extra must be a mapping"),
    ],
)
def test_bad_or_conflicting_options_raise_a_clear_error(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    """Conflicting or invalid options raise ImproperlyConfigured saying what to change."""
    with pytest.raises(ImproperlyConfigured, match=message):
        MongoBackend(spool_dir=tmp_path, **options)


def test_uri_wins_over_matching_host_and_the_password_is_never_shown(tmp_path: Path) -> None:
    """host/port naming a server of the URI are accepted; repr and errors hide the password."""
    backend = MongoBackend(
        uri="mongodb://alice:s3cret@a.example:27017,b.example:27018/?replicaSet=rs",
        host="b.example",
        port=27018,
        spool_dir=tmp_path,
    )
    try:
        assert "s3cret" not in repr(backend)
        assert backend.stream == "mongodb://a.example:27017,b.example:27018/eventtracking.events"
    finally:
        backend.close(0)
    with pytest.raises(ImproperlyConfigured) as raised:
        MongoBackend(uri="mongodb://alice:s3cret@a.example/", host="c.example", spool_dir=tmp_path)
    assert "s3cret" not in str(raised.value)


def test_a_spool_directory_others_can_write_to_fails_the_construction(tmp_path: Path) -> None:
    """A shared spool_dir is refused when the backend is built, not at the first outage."""
    tmp_path.chmod(0o777)
    with pytest.raises(UnsafeSpoolError, match=f"The spool directory {tmp_path} is writable"):
        MongoBackend(spool_dir=tmp_path)
    assert isinstance(UnsafeSpoolError(tmp_path, "x"), ImproperlyConfigured)


def _userinfo_pieces(uri: str) -> list[str]:
    """The parts of a URI's user info (everything before its last '@') worth hiding."""
    userinfo = uri.split("://", 1)[1].rpartition("@")[0]
    return [piece for piece in re.split("[:/?@#]", userinfo) if len(piece) >= 4]


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://alice:S3cr3t/pw@db.example/",  # '/' in the password
        "mongodb://alice:S3cr3t?pw@db.example/",  # '?' in the password
        "mongodb://alice:S3cr3t@pw@db.example/",  # '@' in the password
        "mongodb://alice:S3cr3t:pw@db.example/",  # ':' in the password
        "mongodb://alice:2727/S3cr3t@db.example",  # reads as host:port/database
        "mongodb://alice:S3cr3t@db.example:port/",  # a bad port
        "mongodb://alice:S3cr3t@/",  # no server
        "mongodb+srv://alice:S3cr3t/pw@cluster.example/",
        "mongodb://alice:S3cr3t@db.example/?authMechanism=NOPE",  # pymongo refuses it
    ],
)
def test_a_bad_uri_never_shows_its_user_info(
    uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A URI that cannot be used raises ImproperlyConfigured; neither the message, nor the
    exception's chain or traceback, nor any log line or warning shows a part of its user
    info. pymongo warns about an unknown authMechanism before refusing it: the warning
    is expected there, and captured."""
    warned = (
        pytest.warns(UserWarning, match="authmechanism")
        if "authMechanism=NOPE" in uri
        else contextlib.nullcontext([])
    )
    with (
        warned as warnings_seen,
        caplog.at_level(logging.DEBUG),
        pytest.raises(ImproperlyConfigured) as raised,
    ):
        # An option pymongo refuses too, so that its own error must be shown safely.
        MongoBackend(uri=uri, spool_dir=tmp_path, extra={"connectTimeoutMS": "soon"})
    shown = "".join(traceback.format_exception(raised.value)) + caplog.text
    shown += "".join(str(warning.message) for warning in warnings_seen)
    assert "***@" in str(raised.value) or "pymongo" in str(raised.value)
    for piece in _userinfo_pieces(uri):
        assert piece not in shown


def test_a_password_in_a_valid_uri_is_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """repr(), the uri attribute, the stream name and stats show neither the user info nor
    secret option values."""
    uri = (
        "mongodb://alice:S3cr3t%2Fpw@db.example:27017/"
        "?tlsCertificateKeyFilePassword=K3yPa55&authSource=admin"
    )
    with caplog.at_level(logging.DEBUG):
        backend = MongoBackend(uri=uri, spool_dir=tmp_path)
    try:
        shown = " ".join(
            [repr(backend), str(backend.uri), backend.stream, str(backend.stats()), caplog.text]
        )
    finally:
        backend.close(0)
    assert backend.uri == (
        "mongodb://***@db.example:27017/?tlsCertificateKeyFilePassword=***&authSource=admin"
    )
    for secret in ("alice", "S3cr3t", "K3yPa55"):
        assert secret not in shown


def test_without_pymongo_import_works_and_the_error_names_the_extra(tmp_path: Path) -> None:
    """`import eventtracking` needs no pymongo; building a MongoBackend says what to install."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pymongo"] = None  # as if it were not installed
        sys.modules["bson"] = None
        import eventtracking
        from eventtracking.backends.mongodb import MongoBackend
        try:
            MongoBackend()
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert INSTALL_HINT in done.stdout
    assert "pip install 'event-tracking[mongo]'" in done.stdout


# -- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "extra"),
    [("writer", None), ("root", {"authSource": "admin"})],
    ids=["auth-source-defaults-to-database", "auth-source-in-extra"],
)
def test_user_and_password_authenticate_with_pymongo_4(
    mongo_auth_server: MongoServer, tmp_path: Path, role: str, extra: Any
) -> None:
    """user/password log in on a server with auth on (pymongo 4 username/password)."""
    user, password, _ = AUTH_USERS[role]
    backend = MongoBackend(
        uri=mongo_auth_server.uri,
        user=user,
        password=password,
        database=AUTH_DATABASE,
        collection=f"auth_{role}",
        extra=extra,
        spool_dir=tmp_path,
    )
    try:
        backend.send({"name": "authenticated"})
        assert backend.flush(10)
    finally:
        backend.close(0)
    root, root_password, _ = AUTH_USERS["root"]
    admin = mongo_auth_server.client(username=root, password=root_password, authSource="admin")
    assert admin[AUTH_DATABASE][f"auth_{role}"].count_documents({"name": "authenticated"}) == 1


def test_a_wrong_password_keeps_the_events_until_fixed(
    mongo_auth_server: MongoServer, tmp_path: Path
) -> None:
    """Refused credentials fail delivery visibly; the events wait in the spool, then arrive."""
    user, password, _ = AUTH_USERS["writer"]
    options: dict[str, Any] = {
        "uri": mongo_auth_server.uri,
        "user": user,
        "database": AUTH_DATABASE,
        "collection": "wrong_password",
        "spool_dir": tmp_path,
    }
    wrong = MongoBackend(password="not the password", **options)
    for seq in range(3):
        wrong.send({"name": "waiting", "data": {"seq": seq}})
    for _ in range(40):  # until the writer has tried and been refused
        if wrong.stats()["retries"] or wrong.flush(0.25):
            break
    assert wrong.flush(0.1) is False
    assert "authentication failed" in str(wrong.stats()["last_error"]).lower()
    wrong.close(5)
    assert Spool(tmp_path).pending_count(wrong.stream) == 3

    fixed = MongoBackend(password=password, **options)
    try:
        assert fixed.flush(10)
    finally:
        fixed.close(0)
    root, root_password, _ = AUTH_USERS["root"]
    admin = mongo_auth_server.client(username=root, password=root_password, authSource="admin")
    assert seqs(admin[AUTH_DATABASE]["wrong_password"]) == [0, 1, 2]


def test_a_refused_login_never_shows_the_password_in_the_uri(
    mongo_auth_server: MongoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the server refuses credentials given in the URI, the delivery's error, its log
    lines and stats show neither the user name nor the password."""
    user, _, _ = AUTH_USERS["writer"]
    uri = mongo_auth_server.uri.replace("mongodb://", f"mongodb://{user}:Wr0ngPa55w0rd@")
    with caplog.at_level(logging.DEBUG):
        backend = MongoBackend(
            uri=uri, database=AUTH_DATABASE, collection="refused_login", spool_dir=tmp_path
        )
        try:
            backend.send({"name": "waiting"})
            for _ in range(40):  # until the writer has tried and been refused
                if backend.stats()["retries"] or backend.flush(0.25):
                    break
            stats = backend.stats()
        finally:
            backend.close(5)
    assert "authentication failed" in str(stats["last_error"]).lower()
    shown = f"{stats} {backend!r} {caplog.text}"
    assert "Wr0ngPa55w0rd" not in shown
    assert f"{user}:" not in shown


# -- faults ---------------------------------------------------------------------------


def returns_in_time(call: Callable[[], Any], patience: float = 60.0) -> Any:
    """Run ``call`` in a thread and return its result; fail if it has not returned after
    ``patience`` seconds. A liveness check, not a speed claim: callers make whatever
    ``call`` could wait for take far longer than ``patience``."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(patience)
    assert not thread.is_alive(), f"still waiting after {patience:g} s"
    if errors:
        raise errors[0]
    return result[0]


def sink_callers(backend: MongoBackend, hold: threading.Event | None = None) -> list[str]:
    """Record the name of each thread that hands a batch to the server, in the returned
    list. With ``hold``, each such call waits for it to be set before going on: the
    writer is then held inside its network call for as long as the test wants."""
    callers: list[str] = []
    original = backend._sink.write_batch

    def recorded(items: Any) -> Any:
        callers.append(threading.current_thread().name)
        if hold is not None:
            hold.wait(120)
        return original(items)

    backend._sink.write_batch = recorded  # type: ignore[method-assign]
    return callers


def spooled_seqs(spool: Spool, stream: str) -> list[int]:
    """The ``seq`` of every event waiting in ``stream``, duplicates included."""
    claim = spool.claim(stream, 10_000)
    if claim is None:
        return []
    try:
        return sorted(bson.decode(payload)["data"]["seq"] for payload in claim.payloads)
    finally:
        spool.release(claim)


@pytest.mark.parametrize("host", ["127.0.0.1", "eventtracking-test.invalid"])
def test_building_does_no_server_selection_with_mongodb_down(host: str, tmp_path: Path) -> None:
    """With no server (refused, or an unknown host) building the backend selects no server:
    with a selection timeout of ten minutes it still returns."""
    backend = returns_in_time(
        lambda: MongoBackend(
            host=host,
            port=free_port(),
            spool_dir=tmp_path,
            extra={"serverSelectionTimeoutMS": 600_000},
        )
    )
    backend.close(0)


@pytest.mark.parametrize("host", ["127.0.0.1", "eventtracking-test.invalid"])
def test_emit_never_waits_for_the_writer_with_mongodb_down(host: str, tmp_path: Path) -> None:
    """With no server, emit returns while the writer is held inside its network call, the
    caller's thread never talks to the server, and every event ends up in the spool."""
    backend = MongoBackend(host=host, port=free_port(), spool_dir=tmp_path)
    tracker = Tracker({"mongo": backend})
    hold = threading.Event()
    callers = sink_callers(backend, hold)
    try:
        tracker.emit("while.down", {"seq": 0})
        for _ in range(600):  # until the writer is inside its first attempt
            if callers:
                break
            tracker.flush(0.1)
        assert callers, "the writer never tried to deliver"
        returns_in_time(lambda: [tracker.emit("while.down", {"seq": seq}) for seq in range(1, 20)])
        assert tracker.flush(0.2) is False
    finally:
        hold.set()
    tracker.close(30)
    assert threading.current_thread().name not in callers
    spooled = spooled_seqs(Spool(tmp_path), backend.stream)
    # A batch still in flight when close() gave up is spooled by both sides, by design.
    assert sorted(set(spooled)) == list(range(20))


def test_flush_and_close_share_one_limit_between_events_and_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With records sent too, flush(None) and close(None) still wait one limit, not two."""
    from eventtracking import delivery

    limit = 2.0
    monkeypatch.setattr(delivery, "DEFAULT_FLUSH_TIMEOUT", limit)
    backend = MongoBackend(
        uri=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        spool_dir=tmp_path,
        exit_timeout=limit,
    )
    backend.send({"name": "while.down", "data": {}})
    backend.send_metadata({"id": "while.down/1", "name": "while.down"})
    start = time.monotonic()
    assert backend.flush() is False
    flushed = time.monotonic() - start
    start = time.monotonic()
    backend.close()
    closed = time.monotonic() - start
    # Two limits would be 4 s or more each: the bound leaves a busy machine 1.6 s.
    assert flushed < 2 * limit - 0.4
    assert closed < 2 * limit - 0.4
    # Both the event (its stream) and the record (the event_types stream) are kept. One
    # still in flight when close() gave up is spooled by both sides, by design, so a
    # stream may hold it twice.
    streams = backend.spool.status()["streams"]
    assert len(streams) == 2, streams
    assert all(1 <= entry["pending"] <= 2 for entry in streams.values()), streams


def test_server_killed_mid_stream_every_event_is_stored_exactly_once(
    make_backend: MakeBackend, mongo: MongoServer, stored: Any
) -> None:
    """SIGKILL the server while events flow, restart it: all arrive once, and only the
    writer ever talks to the server."""
    backend = make_backend(batch_size=50, flush_interval=0.02, extra={"journal": True})
    tracker = Tracker({"mongo": backend})
    callers = sink_callers(backend)
    for seq in range(900):
        if seq == 300:
            mongo.kill()
        if seq == 600:
            # Let the writer notice: its attempts fail, and events go to the spool.
            for _ in range(40):
                if backend.stats()["retries"] or tracker.flush(0.25):
                    break
            assert backend.stats()["retries"] >= 1
            mongo.start()
        tracker.emit("stream", {"seq": seq})
    assert tracker.flush(60)
    assert seqs(stored) == list(range(900))  # each once: sorted list equality
    assert stored.count_documents({}) == 900
    assert backend.stats()["spooled"] > 0
    # That emit never waits for the server, even while it is down, is shown with the
    # writer held inside its call in test_emit_never_waits_for_the_writer_with_mongodb_down.
    assert callers
    assert threading.current_thread().name not in callers


def _writer_script(uri: str, collection: str, spool_dir: Path, count: int) -> str:
    return textwrap.dedent(
        f"""
        import sys
        from eventtracking.backends.mongodb import MongoBackend
        from eventtracking.tracker import Tracker
        backend = MongoBackend(uri={uri!r}, database={DB!r}, collection={collection!r},
                               spool_dir={str(spool_dir)!r}, durable=True,
                               flush_interval=60, batch_size=10_000)
        tracker = Tracker({{"mongo": backend}})
        for seq in range({count}):
            tracker.emit("durable", {{"seq": seq}})
        print("EMITTED", flush=True)
        sys.stdin.read()  # killed while waiting here
        """
    )


def test_durable_events_survive_sigkill_of_the_writer_process(
    mongo: MongoServer, collection_name: str, stored: Any, tmp_path: Path
) -> None:
    """durable=True: a process killed right after emit loses nothing; the next one delivers."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _writer_script(mongo.uri, collection_name, tmp_path, 300)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdin is not None
    try:
        assert writer.stdout.readline().strip() == "EMITTED"
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(30) == -signal.SIGKILL
    finally:
        writer.kill()
        writer.stdin.close()
        writer.stdout.close()
        writer.wait()
    # It waited for a fuller batch, so it had stored few events, if any: the rest are
    # only in the spool. An insert it sent just before dying may still land after this
    # count, so the count is a lower bound of what the killed writer stored.
    before = stored.count_documents({})

    backend = MongoBackend(
        uri=mongo.uri, database=DB, collection=collection_name, spool_dir=tmp_path
    )
    try:
        assert backend.flush(30)
    finally:
        backend.close(0)
    # Nothing lost, nothing twice: each seq exactly once (sorted list equality).
    assert seqs(stored) == list(range(300))
    assert stored.count_documents({}) == 300
    assert backend.spool.pending_count(backend.stream) == 0
    # Every event the killed writer had not acknowledged in the spool is replayed: at least
    # those it had not stored when `before` was read. One it had stored but not yet
    # acknowledged comes back as a counted duplicate, never a second copy, so the replay
    # adds at most what was missing then.
    stats = backend.stats()
    assert 300 - before <= stats["replayed"] <= 300
    assert stats["replayed"] - stats["duplicates"] <= 300 - before


def test_interpreter_exit_stores_what_is_still_queued(
    mongo: MongoServer, collection_name: str, stored: Any, tmp_path: Path
) -> None:
    """A process that exits without close() still stores its queued events (atexit)."""
    script = textwrap.dedent(
        f"""
        from eventtracking.backends.mongodb import MongoBackend
        from eventtracking.tracker import Tracker
        tracker = Tracker({{"mongo": MongoBackend(
            uri={mongo.uri!r}, database={DB!r}, collection={collection_name!r},
            spool_dir={str(tmp_path)!r}, flush_interval=60)}})
        for seq in range(100):
            tracker.emit("at.exit", {{"seq": seq}})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert seqs(stored) == list(range(100))


def test_a_child_forked_after_the_backend_was_made_delivers_its_events(
    make_backend: MakeBackend, stored: Any
) -> None:
    """After os.fork() the child delivers its own events; the parent keeps delivering too."""
    backend = make_backend(flush_interval=0.02)
    tracker = Tracker({"mongo": backend})
    tracker.emit("parent", {"seq": 0})
    assert tracker.flush(10)  # the writer thread and its client are live before the fork
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            for seq in range(25):
                tracker.emit("child", {"seq": seq})
            code = 0 if tracker.flush(20) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    tracker.emit("parent", {"seq": 1})
    assert tracker.flush(10)
    assert seqs(stored, name="child") == list(range(25))
    assert seqs(stored, name="parent") == [0, 1]


_SHARER = textwrap.dedent(
    """
    import json, sys
    from eventtracking.backends.mongodb import MongoBackend
    from eventtracking.tracker import Tracker
    uri, collection, spool_dir, proc, count = sys.argv[1:6]
    backend = MongoBackend(uri=uri, database="{db}", collection=collection,
                           spool_dir=spool_dir, batch_size=40, flush_interval=0.02,
                           extra={{"serverSelectionTimeoutMS": 300}})
    tracker = Tracker({{"mongo": backend}})
    for seq in range(int(count)):
        tracker.emit("shared", {{"proc": int(proc), "seq": seq}})
    for _ in range(200):  # until the writer has moved everything to the spool
        if backend.stats()["spooled"] == int(count) or backend.flush(0.1):
            break
    print(json.dumps(backend.stats()), flush=True)
    sys.stdin.readline()  # the server is back: deliver, all processes at once
    done = tracker.flush(60)
    print(json.dumps({{"done": done, **backend.stats()}}, default=str), flush=True)
    tracker.close(5)
    """
).format(db=DB)


def test_processes_sharing_a_spool_during_an_outage_store_everything_once(
    mongo: MongoServer, collection_name: str, stored: Any, tmp_path: Path
) -> None:
    """Several processes spool into one directory while the server is down; each row is
    then replayed by exactly one of them, and every event is stored once."""
    processes, count = 3, 150
    mongo.kill()
    command = [sys.executable, "-c", _SHARER, mongo.uri, collection_name, str(tmp_path)]
    children = [
        subprocess.Popen(
            [*command, str(n), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        before = [json.loads(child.stdout.readline()) for child in children]  # type: ignore[union-attr]
        assert [stats["spooled"] for stats in before] == [count] * processes
        assert Spool(tmp_path).pending_count() == processes * count
        mongo.start()
        for child in children:
            child.stdin.write("go\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
        after = [json.loads(child.stdout.readline()) for child in children]  # type: ignore[union-attr]
        for child in children:
            assert child.wait(60) == 0
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert all(stats["done"] for stats in after)
    # Each spooled row was replayed by exactly one process: none twice, none left.
    assert sum(stats["replayed"] for stats in after) == processes * count
    assert Spool(tmp_path).pending_count() == 0
    assert stored.count_documents({}) == processes * count
    for n in range(processes):
        assert seqs(stored, **{"data.proc": n}) == list(range(count))


# -- processes that send nothing --------------------------------------------------------


_MONGO_ENGINE = "eventtracking.backends.mongodb.MongoBackend"
_DJANGO_SETTINGS = """
SECRET_KEY = "eventtracking-tests-only"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "eventtracking.django"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
EVENT_TRACKING_ENABLED = True
EVENT_TRACKING_BACKENDS = {backends!r}
"""


def run_django(
    tmp_path: Path, backends: dict[str, Any], *command: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m django COMMAND`` for a project with these EVENT_TRACKING_BACKENDS."""
    module = f"settings_{len(list(tmp_path.glob('settings_*.py')))}"
    (tmp_path / f"{module}.py").write_text(
        _DJANGO_SETTINGS.format(database=str(tmp_path / "db.sqlite3"), backends=backends)
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DJANGO_SETTINGS_MODULE": module}
    return subprocess.run(
        [sys.executable, "-m", "django", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def hung_server() -> Iterator[socket.socket]:
    """A 127.0.0.1 port that accepts connections and never answers: a hung MongoDB.

    Connections wait in its backlog, where the test counts them.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock


def _connections(server: socket.socket) -> int:
    server.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def test_management_commands_that_emit_nothing_leave_spool_and_server_alone(
    tmp_path: Path, hung_server: socket.socket
) -> None:
    """With MongoDB hung and events left in the spool by an earlier process, `check` and
    `migrate` never connect to MongoDB, leave the spool as it was, and print no driver
    errors (so they take no longer than with MongoDB up)."""
    port = hung_server.getsockname()[1]
    options = {"uri": f"mongodb://127.0.0.1:{port}/", "spool_dir": str(tmp_path / "spool")}
    stream = f"mongodb://127.0.0.1:{port}/eventtracking.events"
    events = [bson.encode({"name": "left", "data": {"seq": n}}) for n in range(2000)]
    Spool(tmp_path / "spool").append(stream, events)
    backends = {"mongo": {"ENGINE": _MONGO_ENGINE, "OPTIONS": options}}
    for command in (["check"], ["migrate", "--noinput"]):
        done = run_django(tmp_path, backends, *command)
        assert done.returncode == 0, done.stderr
        assert "Delivery" not in done.stderr
        assert "Timeout" not in done.stderr
        assert _connections(hung_server) == 0
    counts = Spool(tmp_path / "spool").status()["streams"][stream]
    assert (counts["pending"], counts["claimed"]) == (2000, 0)


def test_a_system_check_never_shows_the_uri_password(tmp_path: Path) -> None:
    """`manage.py check` reporting a MongoBackend URI it cannot use shows no user info."""
    options = {"uri": "mongodb://alice:S3cr3t/pw@db.example/", "spool_dir": str(tmp_path)}
    backends = {"mongo": {"ENGINE": _MONGO_ENGINE, "OPTIONS": options}}
    done = run_django(tmp_path, backends, "check")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "(eventtracking.E0" in output  # reported as a system check error
    assert "mongodb://***@db.example/" in output
    for secret in ("alice", "S3cr3t"):
        assert secret not in output


def test_unserialisable_value_is_stored_as_its_repr_counted_and_reported(
    make_backend: MakeBackend, stored: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A value BSON has no type for is stored as its repr, as the logger writes it, with
    a repr_fallback count and a warning naming the event and the key path; the event
    is not dead-lettered."""
    from eventtracking import _json
    from eventtracking._util.ratelimit import RateLimitedLogger

    class Handle:
        def __repr__(self) -> str:
            return "<Handle 7>"

    _json._RATE_LIMITED = RateLimitedLogger(_json.LOG)
    backend = make_backend()
    before = _json.JSON_STATS.get("repr_fallback")
    with caplog.at_level(logging.WARNING, logger="eventtracking.json"):
        Tracker({"mongo": backend}).emit("with.handle", {"seq": 1, "items": [Handle()]})
        assert backend.flush(10)
    assert stored.find_one({"name": "with.handle"})["data"] == {"seq": 1, "items": ["<Handle 7>"]}
    assert backend.stats()["dead_lettered"] == 0
    assert _json.JSON_STATS.get("repr_fallback") == before + 1
    assert any(
        "'with.handle'" in r.getMessage() and "data.items[0]" in r.getMessage()
        for r in caplog.records
    )


def test_dead_letter_of_an_event_whose_repr_fails_keeps_its_name_and_timestamp(
    tmp_path: Path,
) -> None:
    """The description kept with a dead letter names the event and its timestamp even
    when the event's repr raises."""

    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    # Never contacted: the event is refused at send(), before it is queued.
    backend = MongoBackend(uri=f"mongodb://127.0.0.1:{free_port()}/", spool_dir=tmp_path)
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    # BSON documents have string keys only: the int key makes it a dead letter.
    backend.send({"name": "broken.event", "timestamp": when, "data": {1: Bad()}})
    backend.close(0)
    (letter,) = backend.spool.dead_letters()
    assert letter.payload is None and letter.detail is not None
    text = letter.detail
    assert "'broken.event'" in text and "2024, 1, 2, 3, 4, 5" in text and "repr()" in text
