"""Core suite: the cost of ``Tracker.emit`` from the caller's side.

Every scenario emits the same event: three contexts (``app``, ``request``, ``user``;
ten keys in all) and data with a nested dict and a list. Only the 4.x API that both
packages share is used, so the same code times ours and event-tracking 4.0.2.
Run it through ``benchmarks/run.py``; see benchmarks/README.rst for the protocol.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from datetime import datetime, timezone
from typing import Any

from _harness import Entry, Suite

NAME = "org.example.video.played"
APP = {"host": "web-3", "org": "example", "release": "2024.06.1"}
REQUEST = {
    "session": "4f1c8e2a9b7d4e05",
    "ip": "203.0.113.17",
    "path": "/courses/intro-101/unit/7",
    "agent": "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
}
USER = {"user_id": 48213, "username": "ada", "course_id": "course-v1:Example+Intro101+2024"}
# Built once and reused, as a caller emitting a fixed payload would: the measured cost
# is the library's, not the caller's dict literal. Neither package may mutate it.
DATA = {
    "video_id": "intro-101-week-1",
    "position": 132.5,
    "speed": 1.5,
    "player": {"width": 1280, "height": 720, "captions": True, "quality": "hd"},
    "watched": [0, 30, 60, 90, 120],
}
LOGGER_NAME = "benchmarks.core.events"


class CountingBackend:
    """A backend written for 4.x: it only counts, but it does not say that it leaves
    events alone, so the library must assume that it changes them."""

    def __init__(self) -> None:
        self.count = 0
        self.last: dict[str, Any] | None = None

    def send(self, event: dict[str, Any]) -> None:
        self.count += 1
        self.last = event


class NullBackend(CountingBackend):
    """A backend that only counts and says it never changes events, as every backend
    shipped with the library does (4.0.2 ignores the attribute): the cost left is the
    library's own."""

    mutates_events = False


class DiscardingHandler(logging.Handler):
    """Formats each record, as a real handler would, then throws the text away."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.last = ""
        self._sink = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self._sink.write(text)
        self._sink.write("\n")
        # Truncate so the sink never grows: this is a stream into /dev/null.
        self._sink.seek(0)
        self._sink.truncate()
        self.count += 1
        self.last = text


def fingerprint(event: dict[str, Any]) -> dict[str, Any]:
    """Describe an event's content, leaving out its timestamp, for cross-side checks."""
    if sorted(event) != ["context", "data", "name", "timestamp"]:
        msg = f"event has keys {sorted(event)}; expected context, data, name and timestamp"
        raise AssertionError(msg)
    content = json.dumps(
        {key: event[key] for key in ("name", "context", "data")}, sort_keys=True, default=str
    )
    return {
        "context_keys": len(event["context"]),
        "sha256": hashlib.sha256(content.encode()).hexdigest()[:16],
    }


def _expect(what: str, got: int, expected: int) -> None:
    if got != expected:
        msg = f"{what}: {got} events, expected {expected}; the sides did different work"
        raise AssertionError(msg)


def _is_ours() -> bool:
    """Whether the imported eventtracking is this checkout (it has options 4.0.2 lacks)."""
    import eventtracking

    return not str(getattr(eventtracking, "__version__", "4")).startswith("4")


def _enter(tracker: Any, *names: str) -> None:
    contexts = {"app": APP, "request": REQUEST, "user": USER}
    for name in names:
        tracker.enter_context(name, contexts[name])


class NullWorkload:
    """``tracker.emit`` in three entered contexts, delivered to a NullBackend."""

    def __init__(self, processors: list[Any] | None = None, context_locator: Any = None) -> None:
        from eventtracking.tracker import Tracker

        self.backend = NullBackend()
        self.tracker = Tracker(
            backends={"null": self.backend},
            processors=processors,
            context_locator=context_locator,
        )
        _enter(self.tracker, "app", "request", "user")

    def run(self, n: int) -> None:
        emit = self.tracker.emit
        for _ in range(n):
            emit(NAME, DATA)

    def check(self, expected: int) -> dict[str, Any]:
        _expect("null backend", self.backend.count, expected)
        assert self.backend.last is not None
        return fingerprint(self.backend.last)


def build_null(_setup: dict[str, Any]) -> NullWorkload:
    return NullWorkload()


def build_whitelist(_setup: dict[str, Any]) -> NullWorkload:
    from eventtracking.processors.whitelist import NameWhitelistProcessor

    return NullWorkload(processors=[NameWhitelistProcessor(whitelist=[NAME, "other.event"])])


def build_contextvar(_setup: dict[str, Any]) -> NullWorkload:
    from eventtracking.locator import ContextVarLocator

    return NullWorkload(context_locator=ContextVarLocator())


