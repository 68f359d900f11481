"""The command line: ``python -m eventtracking <command> ...``.

Commands: ``spool``, the verbs of :mod:`eventtracking.spool._commands` on a spool
directory, and ``catalog``, which writes the event catalogue (``--help`` says more).

Adding a command: write ``register(commands)``, which adds a parser to the argparse
sub-parsers ``commands`` and sets ``handler`` on it with ``set_defaults``; a handler
is called as ``handler(args, out)`` with the parsed arguments and the text stream to
write to, and returns the exit status. Then append ``register`` to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from eventtracking._util.escape import escape_for_terminal
from eventtracking.spool import Spool, UnsafeSpoolError, default_spool_dir
from eventtracking.spool import _commands as verbs

__all__ = ["COMMANDS", "build_parser", "main"]

_SPOOL_SUMMARY = "inspect and repair the local spool of background backends"
_SPOOL_DESCRIPTION = (
    "Events wait in the spool while their server is unreachable, and documents the server "
    "refused for good wait there as dead letters."
)


def register_spool(commands: Any) -> None:
    """Add ``spool`` and its sub-commands to the argparse sub-parsers ``commands``."""
    spool = commands.add_parser("spool", help=_SPOOL_SUMMARY, description=_SPOOL_DESCRIPTION)
    actions = spool.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--spool-dir",
            default=None,
            metavar="DIR",
            help=f"the backend's spool_dir (default: {default_spool_dir()})",
        )
        parser.add_argument("--stream", help="only this stream (the names are in `spool status`)")

    parsers = verbs.add_verbs(actions, common)
    for verb, handler in _SPOOL_HANDLERS.items():
        parsers[verb].set_defaults(handler=handler)
    replay = parsers["replay"]
    replay.description = (
        "Deliver the pending events of a MongoDB stream now, from this process. Celery "
        "and event-bus streams are replayed by `manage.py eventtracking_spool replay`, "
        "which knows the site's broker and bus from its settings."
    )
    replay.add_argument(
        "--uri", help="mongodb:// or mongodb+srv:// URI of the server to store the events in"
    )
    replay.add_argument("--database", default="eventtracking", help="(eventtracking)")
    replay.add_argument("--collection", default="events", help="(events)")


def register_catalog(commands: Any) -> None:
    """Add ``catalog``, which writes the event catalogue (see eventtracking.metadata)."""
    from eventtracking.metadata import _cli

    catalog = commands.add_parser("catalog", help=_cli.SUMMARY, description=_cli.DESCRIPTION)
    _cli.add_arguments(catalog)
    catalog.set_defaults(handler=_cli.run)


#: The functions that add each command; see the module docstring.
COMMANDS: list[Callable[[Any], None]] = [register_spool, register_catalog]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m eventtracking``, with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m eventtracking", description="Operate event-tracking's components."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command in ``argv`` (``sys.argv[1:]`` when None), writing to ``out``.

    Returns the exit status: 2 for a spool directory refused as unsafe (the message on
    stderr says why); argparse exits with 2 on a usage error.
    """
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, TextIO], int] = args.handler
    try:
        return handler(args, out or sys.stdout)
    except UnsafeSpoolError as exc:  # a refused spool_dir: the message says what to do
        sys.stderr.write(f"error: {exc}\n")
        return 2


# -- spool ------------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> Spool:
    return Spool(args.spool_dir if args.spool_dir is not None else default_spool_dir())


def _status(args: argparse.Namespace, out: TextIO) -> int:
    spool = _open(args)
    status = spool.status()
    if args.stream:
        status["streams"] = {
            stream: counts for stream, counts in status["streams"].items() if stream == args.stream
        }
    if args.json:
        out.write(json.dumps(status, indent=2, sort_keys=True) + "\n")
        return 0
    if not status["exists"]:
        out.write(f"No spool at {status['path']}: nothing was ever spooled there.\n")
    else:
        out.write(f"Spool {status['path']}\n")
        if not status["streams"]:
            out.write("Empty: no pending events, no dead letters.\n")
    for stream, counts in sorted(status["streams"].items()):
        for line in [escape_for_terminal(stream), *verbs.stream_lines(counts)]:
            out.write(line + "\n")
    if args.spool_dir is None:
        out.write(_DEFAULT_DIR_HINT)
    return 0


_DEFAULT_DIR_HINT = (
    "That is the default spool directory, looked at because no --spool-dir was given. A "
    "site's backends keep their spool where their spool_dir option says: pass --spool-dir "
    "DIR, or run `manage.py eventtracking_spool status`, which reads the site's settings.\n"
)


def _say(out: TextIO) -> verbs.Say:
    return lambda line: out.write(line + "\n")


def _label(spool: Spool, args: argparse.Namespace) -> str:
    """What the lines of a verb are about: the stream given, or the whole spool."""
    return escape_for_terminal(args.stream) if args.stream else str(spool.directory)


def _list_dead_letters(args: argparse.Namespace, out: TextIO) -> int:
    letters = _open(args).dead_letters(args.stream, limit=args.limit)
    verbs.list_dead_letters([(letter.stream, letter) for letter in letters], args.json, _say(out))
    if not args.json and args.spool_dir is None:
        out.write(_DEFAULT_DIR_HINT)
    return 0


