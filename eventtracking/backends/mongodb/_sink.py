"""The writer thread's side of MongoBackend: a client of its own, indexes, inserts.

A batch is inserted with ``insert_many(ordered=False)`` and acknowledged writes. What
the server says decides each document's fate:

* a duplicate ``_id`` is a document stored before (a replayed batch that was partly
  stored): counted as a duplicate, not an error;
* an error about the server's state (not primary, shutting down, network trouble, time
  limits, write conflicts, authentication) raises, and the whole batch is retried;
* any other error refuses that document for good: it becomes a dead letter, and the
  rest of the batch is stored.

Indexes are created once the server answers, one at a time; failing to create one is
logged and counted, never fatal.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters

__all__ = ["Indexes", "MongoSink"]

# The backend's logger: these messages are MongoBackend's, whichever module says them.
LOG = logging.getLogger("eventtracking.backends.mongodb")

#: Indexes to create, as lists of (field, direction) keys.
Indexes = tuple[tuple[tuple[str, int], ...], ...]

_DUPLICATE_KEY = 11000
_AUTHENTICATION_FAILED = 18
# Write errors about the server's state rather than the document: retry the batch.
# (Not primary, shutting down, network trouble, time limits, write conflicts, auth.)
_TRANSIENT_CODES = frozenset(
    {6, 7, 13, 18, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 16500}
)

# Clients created before a fork are left alone in the child (pymongo resets them there);
# kept referenced so that garbage collection never closes one the parent still uses.
_INHERITED: list[object] = []


class MongoSink:
    """The delivery's sink: insert batches into ``database``.``collection``.

    ``client`` is a MongoClient for the writer thread alone; ``make_client()`` makes
    another in a forked child. The ``indexes`` (lists of (field, direction) keys) are
    created before the first insert. A document refused for good is reported by its
    position (see :class:`~eventtracking.delivery.Sink`); errors about the server's
    state raise, so that the whole batch is retried.
    """

    def __init__(
        self,
        client: Any,
        make_client: Callable[[], Any],
        database: str,
        collection: str,
        indexes: Indexes,
    ) -> None:
        self._client = client
        self._indexes = indexes
        self._client_pid = os.getpid()
        self._make_client = make_client
        self._database = database
        self._collection_name = collection
        #: ``database.collection``, for names and messages.
        self.namespace = f"{database}.{collection}"
        self._indexed = False
        self._counters = Counters("duplicates", "index_errors")
        self._log = RateLimitedLogger(LOG)

    def _collection(self) -> Any:
        if self._client_pid != os.getpid():
            _INHERITED.append(self._client)
            self._client = self._make_client()
            self._client_pid = os.getpid()
        return self._client[self._database][self._collection_name]

    def write_batch(self, items: Sequence[bytes]) -> dict[int, str] | None:
        from bson.errors import InvalidBSON
        from pymongo.errors import BulkWriteError, OperationFailure

        collection = self._collection()
        if not self._indexed:
            self._create_indexes(collection)
        try:
            return self._insert(collection, items)
        except (InvalidBSON, OperationFailure) as exc:
            # One document that is not BSON (a re-driven dead letter holding a lone
            # surrogate, say) fails the whole batch, here or on the server. Set those
            # aside, or the batch and every event behind it would be retried for ever.
            if isinstance(exc, BulkWriteError) or getattr(exc, "code", None) in _TRANSIENT_CODES:
                raise
            unreadable = _unreadable(items)
            if not unreadable:
                raise
        keep = [position for position in range(len(items)) if position not in unreadable]
        rejected = (
            self._insert(collection, [items[position] for position in keep]) if keep else None
        )
        unreadable.update((keep[index], reason) for index, reason in (rejected or {}).items())
        return unreadable

    def _insert(self, collection: Any, items: Sequence[bytes]) -> dict[int, str] | None:
        from bson.errors import InvalidDocument
        from bson.raw_bson import RawBSONDocument
        from pymongo.errors import BulkWriteError, DocumentTooLarge

        documents = [RawBSONDocument(item) for item in items]
        try:
            collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            return self._sort_write_errors(exc)
        except (DocumentTooLarge, InvalidDocument):
            # pymongo refused a document before sending: find which, one at a time.
            return self._insert_one_by_one(collection, documents)
        return None

    def _sort_write_errors(self, exc: Any) -> dict[int, str]:
        details = exc.details or {}
        rejected: dict[int, str] = {}
        duplicates = 0
        for error in details.get("writeErrors", ()):
            code = error.get("code")
            if code == _DUPLICATE_KEY and _is_id_conflict(error):
                duplicates += 1
            elif code in _TRANSIENT_CODES:
                # Retry the whole batch; what was stored comes back as duplicates.
                raise exc
            else:
                rejected[error["index"]] = (
                    f"MongoDB refused the document (code {code}): {error.get('errmsg')}"
                )
        if details.get("writeConcernErrors"):
            raise exc
        self._counters.incr("duplicates", amount=duplicates)
        return rejected

    def _insert_one_by_one(self, collection: Any, documents: list[Any]) -> dict[int, str]:
        from bson.errors import InvalidDocument
        from pymongo.errors import DocumentTooLarge, DuplicateKeyError, WriteError

        rejected: dict[int, str] = {}
        for position, document in enumerate(documents):
            try:
                collection.insert_one(document)
            except DuplicateKeyError as exc:
                if _is_id_conflict(exc.details or {}):
                    self._counters.incr("duplicates")
                else:
                    rejected[position] = f"MongoDB refused the document: {exc}"
            except (DocumentTooLarge, InvalidDocument) as exc:
                rejected[position] = f"pymongo cannot send the document: {exc}"
            except WriteError as exc:
                if exc.code in _TRANSIENT_CODES:
                    raise
                rejected[position] = f"MongoDB refused the document (code {exc.code}): {exc}"
        return rejected

    def _create_indexes(self, collection: Any) -> None:
        from pymongo.errors import (
            ConnectionFailure,
            NetworkTimeout,
            OperationFailure,
            PyMongoError,
        )

        # One at a time, so that a conflict on one does not keep the other away.
        for index in self._indexes:
            keys = list(index)
            try:
                collection.create_index(keys)
            except NetworkTimeout as exc:
                # A long build on a big collection: the server finishes it regardless.
                self._index_error(keys, exc)
            except ConnectionFailure:
                raise  # no server: the insert fails too, and both are retried
            except OperationFailure as exc:
                if exc.code == _AUTHENTICATION_FAILED:
                    raise  # the insert fails too; try again with the batch
                self._index_error(keys, exc)
            except PyMongoError as exc:
                self._index_error(keys, exc)
        self._indexed = True

    def _index_error(self, keys: list[tuple[str, int]], exc: BaseException) -> None:
        self._counters.incr("index_errors")
        spec = dict(keys)
        self._log.error(
            f"index-{spec}",
            "Creating the index %s on %s.%s failed; events are still stored, but queries "
            "on it will be slow until it is created by hand: %s: %s",
            spec,
            self._database,
            self._collection_name,
            type(exc).__name__,
            exc,
        )

    def stats(self) -> dict[str, Any]:
        return self._counters.snapshot()

    def close(self) -> None:
        if self._client_pid == os.getpid():
            self._client.close()


def _unreadable(items: Sequence[bytes]) -> dict[int, str]:
    """The positions of the items that are not valid BSON documents, with why."""
    import bson
    from bson.errors import InvalidBSON

    unreadable: dict[int, str] = {}
    for position, item in enumerate(items):
        try:
            bson.decode(item)
        except (InvalidBSON, ValueError) as exc:
            unreadable[position] = (
                f"the document is not valid BSON, so MongoDB cannot store it: {exc}"
            )
    return unreadable


def _is_id_conflict(error: Mapping[str, Any]) -> bool:
    """Whether a duplicate-key error is about ``_id`` (a replay), not a unique index."""
    pattern = error.get("keyPattern")
    if pattern is not None:
        return list(pattern) == ["_id"]
    return "_id_ dup key" in str(error.get("errmsg", ""))
