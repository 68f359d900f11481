"""The management commands, against the real SecantusDB server of the Mongo fixtures."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django_support
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from eventtracking import tracker

pytestmark = pytest.mark.usefixtures("django_env")

# pytest finds fixtures by module attribute: these come from django_support.
django_env = django_support.django_env
memory = django_support.memory

MONGO = "eventtracking.backends.mongodb.MongoBackend"
MEMORY = "eventtracking.backends.memory.InMemoryBackend"
LOGGER = "eventtracking.backends.logger.LoggerBackend"
ROUTING = "eventtracking.backends.routing.RoutingBackend"


class Failing:
    """A backend that refuses every event."""

    def send(self, event: dict[str, Any]) -> None:
        raise RuntimeError("refused")


class Plain:
    """A backend with send() only: no counters."""

    mutates_events = False

    def send(self, event: dict[str, Any]) -> None:
        """Accept and forget."""


def run(*args: Any) -> str:
    """Run a management command; return what it printed."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def dead_uri() -> str:
    """A loopback URI where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"mongodb://127.0.0.1:{port}/"


@pytest.fixture
def configure(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Register DjangoTrackers built from the given backends; close them all after."""
    built: list[Any] = []

    def make(backends: dict[str, Any]) -> Any:
        from eventtracking.django.django_tracker import override_default_tracker

        with override_settings(EVENT_TRACKING_BACKENDS=backends):
            created = override_default_tracker()
        built.append(created)
        return created

    yield make
    for created in built:
        created.close(0)


def mongo_backend(uri: str, collection: str, spool_dir: Path, stream: str = "t") -> dict[str, Any]:
    """Settings for a MongoBackend writing to ``collection`` with its own spool."""
    return {
        "ENGINE": MONGO,
        "OPTIONS": {
            "uri": uri,
            "collection": collection,
            "spool_dir": str(spool_dir),
            "spool_stream": stream,
            "flush_interval": 0.05,
        },
    }


# -- eventtracking_emit ------------------------------------------------------------------


def test_emit_sends_a_test_event_and_reports_the_counters(memory: Any) -> None:
    """The default event reaches the backend, and the changed counters are printed."""
    output = run("eventtracking_emit")
    (event,) = memory.snapshot()
    assert event["name"] == "eventtracking.test"
    assert event["data"]["source"] == "manage.py eventtracking_emit"
    assert "  memory (InMemoryBackend): written 1\n" in output
    assert "backends.memory.stored: +1" in output
    assert "Delivered: 1 of 1 backend(s) took it." in output


def test_emit_takes_name_and_data(memory: Any) -> None:
    """--name and --data set the event's name and data."""
    run("eventtracking_emit", "--name", "deploy.check", "--data", '{"release": "5.0"}')
    (event,) = memory.snapshot()
    assert (event["name"], event["data"]) == ("deploy.check", {"release": "5.0"})


@pytest.mark.parametrize(("data", "fragment"), [("{oops", "not valid JSON"), ("[1]", "object")])
def test_emit_rejects_bad_data(memory: Any, data: str, fragment: str) -> None:
    """--data must be a JSON object; nothing is emitted otherwise."""
    with pytest.raises(CommandError, match=fragment):
        run("eventtracking_emit", "--data", data)
    assert memory.snapshot() == []


def test_emit_without_tracker_says_how_to_configure_one() -> None:
    """Without a registered tracker the command fails, naming the settings."""
    assert tracker.TRACKERS == {}
    with pytest.raises(CommandError, match="EVENT_TRACKING_ENABLED"):
        run("eventtracking_emit")


def test_emit_fails_when_a_backend_fails(configure: Any) -> None:
    """A failure counter going up makes the command fail."""
    configure({"bad": {"ENGINE": f"{__name__}.Failing"}, "mem": {"ENGINE": MEMORY}})
    with pytest.raises(CommandError, match="not delivered cleanly: failed"):
        run("eventtracking_emit")


def test_emit_stores_the_event_in_mongodb(
    configure: Any, mongo: Any, collection_name: str, tmp_path: Path
) -> None:
    """Against a real server the event is in the collection when the command returns."""
    configure({"mongo": mongo_backend(mongo.uri, collection_name, tmp_path)})
    output = run("eventtracking_emit", "--name", "deploy.check")
    assert "  mongo (MongoBackend): queued 1, written 1\n" in output
    assert "Delivered: 1 of 1 backend(s) took it." in output
    stored = list(mongo.client()["eventtracking"][collection_name].find())
    assert [doc["name"] for doc in stored] == ["deploy.check"]


