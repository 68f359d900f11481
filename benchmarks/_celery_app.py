"""The Celery app of the Celery benchmarks, for either package (ours or 4.0.2).

Imported by the timing processes (the web side) and run as a worker with
``python -m celery -A _celery_app worker``, under one venv or the other. Settings come
from the environment:

``BENCH_CELERY_BROKER``
    the Redis URL;
``BENCH_CELERY_QUEUE``
    the queue of this measurement (each has its own);
``BENCH_CELERY_DIR``
    a directory for the files the worker writes: ``ready`` once it consumes, and
    ``count`` (``<events> <fingerprint>``), kept up to date by a thread;
``BENCH_CELERY_SOAK``
    set by the soak (``soak_celery.py``): the leaf also appends the ``seq`` of each
    event's data to ``seen``, one line per delivery, so that losses and duplicates can
    be counted; and a dead worker's unacknowledged messages go out again after 10 s
    (Redis's ``visibility_timeout``), not an hour.

Both sides build the same tracker with the 4.x API: a top-level AsyncRoutingBackend
``async`` whose one nested backend, ``leaf``, counts events. Celery's settings are its
defaults, the same for both sides; our tasks set ``acks_late`` themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals

# 4.0.2's task calls edx-django-utils, which reads Django settings.
from django.conf import settings as django_settings

if not django_settings.configured:
    django_settings.configure(OPENEDX_TELEMETRY=[])

app = Celery("bench_celery", broker=os.environ["BENCH_CELERY_BROKER"])
app.conf.update(
    task_default_queue=os.environ["BENCH_CELERY_QUEUE"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
HERE = Path(os.environ.get("BENCH_CELERY_DIR", "."))
ROLE = os.environ.get("BENCH_CELERY_ROLE", "")
SOAK = bool(os.environ.get("BENCH_CELERY_SOAK"))
if SOAK:
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": 10,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            # No read waits forever on a Redis that was killed and restarted.
            "socket_timeout": 10,
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_enable_remote_control=False,
    )


def fingerprint(event: dict[str, Any]) -> str:
    """A hash of an event's name, context and data: the same whichever package sent it."""
    content = {
        key: dict(event[key]) if key == "context" else event[key]
        for key in ("name", "context", "data")
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CountingLeaf:
    """The nested backend: counts events. In a worker, a thread writes the count (and
    the first event's fingerprint) to ``count`` every 10 ms while it changes."""

    mutates_events = False

    def __init__(self) -> None:
        self.count = 0
        self.first = ""
        self._seen = -1

    def send(self, event: dict[str, Any]) -> None:
        if not self.count:
            self.first = fingerprint(event)
        self.count += 1
        if SOAK and ROLE == "worker":
            if self._seen < 0:
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
                self._seen = os.open(HERE / "seen", flags, 0o600)
            os.write(self._seen, b"%d\n" % event["data"]["seq"])

    def report_forever(self) -> None:
        written = -1
        while True:
            count = self.count
            if count != written:
                partial = HERE / "count.part"
                partial.write_text(f"{count} {self.first or '-'}")
                partial.rename(HERE / "count")
                written = count
            time.sleep(0.01)


def build_tracker(**options: Any) -> Any:
    """Register the default tracker of both sides and return it (4.x API only)."""
    from eventtracking.backends.async_routing import AsyncRoutingBackend
    from eventtracking.tracker import Tracker, register_tracker

    router = AsyncRoutingBackend(backends={"leaf": CountingLeaf()}, backend_name="async", **options)
    tracker = Tracker({"async": router})
    register_tracker(tracker)
    return tracker


if ROLE == "worker":
    _leaf = build_tracker().get_backend("async").backends["leaf"]
    threading.Thread(target=_leaf.report_forever, name="count-reporter", daemon=True).start()

    @signals.worker_ready.connect
    def _ready(**kwargs: Any) -> None:
        (HERE / "ready").write_text("ready")
