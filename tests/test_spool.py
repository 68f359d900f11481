"""The durable spool: order, claims shared safely between processes, dead letters."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import pytest
from disk_support import run_on_small_disk

from eventtracking.spool import (
    SPOOL_FILENAME,
    Spool,
    SpoolFullError,
    UnsafeSpoolError,
    default_spool_dir,
)

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


def test_has_pending_sees_claimed_and_unclaimed_rows_of_its_stream_only(tmp_path: Path) -> None:
    """has_pending is True while a stream holds rows, claimed ones included, and says
    nothing of other streams; asking creates no spool."""
    spool = Spool(tmp_path / "spool")
    assert spool.has_pending(STREAM) is False
    assert not (tmp_path / "spool").exists()
    spool.append("other", [b"x"])
    assert spool.has_pending(STREAM) is False
    spool.append(STREAM, [b"a"])
    claim = spool.claim(STREAM, 10)
    assert claim is not None
    assert spool.has_pending(STREAM) is True
    spool.ack(claim)
    assert (spool.has_pending(STREAM), spool.has_pending("other")) == (False, True)


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
        return sum(1 for f in psutil.Process().open_files() if Path(f.path).parent == tmp_path)

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
    os.close(os.open(spool.path, os.O_CREAT | os.O_WRONLY, 0o600))  # as a spool creates it
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


# -- private files --------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], ids=["000", "022", "277"])
def test_spool_files_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """The directory is created 0700, and the database, -wal and -shm 0600, under any umask."""
    script = textwrap.dedent(
        f"""
        import json, os, sys
        os.umask({umask})
        from eventtracking.spool import Spool
        spool = Spool({str(tmp_path / "new" / "spool")!r})
        spool.append({STREAM!r}, [b"x"])
        # -wal and -shm exist while a connection is open.
        modes = {{name: os.stat(os.path.join(spool.directory, name)).st_mode & 0o777
                  for name in os.listdir(spool.directory)}}
        modes["."] = os.stat(spool.directory).st_mode & 0o777
        print(json.dumps(modes))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout)
    assert modes.pop(".") == 0o700
    assert {SPOOL_FILENAME, f"{SPOOL_FILENAME}-wal", f"{SPOOL_FILENAME}-shm"} <= set(modes)
    assert {name: oct(mode) for name, mode in modes.items()} == {name: oct(0o600) for name in modes}


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], ids=["000", "022", "277"])
def test_the_default_spool_directorys_parents_are_created_private(
    tmp_path: Path, umask: int
) -> None:
    """The directories created on the way to the default spool directory
    ($XDG_CACHE_HOME/eventtracking/spool) are 0700 too, whatever the umask: under
    umask 0 they were 0777."""
    cache = tmp_path / "home" / "cache"
    script = textwrap.dedent(
        f"""
        import os
        os.umask({umask})
        os.environ["XDG_CACHE_HOME"] = {str(cache)!r}
        from eventtracking.spool import Spool, default_spool_dir
        Spool(default_spool_dir()).append({STREAM!r}, [b"x"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    created = [tmp_path / "home", cache, cache / "eventtracking", cache / "eventtracking" / "spool"]
    modes = {str(path.relative_to(tmp_path)): oct(path.stat().st_mode & 0o777) for path in created}
    assert modes == dict.fromkeys(modes, oct(0o700))


def _foreign_directory(tmp_path: Path) -> Path:
    """A directory owned by another user: chowned when running as root, else one of root's."""
    if os.geteuid() == 0:
        directory = tmp_path / "theirs"
        directory.mkdir(mode=0o700)
        os.chown(directory, _OTHER_UID, _OTHER_UID)
        return directory
    if os.stat("/").st_uid != os.geteuid():
        return Path("/")
    pytest.skip("no directory of another user here: this user owns / and is not root")


_OTHER_UID = 65534  # nobody


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        (0o777, "writable by other users (mode 0777)"),
        (0o1777, "writable by other users (mode 1777)"),  # like /tmp
        (0o770, "writable by its group (mode 0770)"),
    ],
)
def test_a_directory_others_can_write_to_is_refused(tmp_path: Path, mode: int, says: str) -> None:
    """A spool_dir others can write to (a shared or /tmp-like one) is refused with the fix;
    nothing is written there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    spool = Spool(shared)
    with pytest.raises(UnsafeSpoolError) as raised:
        spool.append(STREAM, [b"secret event"])
    message = str(raised.value)
    assert str(shared) in message and says in message
    assert f"chmod go-w {shared}" in message
    assert raised.value.path == shared
    assert os.listdir(shared) == []
    with pytest.raises(UnsafeSpoolError):
        spool.check()
    # A spool file planted there, with forged events, is never read.
    forger = Spool(tmp_path / "forger")
    forger.append(STREAM, [b"forged event"])
    forger.close()
    shutil.copy(forger.path, shared / SPOOL_FILENAME)
    with pytest.raises(UnsafeSpoolError):
        spool.claim(STREAM, 10)


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    """A spool_dir that another user owns is refused, naming both users and the fix."""
    theirs = _foreign_directory(tmp_path)
    spool = Spool(theirs)
    with pytest.raises(UnsafeSpoolError) as raised:
        spool.check()
    message = str(raised.value)
    assert f"The spool directory {theirs} belongs to" in message
    assert "Set spool_dir to a directory of your own" in message
    with pytest.raises(UnsafeSpoolError):
        spool.append(STREAM, [b"secret event"])
    assert not (theirs / SPOOL_FILENAME).exists()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
@pytest.mark.parametrize(
    ("mode", "says"),
    [(0o644, "readable by other users (mode 0644)"), (0o620, "accessible by other users")],
)
def test_a_spool_file_others_can_read_is_refused(
    tmp_path: Path, suffix: str, mode: int, says: str
) -> None:
    """An existing spool file (or its -wal or -shm) that others can read or write is refused
    with `chmod 600`, for reading as for writing; the file is left as it was."""
    Spool(tmp_path).append(STREAM, [b"x"])  # (closed by the GC: -wal and -shm go)
    target = Path(f"{tmp_path / SPOOL_FILENAME}{suffix}")
    target.touch()
    os.chmod(target, mode)
    spool = Spool(tmp_path)
    for operation in (lambda: spool.append(STREAM, [b"y"]), spool.pending_count, spool.check):
        with pytest.raises(UnsafeSpoolError) as raised:
            operation()
        assert f"The spool file {target} is {says}" in str(raised.value)
        assert f"chmod 600 {target}" in str(raised.value)
    assert target.stat().st_mode & 0o777 == mode
    os.chmod(target, 0o600)
    spool.append(STREAM, [b"y"])
    assert drain(spool) == [b"x", b"y"]


def test_a_spool_file_of_another_user_or_a_symlink_is_refused(tmp_path: Path) -> None:
    """A spool file another user owns, or a symbolic link in its place, is refused."""
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    Spool(tmp_path).append(STREAM, [b"x"])
    path = tmp_path / SPOOL_FILENAME
    os.chown(path, _OTHER_UID, _OTHER_UID)
    with pytest.raises(UnsafeSpoolError, match=f"The spool file {path} belongs to .*uid 65534"):
        Spool(tmp_path).pending_count()
    os.chown(path, 0, 0)
    path.rename(tmp_path / "elsewhere.sqlite3")
    path.symlink_to(tmp_path / "elsewhere.sqlite3")
    with pytest.raises(UnsafeSpoolError, match=f"The spool file {path} is a symbolic link"):
        Spool(tmp_path).append(STREAM, [b"y"])


# -- corruption -----------------------------------------------------------------------


def _garble_header(path: Path) -> None:
    with open(path, "r+b") as file:
        file.write(b"not a database!!" * 8)


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _garble_pages(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(4096)  # page 2 onwards: the header stays valid
        file.write(b"\xff" * (size // 2))


@pytest.mark.parametrize("damage", [_garble_header, _truncate, _garble_pages])
def test_a_corrupt_spool_file_is_moved_aside_and_a_fresh_spool_started(
    tmp_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite finding the file corrupt moves it aside (with a logged error and a counter),
    and the spool carries on with a fresh file: later events are kept and delivered."""
    writer = Spool(tmp_path)
    writer.append(STREAM, [b"%04d" % n + b"." * 500 for n in range(2000)])
    writer.close()
    damage(tmp_path / SPOOL_FILENAME)

    spool = Spool(tmp_path)
    with caplog.at_level(logging.ERROR, logger="eventtracking.spool"):
        drain(spool)  # delivers what it can read, until it meets the damage
        spool.append(STREAM, [b"after the damage"])
        assert drain(spool) == [b"after the damage"]
    moved = sorted(tmp_path.glob(f"{SPOOL_FILENAME}.corrupt-*"))
    assert [path.name for path in moved if not path.name.endswith(("-wal", "-shm"))] != []
    assert spool.stats()["moved_aside"] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"The spool file {tmp_path / SPOOL_FILENAME} is corrupt" in errors[0]
    assert str(moved[0]) in errors[0]


