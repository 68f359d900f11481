"""A ledger in Redis of the messages published but not yet delivered, to recover lost ones.

On a Redis broker a message can vanish between the broker and a worker. kombu's Redis
transport takes a message off its list with ``BRPOP`` and only then records it as
unacknowledged; when Redis dies (or the connection breaks) between the two, the
message is in neither place, and Celery's ``acks_late`` cannot bring it back. RabbitMQ
has no such gap, and needs no ledger.

So the publisher records each message in the ledger before publishing it (``record``
in ``_sink.py``, beside the publish it goes with, on the same connection),
and the worker removes it (``forget``) once every leaf holds its events, before Celery
acknowledges the message. A worker periodically looks for lost messages (``due``): a
message still in the ledger well after it should have run, while it is neither in its
queue nor unacknowledged anywhere, was lost, and is published again. A message that
was only slow may so be delivered twice, which MongoBackend absorbs through the event
ids; none is lost.

Keys (under the transport's ``global_keyprefix``): ``eventtracking.ledger`` (a hash of
task id -> record) and ``eventtracking.ledger.due`` (a sorted set of task id -> the
time it should have run by), and ``eventtracking.ledger.sweep`` (a short lock, so that
one worker sweeps at a time).

Anyone who can write to Redis can write to the ledger, so a sweep trusts no record:
each is checked on its own (``queue`` and ``backend_name`` strings, ``texts`` a list of
strings), and one that fails is dropped from the ledger, logged (rate limited) and
counted in :func:`stats` (``invalid``), while the others are swept as usual. A record
due further ahead than :data:`LEDGER_TTL` is dropped too (``too_far_ahead``): no
message waits that long. Both keys expire :data:`LEDGER_TTL` after the last message
was recorded, so the ledger of a deployment that stopped publishing goes away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from eventtracking._util.escape import escape
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters

__all__ = [
    "LEDGER_KEY",
    "LEDGER_TTL",
    "LedgerError",
    "LedgerRecord",
    "RedisLedger",
    "stats",
    "unacked_task_ids",
]

_LOG = RateLimitedLogger(logging.getLogger("eventtracking.tasks"))
_COUNTERS = Counters("invalid", "too_far_ahead")

#: Seconds the ledger's keys live after the last message was recorded (7 days); also
#: the furthest ahead a record may be due.
LEDGER_TTL = 7 * 24 * 3600

LEDGER_KEY = "eventtracking.ledger"
_DUE_KEY = LEDGER_KEY + ".due"
_LOCK_KEY = LEDGER_KEY + ".sweep"


# Messages forget() sends before it reads Redis's replies to them, in one go.
_SETTLE_EVERY = 32


def _bulk(text: str) -> bytes:
    """``text`` as a bulk string of Redis's protocol (RESP)."""
    data = text.encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


class LedgerError(Exception):
    """Redis refused to take a message out of the ledger (see RedisLedger.forget)."""


@dataclass(frozen=True)
class LedgerRecord:
    """A message in the ledger: where it went and what it held."""

    task_id: str
    queue: str
    backend_name: str
    texts: list[str]


