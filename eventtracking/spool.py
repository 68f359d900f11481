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
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_LEASE",
    "SPOOL_FILENAME",
    "Claim",
    "DeadLetter",
    "Spool",
    "default_spool_dir",
]

#: The file holding the spool, inside the spool directory.
SPOOL_FILENAME = "eventtracking-spool.sqlite3"

#: Seconds after which another process may take back a claim whose owner it cannot
#: check (an owner on another host, or a reused pid).
DEFAULT_LEASE = 300.0

# How long a statement waits for another connection's write lock before failing.
# Transactions here last milliseconds; this only absorbs bursts.
_BUSY_TIMEOUT = 5.0

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


class Spool:
    """The spool stored in ``directory``; safe to share between threads and processes.

    Opening is lazy: nothing touches the disk until the first call that needs to, and
    read-only calls on a spool that was never written return empty results without
    creating it. Every method may raise :class:`sqlite3.Error` (disk full, unwritable
    directory, lock wait over five seconds); callers on a hot path catch it.
    """

    def __init__(self, directory: str | os.PathLike[str], *, lease: float = DEFAULT_LEASE) -> None:
        if lease <= 0:
            msg = f"lease must be a positive number of seconds, got {lease!r}"
            raise ValueError(msg)
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILENAME
        self.lease = lease
        self._reset()
        os.register_at_fork(after_in_child=_call_weak(weakref.WeakMethod(self._after_fork)))

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r})"

    # -- connections ------------------------------------------------------------------

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._local = threading.local()
        # This process's open connections, by id: one per thread that used the spool,
        # closed when that thread ends (see _ThreadOwner) or by close().
        self._connections: dict[int, sqlite3.Connection] = {}
        self._nonce = uuid.uuid4().hex[:12]

    def _after_fork(self) -> None:
        _INHERITED.extend(self._connections.values())
        self._reset()

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        """This thread's connection; None when the spool does not exist and ``create`` is false."""
        if self._pid != os.getpid():
            self._after_fork()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if not create and not self.path.exists():
            return None
        if create:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            _enable_wal(conn)
            # NORMAL: a commit survives the death of the process (it is in the WAL, which
            # the OS holds); only a power loss can take the last commits with it.
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != _SCHEMA_VERSION:
                with _transaction(conn):
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._connections[id(conn)] = conn
        # When this thread ends, its thread-local values go, and the owner's finalizer
        # closes the connection: threads that come and go leave no files open.
        owner = _ThreadOwner()
        finalizer = weakref.finalize(
            owner, _close_thread_connection, self._connections, conn, os.getpid()
        )
        finalizer.atexit = False  # at exit, deliveries still use the spool
        self._local.owner = owner
        self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this process's connections. The spool reopens itself if used again."""
        if self._pid != os.getpid():
            self._after_fork()
            return
        with self._lock:
            connections, self._connections = self._connections, {}
            self._local = threading.local()
        for conn in list(connections.values()):
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        connections.clear()

    # -- producing ----------------------------------------------------------------------

    def append(self, stream: str, payloads: Iterable[bytes]) -> int:
        """Add payloads at the end of ``stream``, in order, in one transaction.

        When this returns, the rows survive the death of this process. Returns how
        many were written.
        """
        now = time.time()
        rows = [(stream, payload, now) for payload in payloads]
        if not rows:
            return 0
        conn = self._connect(create=True)
        assert conn is not None
        with _transaction(conn):
            conn.executemany(
                "INSERT INTO pending (stream, payload, created) VALUES (?, ?, ?)", rows
            )
        return len(rows)

    # -- consuming ----------------------------------------------------------------------

    def has_unclaimed(self, stream: str) -> bool:
        """Whether ``stream`` has rows nobody has claimed (a read that takes no lock)."""
        conn = self._connect(create=False)
        if conn is None:
            return False
        row = conn.execute(
            "SELECT 1 FROM pending WHERE stream = ? AND claim IS NULL LIMIT 1", (stream,)
        ).fetchone()
        return row is not None

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

    def claim(self, stream: str, limit: int) -> Claim | None:
        """Claim up to ``limit`` of the oldest unclaimed rows of ``stream``.

        Returns None when there are none. Claims left by dead owners are taken back
        first (see the module docstring), so their rows are claimed again here.
        """
        if limit <= 0:
            msg = f"limit must be a positive int, got {limit!r}"
            raise ValueError(msg)
        conn = self._connect(create=False)
        if conn is None:
            return None
        token = f"{_HOST}|{os.getpid()}|{self._nonce}|{uuid.uuid4().hex[:8]}"
        now = time.time()
        with _transaction(conn):
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

    def ack(self, claim: Claim, rejected: Mapping[int, str] | None = None) -> int:
        """Delete the claimed rows; those at the positions in ``rejected`` become dead letters.

        ``rejected`` maps a position in ``claim`` to the reason it was refused. Returns
        how many rows this claim still held: fewer than ``len(claim)`` means another
        consumer took the claim back as stale and will deliver those rows again.
        """
        conn = self._connect(create=True)
        assert conn is not None
        now = time.time()
        with _transaction(conn):
            for position, reason in (rejected or {}).items():
                conn.execute(
                    "INSERT INTO dead_letters (stream, payload, detail, reason, created) "
                    "SELECT stream, payload, NULL, ?, ? FROM pending WHERE id = ? AND claim = ?",
                    (reason, now, claim.ids[position], claim.token),
                )
            cursor = conn.execute("DELETE FROM pending WHERE claim = ?", (claim.token,))
        return cursor.rowcount

    def release(self, claim: Claim) -> None:
        """Hand the claimed rows back, undelivered, for the next :meth:`claim`."""
        conn = self._connect(create=True)
        assert conn is not None
        with _transaction(conn):
            conn.execute(
                "UPDATE pending SET claim = NULL, claimed_at = NULL WHERE claim = ?",
                (claim.token,),
            )

    def purge_pending(self, stream: str) -> int:
        """Delete every undelivered row of ``stream``; returns how many. Events are lost."""
        conn = self._connect(create=False)
        if conn is None:
            return 0
        with _transaction(conn):
            cursor = conn.execute("DELETE FROM pending WHERE stream = ?", (stream,))
        return cursor.rowcount

    # -- dead letters -------------------------------------------------------------------

    def add_dead_letters(
        self, stream: str, entries: Iterable[tuple[bytes | None, str, str | None]]
    ) -> int:
        """Store ``(payload, reason, detail)`` entries as dead letters; returns how many.

        ``payload`` is None for an event that could not be encoded at all; ``detail``
        then describes it for a human.
        """
        now = time.time()
        rows = [(stream, payload, detail, reason, now) for payload, reason, detail in entries]
        if not rows:
            return 0
        conn = self._connect(create=True)
        assert conn is not None
        with _transaction(conn):
            conn.executemany(
                "INSERT INTO dead_letters (stream, payload, detail, reason, created) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

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

    def redrive(self, stream: str | None = None, *, ids: Sequence[int] | None = None) -> int:
        """Move dead letters back to the end of their stream, to be delivered again.

        Only letters with a payload can be re-driven; the others stay where they are.
        Returns how many moved. Selecting nothing (neither ``stream`` nor ``ids``)
        re-drives every letter.
        """
        conn = self._connect(create=False)
        if conn is None:
            return 0
        where, params = _dead_letter_filter(stream, ids, extra="payload IS NOT NULL")
        with _transaction(conn):
            conn.execute(
                "INSERT INTO pending (stream, payload, created) "
                f"SELECT stream, payload, ? FROM dead_letters{where} ORDER BY id",
                [time.time(), *params],
            )
            cursor = conn.execute(f"DELETE FROM dead_letters{where}", params)
        return cursor.rowcount

    def purge_dead_letters(
        self, stream: str | None = None, *, ids: Sequence[int] | None = None
    ) -> int:
        """Delete dead letters (all of them when neither filter is given); returns how many."""
        conn = self._connect(create=False)
        if conn is None:
            return 0
        where, params = _dead_letter_filter(stream, ids)
        with _transaction(conn):
            cursor = conn.execute(f"DELETE FROM dead_letters{where}", params)
        return cursor.rowcount

    # -- status -------------------------------------------------------------------------

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

    def journal_mode(self) -> str | None:
        """The SQLite journal mode of the spool file ('wal'), or None when it does not exist."""
        conn = self._connect(create=False)
        if conn is None:
            return None
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that holds the lock from its start (``BEGIN IMMEDIATE``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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
    connections: dict[int, sqlite3.Connection], conn: sqlite3.Connection, pid: int
) -> None:
    """Close the connection of a thread that ended, unless close() or a fork took it."""
    if connections.pop(id(conn), None) is None or os.getpid() != pid:
        return  # closed by Spool.close(), or inherited from the parent: never close it
    with contextlib.suppress(sqlite3.Error):
        conn.close()


def _call_weak(method: weakref.WeakMethod[Any]) -> Any:
    """A callable that calls ``method`` while its object is alive, and does nothing after."""

    def call() -> None:
        bound = method()
        if bound is not None:
            bound()

    return call
