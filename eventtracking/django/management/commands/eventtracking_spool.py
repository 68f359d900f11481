"""``manage.py eventtracking_spool``: the spool of the configured background backends.

A backend such as MongoBackend keeps events in a local spool while its server is
unreachable, and documents the server refused for good as dead letters. This command
finds the spools through the settings, so there is no path or URI to type::

    manage.py eventtracking_spool status
    manage.py eventtracking_spool dead-letters [--limit 20]
    manage.py eventtracking_spool replay [--dead-letters [--id 3 ...]]
    manage.py eventtracking_spool purge --dead-letters [--id 3 ...]
    manage.py eventtracking_spool purge --pending --yes

Every action takes ``--backend NAME`` to work on one backend only.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventtracking.django._commands import configured_tracker, select_backends
from eventtracking.spool import DeadLetter, Spool

_PREVIEW = 200


def _has_spool(backend: Any) -> bool:
    return isinstance(getattr(backend, "spool", None), Spool) and isinstance(
        getattr(backend, "stream", None), str
    )


class Command(BaseCommand):
    """Show, replay and purge the spool and dead letters of the configured backends."""

    help = (
        "Show the spool and dead letters of the configured background backends, replay "
        "them to the server, or purge them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION")
        actions.required = True

        def add(name: str, text: str) -> Any:
            action = actions.add_parser(name, help=text, description=text)
            action.add_argument(
                "--backend", action="append", metavar="NAME", help="only this backend"
            )
            return action

        status = add("status", "pending events and dead letters of each backend")
        status.add_argument("--json", action="store_true", help="print JSON")

        letters = add("dead-letters", "list the dead letters, oldest first")
        letters.add_argument("--limit", type=int, default=50, help="at most this many (50)")
        letters.add_argument("--json", action="store_true", help="print JSON")

        replay = add("replay", "deliver the spooled events now (and dead letters, if asked)")
        replay.add_argument(
            "--dead-letters",
            action="store_true",
            help="first move the dead letters back to be delivered again",
        )
        replay.add_argument("--id", type=int, action="append", dest="ids", help="only these")
        replay.add_argument(
            "--timeout", type=float, default=60.0, help="give up after this many seconds (60)"
        )

        purge = add("purge", "delete dead letters, or pending events, for good")
        purge.add_argument("--dead-letters", action="store_true", help="delete dead letters")
        purge.add_argument("--id", type=int, action="append", dest="ids", help="only these")
        purge.add_argument(
            "--pending", action="store_true", help="delete events still waiting: they are lost"
        )
        purge.add_argument("--yes", action="store_true", help="confirm --pending")

    def handle(self, *args: Any, **options: Any) -> None:
        chosen = select_backends(
            configured_tracker(), _has_spool, options["backend"], "backend with a spool"
        )
        action = options["action"].replace("-", "_")
        getattr(self, f"_{action}")(chosen, options)

    def _status(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        report = {}
        for name, backend in chosen:
            counts = backend.spool.status()["streams"].get(backend.stream, {})
            stats = backend.stats() if callable(getattr(backend, "stats", None)) else {}
            report[name] = {
                "spool": str(backend.spool.path),
                "stream": backend.stream,
                "pending": counts.get("pending", 0),
                "oldest": counts.get("oldest"),
                "dead_letters": counts.get("dead_letters", 0),
                "backend": stats,
            }
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True, default=str))
            return
        for name, entry in report.items():
            oldest = f", oldest from {_time(entry['oldest'])}" if entry["oldest"] else ""
            self.stdout.write(
                f"{name}: stream {entry['stream']}\n"
                f"  spool: {entry['spool']}\n"
                f"  pending: {entry['pending']}{oldest}\n"
                f"  dead letters: {entry['dead_letters']}"
            )
            counters = {
                key: value
                for key, value in entry["backend"].items()
                if isinstance(value, int) and not isinstance(value, bool)
            }
            if counters:
                summary = ", ".join(f"{key} {value}" for key, value in sorted(counters.items()))
                self.stdout.write(f"  this process: {summary}")

    def _dead_letters(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        rows = []
        for name, backend in chosen:
            for letter in backend.spool.dead_letters(backend.stream, limit=options["limit"]):
                rows.append((name, letter))
        if options["json"]:
            data = [
                {
                    "backend": name,
                    "id": letter.id,
                    "created": letter.created,
                    "reason": letter.reason,
                    "document": _document(letter),
                }
                for name, letter in rows
            ]
            self.stdout.write(json.dumps(data, indent=2, default=str))
            return
        if not rows:
            self.stdout.write("No dead letters.")
            return
        for name, letter in rows:
            preview = json.dumps(_document(letter), default=str)
            if len(preview) > _PREVIEW:
                preview = preview[:_PREVIEW] + "..."
            self.stdout.write(
                f"#{letter.id} {_time(letter.created)} {name}\n"
                f"  reason: {letter.reason}\n  event: {preview}"
            )

    def _replay(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        unfinished = []
        for name, backend in chosen:
            spool = backend.spool
            if options["dead_letters"]:
                moved = spool.redrive(backend.stream, ids=options["ids"])
                self.stdout.write(f"{name}: {moved} dead letter(s) moved back to be delivered")
            before = backend.stats()
            done = backend.flush(options["timeout"])
            after = backend.stats()
            stored = after.get("replayed", 0) - before.get("replayed", 0)
            dead = after.get("dead_lettered", 0) - before.get("dead_lettered", 0)
            left = spool.pending_count(backend.stream)
            self.stdout.write(
                f"{name}: replayed {stored} event(s), {dead} new dead letter(s), "
                f"{left} still pending"
            )
            if not done:
                unfinished.append(name)
                self.stderr.write(f"{name}: not finished: {after.get('last_error')}")
        if unfinished:
            msg = (
                f"Replay did not finish within {options['timeout']:g} s for "
                f"{', '.join(unfinished)}; the events stay spooled."
            )
            raise CommandError(msg)

    def _purge(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        if not (options["dead_letters"] or options["pending"]):
            msg = "Say what to purge: --dead-letters, --pending, or both."
            raise CommandError(msg)
        if options["pending"] and not options["yes"]:
            pending = sum(backend.spool.pending_count(backend.stream) for _, backend in chosen)
            msg = (
                f"--pending deletes {pending} event(s) that were never delivered, for good; "
                "add --yes to confirm."
            )
            raise CommandError(msg)
        for name, backend in chosen:
            if options["dead_letters"]:
                removed = backend.spool.purge_dead_letters(backend.stream, ids=options["ids"])
                self.stdout.write(f"{name}: purged {removed} dead letter(s)")
            if options["pending"]:
                removed = backend.spool.purge_pending(backend.stream)
                self.stdout.write(f"{name}: purged {removed} pending event(s)")


def _document(letter: DeadLetter) -> Any:
    """The dead letter's event, decoded when possible, for display."""
    if letter.payload is None:
        return letter.detail
    try:
        import bson

        return bson.decode(letter.payload)
    except Exception:  # bytes that are not BSON, or no pymongo: show what there is
        return letter.detail or f"<{len(letter.payload)} bytes>"


def _time(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")
