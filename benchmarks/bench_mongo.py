"""MongoDB suite: Tracker -> MongoBackend -> a local SecantusDB, side by side with 4.0.2.

Every event is the same: about 600 bytes of data, and one entered context. The
server is a SecantusDB (MongoDB wire protocol, WiredTiger storage) started once by the
setup step; each run writes to a collection of its own.

Table entries (``benchmarks/run.py``, microseconds per event, caller's side):

``emit loop``
    ``Tracker.emit`` into ``MongoBackend`` with the server up; only the loop is timed.
    4.0.2 inserts on the caller's thread (``w=0``); ours queues the encoded event.
``end to end``
    The same loop, then waiting until every event is stored. Ours: ``flush()``, whose
    True means acknowledged by the server; 4.0.2 has no flush, so the collection is
    counted until it holds them all.
``plain pymongo``
    (ours only) The same documents, built and inserted with ``insert_many`` in batches
    of 500, acknowledged, into a collection with the backend's two indexes: the floor
    for anything that stores these events.

The table's timed batches are short bursts (500 or 250 events), to keep the suite
near a minute. 4.0.2's
unacknowledged inserts return once written to the socket, so in a short burst its emit
loop hardly waits for the server, while over 20,000 events it does. The goals are set
on 20,000 events, so the table shows none; the report checks them.

The report, ``python benchmarks/bench_mongo.py report --peer-python PY`` (``make
bench`` runs it after the tables), measures what a per-event mean cannot show, on the
workload of the issue: 20,000 events timed until all are stored, for ours, 4.0.2 and
plain pymongo (median of ``--repeat`` runs, each in a fresh process); the emit loop of
those runs; the latency of each emit while MongoDB is down, over 100,000 events; the
growth of the process's RSS during that outage; and the replay after an outage: 20,000
and 100,000 events spooled while nothing listens on the port, then a SecantusDB started
there, timed until ``flush()`` says all are stored, beside plain pymongo storing as
many events right after each replay (the server slows as the collection grows: the
replay is linear when its ratio to pymongo, the median of the pairs', is the same at
both sizes). It prints
figures and ratios against their goals, and asserts nothing.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import hashlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _event import CONTEXT, DATA, NAME
from _harness import Entry, Suite, print_report_table, report_parser, run_measure

DATABASE = "bench"
EVENTS = 20_000
OUTAGE_EVENTS = 100_000
# Spooled while MongoDB is down, then replayed: two sizes, to show the replay is linear.
REPLAY_EVENTS = (20_000, 100_000)
PYMONGO_BATCH = 500
STORE_TIMEOUT = 300.0
# Events per timed batch in the table. Stored events cost the server about 0.2 ms
# each (0.45 ms through 4.0.2), so the entries that wait for storage use fewer.
EMIT_ITERATIONS = 500
STORE_ITERATIONS = 250

GOALS = {
    # End to end, ours / plain pymongo with the same indexes, at most. The store's
    # goal is pymongo's own speed: the server is the limit, so a multiple of 4.0.2
    # (shown beside it) says more about the server than about either library.
    "vs_pymongo": 1.2,
    # A replay from the spool (SQLite read, then the same inserts) / plain pymongo
    # storing as many events, at most.
    "replay_vs_pymongo": 1.5,
    "emit_loop": 20.0,  # emit loop, 4.0.2 / ours, at least
    "p99_ms": 1.0,  # emit latency while down, at most
    "max_ms": 50.0,
    "rss_share": 0.2,  # RSS growth / encoded size of the outage's events, at most
    # (replay / plain pymongo) with 100,000 spooled over the same with 20,000, at most
    "replay_linear": 1.2,
}


# -- the server -------------------------------------------------------------------------


@contextlib.contextmanager
def server() -> Iterator[dict[str, Any]]:
    """A SecantusDB on a free loopback port, in a temporary directory (our side only)."""
    from secantus import SecantusDBServer

    with tempfile.TemporaryDirectory(prefix="bench-mongo-") as storage:
        db = SecantusDBServer(storage_path=storage, port=0)
        db.start()
        try:
            host, port = db.address
            yield {"uri": db.uri, "host": host, "port": port}
        finally:
            db.stop()


# -- workloads --------------------------------------------------------------------------


def fingerprint(doc: dict[str, Any]) -> str:
    """A hash of a stored event's name, context and data: the same on both sides."""
    content = {key: doc[key] for key in ("name", "context", "data")}
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Collection:
    """A fresh collection of the benchmark database, and a client to read it."""

    def __init__(self, setup: dict[str, Any], label: str) -> None:
        import pymongo

        self.client: Any = pymongo.MongoClient(setup["uri"])
        self.name = f"{label}_{os.getpid()}"
        self.collection: Any = self.client[DATABASE][self.name]
        self.collection.drop()

    def count(self) -> int:
        return int(self.collection.count_documents({}))

    def check(self, expected: int) -> dict[str, Any]:
        count = self.count()
        if count != expected:
            msg = f"{self.name} holds {count} documents; {expected} were sent"
            raise AssertionError(msg)
        return {"stored": count, "event": fingerprint(self.collection.find_one())}

    def close(self) -> None:
        self.collection.drop()
        self.client.close()


