"""The Celery app of the worker benchmark (benchmarks/bench_worker.py), either role.

Run as ``python -m celery -A _worker_app worker --pool=solo`` with, in the environment:

``BENCH_WORKER_BROKER`` / ``BENCH_WORKER_QUEUE``
    the Redis URL and the queue the messages wait in;
``BENCH_WORKER_DIR``
    where the worker writes ``done`` (``<events> <first start> <last end> <gc> <inside>
    <cpu>``: seconds of ``time.time()``, then the seconds spent in garbage collection,
    inside the tasks (from ``task_prerun`` to ``task_postrun``) and on the CPU (the
    process's), all from the start of the first task) once it has handled
    ``BENCH_WORKER_EVENTS`` events;
``BENCH_WORKER_ROLE``
    ``ours``: the library's task, delivering to a tracker whose AsyncRoutingBackend
    ``async`` has one nested leaf that counts events; ``floor``: a no-op task under the
    same name and with the same options, which counts the entries of each message.

Both roles time the same way: from the start of the first task (``task_prerun``) to
the end of the task that brings the count to the target (``task_postrun``).
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals

TASK_NAME = "eventtracking.tasks.send_events"
HERE = Path(os.environ.get("BENCH_WORKER_DIR", "."))
TARGET = int(os.environ.get("BENCH_WORKER_EVENTS", "0"))
ROLE = os.environ.get("BENCH_WORKER_ROLE", "")

app = Celery("bench_worker", broker=os.environ.get("BENCH_WORKER_BROKER", "memory://"))
app.conf.update(
    task_default_queue=os.environ.get("BENCH_WORKER_QUEUE", "celery"),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


class Clock:
    """Events handled so far, and when the first task began."""

    count = 0
    start = 0.0
    cpu_start = 0.0
    task_start = 0.0
    inside = 0.0
    written = False
    gc_seconds = 0.0
    gc_began = 0.0


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    # Garbage collections while the worker runs: the objects each event leaves make
    # them happen, and each one scans the worker's long-lived objects.
    if phase == "start":
        Clock.gc_began = time.perf_counter()
    elif Clock.start and not Clock.written:
        Clock.gc_seconds += time.perf_counter() - Clock.gc_began


gc.callbacks.append(_gc_timer)


class CountingLeaf:
    """A no-op leaf: counts the events it is sent."""

    mutates_events = False

    def send(self, event: dict[str, Any]) -> None:
        Clock.count += 1


if ROLE == "ours":
    from eventtracking.backends.async_routing import AsyncRoutingBackend
    from eventtracking.tracker import Tracker, register_tracker

    register_tracker(
        Tracker(
            {"async": AsyncRoutingBackend(backends={"leaf": CountingLeaf()}, backend_name="async")}
        )
    )
    import eventtracking.tasks  # noqa: F401 (registers the tasks)
elif ROLE == "floor":

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
              ignore_result=True)  # fmt: skip
    def send_events(self: Any, backend_name: str, entries: list[str]) -> None:
        Clock.count += len(entries)


@signals.task_prerun.connect
def _started(**kwargs: Any) -> None:
    if not Clock.start:
        Clock.start = time.time()
        Clock.cpu_start = time.process_time()
    Clock.task_start = time.perf_counter()


@signals.task_postrun.connect
def _ended(**kwargs: Any) -> None:
    Clock.inside += time.perf_counter() - Clock.task_start
    if Clock.count >= TARGET and not Clock.written:
        Clock.written = True
        end, cpu = time.time(), time.process_time() - Clock.cpu_start
        partial = HERE / "done.part"
        partial.write_text(
            f"{Clock.count} {Clock.start!r} {end!r} {Clock.gc_seconds!r} {Clock.inside!r} {cpu!r}"
        )
        partial.rename(HERE / "done")
