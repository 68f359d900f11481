"""The README example's events, stored in MongoDB by MongoBackend, then read back.

``make demo`` runs this after the README example. It

1. starts an embedded MongoDB-compatible server (SecantusDB) on a free loopback port,
   storing in a temporary directory;
2. registers a default tracker whose backend is a MongoBackend pointed at it;
3. runs the README example, whose last event saves an address (``address.create``);
4. flushes: the backend's writer thread stores the events in the background, so
   ``emit`` never waited on the server;
5. reads the documents back with pymongo and prints one JSON line each, then the
   backend's counters.

Run it with ``make demo`` or ``.venv/bin/python examples/mongo_demo.py``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from readme_example import run_readme_example
from secantus import SecantusDBServer

from eventtracking.backends.mongodb import MongoBackend
from eventtracking.tracker import Tracker, get_tracker, register_tracker


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="mongo-demo-") as workdir:
        server = SecantusDBServer(storage_path=str(Path(workdir) / "db"), port=0)
        server.start()
        say(
            f"\nStarted an embedded MongoDB-compatible server (SecantusDB) at {server.uri}, "
            f"storing in the temporary directory {workdir}, which is removed when this demo "
            "ends."
        )
        try:
            run(server.uri, Path(workdir) / "spool")
        finally:
            server.stop()
    say("Stopped SecantusDB and removed its directory.")


def say(text: str) -> None:
    """Tell the reader what the demo does, before it does it."""
    print(text, flush=True)


def run(uri: str, spool_dir: Path) -> None:
    backend = MongoBackend(
        uri=uri,
        database="eventtracking",
        collection="events",
        spool_dir=spool_dir,
        # Options for MongoClient; with this one, dates read back are UTC-aware.
        extra={"tz_aware": True},
    )
    register_tracker(Tracker({"mongo": backend}))
    say(
        "Registered a tracker whose only backend is a MongoBackend writing to it (its "
        "spool in that directory); running the README example."
    )

    run_readme_example()

    if not get_tracker().flush(timeout=10):
        raise SystemExit(f"MongoDB did not store the events: {backend.stats()['last_error']}")
    print(f"Stored in MongoDB at {uri} (eventtracking.events), read back with pymongo:")
    for document in backend.collection.find(sort=[("_id", 1)]):
        document["timestamp"] = document["timestamp"].isoformat()
        document["_id"] = str(document["_id"])
        print(json.dumps(document))
    stats = backend.stats()
    print(
        f"Backend counters: queued={stats['queued']} stored={stats['stored']} "
        f"spooled={stats['spooled']} dead_lettered={stats['dead_lettered']} "
        f"dropped={sum(stats['dropped'].values())}"
    )
    get_tracker().close(timeout=5)


if __name__ == "__main__":
    main()
