"""``python -m eventtracking spool ...``: status, dead letters, re-drive, purge, replay."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
import django_support
import pytest
from mongo_support import MongoServer

from eventtracking.__main__ import main
from eventtracking._util.escape import escape_for_terminal
from eventtracking.spool import Spool, default_spool_dir

EVENT_TYPE = "org.openedx.analytics.tracking.event.emitted.v1"

STREAM = "mongodb://old-host:27017/app.events"

# pytest finds fixtures by module attribute: this one comes from django_support.
django_env = django_support.django_env


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out)
    return status, out.getvalue()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    """A spool with two pending events and two dead letters (one never encoded)."""
    spool = Spool(tmp_path)
    spool.append(
        STREAM, [bson.encode({"_id": i, "name": "pending", "data": {"seq": i}}) for i in range(2)]
    )
    spool.add_dead_letters(
        STREAM,
        [
            (
                bson.encode({"_id": 7, "name": "refused"}),
                "MongoDB refused the document (code 121)",
                None,
            ),
            (None, "BSON cannot encode the event: TypeError", "{'name': 'unencodable'}"),
        ],
    )
    return spool


def test_a_spool_directory_others_can_write_to_is_refused_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointing a spool command at a shared directory exits 2 with the reason and the fix."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    Spool(shared).append(STREAM, [b"x"])
    shared.chmod(0o777)
    status, out = run("spool", "status", "--spool-dir", str(shared))
    assert (status, out) == (2, "")
    error = capsys.readouterr().err
    assert error.startswith(f"error: The spool directory {shared} is writable by other users")
    assert "Traceback" not in error


def test_the_module_runs_and_lists_its_commands() -> None:
    """`python -m eventtracking --help` works and names the spool command."""
    done = subprocess.run(
        [sys.executable, "-m", "eventtracking", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "spool" in done.stdout


def test_status_of_a_directory_never_spooled_to(tmp_path: Path) -> None:
    """status says so when nothing was ever spooled, and creates nothing."""
    status, text = run("spool", "status", "--spool-dir", str(tmp_path / "none"))
    assert status == 0
    assert "nothing was ever spooled there" in text
    assert not (tmp_path / "none").exists()


def test_status_shows_each_stream(spool: Spool) -> None:
    """status lists pending events and dead letters per stream, as text or JSON."""
    status, text = run("spool", "status", "--spool-dir", str(spool.directory))
    assert status == 0
    assert STREAM in text
    assert "pending: 2 (0 being delivered)" in text
    assert "dead letters: 2" in text
    status, text = run("spool", "status", "--spool-dir", str(spool.directory), "--json")
    counts = json.loads(text)["streams"][STREAM]
    assert (counts["pending"], counts["dead_letters"]) == (2, 2)


def test_dead_letters_are_listed_with_reason_and_document(spool: Spool) -> None:
    """The listing shows each letter's id, reason and decoded document; JSON too."""
    status, text = run("spool", "dead-letters", "--spool-dir", str(spool.directory))
    assert status == 0
    first, second = spool.dead_letters()
    assert f"#{first.id} " in text and f"#{second.id} " in text
    assert "reason: MongoDB refused the document (code 121)" in text
    assert '"name": "refused"' in text
    assert "(cannot be moved back: never encoded)" in text
    status, text = run("spool", "dead-letters", "--spool-dir", str(spool.directory), "--json")
    rows = json.loads(text)
    assert [row["document"] for row in rows] == [
        {"_id": 7, "name": "refused"},
        "{'name': 'unencodable'}",
    ]


def test_redrive_moves_letters_back_and_says_which_cannot_move(spool: Spool) -> None:
    """redrive with no --id re-queues every encodable letter and reports the one it cannot
    move."""
    status, text = run("spool", "redrive", "--spool-dir", str(spool.directory))
    assert status == 0
    assert "1 dead letter(s) moved back to be delivered" in text
    assert "1 could not be moved back" in text
    assert spool.pending_count(STREAM) == 3
    assert [letter.reason for letter in spool.dead_letters()] == [
        "BSON cannot encode the event: TypeError"
    ]


def test_redrive_takes_ids(spool: Spool) -> None:
    """redrive --id moves only the chosen letter."""
    first, second = spool.dead_letters()
    where = ("--spool-dir", str(spool.directory))
    status, text = run("spool", "redrive", *where, "--id", str(first.id))
    assert (status, text) == (
        0,
        f"{spool.directory}: 1 dead letter(s) moved back to be delivered\n",
    )
    assert spool.dead_letters() == [second]


def test_purge_deletes_the_selected_letters_and_needs_to_be_told_what(spool: Spool) -> None:
    """purge --dead-letters --id deletes one letter; purge without saying what deletes
    nothing and exits 2."""
    first, second = spool.dead_letters()
    where = ("--spool-dir", str(spool.directory))
    status, text = run("spool", "purge", *where, "--dead-letters", "--id", str(first.id))
    assert (status, text) == (0, f"{spool.directory}: purged 1 dead letter(s)\n")
    assert spool.dead_letters() == [second]
    status, text = run("spool", "purge", *where)
    assert (status, text) == (2, "Say what to purge: --dead-letters, --pending, or both.\n")
    status, text = run("spool", "purge", *where, "--id", str(second.id))
    assert (status, text) == (2, "--id chooses dead letters: add --dead-letters.\n")
    assert spool.dead_letters() == [second]