def _redrive(args: argparse.Namespace, out: TextIO) -> int:
    spool = _open(args)
    verbs.redrive(spool, args.stream, args.ids, _label(spool, args), _say(out))
    return 0


def _purge(args: argparse.Namespace, out: TextIO) -> int:
    spool = _open(args)

    def streams() -> list[str]:
        return [args.stream] if args.stream else sorted(spool.status()["streams"])

    problem = verbs.purge_problem(args, lambda: sum(spool.pending_count(s) for s in streams()))
    if problem:
        out.write(problem + "\n")
        return 2
    verbs.purge(spool, streams(), args, _label(spool, args), _say(out))
    return 0


#: What ``python -m eventtracking spool replay`` says about a stream it cannot deliver,
#: by the prefix of its name.
_REPLAY_ELSEWHERE = {
    "celery:": "Celery events",
    "eventbus:": "events for the Open edX event bus",
}
_USE_MANAGE_PY = (
    "this command does not know the site's broker, queue or bus settings. Run "
    "`manage.py eventtracking_spool replay` on a host of the site: it builds the "
    "backends from the site's settings and replays every stream to where it belongs."
)


def _replay(args: argparse.Namespace, out: TextIO) -> int:
    problem = verbs.replay_problem(args)
    if problem:
        out.write(problem + "\n")
        return 2
    if args.stream:
        for prefix, what in _REPLAY_ELSEWHERE.items():
            if args.stream.startswith(prefix):
                out.write(
                    f"Stream {escape_for_terminal(args.stream)} holds {what}: {_USE_MANAGE_PY}\n"
                )
                return 2
    if args.uri is None:
        out.write(
            "Replaying a MongoDB stream needs --uri (the server to store the events in). "
            f"Celery and event-bus streams: {_USE_MANAGE_PY}\n"
        )
        _list_pending(_open(args), out)
        return 2
    from eventtracking.backends.mongodb import MongoBackend

    try:
        backend = MongoBackend(
            uri=args.uri,
            database=args.database,
            collection=args.collection,
            spool_dir=args.spool_dir if args.spool_dir is not None else default_spool_dir(),
            spool_stream=args.stream,
        )
    except ImportError as exc:  # pymongo missing: the message names the extra
        out.write(f"{exc}\n")
        return 2
    label = f"Stream {escape_for_terminal(backend.stream)}"

    def not_documents(problem: str) -> int:
        out.write(
            f"{label} does not hold MongoDB documents ({escape_for_terminal(problem)}): "
            f"another kind of backend spooled it. {_USE_MANAGE_PY}\n"
        )
        return 2

    problem = _not_documents(backend.spool, backend.stream)
    if problem is not None:
        backend.close(5)
        return not_documents(problem)
    try:
        if args.dead_letters:
            # Only the letters of the stream being delivered.
            verbs.redrive(backend.spool, backend.stream, args.ids, label, _say(out))
        result = verbs.replay_backend(
            backend,
            args.timeout,
            label=label,
            write=out.write,
            tty=out.isatty(),
            hopeless=_not_bson,
        )
    finally:
        # Long enough for an attempt in progress to end, so that it releases its rows.
        backend.close(5)
    out.write(f"{label}: {result.summary(backend)}\n")
    if not result.finished and _not_bson(str(result.last_error)):
        return not_documents(str(result.last_error))
    if not result.finished:
        out.write(f"{label}: {result.not_finished(args.timeout)}\n")
        return 1
    return 0


def _not_documents(spool: Spool, stream: str) -> str | None:
    """Why the oldest pending row of ``stream`` is not a BSON document, or None.

    Looked at before replaying: MongoBackend sets a row it cannot read aside as a dead
    letter (one bad row must not hold up a stream), which is right for a MongoDB stream
    but would turn a whole stream of another kind's events into dead letters here.
    """
    import bson

    claim = spool.claim(stream, 1)
    if claim is None:
        return None
    try:
        bson.decode(claim.payloads[0])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        spool.release(claim)
    return None


def _not_bson(error: str) -> bool:
    """Whether a delivery's last error says the stream's rows are not BSON documents."""
    return error.startswith("InvalidBSON")


def _list_pending(spool: Spool, out: TextIO) -> None:
    """Say which streams of ``spool`` hold pending events, if any."""
    streams = spool.status()["streams"]
    waiting = {name: counts for name, counts in streams.items() if counts["pending"]}
    if not waiting:
        out.write(f"No stream of {spool.path} holds pending events.\n")
        return
    out.write(f"Pending in {spool.path}:\n")
    for name, counts in sorted(waiting.items()):
        out.write(f"  {escape_for_terminal(name)}: {counts['pending']}\n")


_SPOOL_HANDLERS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "status": _status,
    "dead-letters": _list_dead_letters,
    "redrive": _redrive,
    "replay": _replay,
    "purge": _purge,
}


if __name__ == "__main__":
    raise SystemExit(main())
