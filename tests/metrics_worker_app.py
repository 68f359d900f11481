"""The Celery app of the prefork worker that tests/test_metrics.py starts.

Run as ``celery -A metrics_worker_app worker --pool=prefork``, with the environment
variables ``METRICS_TEST_APP`` (the web app's settings, as JSON: see
``celery_support.app_settings``), ``METRICS_TEST_SPOOL`` and ``METRICS_TEST_PORT``.
The default tracker has one AsyncRoutingBackend, ``async``, with an in-memory leaf;
each pool process serves its metrics on the port plus its index.
"""

from __future__ import annotations

import json
import os

from celery import Celery

from eventtracking import metrics, tasks, tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.memory import InMemoryBackend

SETTINGS = json.loads(os.environ["METRICS_TEST_APP"])
app = Celery("eventtracking-metrics-worker", broker=SETTINGS["broker_url"])
app.conf.update(
    broker_transport_options=SETTINGS["broker_transport_options"],
    task_default_queue=SETTINGS["task_default_queue"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
assert tasks.send_events is not None  # registers the tasks with this app
router = AsyncRoutingBackend(
    backends={"memory": InMemoryBackend()},
    backend_name="async",
    app=app,
    spool_dir=os.environ["METRICS_TEST_SPOOL"],
)
tracker.register_tracker(tracker.Tracker({"async": router}))
metrics.serve_worker_processes(int(os.environ["METRICS_TEST_PORT"]))