def test_emit_fails_when_the_flush_times_out(configure: Any, tmp_path: Path) -> None:
    """With MongoDB unreachable the flush does not finish and the command fails; the
    report shows the event queued but not written."""
    configure({"mongo": mongo_backend(dead_uri(), "events", tmp_path)})
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"did not finish within 0\.5 s"):
        call_command("eventtracking_emit", "--timeout", "0.5", stdout=out, stderr=out)
    report = [line for line in out.getvalue().splitlines() if "(MongoBackend)" in line]
    assert len(report) == 1
    assert report[0].startswith("  mongo (MongoBackend): queued 1")
    assert "written" not in report[0]


def test_emit_fails_when_the_event_reaches_no_backend(configure: Any) -> None:
    """A LoggerBackend whose logger is not enabled for INFO takes nothing: the report says
    it dropped the event, and the command fails pointing at W002."""
    import logging

    name = "eventtracking.tests.emit.not_enabled"
    assert not logging.getLogger(name).isEnabledFor(logging.INFO)
    configure({"logger": {"ENGINE": LOGGER, "OPTIONS": {"name": name}}})
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("eventtracking_emit", stdout=out, stderr=out)
    message = str(caught.value)
    assert message.startswith(
        "The event reached no backend: logger (LoggerBackend): dropped 1 (dropped_not_enabled +1)."
    )
    assert "eventtracking.W002" in message
    assert "  logger (LoggerBackend): dropped 1 (dropped_not_enabled +1)\n" in out.getvalue()
    assert "Delivered" not in out.getvalue()


def test_emit_reports_each_backend_of_a_tree(configure: Any) -> None:
    """Backends nested in a router are reported by their dotted path; one that keeps no
    counters and did not fail counts as having taken the event."""
    configure(
        {
            "route": {
                "ENGINE": ROUTING,
                "OPTIONS": {
                    "backends": {
                        "memory": {"ENGINE": MEMORY},
                        "plain": {"ENGINE": f"{__name__}.Plain"},
                    }
                },
            }
        }
    )
    output = run("eventtracking_emit")
    assert "  route (RoutingBackend): passed it on\n" in output
    assert "  route.memory (InMemoryBackend): written 1\n" in output
    assert "  route.plain (Plain): took it (it keeps no counters)\n" in output
    assert "Delivered: 2 of 2 backend(s) took it." in output


def test_emit_fails_when_a_processor_filters_the_event(configure: Any) -> None:
    """An event filtered out by the tracker's processors reaches no backend: failure."""
    whitelist = {
        "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
        "OPTIONS": {"whitelist": ["other.event"]},
    }
    with (
        override_settings(EVENT_TRACKING_PROCESSORS=[whitelist]),
        pytest.raises(
            CommandError,
            match="reached no backend: a processor of the tracker filtered it out",
        ),
    ):
        configure({"memory": {"ENGINE": MEMORY}})
        run("eventtracking_emit")


def test_emit_names_the_backend_that_failed(configure: Any) -> None:
    """A backend that raised is reported as failed, by name, nested or not."""
    configure(
        {
            "route": {
                "ENGINE": ROUTING,
                "OPTIONS": {"backends": {"bad": {"ENGINE": f"{__name__}.Failing"}}},
            },
            "mem": {"ENGINE": MEMORY},
        }
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="not delivered cleanly"):
        call_command("eventtracking_emit", stdout=out, stderr=out)
    assert "  route.bad (Failing): failed 1\n" in out.getvalue()
    assert "  mem (InMemoryBackend): written 1\n" in out.getvalue()


# -- eventtracking_ensure_indexes --------------------------------------------------------


def test_ensure_indexes_creates_them_and_flags_the_legacy_one(
    configure: Any, mongo: Any, collection_name: str, tmp_path: Path
) -> None:
    """The timestamp and name indexes are created; 4.x's index on time is flagged."""
    collection = mongo.client()["eventtracking"][collection_name]
    collection.create_index("time")
    configure({"mongo": mongo_backend(mongo.uri, collection_name, tmp_path)})

    output = run("eventtracking_ensure_indexes")
    indexes = {name: info["key"] for name, info in collection.index_information().items()}
    assert indexes["timestamp_-1"] == [("timestamp", -1)]
    assert indexes["name_1"] == [("name", 1)]
    assert "time_1" in indexes
    assert "remove it with --drop-legacy" in output

    output = run("eventtracking_ensure_indexes", "--drop-legacy")
    assert "dropped time_1" in output
    assert "time_1" not in collection.index_information()