def _discarding_logger() -> tuple[logging.Logger, DiscardingHandler]:
    handler = DiscardingHandler()
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, handler


class LoggerWorkload:
    """LoggerBackend encoding each event as JSON into a handler that discards it.

    ``encoder`` picks our encoder ("stdlib" or "orjson"); 4.0.2 has one encoder and no
    such option, so its side always runs the same code.
    """

    def __init__(self, encoder: str) -> None:
        from eventtracking.backends.logger import LoggerBackend
        from eventtracking.tracker import Tracker

        self.logger, self.handler = _discarding_logger()
        options = {"encoder": encoder} if _is_ours() else {}
        # Default size limit: the event is well under 1 KB, which check() confirms by
        # counting the records that reached the handler.
        backend = LoggerBackend(name=LOGGER_NAME, **options)
        self.tracker = Tracker(backends={"logger": backend})
        _enter(self.tracker, "app", "request", "user")

    def run(self, n: int) -> None:
        emit = self.tracker.emit
        for _ in range(n):
            emit(NAME, DATA)

    def check(self, expected: int) -> dict[str, Any]:
        return _check_logged(self.handler, expected)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


def _check_logged(handler: DiscardingHandler, expected: int) -> dict[str, Any]:
    _expect("logger handler", handler.count, expected)
    event = json.loads(handler.last)
    stamp = datetime.fromisoformat(event["timestamp"])
    if stamp.utcoffset() != timezone.utc.utcoffset(None):
        msg = f"logged timestamp {event['timestamp']!r} is not UTC"
        raise AssertionError(msg)
    return fingerprint(event)


class NestedWorkload:
    """Two ``with tracker.context(...)`` blocks entered and left around every emit."""

    def __init__(self) -> None:
        from eventtracking.tracker import Tracker

        self.backend = NullBackend()
        self.tracker = Tracker(backends={"null": self.backend})
        _enter(self.tracker, "app")

    def run(self, n: int) -> None:
        tracker = self.tracker
        context, emit = tracker.context, tracker.emit
        for _ in range(n):
            with context("request", REQUEST), context("user", USER):
                emit(NAME, DATA)

    def check(self, expected: int) -> dict[str, Any]:
        _expect("null backend", self.backend.count, expected)
        left = self.tracker.resolve_context()
        if left != APP:
            msg = f"after the blocks the context is {left!r}; expected only the app context"
            raise AssertionError(msg)
        assert self.backend.last is not None
        return fingerprint(self.backend.last)


class FanOutWorkload:
    """Several backends that lack the flag, at the top level or under routers.

    ``shape`` is a list with one item per top-level backend: None for a backend, or the
    number of backends under a RoutingBackend there.
    """

    def __init__(self, shape: list[int | None]) -> None:
        from eventtracking.backends.routing import RoutingBackend
        from eventtracking.tracker import Tracker

        self.leaves: list[CountingBackend] = []
        backends: dict[str, Any] = {}
        for index, width in enumerate(shape):
            if width is None:
                backends[f"b{index:02}"] = self._leaf()
            else:
                branch = {f"l{j:02}": self._leaf() for j in range(width)}
                backends[f"r{index:02}"] = RoutingBackend(backends=branch)
        self.tracker = Tracker(backends=backends)
        _enter(self.tracker, "app", "request", "user")

    def _leaf(self) -> CountingBackend:
        leaf = CountingBackend()
        self.leaves.append(leaf)
        return leaf

    def run(self, n: int) -> None:
        emit = self.tracker.emit
        for _ in range(n):
            emit(NAME, DATA)

    def check(self, expected: int) -> dict[str, Any]:
        for leaf in self.leaves:
            _expect("each backend", leaf.count, expected)
        assert self.leaves[-1].last is not None
        return {"backends": len(self.leaves), **fingerprint(self.leaves[-1].last)}


def build_unflagged(_setup: dict[str, Any]) -> FanOutWorkload:
    return FanOutWorkload([None])


def build_fanout4_routers(_setup: dict[str, Any]) -> FanOutWorkload:
    return FanOutWorkload([1, 1, 1, 1])


def build_fanout16(_setup: dict[str, Any]) -> FanOutWorkload:
    return FanOutWorkload([None] * 16)


def build_tree4x4(_setup: dict[str, Any]) -> FanOutWorkload:
    return FanOutWorkload([4, 4, 4, 4])


