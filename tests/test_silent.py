"""A LoggerBackend that writes nothing says so: why, how to fix it, and how many events."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from eventtracking._util.silent import logging_snippet, why_nothing_is_written
from eventtracking.backends.logger import LoggerBackend
from eventtracking.tracker import Tracker


@pytest.fixture
def quiet_logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A fresh logger that inherits the root's WARNING level, restored after the test."""
    logger = logging.getLogger(f"eventtracking.tests.silent.{request.node.name}")
    saved = (logger.level, logger.propagate, logger.disabled, list(logger.handlers))
    yield logger
    logger.setLevel(saved[0])
    logger.propagate, logger.disabled = saved[1], saved[2]
    logger.handlers[:] = saved[3]


def event(name: str = "e") -> dict[str, object]:
    return {"name": name, "timestamp": datetime.now(timezone.utc), "context": {}, "data": {}}


def test_a_logger_not_enabled_for_info_is_found(quiet_logger: logging.Logger) -> None:
    """Python's default root level, WARNING, leaves INFO records unwritten."""
    reason = why_nothing_is_written(quiet_logger, logging.INFO)
    assert reason == (
        f"logger {quiet_logger.name!r} is not enabled for INFO: its effective level is WARNING"
    )
    assert why_nothing_is_written(quiet_logger, logging.WARNING) is None


def test_a_logger_without_handlers_is_found(quiet_logger: logging.Logger) -> None:
    """Enabled for INFO but with no handler on the way up: Python discards the record."""
    quiet_logger.setLevel(logging.INFO)
    quiet_logger.propagate = False
    reason = why_nothing_is_written(quiet_logger, logging.INFO)
    assert reason is not None
    assert "has no handler for INFO records" in reason
    quiet_logger.addHandler(logging.NullHandler())
    assert why_nothing_is_written(quiet_logger, logging.INFO) is None


def test_a_handler_above_a_level_that_filters_counts_as_none(
    quiet_logger: logging.Logger,
) -> None:
    """A handler whose own level is above the records' level writes none of them."""
    quiet_logger.setLevel(logging.INFO)
    quiet_logger.propagate = False
    quiet_logger.addHandler(logging.StreamHandler())
    quiet_logger.handlers[0].setLevel(logging.ERROR)
    assert "has no handler" in (why_nothing_is_written(quiet_logger, logging.INFO) or "")


def test_a_disabled_logger_is_found(quiet_logger: logging.Logger) -> None:
    """LOGGING's disable_existing_loggers disables loggers made before it was applied."""
    quiet_logger.disabled = True
    assert "is disabled" in (why_nothing_is_written(quiet_logger, logging.CRITICAL) or "")


def test_the_snippet_is_a_logging_setting_that_fixes_it(
    quiet_logger: logging.Logger, tmp_path: Path
) -> None:
    """The snippet is Python a user can paste as LOGGING; applied with dictConfig (in a
    fresh interpreter, its file in a temporary directory), the logger writes INFO."""
    snippet = logging_snippet(quiet_logger, logging.INFO)
    script = textwrap.dedent(
        f"""
        import logging, logging.config, os
        os.chdir({str(tmp_path)!r})
        {{snippet}}
        logging.config.dictConfig(LOGGING)
        logging.getLogger({quiet_logger.name!r}).info("written")
        """
    ).replace("{snippet}", snippet)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tracking.log").read_text() == "written\n"


def test_logger_backend_counts_and_warns_once_when_its_logger_is_not_enabled(
    quiet_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Each event the logger is not enabled to take is counted in stats(); the first one
    logs a WARNING with the reason and the LOGGING snippet."""
    backend = LoggerBackend(name=quiet_logger.name)
    tracker = Tracker({"logger": backend})
    with caplog.at_level(logging.WARNING, logger="eventtracking.backends.logger"):
        for index in range(3):
            tracker.emit(f"e{index}")
    warnings = [r for r in caplog.records if r.name == "eventtracking.backends.logger"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"logger {quiet_logger.name!r} is not enabled for INFO" in message
    assert f"{quiet_logger.name!r}: {{'handlers': ['tracking'], 'level': 'INFO'" in message
    stats = tracker.stats()["backends"]["logger"]
    assert (stats["sent"], stats["dropped_not_enabled"]) == (0, 3)


def test_logger_backend_counts_nothing_once_the_logger_takes_its_level(
    quiet_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """With the logger enabled, lines are written and nothing is counted as dropped."""
    quiet_logger.setLevel(logging.INFO)
    backend = LoggerBackend(name=quiet_logger.name)
    with caplog.at_level(logging.INFO, logger=quiet_logger.name):
        backend.send(event("kept"))
    assert [json.loads(r.getMessage())["name"] for r in caplog.records] == ["kept"]
    assert backend.stats()["dropped_not_enabled"] == 0
    assert backend.stats()["sent"] == 1