class TrackerToMongo(_Collection):
    """``Tracker.emit`` into the package's MongoBackend (4.x API only: runs on both sides)."""

    def __init__(self, setup: dict[str, Any], *, label: str, wait: bool) -> None:
        from eventtracking.backends.mongodb import MongoBackend
        from eventtracking.tracker import Tracker

        super().__init__(setup, label)
        self.wait = wait
        self.spool_dir = tempfile.mkdtemp(prefix="bench-spool-")
        # 4.0.2 reads its options with kwargs.get and ignores spool_dir.
        self.backend = MongoBackend(
            host=setup["host"],
            port=setup["port"],
            database=DATABASE,
            collection=self.name,
            spool_dir=self.spool_dir,
        )
        self.tracker = Tracker({"mongo": self.backend})
        self.tracker.enter_context("request", CONTEXT)
        self.sent = 0

    def run(self, n: int) -> None:
        emit = self.tracker.emit
        for _ in range(n):
            emit(NAME, DATA)
        self.sent += n
        if self.wait:
            self.wait_until_stored(self.sent)

    def wait_until_stored(self, target: int) -> None:
        flush = getattr(self.backend, "flush", None)
        if callable(flush):
            if not flush(STORE_TIMEOUT):
                msg = f"flush() did not finish: {self.backend.stats()}"
                raise AssertionError(msg)
            return
        # 4.0.2 has no flush and its writes are unacknowledged. The server handles a
        # connection's messages in order, so an acknowledged ping on the backend's own
        # (single-threaded, so same) connection returns once the inserts before it are
        # done. Counting then confirms it; counting alone would scan the collection
        # again and again and slow the server down.
        self.backend.connection.admin.command("ping")
        deadline = time.monotonic() + STORE_TIMEOUT
        while (count := self.count()) < target:
            if time.monotonic() > deadline:
                msg = f"only {count} of {target} events stored"
                raise AssertionError(msg)
            time.sleep(0.05)

    def check(self, expected: int) -> dict[str, Any]:
        self.wait_until_stored(expected)
        return super().check(expected)

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close(5)
        super().close()
        shutil.rmtree(self.spool_dir, ignore_errors=True)


class PlainPymongo(_Collection):
    """The same documents built and stored with pymongo alone, batches of 500.

    With the backend's two indexes by default, so that both pay the same server work.
    """

    def __init__(self, setup: dict[str, Any], *, label: str, indexes: bool = True) -> None:
        super().__init__(setup, label)
        if indexes:
            self.collection.create_index([("timestamp", -1)])
            self.collection.create_index([("name", 1)])

    def run(self, n: int) -> None:
        insert_many = self.collection.insert_many
        for start in range(0, n, PYMONGO_BATCH):
            insert_many(
                [
                    {
                        "name": NAME,
                        "timestamp": datetime.now(timezone.utc),
                        "context": dict(CONTEXT),
                        "data": DATA,
                    }
                    for _ in range(min(PYMONGO_BATCH, n - start))
                ]
            )


SUITE = Suite(
    name="mongo",
    title="MongoBackend into a local SecantusDB (about 600 B of data per event)",
    entries=[
        Entry(
            "emit",
            "emit loop, bursts of 500",
            lambda setup: TrackerToMongo(setup, label="emit", wait=False),
            iterations=EMIT_ITERATIONS,
            description="Tracker.emit into MongoBackend; only the caller's loop is timed.",
        ),
        Entry(
            "e2e",
            "end to end, bursts of 250",
            lambda setup: TrackerToMongo(setup, label="e2e", wait=True),
            iterations=STORE_ITERATIONS,
            description="The emit loop, then waiting until every event is stored.",
        ),
        Entry(
            "pymongo",
            "plain pymongo insert_many, same bursts",
            lambda setup: PlainPymongo(setup, label="pymongo"),
            sides=("ours",),
            iterations=STORE_ITERATIONS,
            description="The same documents stored with pymongo alone: the floor.",
        ),
    ],
    setup=server,
)