def test_another_connection_moves_on_to_the_fresh_file(tmp_path: Path) -> None:
    """A spool with a connection open on a file that another one moved aside writes to the
    fresh file from its next statement, so nothing goes to the file that left."""
    other = Spool(tmp_path)
    other.append(STREAM, [b"before"])  # its connection stays open on the old file
    (tmp_path / SPOOL_FILENAME).rename(tmp_path / "old.sqlite3")
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{tmp_path / SPOOL_FILENAME}{suffix}").rename(tmp_path / f"old.sqlite3{suffix}")
    mover = Spool(tmp_path)
    mover.append(STREAM, [b"fresh"])
    other.append(STREAM, [b"from the other"])
    assert drain(mover) == [b"fresh", b"from the other"]
    old = sqlite3.connect(tmp_path / "old.sqlite3")
    assert old.execute("SELECT payload FROM pending").fetchall() == [(b"before",)]
    old.close()


# -- size and disk --------------------------------------------------------------------


def test_the_size_cap_refuses_what_does_not_fit_and_counts_it(tmp_path: Path) -> None:
    """Past max_bytes, append raises SpoolFullError naming the limit, writes none of the
    batch, and counts the refused rows; delivering makes room again."""
    spool = Spool(tmp_path, max_bytes=256 * 1024)
    accepted: list[bytes] = []
    refused = 0
    for start in range(0, 1000, 10):
        batch = [b"%05d" % n + b"." * 995 for n in range(start, start + 10)]
        try:
            spool.append(STREAM, batch)
        except SpoolFullError as exc:
            assert exc.reason == "max_bytes" and exc.rows == len(batch)
            assert str(spool.path) in str(exc) and "spool_max_bytes" in str(exc)
            refused += len(batch)
        else:
            accepted.extend(batch)
    assert 0 < len(accepted) < 1000
    assert refused == 1000 - len(accepted)
    assert spool.stats()["refused"] == {"max_bytes": refused}
    assert spool.path.stat().st_size <= 256 * 1024 + 16 * 4096
    assert drain(spool) == accepted
    spool.append(STREAM, [b"room again"])
    assert drain(spool) == [b"room again"]


