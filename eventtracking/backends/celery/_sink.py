"""Publish batches of event entries as Celery messages, failing fast when the broker is down.

:class:`CelerySink` is the sink of the :class:`~eventtracking.delivery.BatchDelivery`
behind :class:`~eventtracking.backends.async_routing.AsyncRoutingBackend`: each call of
:meth:`CelerySink.write_batch` publishes one message of the task
``eventtracking.tasks.send_events`` holding many entries (see
:mod:`eventtracking.backends.celery._wire`),
or a few messages when the entries would not fit in ``max_message_bytes``.

Why a connection of its own: Celery's ``apply_async`` retries a failed publish while the
caller waits, and its default Redis connection has no socket timeout, so a hung broker
blocks it forever. The sink publishes on the delivery thread only, through a
connection opened with short timeouts and no connection retries: a broker that refuses
fails the batch at once, a hung one within ``publish_timeout``. The batch then goes to
the spool and is retried with backoff by the delivery; the caller never waits.

On AMQP brokers the connection asks for publisher confirms, so a publish returns only
once the broker holds the message. On Redis, each message is also recorded in a ledger
(:mod:`eventtracking.backends.celery._ledger`) that workers use to find and publish again a
message that Redis lost on its way to a worker.

Why one module: it is one class, CelerySink, which owns the broker connection:
publishing, the connection's time limits and the ledger's record of each message share
its lock and producer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from eventtracking.backends.celery._ledger import (
    LEDGER_KEY,
    LEDGER_TTL,
    RedisLedger,
    unacked_task_ids,
)
from eventtracking.backends.celery._wire import HEADER, sign

__all__ = [
    "DEFAULT_MAX_MESSAGE_ENTRIES",
    "INSTALL_HINT",
    "LEGACY_TASK_NAME",
    "TASK_NAME",
    "CelerySink",
    "import_celery",
    "peek_attempt",
    "record",
    "resolve_app",
]

LOG = logging.getLogger("eventtracking.backends.async_routing")

#: The batch task every new message goes to.
TASK_NAME = "eventtracking.tasks.send_events"
#: The one-event task of event-tracking 4.x, still consumed by our workers.
LEGACY_TASK_NAME = "eventtracking.tasks.send_event"
#: What to run when Celery is missing.
INSTALL_HINT = "pip install 'event-tracking[celery]'"

#: Entries a worker takes in one message by default (a larger message is one dead
#: letter there): a burst's bigger messages (see AsyncRoutingBackend) are split to stay
#: within it.
DEFAULT_MAX_MESSAGE_ENTRIES = 10_000

# Seconds between two full lookups of task_always_eager (see CelerySink.eager).
_EAGER_RECHECK = 1.0

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # the [fast] extra is not installed
    _orjson = None

# Connections the parent opened before a fork: the child must neither use nor close
# them (the parent still does); kept referenced so garbage collection leaves them be.
_INHERITED: list[object] = []


def import_celery() -> Any:
    """Import celery, or raise ImportError saying which extra to install."""
    try:
        import celery
    except ImportError as exc:
        msg = (
            "AsyncRoutingBackend needs Celery, which is not installed. Install it with: "
            f"{INSTALL_HINT}"
        )
        raise ImportError(msg) from exc
    return celery


def resolve_app(app: Any) -> Any:
    """The Celery app to publish with: ``app`` itself, the one its dotted path names,
    or, for None, the current app (the one ``shared_task`` binds to)."""
    if app is None:
        from celery import current_app

        return current_app._get_current_object()
    if isinstance(app, str):
        from celery.utils.imports import symbol_by_name

        return symbol_by_name(app)
    return app


def peek_attempt(text: str) -> int:
    """The ``attempt`` field of an entry, read from its end without parsing it.

    :func:`~eventtracking.backends.celery._wire.encode_entry` writes ``attempt`` last and only when
    it
    is not 0, so an entry with one ends in digits and ``}``; one without ends in ``}}``
    or ``]}``. Anything unexpected counts as attempt 0.
    """
    if len(text) < 3 or not text[-2].isdigit():
        return 0
    start = text.rfind(" ", 0, len(text) - 1)
    try:
        return int(text[start + 1 : -1])
    except ValueError:
        return 0


def record(
    ledger: RedisLedger, task_id: str, queue: str, backend_name: str, texts: list[str], due: float
) -> None:
    """Note in the Redis ``ledger`` a message about to be published, to run by the Unix
    time ``due`` (see :mod:`eventtracking.backends.celery._ledger`, which reads it back).

    The record is JSON, which every worker version reads with ``json.loads``; with
    orjson (the ``[fast]`` extra) it is written in orjson's compact form, as the
    publisher holds the GIL the caller needs while it writes a thousand texts.
    """
    value = _encode_record({"queue": queue, "backend_name": backend_name, "texts": texts})
    pipe = ledger.client.pipeline(transaction=True)
    pipe.hset(ledger.key, task_id, value)
    pipe.zadd(ledger.due_key, {task_id: due})
    pipe.expire(ledger.key, LEDGER_TTL)
    pipe.expire(ledger.due_key, LEDGER_TTL)
    pipe.execute()


def _encode_record(fields: dict[str, Any]) -> bytes | str:
    """A record's JSON: orjson's when it is installed, else the standard library's."""
    if _orjson is None:
        return json.dumps(fields)
    try:
        return _orjson.dumps(fields)  # type: ignore[no-any-return]
    except TypeError:  # a text with a lone surrogate, which the standard library escapes
        return json.dumps(fields)


