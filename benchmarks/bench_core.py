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


class NullBackend:
    """A backend that only counts: the cost left is the library's own."""

    def __init__(self) -> None:
        self.count = 0
        self.last: dict[str, Any] | None = None

    def send(self, event: dict[str, Any]) -> None:
        self.count += 1
        self.last = event


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
    """LoggerBackend encoding each event as JSON into a handler that discards it."""

    def __init__(self) -> None:
        from eventtracking.backends.logger import LoggerBackend
        from eventtracking.tracker import Tracker

        self.logger, self.handler = _discarding_logger()
        # Default size limit: the event is well under 1 KB, which check() confirms by
        # counting the records that reached the handler.
        self.tracker = Tracker(backends={"logger": LoggerBackend(name=LOGGER_NAME)})
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
    return LoggerWorkload()


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
            goal=8.0,
            description="emit to one backend whose send() only counts",
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
            "LoggerBackend, JSON",
            build_logger,
            goal=3.0,
            description="JSON encoding, then a logging handler that formats and discards",
        ),
        Entry(
            "nested",
            "2 nested `with context()` + emit",
            build_nested,
            goal=3.0,
            description="enter two contexts, emit, exit both, per event",
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
            "logging-only",
            "floor: logger.info(encoded line) alone",
            build_logging_only,
            sides=("ours",),
            description="the logging cost a JSON logger backend pays besides encoding",
        ),
    ],
)

if __name__ == "__main__":
    raise SystemExit(SUITE.main())
