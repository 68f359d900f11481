"""``manage.py eventtracking_ensure_indexes``: create the indexes of the Mongo backends.

What it creates, and the index of 4.x that ``--drop-legacy`` removes, are described in
``docs/django.rst`` (*Management commands*).
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventtracking.backends.mongodb import INDEXES, MongoBackend
from eventtracking.django._commands import configured_tracker, select_backends

#: The keys of the index event-tracking 4.x created on a field events do not have.
LEGACY_KEYS = [("time", 1)]


class Command(BaseCommand):
    """Create the MongoDB indexes of every configured MongoBackend."""

    help = (
        "Create the MongoDB indexes (timestamp descending, name) of every MongoBackend "
        "in EVENT_TRACKING_BACKENDS, and report the indexes each collection has."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend",
            action="append",
            metavar="NAME",
            help="only this backend (dotted for nested ones: route.mongo); repeatable",
        )
        parser.add_argument(
            "--timeout", type=float, default=30.0, help="seconds per backend before giving up (30)"
        )
        parser.add_argument(
            "--drop-legacy",
            action="store_true",
            help="drop the index on 'time' left by event-tracking 4.x",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            import pymongo
        except ImportError as error:
            msg = f"{error}. Install the extra: pip install 'event-tracking[mongo]'"
            raise CommandError(msg) from None
        tracker = configured_tracker()
        chosen = select_backends(
            tracker, lambda b: isinstance(b, MongoBackend), options["backend"], "MongoBackend"
        )
        failed = []
        for name, backend in chosen:
            target = f"{backend.database_name}.{backend.collection_name}"
            try:
                with _time_limit(pymongo, options["timeout"]):
                    self._ensure(pymongo, name, target, backend.collection, options)
            except pymongo.errors.PyMongoError as error:
                failed.append(name)
                self.stderr.write(f"{name} ({target}): {type(error).__name__}: {error}")
        if failed:
            msg = f"Could not create the indexes of {', '.join(failed)}."
            raise CommandError(msg)

    def _ensure(
        self, pymongo: Any, name: str, target: str, collection: Any, options: dict[str, Any]
    ) -> None:
        models = [pymongo.IndexModel(list(keys)) for keys in INDEXES]
        created = collection.create_indexes(models)
        self.stdout.write(f"{name} ({target}): ensured {', '.join(created)}")
        for index, info in sorted(collection.index_information().items()):
            keys = [(field, int(direction)) for field, direction in info["key"]]
            if keys == LEGACY_KEYS:
                if options["drop_legacy"]:
                    collection.drop_index(index)
                    self.stdout.write(f"  dropped {index} (event-tracking 4.x index on 'time')")
                    continue
                self.stdout.write(
                    f"  {index}: event-tracking 4.x index on 'time', a field events do not "
                    "have; remove it with --drop-legacy"
                )
                continue
            self.stdout.write(f"  {index}: {keys}")


def _time_limit(pymongo: Any, seconds: float) -> Any:
    """pymongo.timeout where available (pymongo 4.2+): bounds server selection too."""
    limit = getattr(pymongo, "timeout", None)
    return limit(seconds) if callable(limit) else contextlib.nullcontext()