class RedisLedger:
    """The ledger, through a plain redis-py ``client`` (keys are prefixed here)."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix
        #: The keys of the records and of their due times, prefixed (see the module
        #: docstring); the publisher writes both (``_sink.record``).
        self.key = prefix + LEDGER_KEY
        self.due_key = prefix + _DUE_KEY
        self._lock = prefix + _LOCK_KEY
        # forget()'s own connection, the process it belongs to, and the replies on it
        # not read yet.
        self._forget_lock = threading.Lock()
        self._connection: Any = None
        self._pool: Any = None
        self._pid = os.getpid()
        self._unconfirmed: list[str] = []
        # The two removals in Redis's protocol, but for the task id that ends each.
        self._hdel = b"*3\r\n$4\r\nHDEL\r\n" + _bulk(self.key)
        self._zrem = b"*3\r\n$4\r\nZREM\r\n" + _bulk(self.due_key)

    def forget(self, task_id: str) -> None:
        """Remove a message: delivered, or never published.

        A worker forgets once per message, and waiting for Redis's answer each time
        cost it more than a microsecond per event (a round trip per 100-event message),
        so the removals are sent on a connection of this ledger's own and their
        replies are not waited for: they are read 32 messages later, all at once (or
        by :meth:`settle`); Redis carries out a connection's commands in order. A
        removal Redis refused is raised then, as :class:`LedgerError`. A forked child
        leaves its parent's connection alone. When the connection breaks before the
        replies are read, the removals are sent again (they can be repeated) through
        the client, which waits and retries as redis-py does; what fails then is
        raised. The two removals of a message go without MULTI/EXEC: a sweep that finds
        the due time of a record already gone takes it out itself (see :meth:`lost`).
        """
        arg = _bulk(task_id)  # raises UnicodeEncodeError before anything is sent
        with self._forget_lock:
            self._after_fork()
            if len(self._unconfirmed) >= _SETTLE_EVERY:
                self._settle()
            try:
                connection = self._forget_connection()
                connection.send_packed_command([self._hdel + arg + self._zrem + arg])
            except Exception:
                # What got through is unknown: all that is unconfirmed goes again.
                again, self._unconfirmed = [*self._unconfirmed, task_id], []
                self._drop_forget_connection()
                self._remove(again)
            else:
                self._unconfirmed.append(task_id)

    def settle(self) -> None:
        """Wait for the replies to the removals :meth:`forget` sent; raises as it does."""
        with self._forget_lock:
            self._after_fork()
            self._settle()

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            # A forked child: the connection and the replies on it are the parent's.
            self._connection, self._unconfirmed, self._pid = None, [], os.getpid()

    def _settle(self) -> None:
        connection, sent = self._connection, self._unconfirmed
        if not sent:
            return
        self._unconfirmed = []
        import redis

        try:
            for _ in range(2 * len(sent)):
                connection.read_response()
        except redis.ResponseError as exc:
            self._drop_forget_connection()
            msg = f"Redis refused taking a message out of the ledger: {exc}"
            raise LedgerError(msg) from exc
        except (redis.RedisError, OSError):
            self._drop_forget_connection()
            self._remove(sent)
        except BaseException:
            self._drop_forget_connection()
            raise

    def _remove(self, task_ids: list[str]) -> None:
        """Remove records through the client, waiting for Redis (and retrying)."""
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hdel(self.key, task_id)
            pipe.zrem(self.due_key, task_id)
        pipe.execute()

    def _forget_connection(self) -> Any:
        if self._connection is None:
            pool = self.client.connection_pool
            try:
                connection = pool.get_connection()
            except TypeError:  # redis-py before 5.3 names the command
                connection = pool.get_connection("HDEL")
            # Out of the pool for good: no other command may read its replies.
            self._connection, self._pool = connection, pool
        return self._connection

    def _drop_forget_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(Exception):
            connection.disconnect()
        with contextlib.suppress(Exception):
            self._pool.release(connection)

    def size(self) -> int:
        """Messages in the ledger now."""
        return int(self.client.hlen(self.key))

    def take_sweep_lock(self, seconds: float) -> bool:
        """Whether this process may sweep now (one sweeper per ``seconds`` across workers)."""
        token = uuid.uuid4().hex
        return bool(self.client.set(self._lock, token, nx=True, px=max(1, int(seconds * 1000))))

    def lost(
        self,
        *,
        grace: float,
        queue_size: Callable[[str], int],
        unacked_task_ids: Callable[[], Iterable[str]],
        limit: int = 100,
        now: float | None = None,
    ) -> list[LedgerRecord]:
        """Messages that should have run ``grace`` seconds ago and are nowhere.

        A message counts as lost only when its queue is empty (FIFO: it is not waiting
        behind others) and no unacknowledged message has its task id (no worker holds
        it). Records that are not what ``_sink.record`` writes are dropped from the ledger
        and counted (see the module docstring).
        """
        now = time.time() if now is None else now
        far = int(self.client.zremrangebyscore(self.due_key, f"({now + LEDGER_TTL}", "+inf"))
        if far:
            _COUNTERS.incr("too_far_ahead", amount=far)
            _LOG.warning(
                "ledger-far", "Dropped %d ledger record(s) due over %d s ahead", far, LEDGER_TTL
            )
        task_ids = [
            tid.decode() if isinstance(tid, bytes) else str(tid)
            for tid in self.client.zrangebyscore(self.due_key, 0, now - grace, start=0, num=limit)
        ]
        if not task_ids:
            return []
        records: list[LedgerRecord] = []
        for task_id, raw in zip(task_ids, self.client.hmget(self.key, task_ids), strict=True):
            if raw is None:
                self.forget(task_id)  # delivered meanwhile
                continue
            record = _parse(task_id, raw)
            if record is None:
                self.forget(task_id)
                continue
            records.append(record)
        empty: dict[str, bool] = {}
        for queue in {record.queue for record in records}:
            empty[queue] = queue_size(queue) == 0
        candidates = [record for record in records if empty[record.queue]]
        if not candidates:
            return []
        held = set(unacked_task_ids())
        return [record for record in candidates if record.task_id not in held]


def stats() -> dict[str, object]:
    """Ledger records this process dropped: ``invalid`` ones (not what ``_sink.record``
    writes) and ``too_far_ahead`` (due over :data:`LEDGER_TTL` from now)."""
    return _COUNTERS.snapshot()


def _parse(task_id: str, raw: Any) -> LedgerRecord | None:
    """The record ``raw`` holds, or None (logged and counted) when it is not one."""
    problem: str | None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        problem = f"not JSON ({type(exc).__name__})"
    else:
        problem = _record_problem(value)
        if problem is None:
            return LedgerRecord(task_id, value["queue"], value["backend_name"], value["texts"])
    _COUNTERS.incr("invalid")
    _LOG.warning(
        "ledger-invalid",
        "Dropped ledger record %s: %s; the ledger holds only what publishers record",
        escape(task_id, 100),
        problem,
    )
    return None


def _record_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    for name in ("queue", "backend_name"):
        if not isinstance(value.get(name), str):
            return f"its {name} is a {type(value.get(name)).__name__}, not a string"
    texts = value.get("texts")
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        return "its texts are not a list of strings"
    return None


def unacked_task_ids(client: Any, key: str) -> Iterable[str]:
    """The task ids of kombu's unacknowledged messages (the hash ``key``, prefixed)."""
    for _tag, raw in client.hscan_iter(key, count=500):
        try:
            message = json.loads(raw)[0]
            task_id = message["headers"]["id"]
        except (TypeError, ValueError, KeyError, IndexError):
            continue
        if isinstance(task_id, str):
            yield task_id
