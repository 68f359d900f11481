"""The verbs of the spool commands, shared by both front ends.

``python -m eventtracking spool`` (a spool directory, no settings) and ``manage.py
eventtracking_spool`` (the backends in the Django settings) take the same verbs with the
same options; each front end adds only how it finds the spool (``--spool-dir`` and
``--stream``, or ``--backend``) and, for ``replay`` from the command line, where to
deliver:

``status [--json]``
    pending events and dead letters;
``dead-letters [--limit N] [--json]``
    the dead letters, oldest first, with their reasons;
``redrive [--id ID ...]``
    move dead letters (all, or the chosen ones) back to be delivered again;
``replay [--dead-letters [--id ID ...]] [--timeout S]``
    deliver the pending events now, after re-driving dead letters when asked;
``purge --dead-letters [--id ID ...]`` and ``purge --pending --yes``
    delete dead letters, or events never delivered, for good.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable
from typing import Any

from eventtracking.spool import DeadLetter

__all__ = [
    "VERBS",
    "add_verbs",
    "document",
    "preview",
    "purge_problem",
    "replay_problem",
    "utc_time",
]

#: The verbs, in the order ``--help`` lists them.
VERBS = ("status", "dead-letters", "redrive", "replay", "purge")

# Characters of a dead letter's event shown in a listing.
_PREVIEW = 200


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


def document(letter: DeadLetter) -> Any:
    """The dead letter's event, decoded when possible, for display."""
    if letter.payload is None:
        return letter.detail
    try:
        import bson

        return bson.decode(letter.payload)
    except Exception:  # pymongo missing, or bytes that are not BSON: show what there is
        return letter.detail or f"<{len(letter.payload)} bytes>"


def preview(letter: DeadLetter) -> str:
    """The dead letter's event as one line of JSON, cut to 200 characters."""
    text = json.dumps(document(letter), default=str)
    if len(text) > _PREVIEW:
        text = text[:_PREVIEW] + "..."
    return text


def utc_time(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the second."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")
