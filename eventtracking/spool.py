"""A durable local spool: events waiting for their backend, and events it refused.

Backends that deliver in the background (see :mod:`eventtracking.delivery`) write here
what they cannot deliver yet: events accepted while the server is unreachable, events
that overflowed the in-memory queue, events left at exit and, with ``durable=True``,
every event before ``send()`` returns. Documents the server refused for good go to the
dead-letter table, with the reason, until an operator re-drives or purges them.

Why SQLite in WAL mode: it ships with Python, a committed row survives the death of
the process that wrote it, WAL lets readers run beside the single writer, and one file
can be shared by every process of a host. ``BEGIN IMMEDIATE`` takes the write lock
before a transaction reads, which is what makes claiming rows safe between processes.
The spool directory must be on a local file system: SQLite's locking is unreliable on
network file systems.

Rows belong to a *stream*, a string naming one destination (a Mongo backend uses its
servers, database and collection), so several backends can share one directory.

Claiming protocol, which keeps every row delivered once and none left behind:

1. :meth:`Spool.claim` marks the oldest unclaimed rows of a stream with a token naming
   this host and process, in one ``BEGIN IMMEDIATE`` transaction, so no two consumers
   get the same row;
2. after delivering them, :meth:`Spool.ack` deletes the rows (moving the refused ones
   to the dead-letter table) or :meth:`Spool.release` hands them back;
3. a claim whose owner died is taken back: at once when the owner was a process of
   this host that no longer exists, otherwise once the claim is older than ``lease``.

What protects the spool:

* **Private files.** The directory is created 0700 and the files 0600, whatever the
  umask. A directory that another user owns or can write to, and a spool file that is
  not this user's own or that others can read, are refused with
  :class:`UnsafeSpoolError` (see :mod:`eventtracking._spool_files`).
* **Corruption.** A spool file SQLite finds corrupt is moved aside, renamed
  ``eventtracking-spool.sqlite3.corrupt-<time>-<pid>`` with its ``-wal``, and a fresh
  spool is started; the move is logged as an error and counted in :meth:`Spool.stats`.
  Every process sharing the directory notices the move at its next statement and uses
  the fresh file.
* **Size.** Adding rows is refused with :class:`SpoolFullError` (and counted) when the
  database would hold more than ``max_bytes``, and when the disk is nearly full.
* **Draining a full disk.** The spool never fills the disk itself: it stops adding
  rows while fewer than ``reserve_bytes`` are free. And it keeps a reserve of as many
  bytes beside it, given back when claiming or acknowledging rows finds the disk full
  (filled by something else), so that what the spool holds can always be delivered
  (see :mod:`eventtracking._disk_reserve`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from eventtracking._disk_reserve import DiskReserve
from eventtracking._fork import ForkCheck, after_fork_in_child
from eventtracking._spool_files import (
    UnsafeSpoolError,
    check_directory,
    check_file,
    create_private_file,
    directory_lock,
    make_private_directory,
)
from eventtracking._stats import Counters

# Raised from the helper module, documented and caught as part of this one.
UnsafeSpoolError.__module__ = __name__

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_RESERVE_BYTES",
    "RESERVE_FILENAME",
    "SPOOL_FILENAME",
    "Claim",
    "DeadLetter",
    "Spool",
    "SpoolFullError",
    "UnsafeSpoolError",
    "default_spool_dir",
]

LOG = logging.getLogger(__name__)

#: The file holding the spool, inside the spool directory.
SPOOL_FILENAME = "eventtracking-spool.sqlite3"

#: The file holding the disk reserve, beside the spool file.
RESERVE_FILENAME = SPOOL_FILENAME + "-reserve"

#: Seconds after which another process may take back a claim whose owner it cannot
#: check (an owner on another host, or a reused pid).
DEFAULT_LEASE = 300.0

#: The most the spool database holds before adding rows is refused: 1 GiB, about a
#: million events of 1 KB.
DEFAULT_MAX_BYTES = 1 << 30

#: Disk kept back for draining (see :mod:`eventtracking._disk_reserve`): twice what
#: the write-ahead log grows to between two checkpoints of SQLite's default settings.
DEFAULT_RESERVE_BYTES = 8 << 20

# How long a statement waits for another connection's write lock before failing.
# Transactions here last milliseconds; this only absorbs bursts.
_BUSY_TIMEOUT = 5.0

# Bytes a row takes beyond its payload, for the size cap: the stream name twice (in
# the row and in its index entry), the row id, the time and SQLite's record headers.
_ROW_OVERHEAD = 48

# The write-ahead log is copied into the database (a checkpoint, which syncs the disk)
# by the delivery thread once it holds this much (SQLite's own default threshold)...
_CHECKPOINT_BYTES = 4 << 20
# ...or, when no delivery thread has done so lately, by whichever writer finds it this
# large. A checkpoint inside the append of an emitting thread took 50-230 ms on a busy
# machine, which is why delivery threads take them over.
_FORCED_CHECKPOINT_BYTES = 2 * _CHECKPOINT_BYTES
# How recently a delivery thread must have looked for writers to leave checkpoints to it.
_CHECKPOINTER_SEEN = 5.0
# Once checkpointed, the log is cut back to this size when writing starts over at its
# beginning, so that its file size tells how much it holds.
_WAL_SIZE_LIMIT = _CHECKPOINT_BYTES // 2

# Attempts of one operation when the file turns out to be corrupt, moved aside by
# another process, or in need of the disk reserve.
_ATTEMPTS = 3

# SQLite's primary result codes that tell what went wrong.
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26

# Free bytes under which an I/O error is taken for a full disk.
_NEARLY_FULL = 1 << 20

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    claim TEXT,
    claimed_at REAL
);
CREATE INDEX IF NOT EXISTS pending_by_stream ON pending (stream, claim, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    payload BLOB,
    detail TEXT,
    reason TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_stream ON dead_letters (stream, id);
"""

