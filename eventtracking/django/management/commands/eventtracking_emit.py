"""``manage.py eventtracking_emit``: send one test event end to end, to check a deployment.

It emits an event through the configured tracker, flushes it, and reports, backend by
backend, what became of it, then every counter that changed; ``docs/django.rst``
(*Management commands*) shows its output, how a backend that delivers through a spool
is reported, and when it fails.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventtracking import tracker as tracker_module
from eventtracking._util.escape import escape_for_terminal
from eventtracking.delivery import BatchDelivery
from eventtracking.django._commands import configured_tracker, walk_backends
from eventtracking.routing import is_router
from eventtracking.spool import Spool
from eventtracking.spool import _commands as verbs
from eventtracking.typing import SupportsFlush, SupportsStats

#: Counter names whose increase means the test event was not delivered cleanly.
TROUBLE = ("dropped", "failed", "dead", "oversized", "discarded", "error")

#: A backend's own counters, by what they say happened to an event. The first word in
#: a counter's name that matches decides.
OUTCOMES = (
    ("filtered", ("filtered",)),
    ("dropped", TROUBLE),
    ("spooled", ("spooled",)),
    ("written", ("sent", "stored", "written", "published", "delivered")),
    ("queued", ("queued", "enqueued")),
)

#: What reaching a backend means: it took the event.
REACHED = ("written", "queued", "spooled")

_ORDER = ("queued", "spooled", "written", "filtered", "dropped", "failed")

#: Counters of a delivering backend that count failed attempts, not events: the event
#: is still queued or spooled after them, and its outcome is counted on its own.
ATTEMPTS = ("errors", "last_error", "last_error_at", "retries")

#: The counters of a delivery that say what became of events.
DELIVERY_OUTCOMES = ("queued", "stored", "spooled", "dead_lettered", "dropped")


def delivering(backend: Any) -> bool:
    """Whether ``backend`` delivers in the background through a spool."""
    return isinstance(getattr(backend, "delivery", None), BatchDelivery) and isinstance(
        getattr(backend, "spool", None), Spool
    )


def _delivers_here(backend: Any) -> bool:
    """Whether the backends nested in ``backend`` deliver in this process: those of a
    delivering router run where its messages are consumed."""
    return is_router(backend) and not delivering(backend)


def stats_prefix(path: str) -> str:
    """Where the counters of the backend at dotted ``path`` are in the tracker's stats."""
    return "backends." + path.replace(".", ".backends.") + "."


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
        backends = list(walk_backends(tracker.backends, into=_delivers_here))

        before = flatten(tracker.stats())
        own_before = {path: _own_counters(backend) for path, backend in backends}
        tracker.emit(options["name"], data)
        flushed = tracker.flush(timeout=timeout)
        after = flatten(tracker.stats())
        own_after = {path: _own_counters(backend) for path, backend in backends}

        self.stdout.write(
            f"Emitted {options['name']!r} through tracker {name!r} to "
            f"{', '.join(tracker.backends)}."
        )
        changed = {key: after[key] - before.get(key, 0) for key in after}
        changed = {key: delta for key, delta in changed.items() if delta}
        reports = [
            _report(path, backend, own_before[path], own_after[path], changed)
            for path, backend in backends
        ]
        filtered_on_top = changed.get("dropped.filtered", 0)
        if filtered_on_top:
            self.stdout.write("  the tracker's processors: filtered (dropped on purpose)")
        for report in reports:
            self.stdout.write(f"  {report.line()}")
            if report.spooled:
                self.stdout.write(f"    {report.waiting()}")
        if changed:
            self.stdout.write("Counters that changed:")
        for key, delta in sorted(changed.items()):
            self.stdout.write(f"  {key}: {delta:+d}")

        leaves = [report for report in reports if not report.is_router]
        if not any(report.reached for report in leaves):
            why = "; ".join(report.line() for report in leaves)
            if filtered_on_top:
                why = "a processor of the tracker filtered it out"
            msg = f"The event reached no backend: {why}."
            if any(report.not_enabled for report in leaves):
                msg += (
                    " A LoggerBackend's logger is not enabled for its level: see "
                    "`manage.py check` (eventtracking.W002) for the LOGGING that fixes it."
                )
            raise CommandError(msg)
        if not flushed and not all(report.spooled or _settled(report) for report in leaves):
            msg = f"The flush did not finish within {timeout:g} s: a backend is slow or down."
            raise CommandError(msg)
        attempts = [stats_prefix(report.path) for report in leaves if report.delivering]
        trouble = [
            key
            for key, delta in changed.items()
            if delta > 0 and any(word in key for word in TROUBLE) and not _an_attempt(key, attempts)
        ]
        if trouble:
            msg = f"The event was not delivered cleanly: {', '.join(sorted(trouble))} went up."
            raise CommandError(msg)
        spooled = [report for report in leaves if report.spooled]
        if spooled:
            self.stdout.write(
                self.style.WARNING(
                    f"Spooled, not lost: {len(spooled)} of {len(leaves)} backend(s) keep the "
                    "event in their spool until their server is back. Any process of this "
                    "host that emits or flushes publishes it then; "
                    "`manage.py eventtracking_spool replay` does it now."
                )
            )
            return
        reached = sum(1 for report in leaves if report.reached)
        self.stdout.write(
            self.style.SUCCESS(f"Delivered: {reached} of {len(leaves)} backend(s) took it.")
        )

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


