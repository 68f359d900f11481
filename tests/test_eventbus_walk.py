"""The walk of one event through the Open edX event bus stays short
(tests/eventbus_walk_support.py)."""

from __future__ import annotations

from pathlib import Path

import eventbus_support
import pytest
from eventbus_walk_support import ENVELOPE_CALLS_PER_MESSAGE, EVENTBUS_WALK_LIMIT, walk

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bus_env")]

# pytest finds fixtures by module attribute.
bus_env = eventbus_support.bus_env


def test_one_event_crosses_few_package_files_from_emit_to_the_leaf_behind_the_bus(
    redis_url: str, tmp_path: Path
) -> None:
    """Through a real publisher thread, Redis, edx-event-bus-redis's consumer and the
    receiver, the event enters at most EVENTBUS_WALK_LIMIT files of the package, the
    three stretches and the leaf counted, and the timestamp parser is not one of them."""
    found = walk(redis_url, tmp_path / "spool")
    assert found.files[0] == "tracker.py"
    assert found.files[-1] == "backends/memory.py"
    # Each stretch was traced where it runs.
    assert "backends/event_bus/_envelope.py" in found.stretches["emit"].files
    assert "backends/event_bus/_publish.py" in found.stretches["publish"].files
    assert "handlers.py" in found.stretches["receive"].files
    assert "_util/timestamps.py" not in found.files
    assert len(found.files) <= EVENTBUS_WALK_LIMIT, found.report()


def test_the_publisher_calls_into_the_envelope_only_per_message(
    redis_url: str, tmp_path: Path
) -> None:
    """The publisher thread reads a batch of one message's wire form through the
    envelope's module (ENVELOPE_CALLS_PER_MESSAGE calls) and asks it nothing for the
    batch: the topics and the messages' origin are kept from the batch before."""
    found = walk(redis_url, tmp_path / "spool")
    calls = found.calls_into("publish", "backends/event_bus/_envelope.py")
    assert calls <= ENVELOPE_CALLS_PER_MESSAGE, found.report()
