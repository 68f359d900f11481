"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from amqp_support import *  # noqa: F403
from mongo_support import *  # noqa: F403
from redis_support import *  # noqa: F403

from eventtracking import tracker


@pytest.fixture(autouse=True)
def _reset_trackers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give every test an empty tracker registry, and restore the previous one after.

    The fallback default tracker is the library's (it prints events), except in tests
    that use Django, where the app turns it off as it does in a real site.
    """
    saved = dict(tracker.TRACKERS)
    saved_fallback = tracker._fallback
    tracker.TRACKERS.clear()
    uses_django = "django_env" in request.fixturenames
    tracker.set_fallback(None if uses_django else tracker.console_tracker)
    yield
    tracker.TRACKERS.clear()
    tracker.TRACKERS.update(saved)
    tracker.set_fallback(saved_fallback)
