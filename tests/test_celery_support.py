"""The in-process Celery worker of the tests (tests/celery_support.py)."""

from __future__ import annotations

from typing import Any

from celery_support import Broker, discard_app, in_process_worker, make_app


def test_two_in_process_workers_each_drive_a_loop_of_their_own(redis_factory: Any) -> None:
    """A worker started beside a running one must not take the running one's event
    loop: two threads then read the same Redis connections (seen as a
    ``Protocol Error`` and a worker that died after a test's Redis restart)."""
    server = redis_factory()
    first_app = make_app(Broker("redis", server.url))
    second_app = make_app(Broker("redis", server.url))
    try:
        with in_process_worker(first_app) as first, in_process_worker(second_app) as second:
            assert second.hub is not None
            assert second.hub is not first.hub
    finally:
        discard_app(first_app)
        discard_app(second_app)