@dataclass
class _Report:
    """What became of the test event at one backend."""

    path: str
    backend: Any
    outcomes: dict[str, int]
    details: dict[str, int]
    counted: bool

    def __post_init__(self) -> None:
        self.kind = type(self.backend).__name__
        self.delivering = delivering(self.backend)
        self.is_router = _delivers_here(self.backend)

    @property
    def reached(self) -> bool:
        if any(self.outcomes.get(outcome) for outcome in REACHED):
            return True
        # A backend that keeps no counters and did not fail took the event, as far as
        # anyone can tell.
        return not self.counted and not self.outcomes

    @property
    def spooled(self) -> bool:
        """Whether the event waits in the spool: spooled, and not delivered since."""
        return (
            self.delivering
            and bool(self.outcomes.get("spooled"))
            and not self.outcomes.get("written")
            and not self.outcomes.get("dropped")
        )

    def waiting(self) -> str:
        """Where the spooled event waits, and why."""
        backend = self.backend
        stats = backend.delivery.stats()
        pending = backend.spool.pending_count(backend.stream)
        error = escape_for_terminal(str(stats.get("last_error") or "not delivered yet"))
        return (
            f"the event waits in the spool {backend.spool.path} (stream "
            f"{escape_for_terminal(backend.stream)}, {pending} pending) until "
            f"{verbs.destination(backend)} is reachable; last error: {error}"
        )

    @property
    def not_enabled(self) -> bool:
        return bool(self.details.get("dropped_not_enabled"))

    def line(self) -> str:
        head = f"{self.path} ({self.kind}): "
        if self.outcomes:
            counts = self.outcomes
            parts = [f"{outcome} {counts[outcome]}" for outcome in _ORDER if outcome in counts]
            detail = ", ".join(f"{key} {delta:+d}" for key, delta in sorted(self.details.items()))
            return head + ", ".join(parts) + (f" ({detail})" if detail else "")
        if self.is_router:
            return head + "passed it on"
        if not self.counted:
            return head + "took it (it keeps no counters)"
        return head + "nothing counted"


def _own_counters(backend: Any) -> dict[str, int] | None:
    """A backend's own integer counters, without those of the backends below it.

    For a delivering backend, the counters of what its delivery did with events, which
    are the same for every kind (the sink's own, merged in, would count them twice).
    """
    try:
        if delivering(backend):
            values = backend.delivery.stats()
            return flatten({key: values[key] for key in DELIVERY_OUTCOMES if key in values})
        if not isinstance(backend, SupportsStats):
            return None
        values = backend.stats()
    except Exception:
        return None
    if not isinstance(values, dict):
        return None
    # Documentation records and nested backends have counters of their own.
    return flatten({k: v for k, v in values.items() if k not in ("backends", "metadata")})


def _report(
    path: str,
    backend: Any,
    before: dict[str, int] | None,
    after: dict[str, int] | None,
    changed: dict[str, int],
) -> _Report:
    outcomes: dict[str, int] = {}
    details: dict[str, int] = {}
    if before is not None and after is not None:
        for key, value in after.items():
            delta = value - before.get(key, 0)
            if delta <= 0:
                continue
            for outcome, words in OUTCOMES:
                if any(word in key for word in words):
                    outcomes[outcome] = outcomes.get(outcome, 0) + delta
                    if outcome in ("dropped", "filtered"):
                        details[key] = delta
                    break
    # The router above counts a backend that raised under its name.
    parent, _, name = path.rpartition(".")
    failed = changed.get(f"{stats_prefix(parent) if parent else ''}failed.{name}", 0)
    if failed > 0:
        outcomes["failed"] = outcomes.get("failed", 0) + failed
    return _Report(path, backend, outcomes, details, counted=after is not None)


def _settled(report: _Report) -> bool:
    """Whether the backend has nothing left to deliver now (a flush that ends at once)."""
    if not isinstance(report.backend, SupportsFlush):
        return True
    try:
        return bool(report.backend.flush(0))
    except Exception:
        return False


def _an_attempt(key: str, prefixes: list[str]) -> bool:
    """Whether ``key`` counts failed attempts of a delivering backend (no loss)."""
    for prefix in prefixes:
        if key.startswith(prefix):
            return any(part in ATTEMPTS for part in key[len(prefix) :].split("."))
    return False
