"""The durable spool: order, claims shared safely between processes, dead letters."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
import pytest

from eventtracking.spool import SPOOL_FILENAME, Spool, default_spool_dir

STREAM = "mongodb://db.example:27017/app.events"


def payloads(start: int, stop: int) -> list[bytes]:
    return [b"event-%d" % i for i in range(start, stop)]


def drain(spool: Spool, stream: str = STREAM, limit: int = 1000) -> list[bytes]:
    """Claim and ack everything of ``stream``; return the payloads in claim order."""
    result: list[bytes] = []
    while (claim := spool.claim(stream, limit)) is not None:
        result.extend(claim.payloads)
        spool.ack(claim)
    return result


def test_rows_are_claimed_oldest_first(tmp_path: Path) -> None:
    """Payloads come back in the order they were appended, across appends and claims."""
    spool = Spool(tmp_path)
    spool.append(STREAM, payloads(0, 3))
    spool.append(STREAM, payloads(3, 5))
    first = spool.claim(STREAM, 3)
    second = spool.claim(STREAM, 3)
    assert first is not None and second is not None
    assert list(first.payloads) == payloads(0, 3)
    assert list(second.payloads) == payloads(3, 5)
    assert spool.claim(STREAM, 3) is None


def test_claimed_rows_go_to_nobody_else_until_released(tmp_path: Path) -> None:
    """A claim hides its rows from other consumers; releasing hands them back unchanged."""
    mine, theirs = Spool(tmp_path), Spool(tmp_path)
    mine.append(STREAM, payloads(0, 4))
    claim = mine.claim(STREAM, 2)
    assert claim is not None
    other = theirs.claim(STREAM, 10)
    assert other is not None and list(other.payloads) == payloads(2, 4)
    theirs.release(other)
    mine.release(claim)
    assert drain(theirs) == payloads(0, 4)


def test_ack_deletes_and_moves_refused_rows_to_dead_letters(tmp_path: Path) -> None:
    """ack() removes the claimed rows; the refused positions become dead letters with reasons."""
    spool = Spool(tmp_path)
    spool.append(STREAM, payloads(0, 4))
    claim = spool.claim(STREAM, 10)
    assert claim is not None
    assert spool.ack(claim, {1: "too large", 3: "validator"}) == 4
    assert spool.pending_count(STREAM) == 0
    letters = spool.dead_letters(STREAM)
    assert [(letter.payload, letter.reason) for letter in letters] == [
        (b"event-1", "too large"),
        (b"event-3", "validator"),
    ]


def test_streams_are_kept_apart(tmp_path: Path) -> None:
    """Rows of one stream are never claimed for another."""
    spool = Spool(tmp_path)
    spool.append("a", [b"for-a"])
    spool.append("b", [b"for-b"])
    assert drain(spool, "a") == [b"for-a"]
    assert drain(spool, "b") == [b"for-b"]


def test_read_only_calls_do_not_create_the_spool(tmp_path: Path) -> None:
    """Looking at a spool that was never written creates no file and finds nothing."""
    spool = Spool(tmp_path / "never")
    assert spool.claim(STREAM, 10) is None
    assert spool.pending_count() == 0
    assert spool.dead_letters() == []
    assert spool.status() == {"path": str(spool.path), "exists": False, "streams": {}}
    assert not (tmp_path / "never").exists()


def test_spool_is_in_wal_mode_in_a_private_directory(tmp_path: Path) -> None:
    """The spool file uses SQLite's WAL journal, in a directory only its owner can read."""
    spool = Spool(tmp_path / "spool")
    spool.append(STREAM, [b"x"])
    assert spool.journal_mode() == "wal"
    assert (tmp_path / "spool" / SPOOL_FILENAME).is_file()
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700