# -- the report: one process per measurement ---------------------------------------------


def measure_until_stored(setup: dict[str, Any], what: str, events: int) -> dict[str, Any]:
    """Time ``events`` events until stored, after a warm-up; runs in its own process."""
    workload: Any
    if what.startswith("pymongo"):
        workload = PlainPymongo(setup, label=f"report_{what}", indexes=what == "pymongo")
    else:
        workload = TrackerToMongo(setup, label=f"report_{what}", wait=False)
    try:
        # Warm up the connection, the indexes and the code, then start empty.
        workload.run(1_000)
        if isinstance(workload, TrackerToMongo):
            workload.wait_until_stored(1_000)
            workload.sent = 0
        workload.collection.delete_many({})
        start = time.perf_counter()
        workload.run(events)
        emitted = time.perf_counter()
        if isinstance(workload, TrackerToMongo):
            workload.wait_until_stored(events)
        stored = time.perf_counter()
        check = workload.check(events)
    finally:
        workload.close()
    return {"emit_s": emitted - start, "total_s": stored - start, "check": check}


def measure_outage(events: int) -> dict[str, Any]:
    """Emit ``events`` events with MongoDB unreachable: latency of each, and RSS growth."""
    import psutil

    from eventtracking.backends.mongodb import MongoBackend
    from eventtracking.spool import RESERVE_FILENAME, Spool
    from eventtracking.tracker import Tracker

    with socket.socket() as sock:  # a port nobody listens on: the server is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spool_dir = tempfile.mkdtemp(prefix="bench-outage-")
    process = psutil.Process()
    try:
        backend = MongoBackend(host="127.0.0.1", port=port, spool_dir=spool_dir)
        tracker = Tracker({"mongo": backend})
        tracker.enter_context("request", CONTEXT)
        latencies = array.array("q", bytes(8 * events))  # preallocated: no growth
        for _ in range(1_000):  # warm-up, not measured
            tracker.emit(NAME, DATA)
        rss_before = peak = process.memory_info().rss
        clock = time.perf_counter_ns
        emit = tracker.emit
        for i in range(events):
            start = clock()
            emit(NAME, DATA)
            latencies[i] = clock() - start
            if i % 2_000 == 0:
                peak = max(peak, process.memory_info().rss)
        rss_after = process.memory_info().rss
        peak = max(peak, rss_after)
        stats = backend.stats()
        tracker.close(30)
        spooled = Spool(spool_dir).pending_count()
        # The spool's files, without the fixed disk reserve kept beside them.
        spool_bytes = sum(
            f.stat().st_size for f in Path(spool_dir).iterdir() if f.name != RESERVE_FILENAME
        )
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
    ordered = sorted(latencies)
    import bson

    document = {"_id": bson.ObjectId(), "name": NAME, "timestamp": datetime.now(timezone.utc)}
    encoded = len(bson.encode({**document, "context": CONTEXT, "data": DATA}))
    return {
        "events": events,
        "p50_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[int(len(ordered) * 0.99)] / 1000,
        "p999_us": ordered[int(len(ordered) * 0.999)] / 1000,
        "max_us": ordered[-1] / 1000,
        "rss_growth_mb": (rss_after - rss_before) / 2**20,
        "rss_peak_growth_mb": (peak - rss_before) / 2**20,
        "encoded_mb": encoded * events / 2**20,
        "spool_mb": spool_bytes / 2**20,
        "spooled": spooled,
        "expected_spooled": events + 1_000,
        "dropped": sum(stats["dropped"].values()),
    }