def test_bad_size_options_are_refused(tmp_path: Path) -> None:
    """max_bytes and reserve_bytes that are not sizes raise ValueError naming the value."""
    with pytest.raises(ValueError, match=r"max_bytes must be a positive int .* got 0"):
        Spool(tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match=r"reserve_bytes must be an int >= 0 .* got -1"):
        Spool(tmp_path, reserve_bytes=-1)


_FULL_DISK_SCRIPT = """
import json, os, sys
from pathlib import Path
from eventtracking.spool import Spool

def fill(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, bytes(65536)):
            pass
    except OSError:
        pass
    os.close(fd)

disk = Path(sys.argv[1])
# Other files (logs, say) take 12 of the 32 MiB.
with open(disk / "logs", "wb") as file:
    file.write(bytes(12 << 20))
spool = Spool(disk / "spool")  # the default reserve and limit
accepted, refusal, n = [], None, 0
while refusal is None:  # an outage long enough to fill the disk
    batch = [b"%08d" % (n + i) + b"." * 992 for i in range(50)]
    try:
        spool.append("stream", batch)
    except Exception as exc:
        refusal = f"{type(exc).__name__}: {getattr(exc, 'reason', None)}"
    else:
        accepted.extend(batch)
        n += len(batch)
# The process ends (its WAL goes with its last connection), and the logs take every
# byte the spool left free: a new process must find room to write before it can claim.
spool.close()
fill(disk / "more-logs")
spool = Spool(disk / "spool")
delivered = []
while (claim := spool.claim("stream", 500)) is not None:
    delivered.extend(claim.payloads)
    spool.ack(claim)
try:
    spool.append("stream", [b"while the disk is full"])
    while_full = "accepted"
except Exception as exc:
    while_full = getattr(exc, "reason", type(exc).__name__)
os.unlink(disk / "logs")  # an operator makes room
os.unlink(disk / "more-logs")
spool.append("stream", [b"once there is room"])
last = spool.claim("stream", 10)
print(json.dumps({
    "refusal": refusal,
    "accepted": len(accepted),
    "delivered_in_order": delivered == accepted,
    "while_full": while_full,
    "last": [p.decode() for p in last.payloads] if last else None,
    "stats": spool.stats(),
}))
"""


