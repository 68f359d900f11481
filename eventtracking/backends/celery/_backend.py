"""Route events to their backends on a Celery worker, without making the caller wait.

:class:`AsyncRoutingBackend` keeps the surface of event-tracking 4.x: it is a
:class:`~eventtracking.routing.RoutingBackend` with ``processors``, ``backends``
and a ``backend_name``, its key among the tracker's top-level backends. Its processors
run in the web process, where
:class:`~eventtracking.processors.exceptions.EventEmissionExit` drops an event before it
costs a message. A Celery worker, which builds the same tracker from the same settings,
looks the backend up by ``backend_name`` and delivers to its nested ``backends``.

What changed from 4.x, for the operators who run it:

* ``send()`` never waits on the broker. It encodes the event (see
  :mod:`eventtracking.backends.celery._wire`; with orjson, from the ``[fast]`` extra, in its compact
  form, which workers read back to the same values) and queues it in memory; a
  background thread publishes batches of up to ``batch_size`` events per message (task
  ``eventtracking.tasks.send_events``), through a connection that gives up within
  ``publish_timeout`` when the broker is down or hung.
* While the broker is unreachable, events go to the local spool
  (:mod:`eventtracking.spool`, in ``spool_dir``) and are published, in order, when it
  is back. Nothing is lost at exit either: what could not be published is spooled.
* Each event gets an id when accepted; it travels beside the event, so a MongoBackend
  on the worker stores a redelivered event once.
* On the worker, a failing leaf backend is retried alone, with backoff and jitter,
  ``max_retries`` times, then becomes a dead letter with its reason; errors a retry
  cannot fix are dead letters at once (see :mod:`eventtracking.tasks`).
* Under Celery's ``task_always_eager`` (test settings) events are delivered before
  ``send()`` returns, as 4.x did.

Celery is imported when a backend is built, so ``import eventtracking`` works without
it; building one without Celery raises ImportError naming the extra to install.

Why one module: it is one class, AsyncRoutingBackend, whose constructor checks its many
options and whose methods share its queue, sink and sweeper; the wire format, sink and
worker are already apart.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eventtracking._orjson import HAVE_ORJSON, OrjsonEventEncoder, dumps_stdlib
from eventtracking._util.options import check_count, check_seconds
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import merge_into
from eventtracking.backends.celery import _ledger as _redis_ledger
from eventtracking.backends.celery import _wire
from eventtracking.backends.celery import _worker as _celery_worker
from eventtracking.backends.celery._sink import CelerySink, import_celery
from eventtracking.delivery import backoff_delay
from eventtracking.delivery._backend import SpoolingBackend
from eventtracking.delivery.options import DeliveryOptions
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.routing import RoutingBackend
from eventtracking.typing import Backend, Event, Processor

__all__ = [
    "CATCH_UP_BATCHES",
    "DEFAULT_LEDGER_GRACE",
    "DEFAULT_MAX_EVENT_SIZE",
    "AsyncRoutingBackend",
]

LOG = logging.getLogger(__name__)

#: Events whose encoded entry is larger than this many bytes become dead letters in the
#: web process instead of travelling to the broker.
DEFAULT_MAX_EVENT_SIZE = 1024 * 1024

#: Seconds after which a message that should have run, and is neither queued nor held
#: by a worker, is taken as lost by Redis and published again (see ``ledger``).
DEFAULT_LEDGER_GRACE = 60.0

#: When more than two batches wait, the publisher is behind: a message then carries
#: half of what waits, up to this many batches' events (split to stay under
#: ``max_message_bytes``), and pays the broker's and the ledger's round trips once for
#: all of them.
CATCH_UP_BATCHES = 40

# Small messages, published soon: a web process should not hold events long.
_DEFAULTS = DeliveryOptions(batch_size=100, flush_interval=0.5)

# The caller's encoder: orjson's takes a third of the standard library's time or less, on
# the thread that emits and under the GIL the publisher needs. Its compact text holds
# the same values by the same rules, and a worker's json.loads reads either.
_ENCODER = OrjsonEventEncoder() if HAVE_ORJSON else None


def _entry_of(event: Event) -> str:
    """The entry text of an event accepted now. A line orjson wrote holds no integer
    beyond 64 bits, and its entry says so (``int64``): the worker then reads it with
    orjson without first looking for long numbers (see ``_wire.new_entry``)."""
    if _ENCODER is None:
        return _wire.new_entry(_wire.encode_event(event))
    line = _ENCODER.encode(event, orjson_only=True)
    if line is None:
        # What encode() falls back to, without a second try of orjson, which already
        # refused the event (for a cycle, at the cost of writing it to its depth limit).
        return _wire.new_entry(dumps_stdlib(event))
    return _wire.new_entry(line, int64=True)


class AsyncRoutingBackend(SpoolingBackend, RoutingBackend):
    """Run ``processors`` here, then have a Celery worker deliver to ``backends``.

    The 4.x options: ``processors``, ``backends`` and ``backend_name`` (the key of this
    backend in the tracker's top-level backends, as configured in
    ``EVENT_TRACKING_BACKENDS``; when empty, the key under which the default tracker
    holds this backend is used). It works only as a top-level backend of the default
    tracker, because the worker finds it there.

    Publishing (web side):

    * ``app``: the Celery app or its dotted path (default: the current app);
    * ``queue``: the queue to publish to (default: Celery's routing);
    * the eight keywords of :class:`~eventtracking.delivery.options.DeliveryOptions`,
      or one ``delivery_options``, with ``batch_size`` 100 events per message,
      ``flush_interval`` 0.5 s and ``spool_stream`` ``celery:<backend_name>`` by
      default; while more than two batches wait (a burst), a message carries half of
      them, up to 40 batches;
    * ``publish_timeout`` (2 s): the longest a publish waits on the broker;
    * ``max_event_size`` (1 MiB): larger events become dead letters here;
      ``max_message_bytes`` (4 MiB): batches are split to stay under it.

    Delivering (worker side; the worker builds this backend from the same settings):

    * ``max_retries`` (3) per failing leaf, waiting ``retry_backoff`` (30 s) doubled
      each time up to ``retry_backoff_max`` (600 s), with jitter;
    * ``delivery_timeout`` (30 s): how long a batch waits for its leaves to confirm
      (``flush()``) before those that did not are retried.
    * ``max_event_size`` and ``max_message_bytes`` cap what a worker takes too, and
      ``max_message_entries`` (10,000) the entries of one message: a larger message
      is one dead letter that describes it (see :mod:`eventtracking.backends.celery._worker`).
    * ``ledger`` (True; Redis brokers only): record each message in Redis until a
      worker delivered it, so that workers find a message Redis lost on its way to them
      (a crash between ``BRPOP`` and kombu's bookkeeping) and publish it again
      ``ledger_grace`` (60 s) after it should have run. See
      :mod:`eventtracking.backends.celery._ledger`. Give web nodes and workers the same value:
      a worker with ``ledger=False`` that finds records of web nodes with
      ``ledger=True`` (which it never removes) warns once and reports them in
      ``stats()['ledger_left_behind']``.

    Both sides:

    * ``signing_keys`` (None): a list of secret keys (str or bytes, 16 bytes at
      least), newest first. Messages are signed with the first; a worker with keys
      delivers only messages signed with one of them, and keeps the others (unsigned,
      as 4.x's are, or signed otherwise) as counted dead letters. Rotate by putting the
      new key first and dropping the old one once every node has the new one. See
      :mod:`eventtracking.backends.celery._signing`.

    Attributes: ``backend_name``, ``backends``, ``processors`` (as in 4.x), ``spool``,
    ``stream``, ``delivery`` (the :class:`~eventtracking.delivery.BatchDelivery`) and
    ``delivery_options``.

    Raises ImportError without Celery, ImproperlyConfigured for invalid options (and
    :class:`~eventtracking.spool.UnsafeSpoolError`, one of them, for a spool directory
    another user could read or change). Never contacts the broker while being built.
    """

    def __init__(
        self,
        processors: Iterable[Processor] | None = None,
        backends: Mapping[str, Backend] | None = None,
        backend_name: str = "",
        *,
        app: Any = None,
        queue: str | None = None,
        batch_size: int = _DEFAULTS.batch_size,
        flush_interval: float = _DEFAULTS.flush_interval,
        max_queue_size: int = _DEFAULTS.max_queue_size,
        publish_timeout: float = 2.0,
        spool_dir: str | os.PathLike[str] | None = _DEFAULTS.spool_dir,
        spool_stream: str | None = _DEFAULTS.spool_stream,
        spool_max_bytes: int | None = _DEFAULTS.spool_max_bytes,
        durable: bool = _DEFAULTS.durable,
        exit_timeout: float = _DEFAULTS.exit_timeout,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_message_bytes: int = 4 * 1024 * 1024,
        max_message_entries: int = _celery_worker.DEFAULT_MAX_MESSAGE_ENTRIES,
        max_retries: int = _celery_worker.DEFAULT_MAX_RETRIES,
        retry_backoff: float = _celery_worker.DEFAULT_RETRY_BACKOFF,
        retry_backoff_max: float = _celery_worker.DEFAULT_RETRY_BACKOFF_MAX,
        delivery_timeout: float = _celery_worker.DEFAULT_DELIVERY_TIMEOUT,
        ledger: bool = True,
        ledger_grace: float = DEFAULT_LEDGER_GRACE,
        signing_keys: Sequence[str | bytes] | None = None,
        delivery_options: DeliveryOptions | None = None,
    ) -> None:
        import_celery()
        # Registers the tasks with Celery: a worker builds this backend from settings
        # at start-up, and so learns the tasks it must consume.
        import eventtracking.backends.celery._tasks  # noqa: F401

        if not isinstance(backend_name, str):
            msg = (
                f"backend_name must be a string, the key of this backend in "
                f"EVENT_TRACKING_BACKENDS, got {backend_name!r}"
            )
            raise ImproperlyConfigured(msg)
        check_seconds("publish_timeout", publish_timeout)
        check_seconds("retry_backoff", retry_backoff)
        check_seconds("retry_backoff_max", retry_backoff_max)
        check_seconds("ledger_grace", ledger_grace)
        check_seconds("delivery_timeout", delivery_timeout, allow_zero=True)
        check_count("max_event_size", max_event_size, unit="bytes")
        check_count("max_message_bytes", max_message_bytes, unit="bytes")
        check_count("max_message_entries", max_message_entries, unit="entries")
        check_count("max_retries", max_retries, minimum=0)
        options = DeliveryOptions.merge(delivery_options, _DEFAULTS, locals())
        try:
            keys = _wire.normalise_keys(signing_keys)
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from None
        super().__init__(backends=backends, processors=processors)
        self.backend_name = backend_name
        #: The keys messages are signed with (the first) and checked against (all).
        self.signing_keys = keys
        self.max_event_size = max_event_size
        self.max_message_bytes = max_message_bytes
        self.max_message_entries = max_message_entries
        self.max_retries = max_retries
        self.retry_backoff = float(retry_backoff)
        self.retry_backoff_max = float(retry_backoff_max)
        self.delivery_timeout = float(delivery_timeout)
        self.ledger_grace = float(ledger_grace)
        self._found_name: str | None = None
        self._sweeper_lock = threading.Lock()
        # The id of the process whose sweeper thread runs (None: none started yet).
        self._sweeper: int | None = None
        self._sweeper_stop = threading.Event()
        # The id of the process that looked for ledger records left behind
        # (ledger=False only).
        self._ledger_checked: int | None = None
        self._ledger_left_behind: int | None = None
        sink_options: dict[str, Any] = {
            "app": app,
            "queue": queue,
            "publish_timeout": publish_timeout,
            "max_message_bytes": max_message_bytes,
            "max_message_entries": max_message_entries,
            "retry_delay": self._retry_delay,
            "ledger": bool(ledger),
            "signing_keys": keys,
        }
        self._sink = CelerySink(self._name_for_worker, **sink_options)
        # The worker's retries are published from task threads, not the delivery
        # thread: they get a connection of their own.
        self._retry_sink = CelerySink(self._name_for_worker, **sink_options)
        self.stream = options.spool_stream or _celery_worker.stream_for(backend_name)
        self.delivery_options = options
        self.spool = options.open_spool()
        self.delivery = options.delivery(
            self._sink, name=f"celery:{backend_name or '(unnamed)'}", spool=self.spool,
            stream=self.stream, catch_up_batches=CATCH_UP_BATCHES,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<AsyncRoutingBackend {self.backend_name!r} backends={list(self.backends)}>"

    @property
    def mutates_events(self) -> bool:
        """Never: the event is encoded as it is, and processors work on their own copy."""
        return False

    # -- the web side -------------------------------------------------------------------

    def send(self, event: Event) -> None:
        """Run the processors, then queue the event for a worker. Never raises or blocks.

        An event a processor drops is counted in ``dropped['filtered']``; one larger
        than ``max_event_size`` once encoded becomes a dead letter in the spool.
        """
        if self.processors:
            try:
                event = self.process_event(event)
            except EventEmissionExit:
                self._counters.incr("dropped", "filtered")
                return
        text = _entry_of(event)
        payload = text.encode("utf-8")
        if len(payload) > self.max_event_size:
            self.delivery.dead_letter(
                payload,
                f"the event is {len(payload)} bytes encoded, over max_event_size="
                f"{self.max_event_size}; raise max_event_size or make the event smaller",
            )
            return
        try:
            eager = self._sink.eager()
        except Exception as exc:
            # The app cannot be resolved (a wrong dotted path): the publisher meets the
            # same error, and keeps and counts the events; say it here once a minute.
            _LOG.error("app", "AsyncRoutingBackend cannot find its Celery app: %r", exc)
            eager = False
        if eager:
            self._send_now(text)
            return
        self.delivery.put(payload)

    def _send_now(self, text: str) -> None:
        name = self._name_for_worker()
        if name is None:
            self.delivery.put(text.encode("utf-8"))  # the sink dead-letters it, with why
            return
        try:
            self._sink.publish(name, [text])
        except Exception:
            self.delivery.put(text.encode("utf-8"))

    def _name_for_worker(self) -> str | None:
        """``backend_name``, or the key of this backend in the default tracker."""
        if self.backend_name:
            return self.backend_name
        if self._found_name is None:
            from eventtracking.tracker import registered

            tracker = registered()
            if tracker is not None:
                for key, backend in list(tracker.backends.items()):
                    if backend is self:
                        self._found_name = key
                        break
        return self._found_name

    def _retry_delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.retry_backoff, self.retry_backoff_max)

    # -- the worker side ----------------------------------------------------------------

    def worker_settings(self) -> _celery_worker.WorkerSettings:
        """How a worker delivers this backend's events: retries, timeouts, spool.

        Called by the worker for each message; starts the ledger sweeper on first use.
        """
        if self._sweeper != os.getpid():
            self.start_sweeper()
        return _celery_worker.WorkerSettings(
            spool=self.spool,
            stream=self.stream,
            publish=self._retry_sink.publish,
            forget=self._retry_sink.forget,
            replay=self._replay_soon,
            max_retries=self.max_retries,
            retry_backoff=self.retry_backoff,
            retry_backoff_max=self.retry_backoff_max,
            delivery_timeout=self.delivery_timeout,
            max_message_entries=self.max_message_entries,
            max_message_bytes=self.max_message_bytes,
            max_event_size=self.max_event_size,
        )

    def _replay_soon(self) -> None:
        """Have the publisher deliver what waits in the spool (it starts on first use)."""
        self.delivery.flush(0)

    def start_sweeper(self) -> None:
        """Start this process's ledger sweeper thread (workers only); idempotent.

        Every ``ledger_grace / 2`` seconds (at most 30) it publishes again the messages
        the Redis ledger shows lost. It ends by itself on brokers without a ledger, and
        when the backend is closed or collected.
        """
        if not self._retry_sink.use_ledger:
            self._look_for_ledger_records()
            return
        with self._sweeper_lock:
            if self._sweeper == os.getpid():
                return
            self._sweeper = os.getpid()
            self._sweeper_stop = stop = threading.Event()
        thread = threading.Thread(
            target=_sweep_forever,
            args=(weakref.ref(self), stop, min(self.ledger_grace / 2, 30.0)),
            name=f"eventtracking-ledger-{self.backend_name or 'unnamed'}",
            daemon=True,
        )
        thread.start()

    def _look_for_ledger_records(self) -> None:
        """Once per worker process with ``ledger=False``: warn when web nodes record
        this backend's messages in the Redis ledger (``ledger=True`` there), since no
        worker of ours takes them out and they stay in Redis for good."""
        with self._sweeper_lock:
            if self._ledger_checked == os.getpid():
                return
            self._ledger_checked = os.getpid()
        name = self._name_for_worker() or self.backend_name
        try:
            found = self._retry_sink.ledger_left_behind(name)
        except Exception as exc:
            _LOG.warning(
                "ledger-check",
                "Looking for ledger records left behind failed: %s: %s",
                type(exc).__name__,
                exc,
            )
            return
        self._ledger_left_behind = found
        if found:
            LOG.warning(
                "AsyncRoutingBackend %r has ledger=False on this worker, but %d of its "
                "messages are recorded in the Redis ledger: some web nodes run with "
                "ledger=True, and nothing takes their records (whole message texts) out "
                "of Redis. Give web nodes and workers the same ledger setting.",
                name,
                found,
            )

    # -- delivery -----------------------------------------------------------------------

    def _after_close(self) -> None:
        """Stop the ledger sweeper and the retries' connection; then the nested close."""
        self._sweeper_stop.set()
        self._retry_sink.close()

    def _stats(self, result: dict[str, Any], publisher: dict[str, Any]) -> dict[str, Any]:
        """Counters of both sides, as seen from this process.

        Web side: ``published`` (handed to the broker, ``replayed`` of them from the
        spool), ``spooled``, ``queued``, ``queue_size``. Worker side: ``delivered``
        (events every targeted leaf took), ``retried`` ((event, leaf) pairs published
        again), ``filtered`` by nested processors. ``dead_lettered`` counts both sides.
        ``dropped`` (both sides) and ``failed`` are by reason, as for every router;
        ``publisher`` and ``worker`` hold each side's full counters, ``backends`` the
        nested ones', ``ledger`` the Redis ledger records this process dropped.
        ``ledger_left_behind``: on a worker with ``ledger=False``, the records of this
        backend it found in the Redis ledger (web nodes with ``ledger=True`` wrote them,
        and nothing removes them; a warning says so); None when it has not looked.
        """
        name = self._name_for_worker() or self.backend_name
        worker = _celery_worker.stats(name)
        merge_into(result, {"dropped": publisher.get("dropped", {})})
        merge_into(result, {"dropped": worker.get("dropped", {})})
        result.update(
            published=publisher["stored"] + publisher.get("eager", 0),
            replayed=publisher["replayed"],
            spooled=publisher["spooled"] + worker.get("spooled", 0),
            queued=publisher["queued"],
            queue_size=publisher["queue_size"],
            delivered=worker.get("delivered", 0),
            retried=worker.get("retried", 0),
            filtered=worker.get("filtered", 0),
            dead_lettered=publisher["dead_lettered"] + worker.get("dead_lettered", 0),
            last_error=publisher.get("last_error"),
            ledger_left_behind=self._ledger_left_behind,
            publisher=publisher,
            worker=worker,
            ledger=_redis_ledger.stats(),
        )
        return result


_LOG = RateLimitedLogger(LOG)  # errors of the sweeper thread and of send()


def _sweep_forever(
    ref: weakref.ref[AsyncRoutingBackend], stop: threading.Event, interval: float
) -> None:
    """The sweeper thread: sweep every ``interval`` s while the backend lives."""
    while not stop.wait(interval):
        backend = ref()
        if backend is None:
            return
        try:
            swept = backend._retry_sink.sweep(backend.ledger_grace)
        except Exception as exc:
            _LOG.warning(
                "sweep", "Looking for lost messages failed: %s: %s", type(exc).__name__, exc
            )
            continue
        finally:
            del backend
        if swept is None:
            return  # no ledger on this broker
