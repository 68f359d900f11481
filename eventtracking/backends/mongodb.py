"""Store events in a MongoDB collection, without blocking the caller or losing events.

:class:`MongoBackend` keeps the options and attributes of event-tracking 4.x (``host``,
``port``, ``user``, ``password``, ``database``, ``collection``, ``extra``;
``connection``, ``database``, ``collection``) and delivers from a background thread
(:mod:`eventtracking.delivery`):

* ``send()`` gives the event an ``_id``, encodes it to BSON and queues the bytes. The
  event itself is never changed, and later changes to it do not reach MongoDB.
* A writer thread inserts batches with ``insert_many(ordered=False)`` and acknowledged
  writes. It creates the indexes on ``timestamp`` (descending) and ``name`` once the
  server answers. Construction never talks to the server.
* While MongoDB is unreachable, events go to a local spool (SQLite, see
  :mod:`eventtracking.spool`) and are replayed in order when it is back. A replayed
  batch that was partly stored before stores only the rest: the ``_id`` was given on
  this side, and the duplicate-key errors are expected and ignored.
* A document MongoDB cannot take (one BSON cannot encode, one over 16 MiB, one a
  collection validator refuses) becomes a dead letter in the spool, with the reason,
  while the rest of its batch is stored.
* Documentation records (:mod:`eventtracking.metadata`) go to the ``event_types``
  collection of the same database, one document per version with the record id as
  ``_id``, delivered the same way.

pymongo is imported when a backend is built, so ``import eventtracking`` works without
it; building one without pymongo raises ImportError naming the extra to install.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from eventtracking import delivery as delivery_module
from eventtracking._delivery_api import deadline_for, remaining
from eventtracking._fork import ForkCheck, after_fork_in_child
from eventtracking._json import report_repr_fallbacks, safe_repr
from eventtracking._ratelimit import RateLimitedLogger
from eventtracking._stats import Counters
from eventtracking._wire import current_event_id
from eventtracking.backends import _mongo_uri
from eventtracking.delivery import BatchDelivery
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.spool import DEFAULT_MAX_BYTES, Spool, default_spool_dir
from eventtracking.typing import Event

__all__ = [
    "INDEXES",
    "INSTALL_HINT",
    "MAX_DOCUMENT_SIZE",
    "METADATA_COLLECTION",
    "WRITER_CLIENT_DEFAULTS",
    "MongoBackend",
]

LOG = logging.getLogger(__name__)

#: The collection, in the events' database, that keeps documentation records.
METADATA_COLLECTION = "event_types"

#: What to run when pymongo is missing.
INSTALL_HINT = "pip install 'event-tracking[mongo]'"

#: The largest document MongoDB stores (16 MiB). Larger events become dead letters
#: at ``send()`` instead of travelling to the server to be refused there.
MAX_DOCUMENT_SIZE = 16 * 1024 * 1024

#: The deepest nesting of objects and arrays MongoDB stores, the document itself being
#: the first level. mongod refuses deeper documents (error 15, Overflow), and closes
#: the connection on a message nested deeper than 200 levels, which a client cannot
#: tell from a network failure: such a batch would be retried forever, holding back
#: every later event. Deeper events become dead letters at ``send()``.
MAX_NESTING = 180
# A level costs at least 7 bytes of BSON (type, an empty key, a length, an end), so a
# smaller document cannot be too deep and is not walked.
_NESTING_CHECK_BYTES = 7 * MAX_NESTING

#: The indexes every events collection gets, as lists of (field, direction) keys:
#: newest events first, and by name.
INDEXES: tuple[tuple[tuple[str, int], ...], ...] = ((("timestamp", -1),), (("name", 1),))

#: Client options of the writer thread's own client, unless ``extra`` or ``uri`` set
#: them: an attempt against an unreachable server fails after two seconds (and the
#: events are spooled) instead of pymongo's thirty, and a hung socket is given up.
WRITER_CLIENT_DEFAULTS: Mapping[str, Any] = {
    "serverSelectionTimeoutMS": 2_000,
    "connectTimeoutMS": 2_000,
    "socketTimeoutMS": 30_000,
    "appname": "eventtracking",
}

_SCHEMES = _mongo_uri.SCHEMES
_DUPLICATE_KEY = 11000
_AUTHENTICATION_FAILED = 18
# Write errors about the server's state rather than the document: retry the batch.
# (Not primary, shutting down, network trouble, time limits, write conflicts, auth.)
_TRANSIENT_CODES = frozenset(
    {6, 7, 13, 18, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 16500}
)
_DETAIL_LIMIT = 10_000

# Clients created before a fork are left alone in the child (pymongo resets them there);
# kept referenced so that garbage collection never closes one the parent still uses.
_INHERITED: list[object] = []


def _pymongo() -> Any:
    """Import pymongo, or raise ImportError saying how to install it."""
    try:
        import bson  # noqa: F401
        import pymongo
    except ImportError as exc:
        msg = f"MongoBackend needs pymongo, which is not installed. Install it with: {INSTALL_HINT}"
        raise ImportError(msg) from exc
    return pymongo


class MongoBackend:
    """Deliver events to ``database``.``collection`` from a background writer thread.

    Where (the 4.x options, plus ``uri``):

    * ``host`` (default ``'localhost'``) and ``port`` (default 27017), or ``uri``: a
      full ``mongodb://`` or ``mongodb+srv://`` URI, for replica sets, TLS and
      ``authSource``. ``uri`` takes precedence; ImproperlyConfigured is raised when
      ``host``/``port`` are also given and name a server the URI does not.
    * ``user`` and ``password``: pymongo's ``username``/``password``, authenticated
      against ``database`` unless ``extra`` or ``uri`` set ``authSource``.
    * ``database`` (default ``'eventtracking'``), ``collection`` (default
      ``'events'``).
    * ``extra``: more MongoClient options, such as ``{'journal': True}`` or
      ``{'w': 'majority'}``. It is copied, never changed.

    Delivery (see :class:`~eventtracking.delivery.BatchDelivery`):

    * ``batch_size`` (500): events per ``insert_many``;
    * ``flush_interval`` (1.0 s): the longest an event waits for its batch to fill;
    * ``max_queue_size`` (10,000): events held in memory; more go to the spool;
    * ``spool_dir`` (:func:`~eventtracking.spool.default_spool_dir` when None): where
      events wait while MongoDB is unreachable, and where dead letters are kept;
    * ``durable`` (False): when True, each event is on the spool before ``send()``
      returns, so it survives the process being killed;
    * ``exit_timeout`` (5.0 s): how long interpreter exit waits for delivery before
      spooling what is left;
    * ``spool_stream``: the name of this destination in the spool; by default the
      servers, database and collection (never credentials). Backends with the same
      stream share their spooled events.
    * ``spool_max_bytes`` (:data:`~eventtracking.spool.DEFAULT_MAX_BYTES`, 1 GiB;
      None for no limit): the most the spool database holds; events that would take it
      over are kept in memory while there is room, then dropped and counted.

    Attributes: ``connection``, ``database`` and ``collection`` (pymongo objects, as in
    4.x), ``database_name`` and ``collection_name``, ``uri`` (user name, password and
    secret options hidden; None when built from host and port), ``spool`` (its
    :class:`~eventtracking.spool.Spool`) and ``stream`` (its name there), and
    ``delivery`` (the :class:`~eventtracking.delivery.BatchDelivery` behind it).

    Raises ImportError without pymongo, ImproperlyConfigured for conflicting or invalid
    options, and :class:`~eventtracking.spool.UnsafeSpoolError` (an ImproperlyConfigured)
    for a spool directory or file that another user could read or change. No message,
    ``repr()`` or log line shows the URI's user info or a password. Never contacts the
    server while being built.
    """

    #: The event is read, never changed: the router need not copy it for this backend.
    mutates_events = False

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str = "eventtracking",
        collection: str = "events",
        extra: Mapping[str, Any] | None = None,
        uri: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue_size: int = 10_000,
        spool_dir: str | os.PathLike[str] | None = None,
        durable: bool = False,
        exit_timeout: float = 5.0,
        spool_stream: str | None = None,
        spool_max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        pymongo = _pymongo()
        import bson

        if extra is not None and not isinstance(extra, Mapping):
            msg = f"extra must be a mapping of MongoClient options, got {type(extra).__name__}"
            raise ImproperlyConfigured(msg)
        for name, value in (("database", database), ("collection", collection)):
            if not isinstance(value, str) or not value:
                msg = f"{name} must be a non-empty string, got {value!r}"
                raise ImproperlyConfigured(msg)
        self.database_name = database
        self.collection_name = collection
        self._extra: dict[str, Any] = dict(extra or {})
        target, target_port, seeds = _mongo_uri.resolve_target(host, port, uri)
        self.uri = _mongo_uri.redact(target) if target_port is None else None
        self._target = target
        self._target_port = target_port
        self._client_kwargs = _mongo_uri.client_options(
            self._extra, target, user, password, database
        )
        writer_kwargs = dict(self._client_kwargs)
        given = {key.lower() for key in writer_kwargs} | _mongo_uri.option_names(target)
        for key, value in WRITER_CLIENT_DEFAULTS.items():
            if key.lower() not in given:
                writer_kwargs[key] = value
        _warn_if_unacknowledged(writer_kwargs, target)
        writer_kwargs["connect"] = False
        try:
            # Built now so that bad options fail here, in the caller's hands; with
            # connect=False it starts no thread and makes no network call.
            writer = pymongo.MongoClient(target, target_port, **writer_kwargs)
        except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
            # pymongo's text may quote the options: show it without the secrets, and
            # without the original exception, whose text would show them again.
            hidden = _mongo_uri.secrets(target, password, self._extra)
            text = _mongo_uri.scrub(str(exc), hidden)
            msg = f"MongoBackend options are not valid for pymongo: {type(exc).__name__}: {text}"
            raise ImproperlyConfigured(msg) from None
        self.stream = spool_stream or f"{seeds}/{database}.{collection}"
        if spool_max_bytes is not None and (
            isinstance(spool_max_bytes, bool)
            or not isinstance(spool_max_bytes, int)
            or spool_max_bytes <= 0
        ):
            msg = (
                "spool_max_bytes must be a positive int (bytes) or None for no limit, got "
                f"{spool_max_bytes!r}"
            )
            raise ImproperlyConfigured(msg)
        self.spool = Spool(
            spool_dir if spool_dir is not None else default_spool_dir(),
            max_bytes=spool_max_bytes,
        )
        # A shared or foreign spool directory is refused now, in the caller's hands
        # (Django reports it at start-up), rather than at the first spooled event.
        self.spool.check()
        self._sink = _MongoSink(
            writer,
            lambda: pymongo.MongoClient(target, target_port, **writer_kwargs),
            database,
            collection,
        )
        self._encode = bson.encode
        self._codec = _codec_options()
        self._connection: Any = None
        self._connection_lock = threading.Lock()
        try:
            self.delivery = BatchDelivery(
                self._sink,
                name=f"mongodb:{database}.{collection}",
                spool=self.spool,
                stream=self.stream,
                durable=durable,
                batch_size=batch_size,
                flush_interval=flush_interval,
                max_queue_size=max_queue_size,
                exit_timeout=exit_timeout,
            )
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from exc

        # Documentation records (eventtracking.metadata) go to the event_types collection
        # beside the events, through a delivery of their own (same spool, own stream),
        # built with the first record: backends that never get one start no thread.
        def metadata_delivery() -> BatchDelivery:
            sink = _MongoSink(
                pymongo.MongoClient(target, target_port, **writer_kwargs),
                lambda: pymongo.MongoClient(target, target_port, **writer_kwargs),
                database,
                METADATA_COLLECTION,
                # Records are looked up by _id; the events' indexes would only cost.
                indexes=(),
            )
            return BatchDelivery(
                sink,
                name=f"mongodb:{database}.{METADATA_COLLECTION}",
                spool=self.spool,
                stream=(spool_stream or f"{seeds}/{database}") + f".{METADATA_COLLECTION}",
                durable=durable,
                flush_interval=flush_interval,
                exit_timeout=exit_timeout,
            )

        self._metadata_factory = metadata_delivery
        self._metadata_delivery: BatchDelivery | None = None

    def __repr__(self) -> str:
        where = self.uri or f"{self._target}:{self._target_port}"
        return f"<MongoBackend {where} {self.database_name}.{self.collection_name}>"

    # -- the 4.x attributes -------------------------------------------------------------

    @property
    def connection(self) -> Any:
        """A MongoClient with the backend's options, for your own queries.

        Made on first use (with pymongo's own timeouts, not the writer's short ones);
        the writer thread has a client of its own.
        """
        with self._connection_lock:
            if self._connection is None:
                import pymongo

                self._connection = pymongo.MongoClient(
                    self._target, self._target_port, **self._client_kwargs
                )
            return self._connection

    @property
    def database(self) -> Any:
        """The pymongo Database that events are stored in (from :attr:`connection`)."""
        return self.connection[self.database_name]

    @property
    def collection(self) -> Any:
        """The pymongo Collection that events are stored in (from :attr:`connection`)."""
        return self.database[self.collection_name]

    # -- the backend protocol -----------------------------------------------------------

    def send(self, event: Event) -> None:
        """Queue ``event`` for insertion; never blocks on MongoDB and never raises.

        The event is encoded now, with its own ``_id`` (unless it has one), into a new
        document: the caller's dict is not changed, and changing it later changes
        nothing stored. On a Celery worker the ``_id`` is the id the event travelled
        with (:data:`eventtracking._wire.current_event_id`), so a redelivered event is
        stored once. An event BSON cannot encode, or one over
        :data:`MAX_DOCUMENT_SIZE`, becomes a dead letter instead.
        """
        payload = self._payload(event)
        if payload is not None:
            self.delivery.put(payload)

    def send_batch(self, events: Iterable[Event]) -> None:
        """Queue several events, in order, with the same promises as :meth:`send`."""
        put = self.delivery.put
        for event in events:
            payload = self._payload(event)
            if payload is not None:
                put(payload)

    def _payload(self, event: Event) -> bytes | None:
        try:
            if "_id" in event:
                payload: bytes = self._encode(dict(event), False, self._codec)
            else:
                # Encode the event as it is, then put an _id element in front: the same
                # bytes as encoding {"_id": ObjectId(), **event}, without the copy.
                body = self._encode(event, False, self._codec)
                payload = (len(body) + 17).to_bytes(4, "little") + _event_id_element() + body[4:]
            if _FALLBACKS.values:
                report_repr_fallbacks(event, _FALLBACKS.take())
        except Exception as exc:
            _FALLBACKS.take()
            self.delivery.dead_letter(
                None, f"BSON cannot encode the event: {type(exc).__name__}: {exc}", _describe(event)
            )
            return None
        if len(payload) > MAX_DOCUMENT_SIZE:
            self.delivery.dead_letter(
                payload,
                f"the document is {len(payload)} bytes encoded; MongoDB stores at most "
                f"{MAX_DOCUMENT_SIZE} bytes per document",
                _describe(event),
            )
            return None
        if len(payload) >= _NESTING_CHECK_BYTES and _too_deep(event):
            self.delivery.dead_letter(
                payload,
                f"the document is nested deeper than {MAX_NESTING} levels, the most "
                "MongoDB stores",
                _describe(event),
            )
            return None
        return payload

    def send_metadata(self, record: Mapping[str, Any]) -> None:
        """Queue a documentation record for the ``event_types`` collection; never blocks.

        The document is the record with ``_id`` set to the record's ``id``, so a record
        that any process stored before is kept as it was (see
        :mod:`eventtracking.metadata`). It is delivered like events, spool included.
        """
        with self._connection_lock:
            if self._metadata_delivery is None:
                self._metadata_delivery = self._metadata_factory()
            delivery = self._metadata_delivery
        try:
            payload = self._encode({"_id": record["id"], **record}, False, self._codec)
        except Exception as exc:
            reason = f"BSON cannot encode the record: {type(exc).__name__}: {exc}"
            delivery.dead_letter(None, reason, _describe(record))
            return
        delivery.put(payload)

    def flush(self, timeout: float | None = None) -> bool:
        """Store what was sent so far, spooled events included; True when all are stored.

        ``timeout=None`` waits at most :data:`~eventtracking.delivery.DEFAULT_FLUSH_TIMEOUT`
        seconds. On False, nothing is lost: the events are still queued or spooled.
        """
        metadata = self._metadata_delivery
        if metadata is None:
            return self.delivery.flush(timeout)
        # One deadline for both deliveries: None must not mean the limit twice over.
        if timeout is None:
            timeout = delivery_module.DEFAULT_FLUSH_TIMEOUT
        deadline = deadline_for(timeout)
        stored = metadata.flush(remaining(deadline))
        return self.delivery.flush(remaining(deadline)) and stored

    def close(self, timeout: float | None = None) -> None:
        """Deliver for at most ``timeout`` seconds (``exit_timeout`` when None), spool the
        rest, stop the writer. Idempotent; events sent afterwards go to the spool."""
        metadata = self._metadata_delivery
        if metadata is None:
            self.delivery.close(timeout)
            return
        if timeout is None:
            timeout = self.delivery.exit_timeout
        deadline = deadline_for(timeout)
        metadata.close(remaining(deadline))
        self.delivery.close(remaining(deadline))

    def stats(self) -> dict[str, Any]:
        """Counters: ``queued``, ``stored``, ``spooled``, ``replayed``, ``dead_lettered``,
        ``retries``, ``duplicates`` (already stored, found on replay), ``index_errors``,
        ``dropped`` by reason, ``queue_size``, ``last_error``; see
        :meth:`~eventtracking.delivery.BatchDelivery.stats`. Once documentation records
        were sent, ``metadata`` holds the same counters for them."""
        result = self.delivery.stats()
        if self._metadata_delivery is not None:
            result["metadata"] = self._metadata_delivery.stats()
        return result


class _MongoSink:
    """The writer thread's side: a client of its own, indexes, and ``insert_many``."""

    def __init__(
        self,
        client: Any,
        make_client: Any,
        database: str,
        collection: str,
        indexes: tuple[tuple[tuple[str, int], ...], ...] = INDEXES,
    ) -> None:
        self._client = client
        self._indexes = indexes
        self._client_process = ForkCheck()
        self._make_client = make_client
        self._database = database
        self._collection_name = collection
        self._indexed = False
        self._counters = Counters("duplicates", "index_errors")
        self._log = RateLimitedLogger(LOG)

    def _collection(self) -> Any:
        if self._client_process.forked():
            _INHERITED.append(self._client)
            self._client = self._make_client()
            self._client_process = ForkCheck()
        return self._client[self._database][self._collection_name]

    def send_batch(self, items: Sequence[bytes]) -> dict[int, str] | None:
        from bson.errors import InvalidDocument
        from bson.raw_bson import RawBSONDocument
        from pymongo.errors import BulkWriteError, DocumentTooLarge

        collection = self._collection()
        if not self._indexed:
            self._create_indexes(collection)
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
        if not self._client_process.forked():
            self._client.close()


