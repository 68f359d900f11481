"""The README's example, run as written, against a tracker that prints JSON lines.

``make demo`` runs this first. Other demos import :func:`run_readme_example` to send the
same three events to their own backends.
"""

from __future__ import annotations

import logging
import sys

from eventtracking.backends.logger import LoggerBackend
from eventtracking.tracker import Tracker, register_tracker


def run_readme_example() -> None:
    """Emit the README's three events through the default tracker."""
    from eventtracking import tracker

    tracker = tracker.get_tracker()
    tracker.enter_context('outer', {'user_id': 10938})
    tracker.emit('navigation.request', {'url': 'http://www.edx.org/some/path/1'})

    with tracker.context({'user_id': 11111, 'session_id': '2987lkjdyoioey'}):
        tracker.emit('navigation.request', {'url': 'http://www.edx.org/some/path/2'})

    tracker.emit('navigation.request', {'url': 'http://www.edx.org/some/path/3'})
    tracker.exit_context('outer')


def print_events_as_json_lines() -> Tracker:
    """Register a default tracker whose only backend prints each event as a JSON line."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("eventtracking.demo")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    tracker = Tracker({"stdout": LoggerBackend(name="eventtracking.demo", max_event_size=None)})
    register_tracker(tracker)
    return tracker


if __name__ == "__main__":
    print_events_as_json_lines()
    run_readme_example()
