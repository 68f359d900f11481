"""The verbs of the spool commands, written once for both front ends.

``python -m eventtracking spool`` (a spool directory, no settings) and ``manage.py
eventtracking_spool`` (the backends in the Django settings) take the same verbs with the
same options, and say the same things: each line starts with what it is about (a
backend's name, a stream, or the spool's directory), then what was done. Each front end
adds only how it finds the spool (``--spool-dir`` and ``--stream``, or ``--backend``),
how it reports a problem (exit status 2, or Django's CommandError), and, for ``replay``
from the command line, where to deliver. The verbs (``status``, ``dead-letters``,
``redrive``, ``replay``, ``purge``) and their options are listed in ``docs/django.rst``
(``manage.py eventtracking_spool``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventtracking._util.escape import escape_for_terminal
from eventtracking.spool import DeadLetter, Spool

__all__ = [
    "Progress",
    "Replayed",
    "Say",
    "add_verbs",
    "destination",
    "document",
    "list_dead_letters",
    "preview",
    "purge",
    "purge_problem",
    "redrive",
    "replay_backend",
    "replay_problem",
    "stream_lines",
    "utc_time",
]

#: Writes one line of a command's output (the front end adds the line end).
Say = Callable[[str], object]

# Characters of a dead letter's event shown in a listing.
_PREVIEW = 200

# How often a replay looks at its progress (and redraws the progress line).
_STEP = 0.5

# Where each kind of spooling backend delivers, by class name, for the replay's report.
_DESTINATIONS = {
    "MongoBackend": "MongoDB",
    "AsyncRoutingBackend": "the Celery broker",
    "EventBusRoutingBackend": "the event bus",
}


def add_verbs(
    actions: Any, common: Callable[[argparse.ArgumentParser], None]
) -> dict[str, argparse.ArgumentParser]:
    """Add every verb to the argparse sub-parsers ``actions``; return the parsers by verb.

    ``common`` adds the front end's own options to each verb's parser. The parser class
    is the one ``actions`` makes, so Django's command parser is kept.
    """
    parsers: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
        common(parser)
        parsers[name] = parser
        return parser

    status = add("status", "show the pending events and dead letters")
    status.add_argument("--json", action="store_true", help="print JSON")

    letters = add("dead-letters", "list the dead letters, oldest first, with their reasons")
    letters.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    letters.add_argument("--json", action="store_true", help="print JSON")

    redrive = add(
        "redrive",
        "move dead letters (all, or those given with --id) back to be delivered again; the "
        "backend delivers them with its next batch",
    )
    _add_ids(redrive)

    replay = add(
        "replay", "deliver the pending events now, from this process, and say what is left"
    )
    replay.add_argument(
        "--dead-letters",
        action="store_true",
        help="first move the dead letters (all, or those given with --id) back",
    )
    _add_ids(replay)
    replay.add_argument(
        "--timeout", type=float, default=60.0, help="give up after this many seconds (60)"
    )

    purge = add("purge", "delete dead letters, or pending events, for good")
    purge.add_argument("--dead-letters", action="store_true", help="delete dead letters")
    _add_ids(purge)
    purge.add_argument(
        "--pending", action="store_true", help="delete events never delivered: they are lost"
    )
    purge.add_argument("--yes", action="store_true", help="confirm --pending")
    return parsers


def _add_ids(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--id",
        type=int,
        action="append",
        dest="ids",
        metavar="ID",
        help="only this dead letter (repeat for more)",
    )


def replay_problem(options: Any) -> str | None:
    """What is wrong with the options of ``replay``, or None."""
    if _get(options, "ids") and not _get(options, "dead_letters"):
        return "--id chooses dead letters: add --dead-letters to re-drive them first."
    return None


def purge_problem(options: Any, pending: Callable[[], int]) -> str | None:
    """What is wrong with the options of ``purge``, or None.

    ``pending`` counts the events ``--pending`` would delete, for the confirmation.
    """
    if _get(options, "ids") and not _get(options, "dead_letters"):
        return "--id chooses dead letters: add --dead-letters."
    if not (_get(options, "dead_letters") or _get(options, "pending")):
        return "Say what to purge: --dead-letters, --pending, or both."
    if _get(options, "pending") and not _get(options, "yes"):
        return (
            f"--pending deletes {pending()} event(s) that were never delivered, for good; "
            "add --yes to confirm."
        )
    return None


def _get(options: Any, name: str) -> Any:
    if isinstance(options, dict):
        return options.get(name)
    return getattr(options, name, None)


def stream_lines(counts: dict[str, Any]) -> list[str]:
    """The lines of ``status`` about one stream, from its entry of :meth:`Spool.status`."""
    oldest = f", oldest from {utc_time(counts['oldest'])}" if counts.get("oldest") else ""
    return [
        f"  pending: {counts.get('pending', 0)} ({counts.get('claimed', 0)} being "
        f"delivered){oldest}",
        f"  dead letters: {counts.get('dead_letters', 0)}",
    ]


def list_dead_letters(
    letters: list[tuple[str, DeadLetter]], as_json: bool, say: Say, key: str | None = None
) -> None:
    """Show dead letters, each with the label it is listed under (a backend's name or
    its stream): three lines each, or with ``as_json`` one JSON list whose rows hold the
    label under ``key`` (when given) beside the letter's stream."""
    if as_json:
        rows = [
            {
                **({key: label} if key else {}),
                "id": letter.id,
                "stream": letter.stream,
                "created": letter.created,
                "reason": letter.reason,
                "document": document(letter),
            }
            for label, letter in letters
        ]
        say(json.dumps(rows, indent=2, default=str))
        return
    if not letters:
        say("No dead letters.")
    for label, letter in letters:
        stuck = "" if letter.payload is not None else " (cannot be moved back: never encoded)"
        say(
            f"#{letter.id} {utc_time(letter.created)} {escape_for_terminal(label)}{stuck}\n"
            f"  reason: {escape_for_terminal(letter.reason)}\n  event: {preview(letter)}"
        )