def _too_deep(document: Any) -> bool:
    """Whether objects and arrays in ``document`` nest deeper than MAX_NESTING levels."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            return True
        items = value.values() if isinstance(value, Mapping) else value
        stack.extend(
            (item, depth + 1) for item in items if isinstance(item, (Mapping, list, tuple))
        )
    return False


def _is_id_conflict(error: Mapping[str, Any]) -> bool:
    """Whether a duplicate-key error is about ``_id`` (a replay), not a unique index."""
    pattern = error.get("keyPattern")
    if pattern is not None:
        return list(pattern) == ["_id"]
    return "_id_ dup key" in str(error.get("errmsg", ""))


def _warn_if_unacknowledged(options: Mapping[str, Any], target: str) -> None:
    lowered = {key.lower(): value for key, value in options.items()}
    in_uri = (
        target.startswith(_SCHEMES)
        and "?" in target
        and any(
            key.lower() == "w" and value == "0"
            for key, value in parse_qsl(target.split("?", 1)[1].replace(";", "&"))
        )
    )
    if lowered.get("w") in (0, "0") or in_uri:
        LOG.warning(
            "MongoBackend is configured with w=0: writes are not acknowledged, so refused "
            "documents and lost writes cannot be detected. Remove w=0 to let the backend "
            "confirm every event."
        )


def _describe(event: Any) -> str:
    """A bounded, human-readable description of an event, for a dead letter.

    When the event's repr fails, the description still gives its name and timestamp.
    """
    try:
        text = repr(event)
    except Exception as exc:
        name = timestamp = None
        # Not a mapping, or one that fails too: only its type is known.
        with contextlib.suppress(Exception):
            name, timestamp = event.get("name"), event.get("timestamp")
        text = (
            f"<event {safe_repr(name)} at {safe_repr(timestamp)} (a "
            f"{type(event).__name__}) whose repr() failed: {safe_repr(exc)}>"
        )
    if len(text) > _DETAIL_LIMIT:
        text = text[:_DETAIL_LIMIT] + f"... ({len(text) - _DETAIL_LIMIT} more characters)"
    return text


def _fallback_encoder(value: Any) -> Any:
    """Encode the values BSON has no type for but which have an obvious equivalent."""
    if isinstance(value, decimal.Decimal):
        from bson.decimal128 import Decimal128

        try:
            return Decimal128(value)
        except Exception:  # more digits than Decimal128 holds: keep them all, as text
            return str(value)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    if isinstance(value, (set, frozenset)):
        return list(value)
    # As the logger does: written as its repr, counted and reported (by the caller,
    # which knows the event), instead of losing the whole event to a dead letter.
    _FALLBACKS.values.append(value)
    return safe_repr(value)


class _Fallbacks(threading.local):
    """The values this thread's last encoding wrote as their repr."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def take(self) -> list[Any]:
        values, self.values = self.values, []
        return values


