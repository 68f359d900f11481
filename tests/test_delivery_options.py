"""DeliveryOptions, and the base every spooling backend shares (flush, close, stats).

Each test runs across the three backends that deliver through a spool: MongoBackend,
AsyncRoutingBackend and EventBusRoutingBackend. None of them talks to a server here:
nothing is sent, and building one never connects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eventbus_support import bus_env

from eventtracking.delivery.options import DeliveryOptions
from eventtracking.exceptions import ImproperlyConfigured

Build = Callable[..., Any]

# pytest finds fixtures by module attribute.
__all__ = ["bus_env"]


def _mongo(**options: Any) -> Any:
    from eventtracking.backends.mongodb import MongoBackend

    return MongoBackend(**options)


def _celery(**options: Any) -> Any:
    import celery

    from eventtracking.backends.async_routing import AsyncRoutingBackend

    app = celery.Celery("delivery-options", broker="memory://", set_as_current=False)
    return AsyncRoutingBackend(backend_name="options", app=app, **options)


def _event_bus(**options: Any) -> Any:
    from eventtracking.backends.event_bus import EventBusRoutingBackend

    return EventBusRoutingBackend(**options)


@pytest.fixture(params=[_mongo, _celery, _event_bus], ids=["mongodb", "celery", "event_bus"])
def build(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Build]:
    """Build backends of one kind, spooling under ``tmp_path``; closed afterwards."""
    if request.param is _event_bus:
        request.getfixturevalue("bus_env")
    made: list[Any] = []

    def make(**options: Any) -> Any:
        if "delivery_options" not in options:
            options.setdefault("spool_dir", tmp_path)
        backend = request.param(**options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close(1.0)


def test_options_passed_whole_or_as_keywords_are_the_same(build: Build, tmp_path: Path) -> None:
    """A DeliveryOptions passed whole sets the delivery as the eight keywords do."""
    fields = {
        "batch_size": 7,
        "flush_interval": 0.25,
        "max_queue_size": 70,
        "exit_timeout": 1.5,
        "spool_dir": tmp_path,
        "spool_stream": "options-test",
        "spool_max_bytes": 1 << 20,
        "durable": True,
    }
    whole = build(delivery_options=DeliveryOptions(**fields))
    keywords = build(**fields)
    for backend in (whole, keywords):
        delivery = backend.delivery
        assert (delivery.batch_size, delivery.flush_interval) == (7, 0.25)
        assert (delivery.max_queue_size, delivery.exit_timeout) == (70, 1.5)
        assert delivery.durable is True
        assert backend.stream == delivery.stream == "options-test"
        assert backend.spool.directory == tmp_path
        assert backend.spool.max_bytes == 1 << 20
    assert whole.delivery_options == keywords.delivery_options == DeliveryOptions(**fields)


def test_defaults_are_each_backends_own(build: Build) -> None:
    """Without options, MongoDB batches 500 events a second; the Celery and event-bus
    publishers 100 events every half second, as before DeliveryOptions."""
    backend = build()
    mongo = type(backend).__name__ == "MongoBackend"
    expected = (500, 1.0) if mongo else (100, 0.5)
    assert (backend.delivery.batch_size, backend.delivery.flush_interval) == expected
    assert backend.delivery.max_queue_size == 10_000
    assert backend.delivery.exit_timeout == 5.0


def test_a_keyword_beside_delivery_options_is_refused(build: Build, tmp_path: Path) -> None:
    """A keyword passed with delivery_options would be ignored: it is an error instead,
    naming it."""
    with pytest.raises(ImproperlyConfigured, match="pass batch_size inside delivery_options"):
        build(delivery_options=DeliveryOptions(spool_dir=tmp_path), batch_size=7)
    with pytest.raises(ImproperlyConfigured, match="delivery_options must be a DeliveryOptions"):
        build(delivery_options={"batch_size": 7})


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be a positive int, got 0"),
        ("max_queue_size", True, "max_queue_size must be a positive int, got True"),
        ("flush_interval", 0, "flush_interval must be a positive number of seconds, got 0"),
        ("exit_timeout", -1, "exit_timeout must be a number of seconds >= 0, got -1"),
        ("spool_max_bytes", 0, r"spool_max_bytes must be a positive int \(bytes\) or None"),
    ],
)
def test_bad_options_are_refused_once_with_one_message(
    build: Build, option: str, value: Any, message: str
) -> None:
    """DeliveryOptions and every backend's keyword refuse a bad value with the same
    ImproperlyConfigured message."""
    with pytest.raises(ImproperlyConfigured, match=message):
        DeliveryOptions(**{option: value})
    with pytest.raises(ImproperlyConfigured, match=message):
        build(**{option: value})


def test_options_are_frozen_and_replaceable() -> None:
    """A DeliveryOptions cannot change once checked; dataclasses.replace makes a new,
    checked one."""
    options = DeliveryOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch_size = 0  # type: ignore[misc]
    assert dataclasses.replace(options, batch_size=9).batch_size == 9
    with pytest.raises(ImproperlyConfigured, match="batch_size"):
        dataclasses.replace(options, batch_size=0)


class Recorder:
    """A nested backend that records the timeouts its flush and close are given."""

    def __init__(self) -> None:
        self.flushed: list[float | None] = []
        self.closed: list[float | None] = []

    def send(self, event: Any) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        self.flushed.append(timeout)
        return True

    def close(self, timeout: float | None = None) -> None:
        self.closed.append(timeout)


@pytest.mark.parametrize("make", [_celery, _event_bus], ids=["celery", "event_bus"])
def test_timeout_none_is_one_deadline_for_nested_backends_too(
    request: pytest.FixtureRequest, make: Build, tmp_path: Path
) -> None:
    """flush(None) gives the whole router, nested backends included, 30 s; close(None)
    its exit_timeout. Nested backends get what is left of that, never None (before, the
    event bus let them wait as long as they liked)."""
    if make is _event_bus:
        request.getfixturevalue("bus_env")
    nested = Recorder()
    router = make(backends={"nested": nested}, spool_dir=tmp_path, exit_timeout=2.0)
    assert router.flush() is True
    router.close()
    [flushed] = nested.flushed
    [closed] = nested.closed
    assert flushed is not None and 0 < flushed <= 30.0
    assert closed is not None and 0 <= closed <= 2.0