class DeepStackWorkload:
    """Enter ``depth`` contexts, emit once, leave them all, per event."""

    def __init__(self, depth: int) -> None:
        from eventtracking.tracker import Tracker

        self.backend = NullBackend()
        self.tracker = Tracker(backends={"null": self.backend})
        self.frames = [(f"frame{i}", {f"key{i}": i, "shared": i}) for i in range(depth)]

    def run(self, n: int) -> None:
        tracker, frames = self.tracker, self.frames
        enter, leave, emit = tracker.enter_context, tracker.exit_context, tracker.emit
        names = [name for name, _ in reversed(frames)]
        for _ in range(n):
            for name, ctx in frames:
                enter(name, ctx)
            emit(NAME, DATA)
            for name in names:
                leave(name)

    def check(self, expected: int) -> dict[str, Any]:
        _expect("null backend", self.backend.count, expected)
        if self.tracker.resolve_context():
            msg = "contexts are left over after every frame was left"
            raise AssertionError(msg)
        assert self.backend.last is not None
        return fingerprint(self.backend.last)


def build_deep50(_setup: dict[str, Any]) -> DeepStackWorkload:
    return DeepStackWorkload(50)


def build_deep1000(_setup: dict[str, Any]) -> DeepStackWorkload:
    return DeepStackWorkload(1000)


class FloorWorkload:
    """No library: merge three contexts, read the clock, build the event, send it.

    This is the least any emit can cost in pure Python; our figure over this one is
    the library's own overhead.
    """

    def __init__(self) -> None:
        self.backend = NullBackend()
        self.contexts: dict[str, dict[str, Any]] = {"app": APP, "request": REQUEST, "user": USER}

    def run(self, n: int) -> None:
        contexts, send, utc, now = self.contexts, self.backend.send, timezone.utc, datetime.now
        for _ in range(n):
            merged: dict[str, Any] = {}
            for ctx in contexts.values():
                merged.update(ctx)
            send({"name": NAME, "timestamp": now(utc), "context": merged, "data": DATA})

    def check(self, expected: int) -> dict[str, Any]:
        _expect("null backend", self.backend.count, expected)
        assert self.backend.last is not None
        return fingerprint(self.backend.last)


class LoggerFloorWorkload:
    """No library: build the event as FloorWorkload does, encode it, ``logger.info`` it.

    ``encoder`` is "stdlib" (``json.dumps`` with a ``default`` for the timestamp) or
    "orjson" (``orjson.dumps``, which writes datetimes itself). This is the least a JSON
    logger can cost in Python with that encoder and ``logging``.
    """

    def __init__(self, encoder: str) -> None:
        self.logger, self.handler = _discarding_logger()
        self.contexts: dict[str, dict[str, Any]] = {"app": APP, "request": REQUEST, "user": USER}
        if encoder == "orjson":
            import orjson

            dumps = orjson.dumps
            self.encode: Any = lambda event: dumps(event).decode()
        else:
            self.encode = lambda event: json.dumps(event, default=datetime.isoformat)

    def run(self, n: int) -> None:
        contexts, encode, info = self.contexts, self.encode, self.logger.info
        utc, now = timezone.utc, datetime.now
        for _ in range(n):
            merged: dict[str, Any] = {}
            for ctx in contexts.values():
                merged.update(ctx)
            info(encode({"name": NAME, "timestamp": now(utc), "context": merged, "data": DATA}))

    def check(self, expected: int) -> dict[str, Any]:
        return _check_logged(self.handler, expected)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


