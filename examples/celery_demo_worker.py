"""The Celery worker of ``examples/celery_demo.py``: ``celery -A celery_demo_worker worker``.

It builds the same tracker as the demo's web side (``celery_demo.build_tracker``, with
the addresses the demo passes in environment variables): a top-level
AsyncRoutingBackend called ``async`` whose nested backend is a MongoBackend. The worker
looks the backend up by that name and stores each event it receives in MongoDB, once.
With the ``otel`` extra, it serves its metrics for Prometheus on the port the demo
passes (``--pool=solo``: the tasks run in this process).
"""

from __future__ import annotations

import os

from celery import Celery
from celery_demo import build_tracker

app = Celery("celery_demo", broker=os.environ["CELERY_DEMO_BROKER_URL"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)


build_tracker(app, os.environ["CELERY_DEMO_MONGO_URI"], os.environ["CELERY_DEMO_WORKER_SPOOL"])
if os.environ.get("CELERY_DEMO_METRICS_PORT"):
    from eventtracking import metrics

    metrics.start_prometheus(int(os.environ["CELERY_DEMO_METRICS_PORT"]), side="worker")