def measure_replay(events: int) -> dict[str, Any]:
    """Spool ``events`` events while MongoDB is down, then start it on that port and
    time until ``flush()`` says every one is stored; runs in its own process."""
    from secantus import SecantusDBServer

    from eventtracking.backends.mongodb import MongoBackend
    from eventtracking.spool import Spool
    from eventtracking.tracker import Tracker

    with socket.socket() as sock:  # a port nobody listens on, until the server starts
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spool_dir = tempfile.mkdtemp(prefix="bench-replay-")
    storage = tempfile.mkdtemp(prefix="bench-replay-db-")
    db = None
    try:
        backend = MongoBackend(
            host="127.0.0.1", port=port, database=DATABASE, collection="replay", spool_dir=spool_dir
        )
        tracker = Tracker({"mongo": backend})
        tracker.enter_context("request", CONTEXT)
        for _ in range(events):
            tracker.emit(NAME, DATA)
        spool = Spool(spool_dir)
        deadline = time.monotonic() + STORE_TIMEOUT
        while (spooled := spool.pending_count()) < events:
            if time.monotonic() > deadline:
                msg = f"only {spooled} of {events} events reached the spool: {backend.stats()}"
                raise RuntimeError(msg)
            time.sleep(0.05)
        db = SecantusDBServer(storage_path=storage, port=port)
        db.start()
        start = time.perf_counter()
        stored_all = backend.flush(STORE_TIMEOUT)
        seconds = time.perf_counter() - start
        import pymongo

        with pymongo.MongoClient("127.0.0.1", port) as client:
            stored = client[DATABASE]["replay"].count_documents({})
        left = spool.pending_count()
        tracker.close(30)
    finally:
        if db is not None:
            db.stop()
        shutil.rmtree(spool_dir, ignore_errors=True)
        shutil.rmtree(storage, ignore_errors=True)
    return {
        "events": events,
        "spooled": spooled,
        "stored": stored,
        "left": left,
        "flushed": stored_all,
        "seconds": seconds,
    }


def _measure(args: argparse.Namespace) -> int:
    if args.what == "outage":
        result = measure_outage(args.events)
    elif args.what == "replay":
        result = measure_replay(args.events)
    else:
        result = measure_until_stored(json.loads(args.setup_json), args.what, args.events)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def _run_measure(python: str, *argv: str) -> dict[str, Any]:
    return run_measure(python, __file__, *argv, timeout=900)


def _report(args: argparse.Namespace) -> int:
    events = 2_000 if args.quick else EVENTS
    outage_events = 10_000 if args.quick else OUTAGE_EVENTS
    repeat = 1 if args.quick else args.repeat
    pythons = {
        "ours": sys.executable,
        "peer": args.peer_python,
        "pymongo": sys.executable,
        "pymongo_noindex": sys.executable,
    }
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in pythons}
    started = time.monotonic()
    with server() as setup:
        setup_json = json.dumps(setup)
        for rep in range(repeat):
            order = list(pythons) if rep % 2 == 0 else list(pythons)[::-1]
            for side in order:
                runs[side].append(
                    _run_measure(
                        pythons[side],
                        "--what",
                        side,
                        "--events",
                        str(events),
                        "--setup-json",
                        setup_json,
                    )
                )
    outage = _run_measure(sys.executable, "--what", "outage", "--events", str(outage_events))
    replay_sizes = (2_000, 10_000) if args.quick else REPLAY_EVENTS
    # Each replay is paired with the server's own time on as many events (plain
    # pymongo, which slows as the collection and its indexes grow), measured right
    # after it, so that a slow minute of the machine weighs on both sides of a ratio.
    replays: dict[int, list[dict[str, Any]]] = {size: [] for size in replay_sizes}
    with server() as setup:
        for _ in range(repeat):
            for size in replay_sizes:
                result = _run_measure(sys.executable, "--what", "replay", "--events", str(size))
                argv = ["--what", "pymongo", "--events", str(size)]
                floor = _run_measure(sys.executable, *argv, "--setup-json", json.dumps(setup))
                result["floor_s"] = floor["total_s"]
                replays[size].append(result)
    lost = [r for runs_ in replays.values() for r in runs_ if r["stored"] != r["events"]]
    if lost or any(r["left"] for runs_ in replays.values() for r in runs_):
        print(f"[mongo report] ERROR: the replay after an outage lost events: {replays}")
        return 1
    checks = {
        json.dumps(r["check"], sort_keys=True) for side in ("ours", "peer") for r in runs[side]
    }
    if len(checks) != 1:
        print(f"[mongo report] ERROR: the sides stored different events: {sorted(checks)}")
        return 1
    if outage["spooled"] != outage["expected_spooled"] or outage["dropped"]:
        print(f"[mongo report] ERROR: events went missing during the outage: {outage}")
        return 1
    _print_report(runs, outage, replays, events, repeat, time.monotonic() - started)
    return 0


