"""The spool's SQLite file: its schema and settings, and what SQLite's errors mean.

Plain functions on a :class:`sqlite3.Connection` or a path, used by
:mod:`eventtracking.spool._db` (connections) and :mod:`eventtracking.spool` (rows).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "BUSY_TIMEOUT",
    "CHECKPOINT_BYTES",
    "identity",
    "is_corrupt",
    "is_full",
    "is_io_error",
    "rollback",
    "set_up",
    "size",
]

# How long a statement waits for another connection's write lock before failing.
# Transactions here last milliseconds; this only absorbs bursts.
BUSY_TIMEOUT = 5.0

# The write-ahead log is copied into the database (a checkpoint, which syncs the disk)
# once it holds this much (SQLite's own default threshold); see _spool_db for who does.
CHECKPOINT_BYTES = 4 << 20
# Once checkpointed, the log is cut back to this size when writing starts over at its
# beginning, so that its file size tells how much it holds.
_WAL_SIZE_LIMIT = CHECKPOINT_BYTES // 2

# SQLite's primary result codes that tell what went wrong.
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26

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


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Put the database in WAL mode, waiting out other connections doing the same.

    WAL is a property of the file, so only the first connection ever changes it. That
    change needs the database to itself, and SQLite reports "database is locked" at once,
    without its busy handler, when another connection is setting it up at that moment:
    retry for as long as any other statement would wait.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
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


def set_up(conn: sqlite3.Connection) -> None:
    """Prepare a new connection: WAL mode, synchronous=NORMAL, and the tables."""
    _enable_wal(conn)
    # NORMAL: a commit survives the death of the process (it is in the WAL, which the OS
    # holds); only a power loss can take the last commits with it.
    conn.execute("PRAGMA synchronous=NORMAL")
    # No checkpoint at commit: the spool takes them (see SpoolDatabase.checkpoint).
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
        rollback(conn)
        raise


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back, if SQLite has not already: after a full disk or a corrupt page it may
    have, and a second ROLLBACK would raise instead of the error that matters."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def identity(path: Path | str) -> tuple[int, int] | None:
    """The (device, inode) of the file at ``path``, None when there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def size(path: str) -> int:
    """The size of the file at ``path``, 0 when there is none."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    return None if code is None else code & 0xFF


def is_corrupt(error: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged or not a database at all."""
    code = _primary_code(error)
    if code is not None:
        return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(error)
    return "malformed" in text or "not a database" in text


def is_full(error: sqlite3.Error) -> bool:
    """Whether SQLite says the disk (or the database's page limit) is full."""
    code = _primary_code(error)
    if code is not None:
        return code == _SQLITE_FULL
    return "database or disk is full" in str(error)


def is_io_error(error: sqlite3.Error) -> bool:
    """Whether SQLite failed to read or write a file (which a full disk can cause)."""
    return _primary_code(error) == _SQLITE_IOERR or "disk I/O error" in str(error)