def redrive(spool: Spool, stream: str | None, ids: list[int] | None, label: str, say: Say) -> None:
    """Move the dead letters of ``stream`` (of every stream when None), or those with
    ``ids``, back to be delivered; say how many moved, and how many could not."""
    selected = spool.dead_letters(stream, ids=ids)
    moved = spool.redrive(stream, ids=ids)
    say(f"{label}: {moved} dead letter(s) moved back to be delivered")
    left = len(selected) - moved
    if left:
        say(f"{label}: {left} could not be moved back: they were never encoded (see dead-letters)")


def purge(spool: Spool, streams: list[str], options: Any, label: str, say: Say) -> None:
    """Delete what the options of ``purge`` chose (dead letters, pending events, or
    both) from ``streams`` of ``spool``, once :func:`purge_problem` found nothing wrong."""
    if _get(options, "dead_letters"):
        ids = _get(options, "ids")
        removed = sum(spool.purge_dead_letters(stream, ids=ids) for stream in streams)
        say(f"{label}: purged {removed} dead letter(s)")
    if _get(options, "pending"):
        removed = sum(spool.purge_pending(stream) for stream in streams)
        say(f"{label}: purged {removed} pending event(s)")


def document(letter: DeadLetter) -> Any:
    """The dead letter's event, decoded when possible, for display: a MongoDB
    backend's BSON document, or the JSON text of a Celery or event-bus entry."""
    if letter.payload is None:
        return letter.detail
    try:
        import bson

        return bson.decode(letter.payload)
    except Exception:  # pymongo missing, or bytes that are not BSON: try text
        pass
    try:
        return json.loads(letter.payload.decode("utf-8"))
    except ValueError:  # neither JSON nor UTF-8: show what there is
        return letter.detail or f"<{len(letter.payload)} bytes>"


def preview(letter: DeadLetter) -> str:
    """The dead letter's event as one line of JSON, cut to 200 characters, escaped for
    a terminal."""
    text = json.dumps(document(letter), default=str)
    if len(text) > _PREVIEW:
        text = text[:_PREVIEW] + "..."
    return escape_for_terminal(text)


