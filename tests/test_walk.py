"""The walk of one event from emit() to a Celery leaf stays short (tests/walk_support.py)."""

from __future__ import annotations

from pathlib import Path

from walk_support import WALK_LIMIT, walk


def test_one_event_crosses_few_package_files_from_emit_to_a_celery_leaf(
    redis_url: str, tmp_path: Path
) -> None:
    """Through a real publisher thread, Redis and worker, the event enters at most
    WALK_LIMIT files of the package, both sides and the leaf counted."""
    found = walk(redis_url, tmp_path / "spool")
    assert found.files[0] == "tracker.py"
    assert found.files[-1] == "backends/memory.py"
    assert "backends/celery/_worker.py" in found.files  # the worker's side was traced
    assert len(found.files) <= WALK_LIMIT, found.report()
