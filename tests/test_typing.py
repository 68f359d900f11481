"""Tests for eventtracking.typing: the Event alias and the backend and processor protocols."""

from __future__ import annotations

from typing import Any

import pytest

from eventtracking.backends.logger import LoggerBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.processors.regex_filter import RegexFilter
from eventtracking.processors.whitelist import NameWhitelistProcessor
from eventtracking.tracker import Tracker
from eventtracking.typing import (
    Backend,
    BatchBackend,
    Context,
    Event,
    FlushableBackend,
    Processor,
    SupportsClose,
    SupportsFlush,
    SupportsStats,
)


class SendOnly:
    """The smallest backend: only send()."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def send(self, event: Event) -> None:
        self.events.append(event)


def test_event_and_context_aliases() -> None:
    """Event is a dict of str keys; Context a mapping."""
    assert Event == dict[str, Any]
    assert Context.__origin__.__name__ == "Mapping"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("component", "protocols"),
    [
        (SendOnly(), {Backend}),
        (LoggerBackend(), {Backend}),
        (InMemoryBackend(), {Backend, BatchBackend}),
        (RoutingBackend(), {Backend, FlushableBackend}),
        (object(), set()),
    ],
    ids=["send-only", "logger", "memory", "routing", "object"],
)
def test_backend_protocols_match_the_methods_present(component: Any, protocols: set) -> None:
    """A component satisfies exactly the protocols whose methods it has: send() makes a
    Backend, send_batch() a BatchBackend, flush() with close() a FlushableBackend."""
    all_protocols = {Backend, BatchBackend, FlushableBackend}
    assert {p for p in all_protocols if isinstance(component, p)} == protocols


@pytest.mark.parametrize(
    "processor",
    [NameWhitelistProcessor(["a"]), RegexFilter("allowlist", ["a"]), lambda event: None],
    ids=["whitelist", "regex", "function"],
)
def test_processors_satisfy_the_processor_protocol(processor: Any) -> None:
    """Any callable is a Processor."""
    assert isinstance(processor, Processor)


def test_send_only_backend_works_in_a_tracker() -> None:
    """A backend with only send() is accepted and receives events; the optional methods
    are simply skipped."""
    backend = SendOnly()
    t = Tracker({"plain": backend})
    t.emit("x")
    assert t.flush(1.0) is True
    t.close(1.0)
    assert [e["name"] for e in backend.events] == ["x"]
    assert t.stats()["backends"] == {}


class FlushOnly(SendOnly):
    """A backend that buffers and can flush, but holds nothing to close and counts
    nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[float | None] = []

    def flush(self, timeout: float | None = None) -> bool:
        self.flushed.append(timeout)
        return True


@pytest.mark.parametrize(
    ("component", "protocols"),
    [
        (SendOnly(), set()),
        (FlushOnly(), {SupportsFlush}),
        (RoutingBackend(), {SupportsFlush, SupportsClose, SupportsStats}),
    ],
    ids=["send-only", "flush-only", "routing"],
)
def test_each_optional_method_has_its_protocol(component: Any, protocols: set) -> None:
    """SupportsFlush, SupportsClose and SupportsStats each stand for one optional method,
    so a backend with only one of them is told apart by isinstance."""
    every = {SupportsFlush, SupportsClose, SupportsStats}
    assert {p for p in every if isinstance(component, p)} == protocols


def test_tracker_calls_each_optional_method_a_backend_has() -> None:
    """A backend with flush() and no close() or stats() is flushed through a nested
    router, and its missing methods are skipped."""
    backend = FlushOnly()
    t = Tracker({"route": RoutingBackend({"flushing": backend})})
    t.emit("x")
    assert t.flush(5.0) is True
    t.close(5.0)
    assert len(backend.flushed) == 1
    assert t.stats()["backends"] == {"route": {"dropped": {}, "failed": {}, "backends": {}}}
