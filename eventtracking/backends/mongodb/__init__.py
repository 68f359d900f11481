"""Store events in a MongoDB collection, without blocking the caller or losing events.

:class:`MongoBackend` keeps the options and attributes of event-tracking 4.x (``host``,
``port``, ``user``, ``password``, ``database``, ``collection``, ``extra``;
``connection``, ``database``, ``collection``). ``send()`` gives the event an ``_id``
and queues its BSON; a writer thread (:mod:`eventtracking.delivery`) inserts batches,
spools them while MongoDB is unreachable (:mod:`eventtracking.spool`) and keeps refused
documents as dead letters. Documentation records (:mod:`eventtracking.metadata`) go to
the ``event_types`` collection of the same database. The rules are in
``docs/mongodb.rst``. pymongo is imported when a backend is built, so ``import
eventtracking`` works without it.

The package's other modules (``_uri``, ``_encoding``, ``_sink``) are walked in
``docs/design.rst``, section 8.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from eventtracking.backends.mongodb import _uri
from eventtracking.backends.mongodb._encoding import EventEncoder, Refused
from eventtracking.backends.mongodb._sink import Indexes, MongoSink
from eventtracking.delivery import BatchDelivery
from eventtracking.delivery._backend import SpoolingBackend
from eventtracking.delivery.options import DeliveryOptions
from eventtracking.exceptions import ImproperlyConfigured
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

#: The indexes every events collection gets, as lists of (field, direction) keys:
#: newest events first, and by name.
INDEXES: Indexes = ((("timestamp", -1),), (("name", 1),))

#: Client options of the writer thread's own client, unless ``extra`` or ``uri`` set
#: them: an attempt against an unreachable server fails after two seconds (and the
#: events are spooled) instead of pymongo's thirty, and a hung socket is given up.
WRITER_CLIENT_DEFAULTS: Mapping[str, Any] = {
    "serverSelectionTimeoutMS": 2_000,
    "connectTimeoutMS": 2_000,
    "socketTimeoutMS": 30_000,
    "appname": "eventtracking",
}


def _pymongo() -> Any:
    """Import pymongo, or raise ImportError saying how to install it."""
    try:
        import bson  # noqa: F401
        import pymongo
    except ImportError as exc:
        msg = f"MongoBackend needs pymongo, which is not installed. Install it with: {INSTALL_HINT}"
        raise ImportError(msg) from exc
    return pymongo


_DEFAULTS = DeliveryOptions()


class MongoBackend(SpoolingBackend):
    """Deliver events to ``database``.``collection`` from a background writer thread.

    The options (``host``, ``port``, ``uri``, ``user``, ``password``, ``database``,
    ``collection``, ``extra`` and the eight of
    :class:`~eventtracking.delivery.options.DeliveryOptions`, or one ``delivery_options``)
    are described in the Options table of ``docs/mongodb.rst``. ``spool_stream`` is by
    default the servers, database and collection (never credentials); backends with the
    same stream share their spooled events.

    Attributes: ``connection``, ``database`` and ``collection`` (pymongo objects, as in
    4.x), ``database_name`` and ``collection_name``, ``uri`` (user name, password and
    secret options hidden; None when built from host and port), ``spool`` (its
    :class:`~eventtracking.spool.Spool`) and ``stream`` (its name there), and
    ``delivery`` (the :class:`~eventtracking.delivery.BatchDelivery` behind it) with
    its ``delivery_options``.

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
        batch_size: int = _DEFAULTS.batch_size,
        flush_interval: float = _DEFAULTS.flush_interval,
        max_queue_size: int = _DEFAULTS.max_queue_size,
        spool_dir: str | os.PathLike[str] | None = _DEFAULTS.spool_dir,
        durable: bool = _DEFAULTS.durable,
        exit_timeout: float = _DEFAULTS.exit_timeout,
        spool_stream: str | None = _DEFAULTS.spool_stream,
        spool_max_bytes: int | None = _DEFAULTS.spool_max_bytes,
        delivery_options: DeliveryOptions | None = None,
    ) -> None:
        pymongo = _pymongo()
        options = DeliveryOptions.merge(delivery_options, _DEFAULTS, locals())
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
        target, target_port, seeds = _uri.resolve_target(host, port, uri)
        self.uri = _uri.redact(target) if target_port is None else None
        self._target = target
        self._target_port = target_port
        self._client_kwargs = _uri.client_options(self._extra, target, user, password, database)
        writer_kwargs = dict(self._client_kwargs)
        given = {key.lower() for key in writer_kwargs} | _uri.option_names(target)
        for key, value in WRITER_CLIENT_DEFAULTS.items():
            if key.lower() not in given:
                writer_kwargs[key] = value
        if _uri.unacknowledged(writer_kwargs, target):
            LOG.warning(
                "MongoBackend is configured with w=0: writes are not acknowledged, so "
                "refused documents and lost writes cannot be detected. Remove w=0 to let "
                "the backend confirm every event."
            )
        writer_kwargs["connect"] = False

        def make_client() -> Any:
            # With connect=False a client starts no thread and makes no network call.
            return pymongo.MongoClient(target, target_port, **writer_kwargs)

        try:
            # Built now so that bad options fail here, in the caller's hands.
            writer = make_client()
        except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
            # pymongo's text may quote the options: show it without the secrets, and
            # without the original exception, whose text would show them again.
            hidden = _uri.secrets(target, password, self._extra)
            text = _uri.scrub(str(exc), hidden)
            msg = f"MongoBackend options are not valid for pymongo: {type(exc).__name__}: {text}"
            raise ImproperlyConfigured(msg) from None
        self._make_client = make_client
        named = options.spool_stream
        self.stream = named or f"{seeds}/{database}.{collection}"
        # Documentation records go beside the events, in a stream of their own.
        self._metadata_stream = f"{named or f'{seeds}/{database}'}.{METADATA_COLLECTION}"
        self.spool = options.open_spool()
        self.delivery_options = options
        self._encoder = EventEncoder(max_size=MAX_DOCUMENT_SIZE, max_nesting=MAX_NESTING)
        # Bound once: send() runs for every event.
        self._encode_event = self._encoder.event
        self._connection: Any = None
        self._connection_lock = threading.Lock()
        self._sink = MongoSink(writer, make_client, database, collection, INDEXES)
        self.delivery = self._delivery_for(self._sink, self.stream)
        # Documentation records (eventtracking.metadata) go to the event_types collection
        # through a delivery of their own, built with the first record: backends that
        # never get one start no thread.
        self._metadata_delivery: BatchDelivery | None = None

    def _delivery_for(self, sink: MongoSink, stream: str) -> BatchDelivery:
        """The delivery into ``sink``'s collection, spooling to ``stream``."""
        name = f"mongodb:{sink.namespace}"
        return self.delivery_options.delivery(sink, name=name, spool=self.spool, stream=stream)

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
        with (:data:`eventtracking._util.event_ids.current_event_id`), so a redelivered
        event is stored once. An event BSON cannot encode, or one over
        :data:`MAX_DOCUMENT_SIZE`, becomes a dead letter instead.
        """
        try:
            payload = self._encode_event(event)
        except Refused as refused:
            self.delivery.dead_letter(refused.payload, refused.reason, refused.detail)
            return
        self.delivery.put(payload)

    def send_batch(self, events: Iterable[Event]) -> None:
        """Queue several events, in order, with the same promises as :meth:`send`."""
        encode = self._encode_event
        put = self.delivery.put
        for event in events:
            try:
                payload = encode(event)
            except Refused as refused:
                self.delivery.dead_letter(refused.payload, refused.reason, refused.detail)
                continue
            put(payload)

    def send_metadata(self, record: Mapping[str, Any]) -> None:
        """Queue a documentation record for the ``event_types`` collection; never blocks.

        The document is the record with ``_id`` set to the record's ``id``, so a record
        that any process stored before is kept as it was (see
        :mod:`eventtracking.metadata`). It is delivered like events, spool included.
        """
        with self._connection_lock:
            if self._metadata_delivery is None:
                # Records are looked up by _id; the events' indexes would only cost.
                sink = MongoSink(
                    self._make_client(), self._make_client, self.database_name,
                    METADATA_COLLECTION, indexes=(),
                )  # fmt: skip
                self._metadata_delivery = self._delivery_for(sink, self._metadata_stream)
            delivery = self._metadata_delivery
        try:
            payload = self._encoder.record(record)
        except Refused as refused:
            delivery.dead_letter(refused.payload, refused.reason, refused.detail)
            return
        delivery.put(payload)

    def _deliveries(self) -> list[BatchDelivery]:
        """Documentation records first (they are few), then events."""
        metadata = self._metadata_delivery
        return [self.delivery] if metadata is None else [metadata, self.delivery]

    def _stats(self, result: dict[str, Any], delivery: dict[str, Any]) -> dict[str, Any]:
        """Counters: ``queued``, ``stored``, ``spooled``, ``replayed``, ``dead_lettered``,
        ``retries``, ``duplicates`` (already stored, found on replay), ``index_errors``,
        ``dropped`` by reason, ``queue_size``, ``last_error``; see
        :meth:`~eventtracking.delivery.BatchDelivery.stats`. Once documentation records
        were sent, ``metadata`` holds the same counters for them."""
        result.update(delivery)
        if self._metadata_delivery is not None:
            result["metadata"] = self._metadata_delivery.stats()
        return result
