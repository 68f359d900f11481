"""``manage.py eventtracking_spool``: the spool of the configured background backends.

It finds the spools through the settings, so there is no path or URI to type; the
verbs are those of ``python -m eventtracking spool`` (see
:mod:`eventtracking.spool._commands`), and ``docs/django.rst`` lists them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventtracking._util.escape import escape_for_terminal
from eventtracking.django._commands import configured_tracker, select_backends
from eventtracking.spool import Spool
from eventtracking.spool import _commands as verbs
from eventtracking.typing import SupportsStats


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

        def common(action: Any) -> None:
            action.add_argument(
                "--backend", action="append", metavar="NAME", help="only this backend"
            )
            _accept_django_options(action)

        verbs.add_verbs(actions, common)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        problem = None
        if action == "replay":
            problem = verbs.replay_problem(options)
        chosen = select_backends(
            configured_tracker(), _has_spool, options["backend"], "backend with a spool"
        )
        if action == "purge":
            problem = verbs.purge_problem(
                options,
                lambda: sum(backend.spool.pending_count(backend.stream) for _, backend in chosen),
            )
        if problem:
            raise CommandError(problem)
        getattr(self, f"_{action.replace('-', '_')}")(chosen, options)

    def _status(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        report = {}
        for name, backend in chosen:
            counts = backend.spool.status()["streams"].get(backend.stream, {})
            stats = backend.stats() if isinstance(backend, SupportsStats) else {}
            report[name] = {
                "spool": str(backend.spool.path),
                "stream": backend.stream,
                "pending": counts.get("pending", 0),
                "oldest": counts.get("oldest"),
                "dead_letters": counts.get("dead_letters", 0),
                "backend": stats,
            }
            if not options["json"]:
                self._say_status(name, report[name], counts)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True, default=str))

    def _say_status(self, name: str, entry: dict[str, Any], counts: dict[str, Any]) -> None:
        self.stdout.write(
            f"{escape_for_terminal(name)}: stream {escape_for_terminal(entry['stream'])}\n"
            f"  spool: {entry['spool']}"
        )
        for line in verbs.stream_lines(counts):
            self.stdout.write(line)
        counters = {
            key: value
            for key, value in entry["backend"].items()
            if isinstance(value, int) and not isinstance(value, bool)
        }
        if counters:
            summary = ", ".join(f"{key} {value}" for key, value in sorted(counters.items()))
            self.stdout.write(f"  this process: {summary}")

    def _dead_letters(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        letters = [
            (name, letter)
            for name, backend in chosen
            for letter in backend.spool.dead_letters(backend.stream, limit=options["limit"])
        ]
        verbs.list_dead_letters(letters, options["json"], self.stdout.write, key="backend")

    def _redrive(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        for name, backend in chosen:
            verbs.redrive(backend.spool, backend.stream, options["ids"], name, self.stdout.write)

    def _replay(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        unfinished = []
        for name, backend in chosen:
            label = f"{escape_for_terminal(name)} (stream {escape_for_terminal(backend.stream)})"
            if options["dead_letters"]:
                verbs.redrive(
                    backend.spool, backend.stream, options["ids"], name, self.stdout.write
                )
            result = verbs.replay_backend(
                backend,
                options["timeout"],
                label=label,
                write=lambda text: self.stdout.write(text, ending=""),
                tty=self.stdout.isatty(),
            )
            self.stdout.write(f"{label}: {result.summary(backend)}")
            if not result.finished:
                unfinished.append(name)
                self.stderr.write(f"{label}: {result.not_finished(options['timeout'])}")
        if unfinished:
            msg = (
                f"Replay did not finish within {options['timeout']:g} s for "
                f"{', '.join(map(escape_for_terminal, unfinished))}; the events stay spooled."
            )
            raise CommandError(msg)

    def _purge(self, chosen: list[tuple[str, Any]], options: dict[str, Any]) -> None:
        for name, backend in chosen:
            verbs.purge(backend.spool, [backend.stream], options, name, self.stdout.write)


def _accept_django_options(action: Any) -> None:
    """Let Django's own options follow the action word, as they may precede it.

    ``manage.py`` reads ``--settings`` and ``--pythonpath`` wherever they are, but the
    command's parser would reject them after the action word. The defaults are
    suppressed, so a value given before the action word is kept.
    """
    suppress = argparse.SUPPRESS
    action.add_argument("--settings", default=suppress, help=suppress)
    action.add_argument("--pythonpath", default=suppress, help=suppress)
    action.add_argument(
        "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=suppress, help=suppress
    )
    for flag in ("--traceback", "--no-color", "--force-color", "--skip-checks"):
        action.add_argument(flag, action="store_true", default=suppress, help=suppress)