def test_a_spool_that_filled_the_disk_can_still_be_drained(tmp_path: Path) -> None:
    """On a real full disk (a small tmpfs, filled by the spool and other files), every row the
    spool accepted is claimed and acknowledged; nothing new is accepted until there is room."""
    done = run_on_small_disk(tmp_path, _FULL_DISK_SCRIPT, size="32m")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["refusal"] == "SpoolFullError: disk"
    assert result["accepted"] > 500
    assert result["delivered_in_order"] is True
    assert result["while_full"] == "disk"
    assert result["last"] == ["once there is room"]
    assert result["stats"]["reserve_released"] == 1
    assert result["stats"]["refused"] == {"disk": 1}


def test_the_spool_errors_survive_pickling() -> None:
    """UnsafeSpoolError and SpoolFullError cross process boundaries with their details."""
    unsafe = pickle.loads(pickle.dumps(UnsafeSpoolError(Path("/srv/spool"), "refused")))
    assert (type(unsafe), unsafe.path, str(unsafe)) == (
        UnsafeSpoolError,
        Path("/srv/spool"),
        "refused",
    )
    assert type(unsafe).__module__ == "eventtracking.spool"
    full = pickle.loads(pickle.dumps(SpoolFullError("full", reason="disk", rows=3)))
    assert (type(full), str(full), full.reason, full.rows) == (SpoolFullError, "full", "disk", 3)


def _wal_bytes(spool: Spool) -> int:
    try:
        return os.path.getsize(f"{spool.path}-wal")
    except FileNotFoundError:
        return 0


def test_application_threads_leave_checkpoints_to_the_thread_that_takes_them(
    tmp_path: Path,
) -> None:
    """While a delivery thread has called checkpoint() lately, appends from other threads
    never copy the write-ahead log back (the disk sync would stall an emit); that
    thread's next checkpoint does, and the log is then cut back to a small size."""
    spool = Spool(tmp_path / "spool")
    registered = threading.Event()
    go = threading.Event()
    done = threading.Event()
    outcome: dict[str, object] = {}

    def checkpointer() -> None:
        spool.checkpoint()
        registered.set()
        go.wait(30)
        outcome["ran"] = spool.checkpoint()
        spool.append("s", [b"after"])
        outcome["wal_after"] = _wal_bytes(spool)
        done.set()

    thread = threading.Thread(target=checkpointer)
    thread.start()
    assert registered.wait(30)
    payload = b"x" * 4000
    for _ in range(3_000):  # about 12 MB, past the forced-checkpoint size
        spool.append("s", [payload])
    grown = _wal_bytes(spool)
    go.set()
    assert done.wait(30)
    thread.join(30)
    assert grown > 10_000_000
    assert outcome["ran"] is True
    assert outcome["wal_after"] < 4 << 20
    assert spool.pending_count("s") == 3_001


def test_without_a_checkpointing_thread_writers_keep_the_log_bounded(tmp_path: Path) -> None:
    """A process with no delivery thread (a worker writing dead letters, say) still has its
    write-ahead log copied back once it grows large, by its own writes."""
    spool = Spool(tmp_path / "spool")
    payload = b"x" * 4000
    largest = 0
    for _ in range(5_000):  # about 20 MB in all
        spool.append("s", [payload])
        largest = max(largest, _wal_bytes(spool))
    assert largest < 12 << 20
    assert spool.pending_count("s") == 5_000


# -- dead letters give way and expire ------------------------------------------------


def test_junk_dead_letters_give_way_to_new_rows(tmp_path: Path) -> None:
    """A spool filled with dead letters (as a broker writer can fill it) still takes
    undelivered rows and new dead letters: the oldest letters go, and are counted."""
    spool = Spool(tmp_path / "spool", max_bytes=200_000)
    for _ in range(100):  # 400 KB of letters for a spool of 200 KB
        try:
            spool.add_dead_letters("celery:?", [(b"j" * 4_000, "junk", None)])
        except SpoolFullError:
            break
    assert spool.append("celery:real", [b"r" * 4_000]) == 1
    assert spool.add_dead_letters("celery:real", [(b"d" * 4_000, "real letter", None)]) == 1
    assert spool.stats()["dead_letters_evicted"] >= 2
    assert spool.pending_count("celery:real") == 1
    assert [letter.reason for letter in spool.dead_letters("celery:real")] == ["real letter"]


def test_dead_letters_expire_after_dead_letter_max_age(tmp_path: Path) -> None:
    """A dead letter older than 30 days is deleted when a process next adds letters
    (each looks at most once a minute), and counted as expired; younger ones stay."""
    Spool(tmp_path / "spool").add_dead_letters("s", [(b"old", "old", None)])
    with sqlite3.connect(tmp_path / "spool" / "eventtracking-spool.sqlite3") as conn:
        conn.execute("UPDATE dead_letters SET created = created - 31 * 86400")
    spool = Spool(tmp_path / "spool")
    spool.add_dead_letters("s", [(b"new", "new", None)])
    assert [letter.reason for letter in spool.dead_letters("s")] == ["new"]
    assert spool.stats()["dead_letters_expired"] == 1