def _print_report(
    runs: dict[str, list[dict[str, Any]]],
    outage: dict[str, Any],
    replays: dict[int, list[dict[str, Any]]],
    events: int,
    repeat: int,
    seconds: float,
) -> None:
    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    small, large = sorted(replays)
    replay_s = {size: statistics.median(r["seconds"] for r in replays[size]) for size in replays}
    floor_s = {size: statistics.median(r["floor_s"] for r in replays[size]) for size in replays}
    # The replay's time over plain pymongo's on as many events, measured in pairs (the
    # median of the pairs' ratios): linear when it holds from the small size to the large.
    over = {
        size: statistics.median(r["seconds"] / r["floor_s"] for r in replays[size])
        for size in replays
    }

    ours, peer, plain = (median(s, "total_s") for s in ("ours", "peer", "pymongo"))
    bare = median("pymongo_noindex", "total_s")
    ours_emit, peer_emit = median("ours", "emit_s"), median("peer", "emit_s")
    rss_share = outage["rss_peak_growth_mb"] / outage["encoded_mb"]
    rows: list[tuple[str, str, str, str, bool | None]] = [
        (
            f"end to end, {events:,} events until stored",
            f"ours {ours:.2f} s, plain pymongo {plain:.2f} s",
            f"{ours / plain:.2f}x pymongo",
            f"<= {GOALS['vs_pymongo']:g}x",
            ours / plain <= GOALS["vs_pymongo"],
        ),
        (
            "  (plain pymongo without the two indexes)",
            f"{bare:.2f} s",
            f"{ours / bare:.2f}x",
            "-",
            None,
        ),
        (
            "end to end vs 4.0.2",
            f"ours {ours:.2f} s, 4.0.2 {peer:.2f} s",
            f"{peer / ours:.1f}x faster",
            "-",
            None,
        ),
        (
            "caller's emit loop vs 4.0.2",
            f"ours {ours_emit:.3f} s, 4.0.2 {peer_emit:.2f} s",
            f"{peer_emit / ours_emit:.1f}x shorter",
            f">= {GOALS['emit_loop']:g}x",
            peer_emit / ours_emit >= GOALS["emit_loop"],
        ),
        (
            f"emit while MongoDB is down, p50 / p99 ({outage['events']:,} events)",
            f"{outage['p50_us']:.1f} us / {outage['p99_us']:.1f} us",
            f"p99.9 {outage['p999_us']:.1f} us",
            f"p99 < {GOALS['p99_ms']:g} ms",
            outage["p99_us"] < GOALS["p99_ms"] * 1000,
        ),
        (
            "emit while MongoDB is down, max",
            f"{outage['max_us'] / 1000:.2f} ms",
            "",
            f"< {GOALS['max_ms']:g} ms",
            outage["max_us"] < GOALS["max_ms"] * 1000,
        ),
        (
            "RSS growth during the outage (peak / end)",
            f"{outage['rss_peak_growth_mb']:.1f} MB / {outage['rss_growth_mb']:.1f} MB",
            f"{rss_share:.0%} of {outage['encoded_mb']:.0f} MB sent",
            f"<= {GOALS['rss_share']:.0%}",
            rss_share <= GOALS["rss_share"],
        ),
    ]
    rows += [
        (
            f"replay after an outage: {small:,} / {large:,} spooled events until stored",
            f"{replay_s[small]:.1f} s / {replay_s[large]:.1f} s",
            f"{small / replay_s[small]:,.0f} / {large / replay_s[large]:,.0f} events/s",
            "-",
            None,
        ),
        (
            "  plain pymongo storing as many events (the server's own time)",
            f"{floor_s[small]:.1f} s / {floor_s[large]:.1f} s",
            f"replay {over[small]:.2f}x / {over[large]:.2f}x of it",
            f"<= {GOALS['replay_vs_pymongo']:g}x",
            max(over.values()) <= GOALS["replay_vs_pymongo"],
        ),
        (
            "  replay over pymongo, larger spool / smaller (linear: about 1)",
            f"{over[large] / over[small]:.2f}x",
            "",
            f"<= {GOALS['replay_linear']:g}x",
            over[large] / over[small] <= GOALS["replay_linear"],
        ),
    ]
    if events == EVENTS:
        print(f"\n[mongo report] the issue's workload against one SecantusDB (median of {repeat})")
    else:
        print(f"\n[mongo report] --quick: {events:,} events, a smoke run; figures are rough")
    print(
        f"  {outage['spooled']:,} events of the outage were on disk afterwards "
        f"(spool {outage['spool_mb']:.0f} MB); none dropped"
    )
    print_report_table(rows, seconds)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("report", "measure"):
        return SUITE.main(argv)
    parser, measure = report_parser("The MongoDB report; see the docstring.")
    measure.add_argument(
        "--what",
        choices=("ours", "peer", "pymongo", "pymongo_noindex", "outage", "replay"),
        required=True,
    )
    measure.add_argument("--setup-json", default="{}")
    args = parser.parse_args(argv)
    return _report(args) if args.command == "report" else _measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
