"""The Celery app of the worker subprocesses that the fault tests start and kill.

Run as ``celery -A celery_worker_app worker`` by :class:`celery_support.WorkerProcess`,
which passes a JSON config file in ``EVENTTRACKING_TEST_WORKER_CONFIG``::

    {"app": {...celery settings...}, "spool_dir": "...", "backend": {...options...},
     "mongo": {"uri": ..., "database": ..., "collection": ...},
      "slow": {"progress": "/path/file", "block_at": 75}}

The default tracker has one top-level AsyncRoutingBackend, ``async``, whose nested
backends are a MongoBackend (``mongo``) and, when configured, a leaf that takes
appends a byte to ``progress`` for each event and can stop in the middle of a batch
(``slow``), so that a test can kill the worker there. The worker writes
``EVENTTRACKING_TEST_WORKER_READY`` once it consumes, and answers a ``stats-request``
file in its directory with ``stats.json``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals

from eventtracking import tasks, tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.mongodb import MongoBackend

CONFIG = json.loads(Path(os.environ["EVENTTRACKING_TEST_WORKER_CONFIG"]).read_text())
HERE = Path(os.environ["EVENTTRACKING_TEST_WORKER_CONFIG"]).parent

app = Celery("eventtracking-test-worker", broker=CONFIG["app"]["broker_url"])
app.conf.update(
    broker_transport_options=CONFIG["app"]["broker_transport_options"],
    task_default_queue=CONFIG["app"]["task_default_queue"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)


class SlowLeaf:
    """A leaf that records its progress and, in the worker's first run only, stops for
    good at the event whose ``data['i']`` is ``block_at``: the test kills the worker
    there, in the middle of a batch."""

    mutates_events = False

    def __init__(self, progress: str, block_at: int | None = None) -> None:
        self.progress = open(progress, "ab", buffering=0)  # noqa: SIM115
        first_run = os.environ.get("EVENTTRACKING_TEST_WORKER_START") == "1"
        self.block_at = block_at if first_run else None

    def send(self, event: Any) -> None:
        self.progress.write(b".")
        if self.block_at is not None and event["data"].get("i") == self.block_at:
            threading.Event().wait()  # until SIGKILL


def build_tracker() -> tracker.Tracker:
    nested: dict[str, Any] = {
        "mongo": MongoBackend(
            uri=CONFIG["mongo"]["uri"],
            database=CONFIG["mongo"]["database"],
            collection=CONFIG["mongo"]["collection"],
            spool_dir=Path(CONFIG["spool_dir"]) / "mongo",
            flush_interval=0.05,
        )
    }
    if "slow" in CONFIG:
        nested["slow"] = SlowLeaf(CONFIG["slow"]["progress"], CONFIG["slow"].get("block_at"))
    backend = AsyncRoutingBackend(
        backends=nested,
        backend_name="async",
        app=app,
        spool_dir=CONFIG["spool_dir"],
        **CONFIG.get("backend", {}),
    )
    built = tracker.Tracker({"async": backend})
    tracker.register_tracker(built)
    return built


TRACKER = build_tracker()


def _answer_stats_requests() -> None:
    request = HERE / "stats-request"
    while True:
        if request.exists():
            request.unlink()
            report = {"tracker": TRACKER.stats(), "tasks": tasks.stats()}
            partial = HERE / "stats.json.part"
            partial.write_text(json.dumps(report, default=str))
            partial.rename(HERE / "stats.json")
        time.sleep(0.02)


threading.Thread(target=_answer_stats_requests, name="stats-answerer", daemon=True).start()


@signals.worker_ready.connect
def _ready(**kwargs: Any) -> None:
    Path(os.environ["EVENTTRACKING_TEST_WORKER_READY"]).write_text("ready")