# The schema of the spool files that 1.x wrote, as they sit on users' disks: the
# statements below must find their indexes in these files too.
_SCHEMA_V1 = """
CREATE TABLE pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    claim TEXT,
    claimed_at REAL
);
CREATE INDEX pending_by_stream ON pending (stream, claim, id);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    payload BLOB,
    detail TEXT,
    reason TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX dead_letters_by_stream ON dead_letters (stream, id);
PRAGMA user_version = 1;
"""


class _FlakySink:
    """Fails its first batch, then refuses one item and stores the rest."""

    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.failed = False

    def write_batch(self, items: Sequence[bytes]) -> dict[int, str]:
        if not self.failed:
            self.failed = True
            msg = "down for one batch"
            raise ConnectionError(msg)
        refused = {i: "refused" for i, item in enumerate(items) if item == b"event-7"}
        self.stored.extend(item for i, item in enumerate(items) if i not in refused)
        return refused


def _query_plans(path: Path, statements: list[str]) -> dict[str, list[str]]:
    """What EXPLAIN QUERY PLAN says of each statement that reads or writes rows."""
    plans = {}
    conn = sqlite3.connect(path)
    try:
        for sql in statements:
            if sql.split(None, 1)[0].upper() in {"SELECT", "INSERT", "UPDATE", "DELETE"}:
                plans[sql] = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    finally:
        conn.close()
    return plans


@pytest.mark.parametrize("catch_up_batches", [1, 3])
@pytest.mark.parametrize("made_by", ["this version", "1.x"])
def test_replaying_the_spool_never_scans_a_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made_by: str, catch_up_batches: int
) -> None:
    """Every statement a delivery runs on the spool while replaying it (look, claim, take
    back a dead owner's claim, ack with a dead letter, release) finds its rows through an
    index, and none counts the stream's rows: each batch costs the same, however many
    rows wait, in a fresh spool file and in one that 1.x created, and also when batches
    grow with the backlog (``catch_up_batches``), which looks at how many rows wait only
    as far as the next batch's size depends on it."""
    from eventtracking.delivery import BatchDelivery
    from eventtracking.spool._db import SpoolDatabase

    if made_by == "1.x":
        tmp_path.chmod(0o700)
        conn = sqlite3.connect(tmp_path / SPOOL_FILENAME)
        conn.executescript(_SCHEMA_V1)
        conn.close()
        (tmp_path / SPOOL_FILENAME).chmod(0o600)
    Spool(tmp_path).append(STREAM, payloads(0, 20))
    # Rows held by an owner that is gone: the replay takes them back first.
    with contextlib.closing(sqlite3.connect(tmp_path / SPOOL_FILENAME)) as conn, conn:
        conn.execute("UPDATE pending SET claim = 'gone', claimed_at = 0 WHERE id <= 3")

    statements: list[str] = []
    adopt = SpoolDatabase._adopt

    def traced(db: SpoolDatabase, conn: sqlite3.Connection, ident: tuple[int, int]) -> None:
        conn.set_trace_callback(statements.append)
        adopt(db, conn, ident)

    monkeypatch.setattr(SpoolDatabase, "_adopt", traced)
    sink = _FlakySink()
    delivery = BatchDelivery(
        sink,
        name="plans",
        spool=Spool(tmp_path),
        stream=STREAM,
        batch_size=8 if catch_up_batches == 1 else 2,
        backoff_base=0.01,
        catch_up_batches=catch_up_batches,
    )
    try:
        assert delivery.flush(30) is True
    finally:
        delivery.close(5)
    assert sorted(sink.stored) == sorted(p for p in payloads(0, 20) if p != b"event-7")
    assert [d.payload for d in Spool(tmp_path).dead_letters(STREAM)] == [b"event-7"]

    plans = _query_plans(tmp_path / SPOOL_FILENAME, statements)
    kinds = {sql.split(None, 1)[0].upper() for sql in plans}
    assert kinds == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    tables = ("pending", "dead_letters")
    scans = {
        sql: plan
        for sql, plan in plans.items()
        if any(step.startswith(f"SCAN {table}") for step in plan for table in tables)
    }
    assert scans == {}
    assert [sql for sql in plans if "COUNT(" in sql.upper()] == []