_HOST = socket.gethostname()

# SQLite connections opened before a fork must be neither used nor closed in the child:
# closing one can checkpoint and delete the WAL that the parent is still writing. The
# child forgets them here, so that they are never garbage-collected (which closes them).
_INHERITED: list[object] = []

# Connections to a spool file that was moved aside, by this process or another. They
# are never closed either: SQLite deletes the WAL *by name* when the last connection to
# a database closes, and that name now belongs to the fresh spool's WAL.
_ABANDONED: list[object] = []

_T = TypeVar("_T")
_P = ParamSpec("_P")


def default_spool_dir() -> Path:
    """The spool directory used when a backend is given none.

    ``$XDG_CACHE_HOME/eventtracking/spool``, or ``~/.cache/eventtracking/spool`` when
    ``XDG_CACHE_HOME`` is not set. Nothing is created until something is spooled.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "eventtracking" / "spool"


@dataclass(frozen=True)
class Claim:
    """Rows of one stream handed to one consumer, oldest first, until acked or released."""

    token: str
    stream: str
    ids: tuple[int, ...]
    payloads: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class DeadLetter:
    """A refused event: its payload (None when it could never be encoded) and why."""

    id: int
    stream: str
    payload: bytes | None
    detail: str | None
    reason: str
    created: float


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Put the database in WAL mode, waiting out other connections doing the same.

    WAL is a property of the file, so only the first connection ever changes it. That
    change needs the database to itself, and SQLite reports "database is locked" at once,
    without its busy handler, when another connection is setting it up at that moment:
    retry for as long as any other statement would wait.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


class SpoolFullError(Exception):
    """The spool refused rows: it holds ``max_bytes`` already, or the disk is full.

    ``reason`` is ``'max_bytes'`` or ``'disk'``, ``rows`` how many rows were refused.
    Every refusal is counted in :meth:`Spool.stats`, under ``refused`` by reason.
    """

    def __init__(self, message: str, *, reason: str, rows: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.rows = rows

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuilt through a helper when unpickled.
        return _spool_full_error, (str(self), self.reason, self.rows)


def _spool_full_error(message: str, reason: str, rows: int) -> SpoolFullError:
    return SpoolFullError(message, reason=reason, rows=rows)


class _FileReplaced(Exception):
    """This thread's connection has a file open that is no longer at the spool's path."""


def _recovering(
    *, drains: bool = False
) -> Callable[[Callable[Concatenate[Spool, _P], _T]], Callable[Concatenate[Spool, _P], _T]]:
    """Run a :class:`Spool` method again when its file went away under it.

    That is: the file was moved aside by another thread or process (the method runs
    again on the fresh file), or SQLite found it corrupt (it is moved aside first). A
    method that ``drains`` the spool (or tells the delivery whether to) also runs again
    after a full disk made it give back the disk reserve. Every statement runs in a
    transaction that was rolled back, so running the method again is safe.
    """

    def decorate(
        method: Callable[Concatenate[Spool, _P], _T],
    ) -> Callable[Concatenate[Spool, _P], _T]:
        @functools.wraps(method)
        def run(self: Spool, *args: _P.args, **kwargs: _P.kwargs) -> _T:
            attempt = 1
            while True:
                try:
                    return method(self, *args, **kwargs)
                except _FileReplaced:
                    self._forget_connection()
                    if attempt >= _ATTEMPTS:
                        msg = f"the spool file {self.path} was replaced {attempt} times in a row"
                        raise sqlite3.OperationalError(msg) from None
                except sqlite3.DatabaseError as exc:
                    if attempt >= _ATTEMPTS:
                        raise
                    if _is_corrupt(exc):
                        self._move_aside(exc)
                    elif not (drains and self._disk_full(exc) and self._release_reserve()):
                        raise
                attempt += 1

        return run

    return decorate


class Spool:
    """The spool stored in ``directory``; safe to share between threads and processes.

    Opening is lazy: nothing touches the disk until the first call that needs to, and
    read-only calls on a spool that was never written return empty results without
    creating it.

    ``max_bytes`` (None for no limit) caps the database: :meth:`append` and
    :meth:`add_dead_letters` refuse rows that would take it over, raising
    :class:`SpoolFullError`. ``reserve_bytes`` is the disk kept back so that a full
    disk never stops draining (0 keeps none).

    Every method may raise :class:`UnsafeSpoolError` when the directory or its files
    could be read or changed by another user, :class:`SpoolFullError` (adding rows
    only), and :class:`sqlite3.Error` (an unwritable directory, a lock wait over five
    seconds); callers on a hot path catch them.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        lease: float = DEFAULT_LEASE,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
    ) -> None:
        if lease <= 0:
            msg = f"lease must be a positive number of seconds, got {lease!r}"
            raise ValueError(msg)
        if max_bytes is not None and not _is_int(max_bytes, minimum=1):
            msg = (
                f"max_bytes must be a positive int (bytes) or None for no limit, got {max_bytes!r}"
            )
            raise ValueError(msg)
        if not _is_int(reserve_bytes, minimum=0):
            msg = (
                "reserve_bytes must be an int >= 0 (bytes; 0 keeps no reserve), got "
                f"{reserve_bytes!r}"
            )
            raise ValueError(msg)
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILENAME
        # As strings: the per-write checks stat them, and Path objects cost more there.
        self._path = str(self.path)
        self._wal_path = f"{self._path}-wal"
        self.lease = lease
        self.max_bytes = max_bytes
        self._reserve = DiskReserve(self.directory / RESERVE_FILENAME, reserve_bytes)
        self._counters = Counters("moved_aside", "reserve_released", groups=("refused",))
        self._reset()
        after_fork_in_child(self._after_fork)

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r})"

    @property
    def reserve_bytes(self) -> int:
        """The disk kept back for draining, in bytes (0: none)."""
        return self._reserve.size

    def check(self) -> None:
        """Raise :class:`UnsafeSpoolError` if the directory or a spool file in it could be
        read or changed by another user. Creates nothing; a missing directory passes."""
        if not self.directory.exists():
            return
        check_directory(self.directory)
        for path in self._files():
            check_file(path)

    def stats(self) -> dict[str, Any]:
        """Counters of this process: ``refused`` rows by reason (``max_bytes``, ``disk``),
        ``moved_aside`` corrupt files, ``reserve_released`` times the disk reserve was
        given back."""
        return self._counters.snapshot()

    # -- connections ------------------------------------------------------------------

    def _files(self) -> tuple[Path, ...]:
        return (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))

    def _reset(self) -> None:
        self._process = ForkCheck()
        self._lock = threading.Lock()
        # Writers of this process queue here rather than in SQLite's busy handler, which
        # sleeps in steps of up to 100 ms: a caller spooling beside the delivery thread
        # waits for that thread's transaction, not for a sleep that outlasts it.
        self._write_lock = threading.RLock()
        self._checkpointer_seen = -_CHECKPOINTER_SEEN
        self._local = threading.local()
        # This process's open connections, by id, with the (device, inode) of the file
        # each has open: one per thread that used the spool, closed when that thread
        # ends (see _ThreadOwner) or by close().
        self._connections: dict[int, tuple[sqlite3.Connection, tuple[int, int]]] = {}
        self._nonce = uuid.uuid4().hex[:12]

    def _after_fork(self) -> None:
        _INHERITED.extend(self._connections.values())
        self._reset()

    def _connect(self, *, create: bool, verify: bool = True) -> sqlite3.Connection | None:
        """This thread's connection; None when the spool does not exist and ``create`` is false.

        ``verify=False`` skips checking that the connection's file is still the one at the
        path: for writes, which check it in the transaction (see :meth:`_write`).
        """
        if self._process.forked():
            self._after_fork()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            if not verify or _identity(self._path) == self._local.ident:
                return conn
            self._forget_connection()  # the file was moved aside: open the one there now
        if not create and not self.path.exists():
            return None
        if create:
            make_private_directory(self.directory)
        else:
            check_directory(self.directory)
        # Under the directory's lock, nobody moves the file aside between the checks,
        # the open and the reading of its identity.
        with directory_lock(self.directory, _BUSY_TIMEOUT):
            for path in self._files():
                check_file(path)
            if not self.path.exists():
                if not create:
                    return None
                # Created here, 0600, so that SQLite opens a private file; its -wal and
                # -shm get the same mode from SQLite.
                create_private_file(self.path)
            ident = _identity(self.path)
            assert ident is not None
            conn = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._adopt(conn, ident)
            try:
                _set_up(conn)
            except sqlite3.DatabaseError as exc:
                # A corrupt file keeps its connection for _move_aside, which never closes it.
                corrupt = _is_corrupt(exc)
                self._forget_connection(close=not corrupt)
                if corrupt:
                    self._local.corrupt_ident = ident
                raise
            except BaseException:
                self._forget_connection(close=True)
                raise
        return conn

    def _adopt(self, conn: sqlite3.Connection, ident: tuple[int, int]) -> None:
        """Make ``conn`` this thread's connection, closed when the thread ends."""
        with self._lock:
            self._connections[id(conn)] = (conn, ident)
        # When this thread ends, its thread-local values go, and the owner's finalizer
        # closes the connection: threads that come and go leave no files open.
        owner = _ThreadOwner()
        finalizer = weakref.finalize(
            owner, _close_thread_connection, self._connections, conn, self._process, self.path
        )
        finalizer.atexit = False  # at exit, deliveries still use the spool
        self._local.owner = owner
        self._local.conn = conn
        self._local.ident = ident

    def _forget_connection(self, *, close: bool = False) -> None:
        """Drop this thread's connection: closed when ``close``, else kept open forever.

        A connection to a file that is no longer at the spool's path must never be
        closed (see ``_ABANDONED``).
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        with self._lock:
            self._connections.pop(id(conn), None)
        self._local.conn = None
        self._local.ident = None
        self._local.owner = None
        if close:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        else:
            _ABANDONED.append(conn)

    def close(self) -> None:
        """Close this process's connections. The spool reopens itself if used again."""
        if self._process.forked():
            self._after_fork()
            return
        with self._lock:
            connections, self._connections = self._connections, {}
            self._local = threading.local()
        current = _identity(self.path)
        for conn, ident in list(connections.values()):
            if ident != current:
                _ABANDONED.append(conn)  # moved aside: closing would delete the new WAL
                continue
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        connections.clear()

    # -- what protects the file -------------------------------------------------------

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[int]:
        """A write transaction on this thread's connection, holding the lock from its start.

        Yields the size of the database file. Raises _FileReplaced when the file was
        moved aside: that is checked with the write lock held, which the process moving
        it holds too, so a writer that waited for it never commits to the file that left.
        """
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                try:
                    info = os.stat(self._path)
                except FileNotFoundError:
                    raise _FileReplaced from None
                if (info.st_dev, info.st_ino) != self._local.ident:
                    raise _FileReplaced
                yield info.st_size
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        self._after_write(conn)

    def _after_write(self, conn: sqlite3.Connection) -> None:
        """Checkpoint when this thread takes checkpoints and the log is due for one, or
        when the log has grown large and no thread that takes them was seen lately."""
        now = time.monotonic()
        if getattr(self._local, "checkpointer", False):
            self._checkpointer_seen = now
            if _size(self._wal_path) >= _CHECKPOINT_BYTES:
                self._checkpoint(conn)
        elif (
            now - self._checkpointer_seen > _CHECKPOINTER_SEEN
            and _size(self._wal_path) >= _FORCED_CHECKPOINT_BYTES
        ):
            self._checkpoint(conn)

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database if it holds over 4 MiB, and take
        over checkpoints for this process: from now on this thread takes them after its
        own writes, and other threads' writes take none unless it stops calling.

        Delivery threads call this between batches, so that the disk sync a checkpoint
        costs never falls on an application thread that spools. It never waits for
        other connections (a passive checkpoint) and never raises: a failure is logged
        and the next call tries again. Returns whether a checkpoint ran.
        """
        self._local.checkpointer = True
        self._checkpointer_seen = time.monotonic()
        if _size(self._wal_path) < _CHECKPOINT_BYTES:
            return False
        try:
            conn = self._connect(create=False)
        except Exception as exc:
            LOG.warning("Checkpoint of the spool %s failed: %s", self.path, exc)
            return False
        return conn is not None and self._checkpoint(conn)

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            LOG.warning("Checkpoint of the spool %s failed: %s", self.path, exc)
            return False
        return True

    def _move_aside(self, error: sqlite3.DatabaseError) -> None:
        """Rename the corrupt spool file (and its -wal and -shm) so a fresh one starts."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        ident = getattr(self._local, "ident", None) or getattr(self._local, "corrupt_ident", None)
        self._local.corrupt_ident = None
        self._forget_connection()
        if ident is None:
            return
        with directory_lock(self.directory, _BUSY_TIMEOUT):
            if _identity(self.path) != ident:
                return  # another thread or process moved it already
            # Writers in a transaction on this file finish first; the ones that wait for
            # this lock find the file gone when they get it (see _write).
            locked = False
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("BEGIN IMMEDIATE")
                    locked = True
            try:
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
                target = self.path.with_name(f"{SPOOL_FILENAME}.corrupt-{stamp}-{os.getpid()}")
                os.rename(self.path, target)
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(f"{self.path}{suffix}", f"{target}{suffix}")
            finally:
                if locked and conn is not None:
                    _rollback(conn)
        self._counters.incr("moved_aside")
        LOG.error(
            "The spool file %s is corrupt (%s): it was moved to %s, and a fresh spool was "
            "started. The events it held were not delivered; SQLite's .recover command "
            "may get them back from the moved file.",
            self.path,
            error,
            target,
        )

    def _disk_full(self, error: sqlite3.Error) -> bool:
        """Whether ``error`` comes from a full disk: SQLite says so, or it failed to grow a
        file (opening needs a -shm file) on a file system that has next to nothing free."""
        if _is_full(error):
            return True
        if _primary_code(error) != _SQLITE_IOERR and "disk I/O error" not in str(error):
            return False
        try:
            usage = os.statvfs(self.directory)
        except (AttributeError, OSError):
            return False
        return usage.f_bavail * usage.f_frsize < _NEARLY_FULL

    def _release_reserve(self) -> bool:
        """Give the disk reserve back because the disk is full; False if there was none."""
        if not self._reserve.release():
            return False
        self._counters.incr("reserve_released")
        LOG.warning(
            "The disk of the spool %s is full: its reserve of %d bytes was given back so "
            "that the spooled events can still be delivered. Nothing new is spooled while "
            "less than that is free; the reserve is made again once %d bytes are free.",
            self.directory,
            self._reserve.size,
            2 * self._reserve.size,
        )
        return True

    def _refused(self, reason: str, rows: int, why: str) -> SpoolFullError:
        self._counters.incr("refused", reason, amount=rows)
        return SpoolFullError(
            f"The spool {self.path} refused {rows} row(s): {why}", reason=reason, rows=rows
        )

    def _admit(self, rows: int, incoming: int) -> None:
        """Refuse new rows that would leave less than the reserve's size free on the disk."""
        if not self._reserve.room_for(incoming):
            why = (
                f"the disk is nearly full: the spool keeps {self._reserve.size} bytes free, "
                "and as much in reserve, to deliver what it holds. Free some space on the "
                f"file system of {self.directory}"
            )
            raise self._refused("disk", rows, why)

    def _admit_size(
        self, conn: sqlite3.Connection, incoming: int, rows: int, file_size: int
    ) -> None:
        """Refuse ``rows`` of ``incoming`` bytes that would take the database over max_bytes.

        ``file_size`` is the size of the database file, from :meth:`_write`.
        """
        if self.max_bytes is None:
            return
        # A cheap bound first: the pages in use never exceed the database file plus its
        # write-ahead log, which holds every page the file does not have yet.
        if file_size + _size(self._wal_path) + incoming <= self.max_bytes:
            return
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        used = (pages - free) * page_size
        if used + incoming > self.max_bytes:
            why = (
                f"it holds {used} bytes of its limit of {self.max_bytes} "
                "(spool_max_bytes); they are kept until delivery makes room, or raise the limit"
            )
            raise self._refused("max_bytes", rows, why)

    # -- producing ----------------------------------------------------------------------

    def append(self, stream: str, payloads: Iterable[bytes]) -> int:
        """Add payloads at the end of ``stream``, in order, in one transaction.

        When this returns, the rows survive the death of this process. Returns how
        many were written. Raises :class:`SpoolFullError`, writing none of them, when
        they would take the spool over ``max_bytes`` or the disk is full.
        """
        now = time.time()
        return self._append([(stream, payload, now) for payload in payloads])

    @_recovering()
    def _append(self, rows: list[tuple[str, bytes, float]]) -> int:
        if not rows:
            return 0
        conn = self._connect(create=True, verify=False)
        assert conn is not None
        incoming = sum(
            len(payload) + 2 * len(stream) + _ROW_OVERHEAD for stream, payload, _ in rows
        )
        self._admit(len(rows), incoming)
        try:
            with self._write(conn) as file_size:
                self._admit_size(conn, incoming, len(rows), file_size)
                conn.executemany(
                    "INSERT INTO pending (stream, payload, created) VALUES (?, ?, ?)", rows
                )
        except sqlite3.DatabaseError as exc:
            if not _is_full(exc):
                raise
            raise self._refused("disk", len(rows), f"the disk is full ({exc})") from exc
        return len(rows)

    # -- consuming ----------------------------------------------------------------------

    @_recovering(drains=True)
    def pending_count(self, stream: str | None = None) -> int:
        """Rows not delivered yet, claimed or not, in ``stream`` or in every stream."""
        conn = self._connect(create=False)
        if conn is None:
            return 0
        if stream is None:
            row = conn.execute("SELECT COUNT(*) FROM pending").fetchone()
        else:
            row = conn.execute(
                "SELECT COUNT(*) FROM pending WHERE stream = ?", (stream,)
            ).fetchone()
        return int(row[0])

    @_recovering(drains=True)
    def claim(self, stream: str, limit: int) -> Claim | None:
        """Claim up to ``limit`` of the oldest unclaimed rows of ``stream``.

        Returns None when there are none. Claims left by dead owners are taken back
        first (see the module docstring), so their rows are claimed again here.
        """
        if limit <= 0:
            msg = f"limit must be a positive int, got {limit!r}"
            raise ValueError(msg)
        conn = self._connect(create=False, verify=False)
        if conn is None:
            return None
        token = f"{_HOST}|{os.getpid()}|{self._nonce}|{uuid.uuid4().hex[:8]}"
        now = time.time()
        with self._write(conn):
            self._take_back_stale_claims(conn, stream, now)
            rows = conn.execute(
                "SELECT id, payload FROM pending WHERE stream = ? AND claim IS NULL "
                "ORDER BY id LIMIT ?",
                (stream, limit),
            ).fetchall()
            if not rows:
                return None
            # The selected rows are exactly the unclaimed ones up to the last id: the
            # write lock held since BEGIN IMMEDIATE keeps anyone else from changing that.
            conn.execute(
                "UPDATE pending SET claim = ?, claimed_at = ? "
                "WHERE stream = ? AND claim IS NULL AND id <= ?",
                (token, now, stream, rows[-1][0]),
            )
        return Claim(
            token=token,
            stream=stream,
            ids=tuple(row[0] for row in rows),
            payloads=tuple(bytes(row[1]) for row in rows),
        )

    def _take_back_stale_claims(self, conn: sqlite3.Connection, stream: str, now: float) -> None:
        owners = conn.execute(
            "SELECT claim, MIN(claimed_at) FROM pending "
            "WHERE stream = ? AND claim IS NOT NULL GROUP BY claim",
            (stream,),
        ).fetchall()
        for token, claimed_at in owners:
            if claimed_at < now - self.lease or _owner_is_gone(token):
                conn.execute(
                    "UPDATE pending SET claim = NULL, claimed_at = NULL WHERE claim = ?",
                    (token,),
                )

    @_recovering(drains=True)
    def ack(self, claim: Claim, rejected: Mapping[int, str] | None = None) -> int:
        """Delete the claimed rows; those at the positions in ``rejected`` become dead letters.

        ``rejected`` maps a position in ``claim`` to the reason it was refused. Returns
        how many rows this claim still held: fewer than ``len(claim)`` means another
        consumer took the claim back as stale and will deliver those rows again.
        """
        conn = self._connect(create=True, verify=False)
        assert conn is not None
        now = time.time()
        with self._write(conn):
            for position, reason in (rejected or {}).items():
                conn.execute(
                    "INSERT INTO dead_letters (stream, payload, detail, reason, created) "
                    "SELECT stream, payload, NULL, ?, ? FROM pending WHERE id = ? AND claim = ?",
                    (reason, now, claim.ids[position], claim.token),
                )
            cursor = conn.execute("DELETE FROM pending WHERE claim = ?", (claim.token,))
        return cursor.rowcount

    @_recovering(drains=True)
    def release(self, claim: Claim) -> None:
        """Hand the claimed rows back, undelivered, for the next :meth:`claim`."""
        conn = self._connect(create=True, verify=False)
        assert conn is not None
        with self._write(conn):
            conn.execute(
                "UPDATE pending SET claim = NULL, claimed_at = NULL WHERE claim = ?",
                (claim.token,),
            )

    @_recovering(drains=True)
    def purge_pending(self, stream: str) -> int:
        """Delete every undelivered row of ``stream``; returns how many. Events are lost."""
        conn = self._connect(create=False, verify=False)
        if conn is None:
            return 0
        with self._write(conn):
            cursor = conn.execute("DELETE FROM pending WHERE stream = ?", (stream,))
        return cursor.rowcount

    # -- dead letters -------------------------------------------------------------------

    def add_dead_letters(
        self, stream: str, entries: Iterable[tuple[bytes | None, str, str | None]]
    ) -> int:
        """Store ``(payload, reason, detail)`` entries as dead letters; returns how many.

        ``payload`` is None for an event that could not be encoded at all; ``detail``
        then describes it for a human. Raises :class:`SpoolFullError`, storing none,
        as :meth:`append` does.
        """
        now = time.time()
        return self._add_dead_letters(
            [(stream, payload, detail, reason, now) for payload, reason, detail in entries]
        )

    @_recovering()
    def _add_dead_letters(
        self, rows: list[tuple[str, bytes | None, str | None, str, float]]
    ) -> int:
        if not rows:
            return 0
        conn = self._connect(create=True, verify=False)
        assert conn is not None
        incoming = sum(
            len(payload or b"") + len(detail or "") + len(reason) + 2 * len(stream) + _ROW_OVERHEAD
            for stream, payload, detail, reason, _ in rows
        )
        self._admit(len(rows), incoming)
        try:
            with self._write(conn) as file_size:
                self._admit_size(conn, incoming, len(rows), file_size)
                conn.executemany(
                    "INSERT INTO dead_letters (stream, payload, detail, reason, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.DatabaseError as exc:
            if not _is_full(exc):
                raise
            raise self._refused("disk", len(rows), f"the disk is full ({exc})") from exc
        return len(rows)

    @_recovering()
    def dead_letters(
        self,
        stream: str | None = None,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first, optionally only of ``stream`` or with these ``ids``."""
        conn = self._connect(create=False)
        if conn is None:
            return []
        where, params = _dead_letter_filter(stream, ids)
        sql = (
            "SELECT id, stream, payload, detail, reason, created "
            f"FROM dead_letters{where} ORDER BY id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [
            DeadLetter(
                id=row[0],
                stream=row[1],
                payload=None if row[2] is None else bytes(row[2]),
                detail=row[3],
                reason=row[4],
                created=row[5],
            )
            for row in conn.execute(sql, params)
        ]

    @_recovering()
    def redrive(self, stream: str | None = None, *, ids: Sequence[int] | None = None) -> int:
        """Move dead letters back to the end of their stream, to be delivered again.

        Only letters with a payload can be re-driven; the others stay where they are.
        Returns how many moved. Selecting nothing (neither ``stream`` nor ``ids``)
        re-drives every letter.
        """
        conn = self._connect(create=False, verify=False)
        if conn is None:
            return 0
        where, params = _dead_letter_filter(stream, ids, extra="payload IS NOT NULL")
        with self._write(conn):
            conn.execute(
                "INSERT INTO pending (stream, payload, created) "
                f"SELECT stream, payload, ? FROM dead_letters{where} ORDER BY id",
                [time.time(), *params],
            )
            cursor = conn.execute(f"DELETE FROM dead_letters{where}", params)
        return cursor.rowcount

    @_recovering(drains=True)
    def purge_dead_letters(
        self, stream: str | None = None, *, ids: Sequence[int] | None = None
    ) -> int:
        """Delete dead letters (all of them when neither filter is given); returns how many."""
        conn = self._connect(create=False, verify=False)
        if conn is None:
            return 0
        where, params = _dead_letter_filter(stream, ids)
        with self._write(conn):
            cursor = conn.execute(f"DELETE FROM dead_letters{where}", params)
        return cursor.rowcount

    # -- status -------------------------------------------------------------------------

    @_recovering()
    def status(self) -> dict[str, Any]:
        """Describe the spool: its path, and per stream the pending, claimed and dead rows.

        ``{'path': str, 'exists': bool, 'streams': {stream: {'pending': int,
        'claimed': int, 'oldest': float | None, 'dead_letters': int}}}``; ``oldest`` is
        the Unix time of the oldest pending row.
        """
        result: dict[str, Any] = {"path": str(self.path), "exists": False, "streams": {}}
        conn = self._connect(create=False)
        if conn is None:
            return result
        result["exists"] = True
        streams: dict[str, dict[str, Any]] = result["streams"]

        def entry(stream: str) -> dict[str, Any]:
            return streams.setdefault(
                stream, {"pending": 0, "claimed": 0, "oldest": None, "dead_letters": 0}
            )

        for stream, count, claimed, oldest in conn.execute(
            "SELECT stream, COUNT(*), COUNT(claim), MIN(created) FROM pending GROUP BY stream"
        ):
            entry(stream).update(pending=count, claimed=claimed, oldest=oldest)
        for stream, count in conn.execute(
            "SELECT stream, COUNT(*) FROM dead_letters GROUP BY stream"
        ):
            entry(stream)["dead_letters"] = count
        return result

    @_recovering()
    def journal_mode(self) -> str | None:
        """The SQLite journal mode of the spool file ('wal'), or None when it does not exist."""
        conn = self._connect(create=False)
        if conn is None:
            return None
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def _set_up(conn: sqlite3.Connection) -> None:
    """Prepare a new connection: WAL mode, synchronous=NORMAL, and the tables."""
    _enable_wal(conn)
    # NORMAL: a commit survives the death of the process (it is in the WAL, which the OS
    # holds); only a power loss can take the last commits with it.
    conn.execute("PRAGMA synchronous=NORMAL")
    # No checkpoint at commit: see checkpoint() and _FORCED_CHECKPOINT_BYTES.
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != _SCHEMA_VERSION:
        with _transaction(conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that holds the lock from its start (``BEGIN IMMEDIATE``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back, if SQLite has not already: after a full disk or a corrupt page it may
    have, and a second ROLLBACK would raise instead of the error that matters."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _identity(path: Path | str) -> tuple[int, int] | None:
    """The (device, inode) of the file at ``path``, None when there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _size(path: str) -> int:
    """The size of the file at ``path``, 0 when there is none."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    return None if code is None else code & 0xFF


def _is_corrupt(error: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged or not a database at all."""
    code = _primary_code(error)
    if code is not None:
        return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(error)
    return "malformed" in text or "not a database" in text


def _is_full(error: sqlite3.Error) -> bool:
    """Whether SQLite says the disk (or the database's page limit) is full."""
    code = _primary_code(error)
    if code is not None:
        return code == _SQLITE_FULL
    return "database or disk is full" in str(error)


def _is_int(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _dead_letter_filter(
    stream: str | None, ids: Sequence[int] | None, extra: str | None = None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if stream is not None:
        clauses.append("stream = ?")
        params.append(stream)
    if ids is not None:
        id_list = [int(i) for i in ids]
        clauses.append(f"id IN ({', '.join('?' * len(id_list))})" if id_list else "0")
        params.extend(id_list)
    if extra:
        clauses.append(extra)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _owner_is_gone(token: str) -> bool:
    """Whether the process that made claim ``token`` is known to be dead.

    Only a process of this host can be checked; a reused pid looks alive, and then
    the lease decides.
    """
    try:
        host, pid_text, _rest = token.split("|", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if host != _HOST:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class _ThreadOwner:
    """Kept in one thread's local storage; collected, with them, when the thread ends."""

    __slots__ = ("__weakref__",)


def _close_thread_connection(
    connections: dict[int, tuple[sqlite3.Connection, tuple[int, int]]],
    conn: sqlite3.Connection,
    process: ForkCheck,
    path: Path,
) -> None:
    """Close the connection of a thread that ended, unless close() or a fork took it."""
    entry = connections.pop(id(conn), None)
    if entry is None or process.forked():
        return  # closed by Spool.close(), or inherited from the parent: never close it
    if _identity(path) != entry[1]:
        _ABANDONED.append(conn)  # moved aside: closing would delete the new file's WAL
        return
    with contextlib.suppress(sqlite3.Error):
        conn.close()