def test_appended_rows_survive_the_writer_being_killed(tmp_path: Path) -> None:
    """Once append() returns, the rows are on disk: a SIGKILL right after loses nothing."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from eventtracking.spool import Spool
        Spool({str(tmp_path)!r}).append({STREAM!r}, [b"a", b"b", b"c"])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert drain(Spool(tmp_path)) == [b"a", b"b", b"c"]


def test_claims_of_a_dead_process_are_taken_back_at_once(tmp_path: Path) -> None:
    """Rows claimed by a process of this host that died are claimed again, without a lease wait."""
    Spool(tmp_path).append(STREAM, payloads(0, 5))
    script = textwrap.dedent(
        f"""
        import os, signal
        from eventtracking.spool import Spool
        claim = Spool({str(tmp_path)!r}).claim({STREAM!r}, 3)
        assert claim is not None and len(claim) == 3
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert Spool(tmp_path).status()["streams"][STREAM]["claimed"] == 3
    assert drain(Spool(tmp_path)) == payloads(0, 5)


def test_claims_of_a_live_owner_wait_for_the_lease(tmp_path: Path) -> None:
    """A live owner keeps its claim; once older than the lease, another consumer takes it."""
    owner = Spool(tmp_path)
    owner.append(STREAM, payloads(0, 2))
    claim = owner.claim(STREAM, 10)
    assert claim is not None
    assert Spool(tmp_path).claim(STREAM, 10) is None
    impatient = Spool(tmp_path, lease=1e-6)
    taken = impatient.claim(STREAM, 10)
    assert taken is not None and list(taken.payloads) == payloads(0, 2)
    impatient.ack(taken)
    # The original owner's ack finds its claim gone: it reports holding nothing.
    assert owner.ack(claim) == 0


def _claim_worker(directory: str, results: multiprocessing.Queue[list[int]]) -> None:
    spool = Spool(directory)
    seen: list[int] = []
    while (claim := spool.claim(STREAM, 7)) is not None:
        seen.extend(int(p.split(b"-")[1]) for p in claim.payloads)
        spool.ack(claim)
    results.put(seen)


