"""A durable local spool: events waiting for their backend, and events it refused.

Backends that deliver in the background (see :mod:`eventtracking.delivery`) write here
what they cannot deliver yet: events accepted while the server is unreachable, events
that overflowed the in-memory queue, events left at exit and, with ``durable=True``,
every event before ``send()`` returns. Documents the server refused for good go to the
dead-letter table, with the reason, until an operator re-drives or purges them.

Why SQLite in WAL mode: see :ref:`spool`. ``BEGIN IMMEDIATE`` takes the write lock
before a transaction reads, which is what makes claiming rows safe between processes.

Rows belong to a *stream*, a string naming one destination (a Mongo backend uses its
servers, database and collection), so several backends can share one directory.

Claiming protocol, which keeps every row delivered once and none left behind:

1. :meth:`Spool.claim` marks the oldest unclaimed rows of a stream with a token naming
   this host and process, in one ``BEGIN IMMEDIATE`` transaction;
2. after delivering them, :meth:`Spool.ack` deletes the rows (moving the refused ones
   to the dead-letter table) or :meth:`Spool.release` hands them back;
3. a claim whose owner died is taken back: at once when the owner was a process of
   this host that no longer exists, otherwise once the claim is older than ``lease``.

Every statement of that loop finds its rows through the ``(stream, claim, id)`` index,
so a batch costs the same however many rows wait (``tests/test_spool.py`` checks the
query plans, in files of every schema version). What protects the spool is described in
:ref:`spool` and the sections after it: private files (else :class:`UnsafeSpoolError`),
a corrupt file moved aside, the ``max_bytes`` cap (the oldest dead letters are evicted
first, and old ones expire), and the disk reserve.

Where the parts live (``_db``, ``_sqlite``, ``_files``, ``_reserve``): see
``docs/design.rst``, section 8.

Why one module: it is one class, Spool, one API over both tables: pending rows and dead
letters share the size cap, the write transaction and the recovery around every method,
and :meth:`Spool.ack` and :meth:`Spool.redrive` move rows from one table to the other.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from eventtracking._util.options import check_count, check_seconds
from eventtracking._util.stats import Counters
from eventtracking.spool._db import FileReplaced, SpoolDatabase
from eventtracking.spool._files import UnsafeSpoolError, check_directory, check_file
from eventtracking.spool._reserve import DiskReserve
from eventtracking.spool._sqlite import is_full

# Raised from the helper module, documented and caught as part of this one.
UnsafeSpoolError.__module__ = __name__

__all__ = [
    "DEFAULT_DEAD_LETTER_MAX_AGE",
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

#: Seconds a dead letter is kept before it is deleted (and counted): 30 days.
DEFAULT_DEAD_LETTER_MAX_AGE = 30 * 24 * 3600.0

# Seconds between two looks for expired dead letters (a scan of the table).
_EXPIRY_INTERVAL = 60.0
# Dead letters looked at per round of eviction, and rounds before refusing.
_EVICT_BATCH = 1000
_EVICT_ROUNDS = 4

#: Disk kept back for draining (see :mod:`eventtracking.spool._reserve`): twice what
#: the write-ahead log grows to between two checkpoints of SQLite's default settings.
DEFAULT_RESERVE_BYTES = 8 << 20

# Bytes a row takes beyond its payload, for the size cap: the stream name twice (in
# the row and in its index entry), the row id, the time and SQLite's record headers.
_ROW_OVERHEAD = 48

_HOST = socket.gethostname()

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


def _recovering(
    *, drains: bool = False
) -> Callable[[Callable[Concatenate[Spool, _P], _T]], Callable[Concatenate[Spool, _P], _T]]:
    """Run a :class:`Spool` method again when its file went away under it.

    That is: the file was moved aside by another thread or process (the method runs
    again on the fresh file), or SQLite found it corrupt (it is moved aside first). A
    method that ``drains`` the spool (or tells the delivery whether to) also runs again
    after a full disk made it give back the disk reserve. See
    :meth:`eventtracking.spool._db.SpoolDatabase.recover`.
    """

    def decorate(
        method: Callable[Concatenate[Spool, _P], _T],
    ) -> Callable[Concatenate[Spool, _P], _T]:
        @functools.wraps(method)
        def run(self: Spool, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
            attempt = 1
            while True:
                try:
                    return method(self, *args, **kwargs)
                except (FileReplaced, sqlite3.DatabaseError) as exc:
                    self._db.recover(exc, attempt=attempt, drains=drains)
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
        dead_letter_max_age: float | None = DEFAULT_DEAD_LETTER_MAX_AGE,
    ) -> None:
        check_seconds("lease", lease)
        check_count("max_bytes", max_bytes, unit="bytes", or_none="or None for no limit")
        check_count("reserve_bytes", reserve_bytes, minimum=0, unit="bytes; 0 keeps no reserve")
        keep = "or None to keep dead letters until purged"
        check_seconds("dead_letter_max_age", dead_letter_max_age, or_none=keep)
        self.dead_letter_max_age = dead_letter_max_age
        self._next_expiry = 0.0
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILENAME
        self.lease = lease
        self.max_bytes = max_bytes
        self._reserve = DiskReserve(self.directory / RESERVE_FILENAME, reserve_bytes)
        self._counters = Counters(
            "moved_aside",
            "reserve_released",
            "dead_letters_evicted",
            "dead_letters_expired",
            groups=("refused",),
        )
        self._db = SpoolDatabase(self.directory, self.path, self._reserve, self._counters)

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
        for path in self._db.files():
            check_file(path)

    def stats(self) -> dict[str, Any]:
        """Counters of this process: ``refused`` rows by reason (``max_bytes``, ``disk``),
        ``moved_aside`` corrupt files, ``reserve_released`` times the disk reserve was
        given back, ``dead_letters_evicted`` (deleted to make room) and
        ``dead_letters_expired`` (older than ``dead_letter_max_age``)."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Close this process's connections. The spool reopens itself if used again."""
        self._db.close()

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database if it holds over 4 MiB, and take
        over checkpoints for this process: from now on this thread takes them after its
        own writes, and other threads' writes take none unless it stops calling.

        Delivery threads call this between batches, so that the disk sync a checkpoint
        costs never falls on an application thread that spools. It never waits for
        other connections (a passive checkpoint) and never raises: a failure is logged
        and the next call tries again. Returns whether a checkpoint ran.
        """
        return self._db.checkpoint()

    # -- what may be added --------------------------------------------------------------

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
    ) -> int:
        """Refuse ``rows`` of ``incoming`` bytes that would take the database over max_bytes.

        ``file_size`` is the size of the database file, from the write transaction.
        The oldest dead letters are deleted first to make room; returns how many (to be
        counted once the transaction commits: a refusal rolls the deletion back).
        """
        if self.max_bytes is None:
            return 0
        # A cheap bound first: the pages in use never exceed the database file plus its
        # write-ahead log, which holds every page the file does not have yet.
        if file_size + self._db.wal_size() + incoming <= self.max_bytes:
            return 0
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        used = _used_bytes(conn, page_size)
        evicted = 0
        rounds = _EVICT_ROUNDS if incoming <= self.max_bytes else 0
        for _round in range(rounds):
            if used + incoming <= self.max_bytes:
                break
            # A little more than the shortfall: deleted rows free whole pages only.
            freed = _evict_dead_letters(conn, used + incoming - self.max_bytes + 4 * page_size)
            if not freed:
                break
            evicted += freed
            used = _used_bytes(conn, page_size)
        if used + incoming > self.max_bytes:
            why = (
                f"it holds {used} bytes of its limit of {self.max_bytes} "
                "(spool_max_bytes); they are kept until delivery makes room, or raise the limit"
            )
            raise self._refused("max_bytes", rows, why)
        return evicted

    def _expire_dead_letters(self, conn: sqlite3.Connection, now: float) -> int:
        """Delete dead letters older than dead_letter_max_age (at most once a minute)."""
        if self.dead_letter_max_age is None or time.monotonic() < self._next_expiry:
            return 0
        self._next_expiry = time.monotonic() + _EXPIRY_INTERVAL
        cursor = conn.execute(
            "DELETE FROM dead_letters WHERE created < ?", (now - self.dead_letter_max_age,)
        )
        return max(cursor.rowcount, 0)

    def _count_freed(self, evicted: int, expired: int) -> None:
        if evicted:
            self._counters.incr("dead_letters_evicted", amount=evicted)
        if expired:
            self._counters.incr("dead_letters_expired", amount=expired)

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
        incoming = sum(
            len(payload) + 2 * len(stream) + _ROW_OVERHEAD for stream, payload, _ in rows
        )
        sql = "INSERT INTO pending (stream, payload, created) VALUES (?, ?, ?)"
        return self._insert(sql, rows, incoming)

    def _insert(
        self, sql: str, rows: Sequence[tuple[Any, ...]], incoming: int, *, expire: bool = False
    ) -> int:
        """Run ``sql`` for each of ``rows`` (``incoming`` bytes) in one transaction, once
        the disk and the size cap admit them, expiring old dead letters first when
        ``expire`` (the time of the first row is the last item). Raises
        :class:`SpoolFullError`, writing none, for lack of room."""
        if not rows:
            return 0
        conn = self._db.connect(create=True, verify=False)
        assert conn is not None
        self._admit(len(rows), incoming)
        try:
            with self._db.write(conn) as file_size:
                expired = self._expire_dead_letters(conn, rows[0][-1]) if expire else 0
                evicted = self._admit_size(conn, incoming, len(rows), file_size)
                conn.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            if not is_full(exc):
                raise
            raise self._refused("disk", len(rows), f"the disk is full ({exc})") from exc
        self._count_freed(evicted, expired)
        return len(rows)

    # -- consuming ----------------------------------------------------------------------

    @_recovering(drains=True)
    def pending_count(self, stream: str | None = None) -> int:
        """Rows not delivered yet, claimed or not, in ``stream`` or in every stream."""
        conn = self._db.connect(create=False)
        if conn is None:
            return 0
        if stream is None:
            row = conn.execute("SELECT COUNT(*) FROM pending").fetchone()
        else:
            row = conn.execute(
                "SELECT COUNT(*) FROM pending WHERE stream = ?", (stream,)
            ).fetchone()
        return int(row[0])

    def has_pending(self, stream: str) -> bool:
        """Whether ``stream`` holds rows not delivered yet, claimed or not.

        What a delivery asks before each batch: it looks at one index entry, where
        :meth:`pending_count` counts every row of the stream.
        """
        return self.pending_up_to(stream, 1) > 0

    @_recovering(drains=True)
    def pending_up_to(self, stream: str, limit: int) -> int:
        """The rows of ``stream`` not delivered yet, claimed or not, counted up to
        ``limit``: it reads at most ``limit`` index entries, whatever the stream holds."""
        conn = self._db.connect(create=False)
        if conn is None:
            return 0
        rows = conn.execute(
            "SELECT 1 FROM pending WHERE stream = ? LIMIT ?", (stream, max(int(limit), 0))
        ).fetchall()
        return len(rows)

    @_recovering(drains=True)
    def claim(self, stream: str, limit: int) -> Claim | None:
        """Claim up to ``limit`` of the oldest unclaimed rows of ``stream``.

        Returns None when there are none. Claims left by dead owners are taken back
        first (see the module docstring), so their rows are claimed again here.
        """
        check_count("limit", limit)
        conn = self._db.connect(create=False, verify=False)
        if conn is None:
            return None
        token = f"{_HOST}|{os.getpid()}|{self._db.nonce}|{uuid.uuid4().hex[:8]}"
        now = time.time()
        with self._db.write(conn):
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
                    "UPDATE pending SET claim = NULL, claimed_at = NULL "
                    "WHERE stream = ? AND claim = ?",
                    (stream, token),
                )

    @_recovering(drains=True)
    def ack(self, claim: Claim, rejected: Mapping[int, str] | None = None) -> int:
        """Delete the claimed rows; those at the positions in ``rejected`` become dead letters.

        ``rejected`` maps a position in ``claim`` to the reason it was refused. Returns
        how many rows this claim still held: fewer than ``len(claim)`` means another
        consumer took the claim back as stale and will deliver those rows again.
        """
        conn = self._db.connect(create=True, verify=False)
        assert conn is not None
        now = time.time()
        with self._db.write(conn):
            for position, reason in (rejected or {}).items():
                conn.execute(
                    "INSERT INTO dead_letters (stream, payload, detail, reason, created) "
                    "SELECT stream, payload, NULL, ?, ? FROM pending WHERE id = ? AND claim = ?",
                    (reason, now, claim.ids[position], claim.token),
                )
            # The stream leads the index: with it, the delete looks up the claim's rows
            # instead of scanning the table, which made replay quadratic.
            cursor = conn.execute(
                "DELETE FROM pending WHERE stream = ? AND claim = ?", (claim.stream, claim.token)
            )
        return cursor.rowcount

    @_recovering(drains=True)
    def release(self, claim: Claim) -> None:
        """Hand the claimed rows back, undelivered, for the next :meth:`claim`."""
        conn = self._db.connect(create=True, verify=False)
        assert conn is not None
        with self._db.write(conn):
            conn.execute(
                "UPDATE pending SET claim = NULL, claimed_at = NULL WHERE stream = ? AND claim = ?",
                (claim.stream, claim.token),
            )

    @_recovering(drains=True)
    def purge_pending(self, stream: str) -> int:
        """Delete every undelivered row of ``stream``; returns how many. Events are lost."""
        conn = self._db.connect(create=False, verify=False)
        if conn is None:
            return 0
        with self._db.write(conn):
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
        incoming = sum(
            len(payload or b"") + len(detail or "") + len(reason) + 2 * len(stream) + _ROW_OVERHEAD
            for stream, payload, detail, reason, _ in rows
        )
        sql = (
            "INSERT INTO dead_letters (stream, payload, detail, reason, created) "
            "VALUES (?, ?, ?, ?, ?)"
        )
        return self._insert(sql, rows, incoming, expire=True)

    @_recovering()
    def dead_letters(
        self,
        stream: str | None = None,
        *,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first, optionally only of ``stream`` or with these ``ids``."""
        conn = self._db.connect(create=False)
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
        conn = self._db.connect(create=False, verify=False)
        if conn is None:
            return 0
        where, params = _dead_letter_filter(stream, ids, extra="payload IS NOT NULL")
        with self._db.write(conn):
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
        conn = self._db.connect(create=False, verify=False)
        if conn is None:
            return 0
        where, params = _dead_letter_filter(stream, ids)
        with self._db.write(conn):
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
        conn = self._db.connect(create=False)
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
        conn = self._db.connect(create=False)
        if conn is None:
            return None
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def _used_bytes(conn: sqlite3.Connection, page_size: int) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


def _evict_dead_letters(conn: sqlite3.Connection, need: int) -> int:
    """Delete the oldest dead letters holding about ``need`` bytes; returns how many."""
    rows = conn.execute(
        "SELECT id, COALESCE(length(payload), 0) + COALESCE(length(detail), 0) "
        "+ length(reason) + 2 * length(stream) FROM dead_letters ORDER BY id LIMIT ?",
        (_EVICT_BATCH,),
    ).fetchall()
    if not rows:
        return 0
    total = 0
    last = rows[-1][0]
    for row_id, size in rows:
        total += size + _ROW_OVERHEAD
        if total >= need:
            last = row_id
            break
    cursor = conn.execute("DELETE FROM dead_letters WHERE id <= ?", (last,))
    return max(cursor.rowcount, 0)


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