def destination(backend: Any) -> str:
    """Where ``backend`` delivers what it replays, in words (``the Celery broker``)."""
    kind = type(backend).__name__
    return _DESTINATIONS.get(kind, kind)


class Progress:
    """One line, redrawn in place, saying how far a replay got: count, rate, time left.

    Drawn only when ``enabled`` (the front ends pass whether their output is a
    terminal), so that piped or logged output holds the summary lines only.
    ``write`` takes text without an added newline.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        label: str,
        total: int,
        *,
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._label = label
        self._total = total
        self._enabled = enabled and total > 0
        self._clock = clock
        self._started = clock()
        self._width = 0

    def update(self, done: int) -> None:
        """Redraw the line for ``done`` events replayed so far."""
        if not self._enabled:
            return
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = done / elapsed
        shown = min(done, self._total)
        left = f"{(self._total - shown) / rate:.0f} s left" if rate else "time left unknown"
        line = f"{self._label}: {shown} of {self._total} replayed, {rate:.0f}/s, {left}"
        pad = " " * max(0, self._width - len(line))
        self._width = len(line)
        self._write(f"\r{line}{pad}")

    def finish(self, done: int) -> None:
        """Draw the line one last time and end it, so the summary starts on its own."""
        if not self._enabled:
            return
        self.update(done)
        self._write("\n")


@dataclass(frozen=True)
class Replayed:
    """What one replay of a backend's stream did."""

    #: Events taken by the server, the broker or the bus.
    delivered: int
    #: Events it refused for good, now dead letters.
    dead_lettered: int
    #: Events still in the stream when the replay ended.
    pending: int
    #: Whether everything was delivered within the time limit.
    finished: bool
    #: The delivery's last error, when one happened.
    last_error: str | None

    def not_finished(self, timeout: float) -> str:
        """Why the replay stopped early, for a stream not drained within ``timeout``."""
        return f"not finished within {timeout:g} s: {escape_for_terminal(str(self.last_error))}"

    def summary(self, backend: Any) -> str:
        """One line: what went where, and what is left."""
        return (
            f"replayed {self.delivered} event(s) to {destination(backend)}, "
            f"{self.dead_lettered} new dead letter(s), {self.pending} still pending"
        )


def replay_backend(
    backend: Any,
    timeout: float,
    *,
    label: str,
    write: Callable[[str], object],
    tty: bool,
    hopeless: Callable[[str], bool] | None = None,
) -> Replayed:
    """Deliver what waits in ``backend``'s stream of its spool, from this process, for
    at most ``timeout`` seconds; return what happened.

    ``backend`` is a spooling backend (``spool``, ``stream``, ``delivery`` and
    ``flush``): MongoBackend, AsyncRoutingBackend or EventBusRoutingBackend, each
    delivering to its own server. The counts come from the backend's delivery, whose
    counters are the same for every kind of backend. On a terminal (``tty``), a
    progress line labelled ``label`` is drawn with ``write``. When ``hopeless`` says
    yes to the delivery's last error (one that waiting cannot fix), it stops early.
    """
    delivery = backend.delivery
    before = delivery.stats()
    progress = Progress(write, label, backend.spool.pending_count(backend.stream), enabled=tty)
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        finished = bool(backend.flush(min(_STEP, max(0.0, deadline - time.monotonic()))))
        after = delivery.stats()
        replayed = after.get("replayed", 0) - before.get("replayed", 0)
        error = after.get("last_error")
        if finished or time.monotonic() >= deadline:
            break
        if hopeless is not None and error is not None and hopeless(str(error)):
            break
        progress.update(replayed)
    progress.finish(replayed)
    return Replayed(
        delivered=replayed,
        dead_lettered=after.get("dead_lettered", 0) - before.get("dead_lettered", 0),
        pending=backend.spool.pending_count(backend.stream),
        finished=finished,
        last_error=after.get("last_error"),
    )


def utc_time(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the second."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")