def test_ensure_indexes_needs_a_mongo_backend(memory: Any) -> None:
    """Without a MongoBackend, or with an unknown --backend, the command fails."""
    with pytest.raises(CommandError, match="No MongoBackend is configured"):
        run("eventtracking_ensure_indexes")


def test_ensure_indexes_names_unknown_backends(
    configure: Any, mongo: Any, collection_name: str, tmp_path: Path
) -> None:
    """--backend must name a configured MongoBackend; the message lists them."""
    configure({"mongo": mongo_backend(mongo.uri, collection_name, tmp_path)})
    with pytest.raises(CommandError, match="Unknown backend nope; the MongoBackends are: mongo"):
        run("eventtracking_ensure_indexes", "--backend", "nope")


def test_ensure_indexes_fails_in_time_when_mongodb_is_down(configure: Any, tmp_path: Path) -> None:
    """An unreachable server fails the command within --timeout."""
    configure({"mongo": mongo_backend(dead_uri(), "events", tmp_path)})
    with pytest.raises(CommandError, match="Could not create the indexes of mongo"):
        run("eventtracking_ensure_indexes", "--timeout", "0.5")


# -- eventtracking_spool -----------------------------------------------------------------


def spool_events_while_down(configure: Any, spool_dir: Path, count: int) -> Any:
    """Emit ``count`` events to an unreachable server and close: they end up spooled."""
    down = configure({"mongo": mongo_backend(dead_uri(), "events", spool_dir)})
    for n in range(count):
        down.emit("spooled", {"n": n})
    down.close(0)
    return down


def test_spool_status_shows_pending_events(configure: Any, tmp_path: Path) -> None:
    """status reports the events waiting in the configured backend's spool."""
    spool_events_while_down(configure, tmp_path, 5)
    configure({"mongo": mongo_backend(dead_uri(), "events", tmp_path)})
    output = run("eventtracking_spool", "status")
    assert "mongo: stream t" in output
    assert "pending: 5" in output
    report = json.loads(run("eventtracking_spool", "status", "--json"))
    assert report["mongo"]["pending"] == 5
    assert report["mongo"]["spool"].startswith(str(tmp_path))


def test_spool_replay_delivers_spooled_events(
    configure: Any, mongo: Any, collection_name: str, tmp_path: Path
) -> None:
    """replay stores what waited in the spool once the server is reachable."""
    spool_events_while_down(configure, tmp_path, 5)
    configure({"mongo": mongo_backend(mongo.uri, collection_name, tmp_path)})
    output = run("eventtracking_spool", "replay", "--timeout", "20")
    assert "0 still pending" in output
    stored = mongo.client()["eventtracking"][collection_name].find({"name": "spooled"})
    assert sorted(doc["data"]["n"] for doc in stored) == [0, 1, 2, 3, 4]


def test_spool_dead_letters_listed_redriven_and_purged(
    configure: Any, mongo: Any, collection_name: str, tmp_path: Path
) -> None:
    """Dead letters are listed, re-driven to the server by replay, or purged."""
    import bson

    live = configure({"mongo": mongo_backend(mongo.uri, collection_name, tmp_path)})
    spool = live.get_backend("mongo").spool
    documents = [{"_id": bson.ObjectId(), "name": "refused", "data": {"n": n}} for n in range(3)]
    spool.add_dead_letters(
        "t", [(bson.encode(doc), "refused by a validator", None) for doc in documents]
    )
    ids = [letter.id for letter in spool.dead_letters("t")]

    listing = run("eventtracking_spool", "dead-letters")
    assert listing.count("reason: refused by a validator") == 3
    assert json.loads(run("eventtracking_spool", "dead-letters", "--json"))[0]["document"][
        "name"
    ] == ("refused")

    output = run("eventtracking_spool", "replay", "--dead-letters", "--id", str(ids[0]))
    assert "1 dead letter(s) moved back" in output
    stored = mongo.client()["eventtracking"][collection_name].find({"name": "refused"})
    assert [doc["data"]["n"] for doc in stored] == [0]

    output = run("eventtracking_spool", "purge", "--dead-letters")
    assert "purged 2 dead letter(s)" in output
    assert spool.dead_letters("t") == []


def test_spool_purge_pending_needs_confirmation(configure: Any, tmp_path: Path) -> None:
    """purge --pending refuses without --yes, and deletes the waiting events with it."""
    spool_events_while_down(configure, tmp_path, 3)
    down = configure({"mongo": mongo_backend(dead_uri(), "events", tmp_path)})
    spool = down.get_backend("mongo").spool
    with pytest.raises(CommandError, match="deletes 3 event"):
        run("eventtracking_spool", "purge", "--pending")
    with pytest.raises(CommandError, match="Say what to purge"):
        run("eventtracking_spool", "purge")
    assert spool.pending_count("t") == 3
    assert "purged 3 pending event(s)" in run("eventtracking_spool", "purge", "--pending", "--yes")
    assert spool.pending_count("t") == 0