class StructlogWorkload:
    """What users pick instead: structlog with the same context bound, its ISO UTC
    timestamp and JSON renderer, into the same ``logging`` handler."""

    def __init__(self) -> None:
        import structlog

        self.logger, self.handler = _discarding_logger()
        structlog.configure(
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
        self.log = structlog.get_logger(LOGGER_NAME).bind(**APP, **REQUEST, **USER)

    def run(self, n: int) -> None:
        info = self.log.info
        for _ in range(n):
            info(NAME, **DATA)

    def check(self, expected: int) -> dict[str, Any]:
        _expect("logger handler", self.handler.count, expected)
        line = json.loads(self.handler.last)
        missing = {"event", "timestamp", *APP, *REQUEST, *USER, *DATA} - set(line)
        if missing:
            msg = f"structlog's line lacks {sorted(missing)}"
            raise AssertionError(msg)
        return {"keys": len(line)}

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


class LoggingOnlyWorkload:
    """No library, no encoding: log one pre-encoded event line through the handler.

    Both packages pay this ``logging`` cost on top of building and encoding the event,
    so it bounds the ratio a logger backend can reach: at best peer / this.
    """

    def __init__(self) -> None:
        self.logger, self.handler = _discarding_logger()
        event = {
            "name": NAME,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "context": {**APP, **REQUEST, **USER},
            "data": DATA,
        }
        self.line = json.dumps(event)

    def run(self, n: int) -> None:
        info, line = self.logger.info, self.line
        for _ in range(n):
            info(line)

    def check(self, expected: int) -> dict[str, Any]:
        return _check_logged(self.handler, expected)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


def build_logger(_setup: dict[str, Any]) -> LoggerWorkload:
    return LoggerWorkload("stdlib")


def build_logger_orjson(_setup: dict[str, Any]) -> LoggerWorkload:
    return LoggerWorkload("orjson")


def build_logger_floor(_setup: dict[str, Any]) -> LoggerFloorWorkload:
    return LoggerFloorWorkload("stdlib")


def build_orjson_floor(_setup: dict[str, Any]) -> LoggerFloorWorkload:
    return LoggerFloorWorkload("orjson")


def build_structlog(_setup: dict[str, Any]) -> StructlogWorkload:
    return StructlogWorkload()


def build_nested(_setup: dict[str, Any]) -> NestedWorkload:
    return NestedWorkload()


def build_floor(_setup: dict[str, Any]) -> FloorWorkload:
    return FloorWorkload()


def build_logging_only(_setup: dict[str, Any]) -> LoggingOnlyWorkload:
    return LoggingOnlyWorkload()


SUITE = Suite(
    name="core",
    title="Tracker.emit with 3 contexts (10 keys) and nested data",
    entries=[
        Entry(
            "null",
            "null backend",
            build_null,
            goal=12.0,
            description="emit to one backend whose send() only counts",
        ),
        Entry(
            "unflagged",
            "1 backend without the flag",
            build_unflagged,
            goal=6.0,
            description="the null backend written for 4.x: it gets a copy of the event",
        ),
        Entry(
            "whitelist",
            "whitelist processor + null backend",
            build_whitelist,
            goal=5.0,
            description="one NameWhitelistProcessor that lets the event through",
        ),
        Entry(
            "logger",
            "LoggerBackend, stdlib json",
            build_logger,
            goal=3.5,
            description="JSON encoding, then a logging handler that formats and discards",
        ),
        Entry(
            "logger-orjson",
            "LoggerBackend, orjson (the [fast] extra)",
            build_logger_orjson,
            goal=5.0,
            floor="orjson-floor",
            floor_goal=1.2,
            description="the same with our orjson encoder; 4.0.2 runs its only encoder",
        ),
        Entry(
            "fanout4-routers",
            "4 RoutingBackends, each 1 backend without the flag",
            build_fanout4_routers,
            goal=2.0,
            description="four top-level routers, as an Open edX site has",
        ),
        Entry(
            "fanout16",
            "16 backends without the flag",
            build_fanout16,
            goal=1.5,
            description="16 top-level backends that may change events",
        ),
        Entry(
            "tree4x4",
            "4 RoutingBackends x 4 backends without the flag",
            build_tree4x4,
            goal=1.5,
            description="a tree of routers with 16 leaves that may change events",
        ),
        Entry(
            "nested",
            "2 nested `with context()` + emit",
            build_nested,
            goal=4.0,
            description="enter two contexts, emit, exit both, per event",
        ),
        Entry(
            "deep50",
            "50 contexts entered, 1 emit, all left",
            build_deep50,
            goal=1.0,
            iterations=1_000,
            description="a deep stack of contexts: the time is per cycle, not per context",
        ),
        Entry(
            "deep1000",
            "1,000 contexts entered, 1 emit, all left",
            build_deep1000,
            iterations=50,
            description="linear, not quadratic, in the depth of the stack",
        ),
        Entry(
            "contextvar",
            "null backend, ContextVarLocator",
            build_contextvar,
            sides=("ours",),
            description="our locator that isolates threads and asyncio tasks",
        ),
        Entry(
            "floor",
            "floor: merge + clock + dict, no library",
            build_floor,
            sides=("ours",),
            description="the work any emit must do, written inline",
        ),
        Entry(
            "logger-floor",
            "floor: event + json.dumps + logger.info",
            build_logger_floor,
            sides=("ours",),
            description="a JSON logger written inline with the standard library",
        ),
        Entry(
            "orjson-floor",
            "floor: event + orjson.dumps + logger.info",
            build_orjson_floor,
            sides=("ours",),
            description="a JSON logger written inline with orjson",
        ),
        Entry(
            "logging-only",
            "floor: logger.info(encoded line) alone",
            build_logging_only,
            sides=("ours",),
            description="the logging cost a JSON logger backend pays besides encoding",
        ),
        Entry(
            "structlog",
            "structlog: bind + TimeStamper + JSONRenderer",
            build_structlog,
            sides=("ours",),
            description="what users pick instead, on the same event and handler",
        ),
    ],
)

if __name__ == "__main__":
    raise SystemExit(SUITE.main())