class CelerySink:
    """Publish entries to ``eventtracking.tasks.send_events`` for one routing backend.

    ``backend_name`` returns the name the worker looks the backend up by (a callable,
    so that an empty name can be found once the tracker is registered). ``app`` is a
    Celery app, its dotted path, or None for the current app; ``queue`` the queue to
    publish to (None: Celery's routing decides). ``publish_timeout`` bounds connecting
    and each socket operation. ``retry_delay(attempt)`` gives the countdown of a
    message whose entries are retries. Batches are split so that no message carries
    more than ``max_message_bytes`` of entries (a single larger entry travels alone),
    nor more than ``max_message_entries`` entries (what a worker takes in one message).
    ``ledger`` (Redis only) records each message until a worker has delivered it.
    With ``signing_keys``, each message carries a signature under the first (see
    :mod:`eventtracking.backends.celery._signing`).

    Every method holds :attr:`lock`: the delivery thread, worker tasks and the ledger
    sweeper may share one sink.
    """

    def __init__(
        self,
        backend_name: Callable[[], str | None],
        *,
        app: Any = None,
        queue: str | None = None,
        publish_timeout: float = 2.0,
        max_message_bytes: int = 4 * 1024 * 1024,
        max_message_entries: int = DEFAULT_MAX_MESSAGE_ENTRIES,
        retry_delay: Callable[[int], float] | None = None,
        ledger: bool = True,
        signing_keys: Sequence[bytes] = (),
    ) -> None:
        self._backend_name = backend_name
        self._signing_keys = tuple(signing_keys)
        self.use_ledger = ledger
        self._app_option = app
        self.queue = queue
        self.publish_timeout = float(publish_timeout)
        self.max_message_bytes = int(max_message_bytes)
        self.max_message_entries = int(max_message_entries)
        self._retry_delay = retry_delay or (lambda attempt: 0.0)
        self._app: Any = None
        self._connection: Any = None
        self._producer: Any = None
        self._ledger: RedisLedger | None = None
        self._eager = False
        self._eager_until = 0.0
        self._pid = os.getpid()
        #: Held while publishing; callers other than the delivery thread take it too.
        self.lock = threading.RLock()
        # Counted under the lock, which every publish holds: plain ints, no call into
        # the counters' module per message.
        self._sent_messages = self._published = self._eager_entries = self._recovered = 0

    @property
    def app(self) -> Any:
        """The Celery app, resolved on first use."""
        if self._app is None:
            self._app = resolve_app(self._app_option)
        return self._app

    def eager(self) -> bool:
        """Whether the app runs tasks in the caller (``task_always_eager``, for tests).

        Called on every send, and a lookup in Celery's configuration costs about as
        much as encoding the event: a value set on the app at run time
        (``app.conf.task_always_eager = True``) is seen at once, one from the
        configuration's other layers (Django settings) within a second.
        """
        conf = self.app.conf
        explicit = conf.changes.get("task_always_eager")
        if explicit is not None:
            return bool(explicit)
        now = time.monotonic()
        if now >= self._eager_until:
            self._eager = bool(conf.task_always_eager)
            self._eager_until = now + _EAGER_RECHECK
        return self._eager

    # -- the Sink protocol --------------------------------------------------------------

    def write_batch(self, items: Sequence[bytes]) -> dict[int, str] | None:
        """Publish ``items`` (entry bytes); raise to have the delivery spool and retry."""
        name = self._backend_name()
        if name is None:
            reason = (
                "AsyncRoutingBackend has no backend_name and is not a top-level backend of "
                "the default tracker, so no worker could find its nested backends; set "
                "backend_name to its key in EVENT_TRACKING_BACKENDS"
            )
            return dict.fromkeys(range(len(items)), reason)
        texts, refused = _readable(items)
        for attempt, chunk in self._messages(texts):
            countdown = self._retry_delay(attempt) if attempt else None
            self.publish(name, chunk, countdown=countdown)
        return refused or None

    def _messages(self, texts: list[str]) -> list[tuple[int, list[str]]]:
        """Split entries into messages: by attempt (each has its countdown), then by
        size and count."""
        # Most batches are first tries that fit in one message: told apart at C speed
        # (an entry with an attempt ends in a digit and "}"; see peek_attempt).
        try:
            if (
                len(texts) <= self.max_message_entries
                and set(map(_second_to_last, texts)) <= _NO_ATTEMPT
                and sum(map(len, texts)) <= self.max_message_bytes
            ):
                return [(0, texts)] if texts else []
        except IndexError:  # a text of one character: the loop below reads it
            pass
        by_attempt: dict[int, list[str]] = {}
        for text in texts:
            by_attempt.setdefault(peek_attempt(text), []).append(text)
        messages: list[tuple[int, list[str]]] = []
        for attempt, group in sorted(by_attempt.items()):
            chunk: list[str] = []
            size = 0
            for text in group:
                if chunk and (
                    size + len(text) > self.max_message_bytes
                    or len(chunk) >= self.max_message_entries
                ):
                    messages.append((attempt, chunk))
                    chunk, size = [], 0
                chunk.append(text)
                size += len(text)
            if chunk:
                messages.append((attempt, chunk))
        return messages

    def publish(
        self,
        backend_name: str,
        texts: list[str],
        countdown: float | None = None,
        queue: str | None = None,
    ) -> None:
        """Publish one ``send_events`` message now; raises what the broker raised.

        Under ``task_always_eager`` the task runs here instead, as Celery would run it.
        """
        with self.lock:
            app = self.app
            headers = (
                {HEADER: sign(self._signing_keys, backend_name, texts)}
                if self._signing_keys
                else None
            )
            if self.eager():
                # By name: the task module imports this one (the backend imported it).
                self._eager_entries += len(texts)
                app.tasks[TASK_NAME].apply(args=(backend_name, texts), headers=headers)
                return
            producer = self._get_producer(app)
            args = (backend_name, texts)
            route = app.amqp.router.route(
                {"queue": queue or self.queue} if queue or self.queue else {}, TASK_NAME, args
            )
            task_id = str(uuid.uuid4())
            options: dict[str, Any] = {
                "args": args,
                "producer": producer,
                "retry": False,
                "ignore_result": True,
                "task_id": task_id,
                "queue": route["queue"],
            }
            serializer = _body_serializer(app)
            if serializer is not None:
                options["serializer"] = serializer
            if countdown:
                options["countdown"] = countdown
            if headers:
                options["headers"] = headers
            ledger = self._ledger
            try:
                if ledger is not None:
                    due = time.time() + (countdown or 0.0)
                    record(ledger, task_id, route["queue"].name, backend_name, texts, due)
                try:
                    app.send_task(TASK_NAME, **options)
                except BaseException:
                    if ledger is not None:
                        self._forget_quietly(ledger, task_id)
                    raise
            except BaseException:
                self._drop_connection()
                raise
            self._sent_messages += 1
            self._published += len(texts)

    def forget(self, task_id: str) -> None:
        """Take a delivered message out of the ledger (Redis only; else nothing)."""
        if not self.use_ledger:
            return
        with self.lock:
            if self._broker_producer() is None:
                return
            if self._ledger is not None:
                try:
                    self._ledger.forget(task_id)
                except BaseException:
                    self._drop_connection()
                    raise

    def sweep(self, grace: float) -> int | None:
        """Publish again the messages the ledger shows lost; returns how many entries.

        See :mod:`eventtracking.backends.celery._ledger`. One sweeper at a time across workers.
        Returns None when there is no ledger to sweep (not Redis, or ``ledger=False``).
        """
        if not self.use_ledger:
            return None
        with self.lock:
            producer = self._broker_producer()
            if producer is None:
                return None
            ledger = self._ledger
            if ledger is None:
                return None
            if not ledger.take_sweep_lock(max(grace / 2, 0.5)):
                return 0
            channel = producer.channel
            unacked = channel.global_keyprefix + channel.unacked_key
            try:
                lost = ledger.lost(
                    grace=grace,
                    queue_size=channel._size,
                    unacked_task_ids=lambda: unacked_task_ids(ledger.client, unacked),
                )
                recovered = 0
                for record in lost:
                    LOG.warning(
                        "A message of %d event(s) for %r was lost on its way to a worker "
                        "(task %s); publishing it again",
                        len(record.texts),
                        record.backend_name,
                        record.task_id,
                    )
                    self.publish(record.backend_name, record.texts, queue=record.queue)
                    ledger.forget(record.task_id)
                    recovered += len(record.texts)
            except BaseException:
                self._drop_connection()
                raise
            self._recovered += recovered
            return recovered

    def ledger_left_behind(self, backend_name: str, limit: int = 1000) -> int | None:
        """How many of ``backend_name``'s messages wait in the Redis ledger, when this
        sink does not use it (``ledger=False``); None when that cannot be (ledger on,
        not Redis, eager). Looks at ``limit`` records at most.

        Records there were written by publishers with ``ledger=True``; a worker with
        ``ledger=False`` never takes them out, so they (full message texts) stay.
        """
        if self.use_ledger:
            return None
        with self.lock:
            producer = self._broker_producer()
            if producer is None or producer.connection.transport.driver_type != "redis":
                return None
            import redis

            channel = producer.channel
            client = redis.Redis(connection_pool=channel.pool)
            key = (channel.global_keyprefix or "") + LEDGER_KEY
            found = 0
            try:
                for seen, (_task_id, raw) in enumerate(client.hscan_iter(key, count=500)):
                    if seen >= limit:
                        break
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        found += json.loads(raw).get("backend_name") == backend_name
            except BaseException:
                self._drop_connection()
                raise
            return found

    @staticmethod
    def _forget_quietly(ledger: RedisLedger, task_id: str) -> None:
        try:
            ledger.forget(task_id)
        except Exception as exc:  # the sweep publishes it again later: a duplicate, no loss
            LOG.debug("Could not take message %s out of the ledger: %r", task_id, exc)

    def _broker_producer(self) -> Any:
        """The producer on the broker connection, or None when the app runs tasks in the
        caller (:meth:`eager`: there is no broker to talk to). The caller holds the lock."""
        if self.eager():
            return None
        return self._get_producer(self.app)

    def _get_producer(self, app: Any) -> Any:
        if self._pid != os.getpid():
            # Forked: the parent's connection is the parent's.
            _INHERITED.append(self._connection)
            self._connection = self._producer = None
            self._pid = os.getpid()
        if self._producer is None:
            from kombu.messaging import Producer

            connection = app.connection_for_write()
            driver = connection.transport.driver_type
            connection.release()
            connection = app.connection_for_write(
                connect_timeout=self.publish_timeout,
                transport_options=_fail_fast_options(driver, self.publish_timeout),
            )
            self._connection = connection
            try:
                producer = Producer(connection, auto_declare=False)
                self._ledger = self._make_ledger(driver, producer.channel)
                self._producer = producer
            except BaseException:
                self._drop_connection()
                raise
        return self._producer

    def _make_ledger(self, driver: str, channel: Any) -> RedisLedger | None:
        if driver != "redis" or not self.use_ledger:
            return None
        import redis

        # A plain client on the channel's pool (its timeouts): kombu's own client
        # prefixes only some commands, the ledger prefixes its keys itself.
        client = redis.Redis(connection_pool=channel.pool)
        return RedisLedger(client, channel.global_keyprefix or "")

    def _drop_connection(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        self._ledger = None
        if connection is None:
            return
        try:
            connection.release()
        except Exception as exc:  # a broken connection may fail to close: it is gone anyway
            LOG.debug("Closing a failed broker connection raised %r", exc)

    def close(self) -> None:
        """Close the connection (called once by the delivery when it closes)."""
        with self.lock:
            if self._pid == os.getpid():
                self._drop_connection()

    def stats(self) -> dict[str, Any]:
        """``messages`` published, the ``published_entries`` they held, the entries run
        in this process under ``task_always_eager`` (``eager``), and those published
        again by :meth:`sweep` (``recovered``)."""
        # Read without the lock, which a publish holds for up to publish_timeout.
        return {
            "messages": self._sent_messages,
            "published_entries": self._published,
            "eager": self._eager_entries,
            "recovered": self._recovered,
        }


_decode = bytes.decode
_second_to_last = operator.itemgetter(-2)
# The second-to-last characters of entries without an attempt field (``e`` ends the
# ``"int64": true`` of an entry accepted now).
_NO_ATTEMPT = frozenset("}]e")


def _readable(items: Sequence[bytes]) -> tuple[list[str], dict[int, str]]:
    """The items that are UTF-8 text, and the positions of the others with why.

    An item that is not text (a dead letter written by hand, or holding a lone
    surrogate, then re-driven) can never be published; it is refused alone, so that
    the delivery makes it a dead letter again instead of retrying its whole batch, and
    everything behind it, for ever.
    """
    try:
        return list(map(_decode, items)), {}  # the usual case, without a call per item
    except (UnicodeDecodeError, TypeError):
        pass
    texts: list[str] = []
    refused: dict[int, str] = {}
    for position, item in enumerate(items):
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            refused[position] = (
                f"the entry is not UTF-8 text ({exc.reason} at byte {exc.start}), so no "
                "worker could read it; it cannot be published"
            )
    return texts, refused


def _fail_fast_options(driver: str, timeout: float) -> dict[str, Any]:
    """Transport options that make a publish fail within ``timeout`` instead of waiting."""
    # One connection attempt: the delivery retries with backoff, without blocking anyone.
    options: dict[str, Any] = {"max_retries": 0, "interval_start": 0}
    if driver == "redis":
        options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    elif driver == "amqp":
        # Confirms: a publish returns once the broker has the message, not merely sent.
        options.update(read_timeout=timeout, write_timeout=timeout, confirm_publish=True)
    return options


#: The kombu serializer of our messages' bodies when orjson (the ``[fast]`` extra) is
#: installed: the same JSON, as every worker reads it (content type
#: ``application/json``, UTF-8), written by orjson.
BODY_SERIALIZER = "eventtracking-orjson"

# Whether BODY_SERIALIZER is registered with kombu: None before the first look.
_registered: bool | None = None
_register_lock = threading.Lock()


def _body_serializer(app: Any) -> str | None:
    """The serializer to publish with: :data:`BODY_SERIALIZER` when the app's
    ``task_serializer`` is ``json`` (the default) and orjson is installed, else None
    (Celery's own choice).

    Celery's json serializer encodes a message with the standard library: a 100-entry
    message is about 100 KB of JSON texts, each quote escaped, and that took the
    publisher thread, which holds the GIL the caller needs, about as long as the rest
    of its work per event. orjson writes the same JSON some ten times faster.
    """
    if app.conf.task_serializer != "json":
        return None
    global _registered
    if _registered is None:
        with _register_lock:
            if _registered is None:
                _registered = _register_body_serializer()
    return BODY_SERIALIZER if _registered else None


def _register_body_serializer() -> bool:
    try:
        import orjson
        from kombu.serialization import registry
        from kombu.utils.json import dumps as kombu_dumps
    except ImportError:
        return False

    encode_error = orjson.JSONEncodeError

    def encode(body: Any) -> bytes | str:
        try:
            return orjson.dumps(body)
        except encode_error:
            # What orjson refuses (a lone surrogate, a type only kombu knows): kombu's
            # own json, which writes the same JSON.
            text: bytes | str = kombu_dumps(body)
            return text

    # Registered without a decoder, under its own name: decoding application/json
    # stays kombu's, and the name kombu gives that content type stays "json".
    name = registry.type_to_name.get("application/json")
    registry.register(BODY_SERIALIZER, encode, None, "application/json", "utf-8")
    if name is not None:
        registry.type_to_name["application/json"] = name
    return True