def test_processes_claiming_together_get_every_row_once(tmp_path: Path) -> None:
    """Several processes draining one spool at once deliver each row exactly once."""
    Spool(tmp_path).append(STREAM, payloads(0, 600))
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[list[int]] = context.Queue()
    workers = [
        context.Process(target=_claim_worker, args=(str(tmp_path), results)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    seen = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    everything = [i for part in seen for i in part]
    assert sorted(everything) == list(range(600))
    for part in seen:
        assert part == sorted(part)  # each consumer gets rows in order


def test_threads_can_append_at_once(tmp_path: Path) -> None:
    """Appends from several threads all land, each thread's rows in its order."""
    spool = Spool(tmp_path)

    def append(prefix: bytes) -> None:
        for i in range(50):
            spool.append(STREAM, [prefix + b"-%d" % i])

    threads = [threading.Thread(target=append, args=(b"t%d" % n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    rows = drain(spool)
    assert len(rows) == 200
    for n in range(4):
        mine = [row for row in rows if row.startswith(b"t%d-" % n)]
        assert mine == [b"t%d-%d" % (n, i) for i in range(50)]


def test_threads_that_end_leave_no_spool_file_open(tmp_path: Path) -> None:
    """A thread's connection is closed when the thread ends: no files pile up per thread."""
    spool = Spool(tmp_path)
    spool.append(STREAM, [b"main"])

    def open_spool_files() -> int:
        return sum(
            1 for f in psutil.Process().open_files() if Path(f.path).parent == tmp_path
        )

    def append_in_threads(first: int, stop: int) -> None:
        for n in range(first, stop):
            thread = threading.Thread(target=spool.append, args=(STREAM, [b"t%d" % n]))
            thread.start()
            thread.join(60)

    # SQLite may keep one closed connection's descriptor for reuse; what matters is
    # that twenty more threads open nothing more than one did.
    append_in_threads(0, 1)
    after_one = open_spool_files()
    append_in_threads(1, 21)
    assert open_spool_files() == after_one
    assert drain(spool) == [b"main"] + [b"t%d" % n for n in range(21)]


def test_a_forked_child_uses_its_own_connection(tmp_path: Path) -> None:
    """After fork, the child appends and claims through new connections; the parent goes on."""
    spool = Spool(tmp_path)
    spool.append(STREAM, [b"parent-1"])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            spool.append(STREAM, [b"child"])
            claim = spool.claim(STREAM, 1)
            if claim is not None and claim.payloads == (b"parent-1",):
                spool.ack(claim)
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    spool.append(STREAM, [b"parent-2"])
    assert drain(spool) == [b"child", b"parent-2"]


def test_dead_letters_can_be_listed_redriven_and_purged(tmp_path: Path) -> None:
    """Re-driving moves letters with a payload to the end of their stream; purge deletes."""
    spool = Spool(tmp_path)
    spool.append(STREAM, [b"queued"])
    spool.add_dead_letters(
        STREAM,
        [
            (b"refused-1", "validator", None),
            (None, "cannot encode", "{'data': <object>}"),
            (b"refused-2", "too large", None),
        ],
    )
    spool.add_dead_letters("other", [(b"elsewhere", "validator", None)])
    letters = spool.dead_letters(STREAM)
    assert [letter.reason for letter in letters] == ["validator", "cannot encode", "too large"]
    assert letters[1].payload is None and letters[1].detail == "{'data': <object>}"
    assert spool.dead_letters(limit=1) == letters[:1]

    assert spool.redrive(STREAM) == 2
    assert drain(spool) == [b"queued", b"refused-1", b"refused-2"]
    assert [letter.reason for letter in spool.dead_letters()] == ["cannot encode", "validator"]

    other = spool.dead_letters("other")[0]
    assert spool.purge_dead_letters(ids=[other.id]) == 1
    assert spool.purge_dead_letters() == 1
    assert spool.dead_letters() == []


def test_status_counts_pending_claimed_and_dead_rows_per_stream(tmp_path: Path) -> None:
    """status() reports, per stream, pending and claimed rows, the oldest, and dead letters."""
    spool = Spool(tmp_path)
    spool.append(STREAM, payloads(0, 3))
    spool.append("other", [b"x"])
    spool.add_dead_letters("other", [(b"y", "refused", None)])
    assert spool.claim(STREAM, 2) is not None
    status = spool.status()
    assert status["exists"] is True
    mine, other = status["streams"][STREAM], status["streams"]["other"]
    assert (mine["pending"], mine["claimed"], mine["dead_letters"]) == (3, 2, 0)
    assert (other["pending"], other["claimed"], other["dead_letters"]) == (1, 0, 1)
    assert isinstance(mine["oldest"], float)
    assert spool.pending_count() == 4


def test_purge_pending_deletes_one_stream(tmp_path: Path) -> None:
    """purge_pending() removes the undelivered rows of one stream only."""
    spool = Spool(tmp_path)
    spool.append(STREAM, payloads(0, 3))
    spool.append("other", [b"x"])
    assert spool.purge_pending(STREAM) == 3
    assert drain(spool, "other") == [b"x"]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    """A lease or limit that is not positive raises ValueError naming the value."""
    with pytest.raises(ValueError, match="lease must be a positive number of seconds, got 0"):
        Spool(tmp_path, lease=0)
    with pytest.raises(ValueError, match="limit must be a positive int, got 0"):
        Spool(tmp_path).claim(STREAM, 0)


def test_default_directory_follows_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a spool_dir, the spool lives under $XDG_CACHE_HOME, else ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_spool_dir() == tmp_path / "eventtracking" / "spool"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_spool_dir() == tmp_path / "home" / ".cache" / "eventtracking" / "spool"



def test_a_new_spool_waits_for_another_connection_setting_up_the_file(tmp_path: Path) -> None:
    """Opening the spool while another connection holds the still-new file's write lock
    waits for it, as every other statement does, instead of failing at once with
    "database is locked" (SQLite's switch to WAL mode does not wait by itself)."""
    spool = Spool(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    other = sqlite3.connect(spool.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE setting_up (x)")
    releaser = threading.Timer(0.3, other.execute, args=("COMMIT",))
    releaser.start()
    try:
        spool.append(STREAM, [b"after the wait"])
    finally:
        releaser.join(10)
        other.close()
    assert drain(spool) == [b"after the wait"]
