"""``manage.py eventtracking_emit``: send one test event end to end, to check a deployment.

It emits an event through the configured tracker, flushes it, and prints what every
counter of the tracker and its backends did meanwhile. It fails (exit status 1) when no
tracker is configured, when there is no backend, when the flush does not finish in
time, or when a counter of drops, failures or dead letters went up.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventtracking import tracker as tracker_module
from eventtracking.django._commands import configured_tracker

#: Counter names whose increase means the test event was not delivered cleanly.
TROUBLE = ("dropped", "failed", "dead", "oversized", "discarded", "error")


def flatten(stats: Any, prefix: str = "") -> dict[str, int]:
    """The integer leaves of a nested stats dict, keyed by dotted path."""
    leaves: dict[str, int] = {}
    if isinstance(stats, dict):
        for key, value in stats.items():
            leaves.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(stats, int) and not isinstance(stats, bool):
        leaves[prefix.rstrip(".")] = stats
    return leaves


class Command(BaseCommand):
    """Emit a test event through the configured tracker, then flush."""

    help = (
        "Emit a test event through the configured tracker, flush it, and report what the "
        "backends did. Fails if the event was not delivered cleanly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name", default="eventtracking.test", help="event name (eventtracking.test)"
        )
        parser.add_argument(
            "--data",
            default=None,
            help="event data as a JSON object (default: where and by whom it was sent)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            help="seconds to wait for the flush (10)",
        )
        parser.add_argument(
            "--tracker", default=tracker_module.DEFAULT_TRACKER_NAME, help="tracker name"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["tracker"]
        tracker = configured_tracker(name)
        if not tracker.backends:
            msg = f"Tracker {name!r} has no backends; the event would go nowhere."
            raise CommandError(msg)
        data = self._data(options["data"])
        timeout = options["timeout"]

        before = flatten(tracker.stats())
        tracker.emit(options["name"], data)
        flushed = tracker.flush(timeout=timeout)
        after = flatten(tracker.stats())

        self.stdout.write(
            f"Emitted {options['name']!r} through tracker {name!r} to "
            f"{', '.join(tracker.backends)}."
        )
        changed = {key: after[key] - before.get(key, 0) for key in after}
        changed = {key: delta for key, delta in changed.items() if delta}
        for key, delta in sorted(changed.items()):
            self.stdout.write(f"  {key}: {delta:+d}")
        if not flushed:
            msg = f"The flush did not finish within {timeout:g} s: a backend is slow or down."
            raise CommandError(msg)
        trouble = [
            key
            for key, delta in changed.items()
            if delta > 0 and any(word in key for word in TROUBLE)
        ]
        if trouble:
            msg = f"The event was not delivered cleanly: {', '.join(sorted(trouble))} went up."
            raise CommandError(msg)
        self.stdout.write(self.style.SUCCESS("Delivered."))

    @staticmethod
    def _data(raw: str | None) -> dict[str, Any]:
        if raw is None:
            return {
                "source": "manage.py eventtracking_emit",
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            msg = f"--data is not valid JSON ({error}): {raw!r}"
            raise CommandError(msg) from None
        if not isinstance(data, dict):
            msg = f"--data must be a JSON object, got {type(data).__name__}: {raw!r}"
            raise CommandError(msg)
        return data