def test_purge_pending_needs_confirmation(spool: Spool) -> None:
    """purge --pending refuses without --yes, saying how many events it would delete, and
    deletes them with it."""
    where = ("--spool-dir", str(spool.directory))
    status, text = run("spool", "purge", *where, "--pending")
    assert status == 2
    assert text.startswith("--pending deletes 2 event(s) that were never delivered")
    assert spool.pending_count(STREAM) == 2
    status, text = run("spool", "purge", *where, "--pending", "--yes")
    assert (status, text) == (0, f"{spool.directory}: purged 2 pending event(s)\n")
    assert spool.pending_count(STREAM) == 0


def test_both_front_ends_have_the_same_verbs_and_options(django_env: None) -> None:
    """`python -m eventtracking spool` and `manage.py eventtracking_spool` take the same
    verbs, and each verb the same options, apart from how each finds the spool."""
    import argparse

    from django.core.management import load_command_class

    from eventtracking.__main__ import build_parser

    def verbs(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
        (actions,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return {
            name: {
                option
                for action in sub._actions
                for option in action.option_strings
                if action.help != argparse.SUPPRESS
            }
            for name, sub in actions.choices.items()
        }

    (spool_command,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    cli = verbs(spool_command.choices["spool"])
    django = verbs(
        load_command_class("eventtracking.django", "eventtracking_spool").create_parser(
            "manage.py", "eventtracking_spool"
        )
    )
    assert list(cli) == list(django) == ["status", "dead-letters", "redrive", "replay", "purge"]
    own = {"cli": {"--spool-dir", "--stream"}, "django": {"--backend"}}
    replay_target = {"--uri", "--database", "--collection"}
    for verb in cli:
        extra = replay_target if verb == "replay" else set()
        assert cli[verb] - own["cli"] - extra == django[verb] - own["django"], verb


def test_replay_delivers_a_stream_to_mongodb(
    spool: Spool, mongo: MongoServer, collection_name: str
) -> None:
    """replay sends the pending events of a stream to the given server, and says so."""
    status, text = run(
        "spool", "replay", "--spool-dir", str(spool.directory), "--stream", STREAM,
        "--uri", mongo.uri, "--database", "cli", "--collection", collection_name,
    )  # fmt: skip
    assert status == 0, text
    assert (
        f"Stream {STREAM}: replayed 2 event(s) to MongoDB, 0 new dead letter(s), 0 still pending\n"
        in text
    )
    stored: Any = mongo.client()["cli"][collection_name]
    assert sorted(doc["data"]["seq"] for doc in stored.find()) == [0, 1]


def test_replay_fails_visibly_when_the_server_is_unreachable(spool: Spool) -> None:
    """replay exits 1 with the last error when it cannot finish; the events stay spooled."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, text = run(
        "spool", "replay", "--spool-dir", str(spool.directory), "--stream", STREAM,
        "--uri", f"mongodb://127.0.0.1:{port}/", "--timeout", "0.5",
    )  # fmt: skip
    assert status == 1
    assert "not finished within 0.5 s" in text
    assert spool.pending_count(STREAM) == 2


def test_status_without_spool_dir_says_where_it_looked_and_how_to_find_the_sites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --spool-dir, status names the default directory it read and says how to
    reach a site's spool kept elsewhere (--spool-dir, or manage.py with the settings)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    Spool(tmp_path / "site").append(STREAM, [b"x"] * 50)
    status, text = run("spool", "status")
    assert status == 0
    assert str(default_spool_dir()) in text
    assert "--spool-dir" in text
    assert "manage.py eventtracking_spool status" in text


HOSTILE = "celery:evil\x1b]0;owned\x07\x1b[2J\nforged line"


def test_status_and_dead_letters_print_hostile_names_escaped(tmp_path: Path) -> None:
    """A stream name or a reason holding escape codes or newlines (written by whoever
    could write to the broker) is printed escaped: nothing reaches the terminal raw and
    no line of the output can be forged."""
    spool = Spool(tmp_path)
    spool.append(HOSTILE, [b"x"])
    spool.add_dead_letters(HOSTILE, [(b"y", f"refused: {HOSTILE}", None)])
    for verb in ("status", "dead-letters"):
        status, text = run("spool", verb, "--spool-dir", str(tmp_path))
        assert status == 0
        assert "\x1b" not in text and "\x07" not in text, verb
        assert not any(line.startswith("forged") for line in text.splitlines()), verb
        assert escape_for_terminal(HOSTILE) in text, verb


@pytest.mark.parametrize("stream", ["celery:default", f"eventbus:{EVENT_TYPE}"])
def test_replay_of_a_celery_or_bus_stream_points_to_manage_py(tmp_path: Path, stream: str) -> None:
    """Outside Django the broker and the bus are unknown: replay of their streams stops
    at once (even with a MongoDB URI), names the command that can replay them, and
    leaves the events spooled."""
    spool = Spool(tmp_path)
    spool.append(stream, [b'{"not": "bson"}'])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, text = run(
        "spool", "replay", "--spool-dir", str(tmp_path), "--stream", stream,
        "--uri", f"mongodb://127.0.0.1:{port}/", "--timeout", "5",
    )  # fmt: skip
    assert status == 2, text
    assert "manage.py eventtracking_spool replay" in text
    assert "not finished" not in text
    assert spool.pending_count(stream) == 1


def test_replay_without_uri_lists_what_is_pending_and_how_to_replay_it(spool: Spool) -> None:
    """Without --uri, replay says what it needs and which streams hold pending events."""
    status, text = run("spool", "replay", "--spool-dir", str(spool.directory))
    assert status == 2
    assert "needs --uri" in text
    assert f"  {STREAM}: 2\n" in text
    assert spool.pending_count(STREAM) == 2


def test_replay_shows_progress_on_a_terminal_only(
    spool: Spool, mongo: MongoServer, collection_name: str
) -> None:
    """On a terminal (a pty here), replay draws a progress line with the count, the rate
    and the time left, ended before the summary; piped output has none of it."""
    import os
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "eventtracking", "spool", "replay",
            "--spool-dir", str(spool.directory), "--stream", STREAM,
            "--uri", mongo.uri, "--database", "cli", "--collection", collection_name,
        ],
        stdout=follower,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    screen = b"".join(chunks).decode()
    assert f"\rStream {STREAM}: 2 of 2 replayed, " in screen
    assert "/s, 0 s left" in screen
    assert screen.rstrip().endswith("0 still pending")

    spool.append(STREAM, [bson.encode({"_id": 9, "name": "pending", "data": {"seq": 9}})])
    status, text = run(
        "spool", "replay", "--spool-dir", str(spool.directory), "--stream", STREAM,
        "--uri", mongo.uri, "--database", "cli", "--collection", collection_name,
    )  # fmt: skip
    assert status == 0
    assert "\r" not in text and " of 1 replayed" not in text


WITHOUT_PYMONGO = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"pymongo", "bson"}:
            raise ImportError(f"{name} is blocked by the test")
        return None

sys.meta_path.insert(0, Block())
from eventtracking.__main__ import main
from eventtracking.spool import Spool

Spool(sys.argv[1]).append(sys.argv[2], [b"x"])
status = main(["spool", "replay", "--spool-dir", sys.argv[1], "--stream", sys.argv[2],
               "--uri", "mongodb://127.0.0.1:1/", "--timeout", "5"])
print("exit", status)
"""


@pytest.mark.parametrize("stream", ["celery:default", STREAM])
def test_replay_without_pymongo_says_what_to_do(tmp_path: Path, stream: str) -> None:
    """Without pymongo, replay prints a message instead of a traceback: for a MongoDB
    stream it names the extra to install, for a Celery stream the command to use."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYMONGO, str(tmp_path), stream],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.endswith("exit 2\n"), done.stdout
    expected = (
        "manage.py eventtracking_spool replay"
        if stream.startswith("celery:")
        else "pip install 'event-tracking[mongo]'"
    )
    assert expected in done.stdout


def test_replay_of_a_stream_that_is_not_bson_stops_at_the_first_attempt(
    tmp_path: Path, mongo: MongoServer, collection_name: str
) -> None:
    """A stream under a name of its own that another kind of backend spooled (not
    BSON) is not retried until the timeout: replay stops, says so, and points to
    manage.py; the events stay spooled."""
    spool = Spool(tmp_path)
    spool.append("site-events", [b'{"entry": "from a Celery router"}'])
    status, text = run(
        "spool", "replay", "--spool-dir", str(tmp_path), "--stream", "site-events",
        "--uri", mongo.uri, "--collection", collection_name, "--timeout", "60",
    )  # fmt: skip
    assert status == 2, text
    assert "Stream site-events does not hold MongoDB documents (InvalidBSON" in text
    assert "manage.py eventtracking_spool replay" in text
    assert "not finished" not in text
    assert spool.pending_count("site-events") == 1


def test_dead_letters_of_a_celery_stream_show_their_event(tmp_path: Path) -> None:
    """A dead letter of a Celery stream (JSON text, not BSON) is shown with its event, in
    the listing and in --json, not as a count of bytes."""
    entry = {"backend": "event_transformer", "event": {"name": "problem_check"}}
    spool = Spool(tmp_path)
    spool.add_dead_letters("celery:event_transformer", [(json.dumps(entry).encode(), "why", None)])
    status, text = run("spool", "dead-letters", "--spool-dir", str(tmp_path))
    assert status == 0
    assert f"  event: {json.dumps(entry)}\n" in text
    status, text = run("spool", "dead-letters", "--spool-dir", str(tmp_path), "--json")
    assert json.loads(text)[0]["document"] == entry
