"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mongo_fixtures import *  # noqa: F403
from redis_fixtures import *  # noqa: F403

from eventtracking import tracker


@pytest.fixture(autouse=True)
def _reset_trackers() -> Iterator[None]:
    """Give every test an empty tracker registry, and restore the previous one after."""
    saved = dict(tracker.TRACKERS)
    tracker.TRACKERS.clear()
    yield
    tracker.TRACKERS.clear()
    tracker.TRACKERS.update(saved)
