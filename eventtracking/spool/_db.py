"""The spool file as one process uses it: connections, write transactions, recovery.

:class:`~eventtracking.spool.Spool` says *what* is stored (rows, claims, dead letters);
:class:`SpoolDatabase` keeps the file usable under it:

* **Connections.** One SQLite connection per thread, opened lazily, closed when its
  thread ends; after a fork the child opens its own and never touches the parent's.
* **Writes.** Every write runs in a ``BEGIN IMMEDIATE`` transaction that first checks
  the file is still the one at the spool's path (another process may have moved it
  aside), and writers of this process queue on a lock of their own.
* **Checkpoints.** The write-ahead log is copied into the database by delivery threads,
  between batches, rather than by the application threads that spool.
* **Recovery.** A corrupt file is moved aside and a fresh one started; a full disk
  gives back the disk reserve (see :mod:`eventtracking.spool._reserve`) so that what
  the spool holds can still be delivered.

Why connections are never closed in some cases: SQLite deletes the WAL *by name* when
the last connection to a database closes, so a connection to a file that was moved
aside, or one inherited from the parent process, is kept open for good instead.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

from eventtracking._util.fork import after_fork_in_child
from eventtracking._util.stats import Counters
from eventtracking.spool._files import (
    check_directory,
    check_file,
    create_private_file,
    directory_lock,
    make_private_directory,
)
from eventtracking.spool._reserve import DiskReserve
from eventtracking.spool._sqlite import (
    BUSY_TIMEOUT,
    CHECKPOINT_BYTES,
    identity,
    is_corrupt,
    is_full,
    is_io_error,
    rollback,
    set_up,
    size,
)

__all__ = ["ATTEMPTS", "FileReplaced", "SpoolDatabase"]

# The spool's own logger: operators configure it, and these messages are the spool's.
LOG = logging.getLogger("eventtracking.spool")

#: Attempts of one operation when the file turns out to be corrupt, moved aside by
#: another process, or in need of the disk reserve.
ATTEMPTS = 3

# A delivery thread takes checkpoints once the log holds CHECKPOINT_BYTES; when no
# delivery thread has done so lately, whichever writer finds it this large does. A
# checkpoint inside the append of an emitting thread took 50-230 ms on a busy machine,
# which is why delivery threads take them over.
_FORCED_CHECKPOINT_BYTES = 2 * CHECKPOINT_BYTES
# How recently a delivery thread must have looked for writers to leave checkpoints to it.
_CHECKPOINTER_SEEN = 5.0

# Free bytes under which an I/O error is taken for a full disk.
_NEARLY_FULL = 1 << 20

# SQLite connections opened before a fork must be neither used nor closed in the child:
# closing one can checkpoint and delete the WAL that the parent is still writing. The
# child forgets them here, so that they are never garbage-collected (which closes them).
_INHERITED: list[object] = []

# Connections to a spool file that was moved aside, by this process or another. They
# are never closed either: SQLite deletes the WAL *by name* when the last connection to
# a database closes, and that name now belongs to the fresh spool's WAL.
_ABANDONED: list[object] = []


class FileReplaced(Exception):
    """This thread's connection has a file open that is no longer at the spool's path."""


class SpoolDatabase:
    """The SQLite file at ``path`` in ``directory``, as this process uses it.

    ``reserve`` is the disk reserve beside it; ``counters`` receives ``moved_aside``
    and ``reserve_released``. Safe to share between threads; after a fork the child
    starts over with connections of its own.
    """

    def __init__(
        self, directory: Path, path: Path, reserve: DiskReserve, counters: Counters
    ) -> None:
        self.directory = directory
        self.path = path
        # As strings: the per-write checks stat them, and Path objects cost more there.
        self._path = str(path)
        self._wal_path = f"{self._path}-wal"
        self._reserve = reserve
        self._counters = counters
        self._reset()
        after_fork_in_child(self._after_fork)

    def files(self) -> tuple[Path, ...]:
        """The database file, its write-ahead log and its shared-memory file."""
        return (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))

    def wal_size(self) -> int:
        """The size of the write-ahead log, in bytes (0 without one)."""
        return size(self._wal_path)

    # -- connections ------------------------------------------------------------------

    def _reset(self) -> None:
        self._pid = os.getpid()
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
        #: Names this process's use of the file in claim tokens; new in each process.
        self.nonce = uuid.uuid4().hex[:12]

    def _after_fork(self) -> None:
        _INHERITED.extend(self._connections.values())
        self._reset()

    def connect(self, *, create: bool, verify: bool = True) -> sqlite3.Connection | None:
        """This thread's connection; None when the spool does not exist and ``create`` is false.

        ``verify=False`` skips checking that the connection's file is still the one at the
        path: for writes, which check it in the transaction (see :meth:`write`).
        """
        if self._pid != os.getpid():
            self._after_fork()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            if not verify or identity(self._path) == self._local.ident:
                return conn
            self.forget_connection()  # the file was moved aside: open the one there now
        if not create and not self.path.exists():
            return None
        if create:
            make_private_directory(self.directory)
        else:
            check_directory(self.directory)
        # Under the directory's lock, nobody moves the file aside between the checks,
        # the open and the reading of its identity.
        with directory_lock(self.directory, BUSY_TIMEOUT):
            for path in self.files():
                check_file(path)
            if not self.path.exists():
                if not create:
                    return None
                # Created here, 0600, so that SQLite opens a private file; its -wal and
                # -shm get the same mode from SQLite.
                create_private_file(self.path)
            ident = identity(self.path)
            assert ident is not None
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._adopt(conn, ident)
            try:
                set_up(conn)
            except sqlite3.DatabaseError as exc:
                # A corrupt file keeps its connection for _move_aside, which never closes it.
                corrupt = is_corrupt(exc)
                self.forget_connection(close=not corrupt)
                if corrupt:
                    self._local.corrupt_ident = ident
                raise
            except BaseException:
                self.forget_connection(close=True)
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
            owner, _close_thread_connection, self._connections, conn, self._pid, self.path
        )
        finalizer.atexit = False  # at exit, deliveries still use the spool
        self._local.owner = owner
        self._local.conn = conn
        self._local.ident = ident

    def forget_connection(self, *, close: bool = False) -> None:
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
        """Close this process's connections. They are opened again if used again."""
        if self._pid != os.getpid():
            self._after_fork()
            return
        with self._lock:
            connections, self._connections = self._connections, {}
            self._local = threading.local()
        current = identity(self.path)
        for conn, ident in list(connections.values()):
            if ident != current:
                _ABANDONED.append(conn)  # moved aside: closing would delete the new WAL
                continue
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        connections.clear()

    # -- writing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self, conn: sqlite3.Connection) -> Iterator[int]:
        """A write transaction on this thread's connection, holding the lock from its start.

        Yields the size of the database file. Raises FileReplaced when the file was
        moved aside: that is checked with the write lock held, which the process moving
        it holds too, so a writer that waited for it never commits to the file that left.
        """
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                try:
                    info = os.stat(self._path)
                except FileNotFoundError:
                    raise FileReplaced from None
                if (info.st_dev, info.st_ino) != self._local.ident:
                    raise FileReplaced
                yield info.st_size
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        self._after_write(conn)

    def _after_write(self, conn: sqlite3.Connection) -> None:
        """Checkpoint when this thread takes checkpoints and the log is due for one, or
        when the log has grown large and no thread that takes them was seen lately."""
        now = time.monotonic()
        if getattr(self._local, "checkpointer", False):
            self._checkpointer_seen = now
            if size(self._wal_path) >= CHECKPOINT_BYTES:
                self._checkpoint(conn)
        elif (
            now - self._checkpointer_seen > _CHECKPOINTER_SEEN
            and size(self._wal_path) >= _FORCED_CHECKPOINT_BYTES
        ):
            self._checkpoint(conn)

    def checkpoint(self) -> bool:
        """See :meth:`eventtracking.spool.Spool.checkpoint`."""
        self._local.checkpointer = True
        self._checkpointer_seen = time.monotonic()
        if size(self._wal_path) < CHECKPOINT_BYTES:
            return False
        try:
            conn = self.connect(create=False)
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

    # -- recovery ---------------------------------------------------------------------

    def recover(self, error: Exception, *, attempt: int, drains: bool) -> None:
        """Make the file usable again after ``error``, so that the operation that raised
        it (its ``attempt``-th run) can run again; or raise, when it should not.

        The file was moved aside by another thread or process: this thread's connection
        is dropped, and the next run opens the fresh file. SQLite found it corrupt: it is
        moved aside first. An operation that ``drains`` the spool (or tells the delivery
        whether to) may also run again once a full disk made the disk reserve go back.
        Every statement ran in a transaction that was rolled back, so running the
        operation again is safe. After :data:`ATTEMPTS` runs, the error is raised.
        """
        if isinstance(error, FileReplaced):
            self.forget_connection()
            if attempt >= ATTEMPTS:
                msg = f"the spool file {self.path} was replaced {attempt} times in a row"
                raise sqlite3.OperationalError(msg) from None
            return
        if attempt >= ATTEMPTS or not isinstance(error, sqlite3.DatabaseError):
            raise error
        if is_corrupt(error):
            self._move_aside(error)
        elif not (drains and self._disk_full(error) and self._release_reserve()):
            raise error

    def _move_aside(self, error: sqlite3.DatabaseError) -> None:
        """Rename the corrupt spool file (and its -wal and -shm) so a fresh one starts."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        ident = getattr(self._local, "ident", None) or getattr(self._local, "corrupt_ident", None)
        self._local.corrupt_ident = None
        self.forget_connection()
        if ident is None:
            return
        with directory_lock(self.directory, BUSY_TIMEOUT):
            if identity(self.path) != ident:
                return  # another thread or process moved it already
            # Writers in a transaction on this file finish first; the ones that wait for
            # this lock find the file gone when they get it (see write).
            locked = False
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("BEGIN IMMEDIATE")
                    locked = True
            try:
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
                target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
                os.rename(self.path, target)
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(f"{self.path}{suffix}", f"{target}{suffix}")
            finally:
                if locked and conn is not None:
                    rollback(conn)
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
        if is_full(error):
            return True
        if not is_io_error(error):
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


class _ThreadOwner:
    """Kept in one thread's local storage; collected, with them, when the thread ends."""

    __slots__ = ("__weakref__",)


def _close_thread_connection(
    connections: dict[int, tuple[sqlite3.Connection, tuple[int, int]]],
    conn: sqlite3.Connection,
    pid: int,
    path: Path,
) -> None:
    """Close the connection of a thread that ended, unless close() or a fork took it."""
    entry = connections.pop(id(conn), None)
    if entry is None or pid != os.getpid():
        return  # closed by Spool.close(), or inherited from the parent: never close it
    if identity(path) != entry[1]:
        _ABANDONED.append(conn)  # moved aside: closing would delete the new file's WAL
        return
    with contextlib.suppress(sqlite3.Error):
        conn.close()