def test_spool_needs_a_backend_with_a_spool(memory: Any) -> None:
    """With no spooling backend configured the command says so."""
    with pytest.raises(CommandError, match="No backend with a spool is configured"):
        run("eventtracking_spool", "status")


def test_spool_redrive_moves_dead_letters_back(configure: Any, tmp_path: Path) -> None:
    """redrive, the verb of `python -m eventtracking spool` too, moves the chosen dead
    letters (or all) back to pending; replay --id without --dead-letters is refused."""
    import bson

    down = configure({"mongo": mongo_backend(dead_uri(), "events", tmp_path)})
    spool = down.get_backend("mongo").spool
    documents = [{"_id": bson.ObjectId(), "name": "refused", "data": {"n": n}} for n in range(3)]
    spool.add_dead_letters("t", [(bson.encode(doc), "refused", None) for doc in documents])
    first, *_ = spool.dead_letters("t")

    output = run("eventtracking_spool", "redrive", "--id", str(first.id))
    assert output == "mongo: 1 dead letter(s) moved back to be delivered\n"
    assert (spool.pending_count("t"), len(spool.dead_letters("t"))) == (1, 2)
    with pytest.raises(CommandError, match="add --dead-letters"):
        run("eventtracking_spool", "replay", "--id", str(first.id))
    assert run("eventtracking_spool", "redrive") == (
        "mongo: 2 dead letter(s) moved back to be delivered\n"
    )
    assert (spool.pending_count("t"), spool.dead_letters("t")) == (3, [])


@pytest.mark.parametrize("where", ["before", "after"])
def test_spool_takes_djangos_options_after_the_action_word(tmp_path: Path, where: str) -> None:
    """--settings and --pythonpath work after the action word as well as before it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "spool_settings.py").write_text(
        "SECRET_KEY = 'tests-only'\n"
        "INSTALLED_APPS = ['eventtracking.django']\n"
        "EVENT_TRACKING_ENABLED = True\n"
        "EVENT_TRACKING_BACKENDS = {'mongo': {\n"
        "    'ENGINE': 'eventtracking.backends.mongodb.MongoBackend',\n"
        f"    'OPTIONS': {{'uri': {dead_uri()!r}, 'spool_dir': {str(tmp_path)!r},\n"
        "                'spool_stream': 'cli'}}}\n"
    )
    django_options = ["--settings=spool_settings", f"--pythonpath={site}", "-v", "0"]
    command = [sys.executable, "-m", "django", "eventtracking_spool"]
    if where == "before":
        command += [*django_options, "status", "--json"]
    else:
        command += ["status", *django_options, "--json"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(django_support.REPO_DIR)}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mongo"]["stream"] == "cli"


def test_spool_verbs_say_the_same_from_both_front_ends(configure: Any, tmp_path: Path) -> None:
    """dead-letters, redrive, status and purge print the same lines from `manage.py
    eventtracking_spool` and `python -m eventtracking spool`, apart from what each line
    is about: the backend's name, or the stream given with --stream."""
    import re

    import bson

    from eventtracking.__main__ import main

    def cli(*argv: str) -> str:
        out = io.StringIO()
        assert main(["spool", *argv, "--spool-dir", str(tmp_path), "--stream", "t"], out) == 0
        text = re.sub(r"^t: ", "mongo: ", out.getvalue(), flags=re.MULTILINE)
        return re.sub(r"(\+00:00) t\b", r"\1 mongo", text)

    down = configure({"mongo": mongo_backend(dead_uri(), "events", tmp_path)})
    spool = down.get_backend("mongo").spool

    def refuse() -> None:
        document = bson.encode({"_id": 1, "name": "refused"})
        spool.add_dead_letters("t", [(document, "refused", None), (None, "unencodable", "{}")])

    refuse()
    assert cli("dead-letters") == run("eventtracking_spool", "dead-letters")
    for verb in (("redrive",), ("purge", "--dead-letters")):
        spool.purge_dead_letters("t")
        refuse()
        django = run("eventtracking_spool", *verb)
        spool.purge_dead_letters("t")
        refuse()
        assert cli(*verb) == django, verb
    status = run("eventtracking_spool", "status").splitlines()
    assert cli("status").splitlines()[2:] == status[2:4]
