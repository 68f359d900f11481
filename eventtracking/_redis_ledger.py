"""A ledger in Redis of the messages published but not yet delivered, to recover lost ones.

On a Redis broker a message can vanish between the broker and a worker. kombu's Redis
transport takes a message off its list with ``BRPOP`` and only then records it as
unacknowledged; when Redis dies (or the connection breaks) between the two, the
message is in neither place, and Celery's ``acks_late`` cannot bring it back. RabbitMQ
has no such gap, and needs no ledger.

So the publisher records each message in the ledger (``record``) before publishing it,
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
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["LEDGER_KEY", "LedgerRecord", "RedisLedger", "unacked_task_ids"]

LEDGER_KEY = "eventtracking.ledger"
_DUE_KEY = LEDGER_KEY + ".due"
_LOCK_KEY = LEDGER_KEY + ".sweep"


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
        self._ledger = prefix + LEDGER_KEY
        self._due = prefix + _DUE_KEY
        self._lock = prefix + _LOCK_KEY

    def record(
        self, task_id: str, queue: str, backend_name: str, texts: list[str], due: float
    ) -> None:
        """Note a message about to be published, to run by the Unix time ``due``.

        The record is JSON, which every worker version reads with ``json.loads``; with
        orjson (the ``[fast]`` extra) it is written in orjson's compact form, as the
        publisher holds the GIL the caller needs while it writes a thousand texts.
        """
        value = _encode_record({"queue": queue, "backend_name": backend_name, "texts": texts})
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._ledger, task_id, value)
        pipe.zadd(self._due, {task_id: due})
        pipe.execute()

    def forget(self, task_id: str) -> None:
        """Remove a message: delivered, or never published."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self._ledger, task_id)
        pipe.zrem(self._due, task_id)
        pipe.execute()

    def size(self) -> int:
        """Messages in the ledger now."""
        return int(self.client.hlen(self._ledger))

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
        it). Malformed records are dropped from the ledger.
        """
        now = time.time() if now is None else now
        task_ids = [
            tid.decode() if isinstance(tid, bytes) else str(tid)
            for tid in self.client.zrangebyscore(self._due, 0, now - grace, start=0, num=limit)
        ]
        if not task_ids:
            return []
        records: list[LedgerRecord] = []
        for task_id, raw in zip(task_ids, self.client.hmget(self._ledger, task_ids), strict=True):
            try:
                value = json.loads(raw)
                record = LedgerRecord(
                    task_id, value["queue"], value["backend_name"], value["texts"]
                )
            except (TypeError, ValueError, KeyError):
                self.forget(task_id)  # delivered meanwhile (raw is None), or not ours
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


def _encode_record(fields: dict[str, Any]) -> bytes | str:
    """A record's JSON: orjson's when it is installed, else the standard library's."""
    try:
        import orjson  # the [fast] extra; imported here, once per message
    except ImportError:
        return json.dumps(fields)
    try:
        return orjson.dumps(fields)
    except TypeError:  # a text with a lone surrogate, which the standard library escapes
        return json.dumps(fields)