_FALLBACKS = _Fallbacks()


class _ObjectIds:
    """BSON ``_id`` elements holding new ObjectIds, about four times cheaper to make
    than ``bson.ObjectId()``, which locks and packs structs on every call.

    The layout is MongoDB's: 4 bytes of seconds since the epoch, 5 random bytes drawn
    once per process, and a 3-byte counter starting at a random value (all big-endian).
    A forked child draws its own random bytes, so its ids never collide with the
    parent's.
    """

    _PREFIX = b"\x07_id\x00"  # type ObjectId, name "_id"

    def __init__(self) -> None:
        self._reset()
        after_fork_in_child(self._reset)

    def _reset(self) -> None:
        self._process_bytes = os.urandom(5)
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big"))

    def __call__(self) -> bytes:
        return (
            self._PREFIX
            + int(time.time()).to_bytes(4, "big")
            + self._process_bytes
            + (next(self._counter) & 0xFFFFFF).to_bytes(3, "big")
        )


_id_element = _ObjectIds()


def _event_id_element() -> bytes:
    """The ``_id`` element of the event being sent: the id it travelled with through a
    broker (so a redelivered event is stored once), else a new ObjectId."""
    event_id = current_event_id.get()
    if event_id is None:
        return _id_element()
    return _ObjectIds._PREFIX + bytes.fromhex(event_id)


_CODEC: Any = None


def _codec_options() -> Any:
    global _CODEC
    if _CODEC is None:
        from bson.binary import UuidRepresentation
        from bson.codec_options import CodecOptions, TypeRegistry

        _CODEC = CodecOptions(
            tz_aware=True,
            uuid_representation=UuidRepresentation.STANDARD,
            type_registry=TypeRegistry(fallback_encoder=_fallback_encoder),
        )
    return _CODEC
