"""Tests for eventtracking._util.ratelimit: logging that cannot flood."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from eventtracking._util import ratelimit as _ratelimit
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking.backends.logger import LoggerBackend

LOGGER = "tests.ratelimit"


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Replace the rate limiter's clock with one the test moves."""
    fake = Clock()
    monkeypatch.setattr(_ratelimit, "time", fake)
    return fake


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_first_occurrence_is_logged_then_suppressed(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The first line for a key is written; repeats within the interval are not."""
    limited = RateLimitedLogger(logging.getLogger(LOGGER), interval=60.0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert limited.warning("k", "problem %s", "one") is True
        clock.now += 30
        assert limited.warning("k", "problem %s", "two") is False
        assert limited.warning("k", "problem %s", "three") is False
    assert messages(caplog) == ["problem one"]


def test_next_line_after_the_interval_reports_suppressed_count(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """After the interval the key logs again, saying how many lines were suppressed."""
    limited = RateLimitedLogger(logging.getLogger(LOGGER), interval=60.0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        limited.warning("k", "problem %d", 1)
        limited.warning("k", "problem %d", 2)
        limited.warning("k", "problem %d", 3)
        clock.now += 60
        assert limited.warning("k", "problem %d", 4) is True
        clock.now += 60
        limited.warning("k", "problem %d", 5)
    assert messages(caplog) == [
        "problem 1",
        "problem 4 (2 similar messages suppressed)",
        "problem 5",
    ]


def test_keys_are_limited_independently(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """Each key has its own interval: one noisy key does not hide another."""
    limited = RateLimitedLogger(logging.getLogger(LOGGER))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        limited.error("a", "from a")
        limited.error("a", "from a again")
        limited.error("b", "from b")
    assert messages(caplog) == ["from a", "from b"]


@pytest.mark.parametrize(
    ("method", "level"), [("warning", logging.WARNING), ("error", logging.ERROR)]
)
def test_shorthands_log_at_their_level(
    clock: Clock, caplog: pytest.LogCaptureFixture, method: str, level: int
) -> None:
    """warning() and error() write at WARNING and ERROR."""
    limited = RateLimitedLogger(logging.getLogger(LOGGER))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        getattr(limited, method)("k", "text")
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [level]


def test_log_passes_exc_info(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """exc_info reaches the record, so tracebacks are kept."""
    limited = RateLimitedLogger(logging.getLogger(LOGGER))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        try:
            raise ValueError("boom")
        except ValueError:
            limited.log(logging.ERROR, "k", "failed", exc_info=True)
    record: Any = next(r for r in caplog.records if r.name == LOGGER)
    assert record.exc_info[0] is ValueError


def test_state_is_bounded_for_any_number_of_keys(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """200,000 distinct keys (attacker-chosen names, say) keep at most max_keys + 1.

    Keys past the cap share one overflow slot, so the log still gets at most
    ``max_keys + 1`` lines per interval however many keys there are.
    """
    limited = RateLimitedLogger(logging.getLogger(LOGGER), interval=60.0, max_keys=100)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for number in range(200_000):
            limited.warning(f"oversized:{number}", "event %d", number)
    assert len(limited) <= 101
    assert len(messages(caplog)) == 101
    assert messages(caplog)[:2] == ["event 0", "event 1"]
    assert messages(caplog)[-1] == "event 100"


def test_expired_keys_make_room_for_new_ones(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Once its interval has passed, a key's state is dropped to make room for new keys."""
    limited = RateLimitedLogger(logging.getLogger(LOGGER), interval=60.0, max_keys=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        limited.warning("a", "a1")
        limited.warning("b", "b1")
        limited.warning("c", "c1")  # the overflow slot
        limited.warning("d", "d1")  # shares it: suppressed
        clock.now += 61
        limited.warning("e", "e1")
        limited.warning("f", "f1")
        limited.warning("a", "a2")
    assert messages(caplog) == ["a1", "b1", "c1", "e1", "f1", "a2"]
    assert len(limited) <= 3


def test_logger_backend_keeps_no_state_per_oversized_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Oversized events with ever new names leave bounded warning state behind."""
    backend = LoggerBackend(name=LOGGER, max_event_size=10)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for number in range(3 * _ratelimit.MAX_KEYS):
            backend.send({"name": f"n{number}", "timestamp": None, "context": {}, "data": {}})
    assert backend.stats()["oversized"] == 3 * _ratelimit.MAX_KEYS
    assert len(backend._log) <= _ratelimit.MAX_KEYS + 1
