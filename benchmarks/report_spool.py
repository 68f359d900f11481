"""The spool report: how fast spooled events drain, and that it stays linear.

``python benchmarks/report_spool.py report`` (``make bench`` runs it after the other
reports) measures, each in a fresh process, median of ``--repeat`` runs:

``spool loop``
    The loop a delivery thread runs over the spool, without a sink: look for rows,
    claim 100, ack them, take a checkpoint when the write-ahead log is due one; over
    100,000 and 1,000,000 spooled events of the benchmark event (``_event.py``, about
    800 bytes encoded). Rows per second for both sizes: linear means the larger spool
    drains no slower per row.
``raw SQLite floor``
    The same statements, in the same transactions, on a file with the same schema and
    settings (SQLite's own checkpoints, at the same 4 MiB of log), through plain
    :mod:`sqlite3`: the least the spool loop could cost. The ratio to it is what the
    spool's own bookkeeping (per-thread connections, the file checks, the recovery
    around each call) costs.

4.0.2 has no spool, so there is no 4.0.2 column; the figure before issue 17 is in
``docs/benchmarks.rst``. Filling the spool is not timed. The report asserts nothing
about time: it exits 1 only when a run did not drain every row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any

from _event import CONTEXT, DATA, NAME
from _harness import print_report_table, report_parser, run_measure

STREAM = "bench-stream"
BATCH = 100
SIZES = (100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
FILL_CHUNK = 10_000

#: Goals of issue 17.
GOALS = {"rows_per_s": 50_000, "linear": 0.9}


def _payload() -> bytes:
    event = {"name": NAME, "context": CONTEXT, "data": DATA, "timestamp": "2026-01-01T00:00:00"}
    return json.dumps(event).encode()


def _fill(spool: Any, rows: int) -> None:
    payload = _payload()
    for start in range(0, rows, FILL_CHUNK):
        spool.append(STREAM, [payload] * min(FILL_CHUNK, rows - start))


def measure_spool_loop(rows: int) -> dict[str, Any]:
    """Fill a spool with ``rows`` events, then time draining it: look, claim, ack."""
    from eventtracking.spool import Spool

    directory = tempfile.mkdtemp(prefix="bench-spool-")
    try:
        spool = Spool(directory, max_bytes=None)
        _fill(spool, rows)
        # Main before issue 17 had no has_pending: it counted the stream instead.
        look = getattr(spool, "has_pending", None) or spool.pending_count
        drained = 0
        start = time.perf_counter()
        while look(STREAM):
            claim = spool.claim(STREAM, BATCH)
            if claim is None:
                break
            drained += spool.ack(claim)
            # As a delivery thread does between batches: it takes the checkpoints.
            spool.checkpoint()
        seconds = time.perf_counter() - start
        left = spool.pending_count(STREAM)
        spool.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"rows": rows, "drained": drained, "left": left, "seconds": seconds}


# The spool's schema and settings (see eventtracking/_spool_sqlite.py), for the floor.
_SCHEMA = """
CREATE TABLE pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, payload BLOB NOT NULL,
    created REAL NOT NULL, claim TEXT, claimed_at REAL
);
CREATE INDEX pending_by_stream ON pending (stream, claim, id);
"""


def measure_raw_floor(rows: int) -> dict[str, Any]:
    """The spool loop's statements through plain sqlite3, on one connection."""
    directory = tempfile.mkdtemp(prefix="bench-sqlite-")
    try:
        conn = sqlite3.connect(os.path.join(directory, "floor.sqlite3"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        payload = _payload()
        now = time.time()
        for start in range(0, rows, FILL_CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO pending (stream, payload, created) VALUES (?, ?, ?)",
                [(STREAM, payload, now)] * min(FILL_CHUNK, rows - start),
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        drained = 0
        token_number = 0
        start_time = time.perf_counter()
        while conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pending WHERE stream = ?)", (STREAM,)
        ).fetchone()[0]:
            token_number += 1
            token = f"floor|{token_number}"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "SELECT claim, MIN(claimed_at) FROM pending "
                "WHERE stream = ? AND claim IS NOT NULL GROUP BY claim",
                (STREAM,),
            ).fetchall()
            claimed = conn.execute(
                "SELECT id, payload FROM pending WHERE stream = ? AND claim IS NULL "
                "ORDER BY id LIMIT ?",
                (STREAM, BATCH),
            ).fetchall()
            conn.execute(
                "UPDATE pending SET claim = ?, claimed_at = ? "
                "WHERE stream = ? AND claim IS NULL AND id <= ?",
                (token, time.time(), STREAM, claimed[-1][0]),
            )
            conn.execute("COMMIT")
            [bytes(row[1]) for row in claimed]
            conn.execute("BEGIN IMMEDIATE")
            drained += conn.execute(
                "DELETE FROM pending WHERE stream = ? AND claim = ?", (STREAM, token)
            ).rowcount
            conn.execute("COMMIT")
        seconds = time.perf_counter() - start_time
        conn.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"rows": rows, "drained": drained, "left": rows - drained, "seconds": seconds}


MEASURES = {"loop": measure_spool_loop, "floor": measure_raw_floor}


def _run(what: str, rows: int) -> dict[str, Any]:
    return run_measure(
        sys.executable, __file__, "--events", str(rows), "--what", what, timeout=3_600
    )


def _report(args: argparse.Namespace) -> int:
    sizes = QUICK_SIZES if args.quick else SIZES
    repeat = 1 if args.quick else args.repeat
    started = time.monotonic()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    # Interleaved, so that a busy spell of the machine falls on every kind of run.
    for rep in range(repeat):
        for rows in sizes:
            order = ("loop", "floor") if rep % 2 == 0 else ("floor", "loop")
            for what in order:
                runs.setdefault((what, rows), []).append(_run(what, rows))
    broken = [
        r for results in runs.values() for r in results if r["left"] or r["drained"] != r["rows"]
    ]
    if broken:
        print(f"[spool report] ERROR: rows were left in the spool: {broken}")
        return 1

    def rate(what: str, rows: int) -> float:
        return rows / statistics.median(r["seconds"] for r in runs[(what, rows)])

    small, large = sizes
    loop_small, loop_large = rate("loop", small), rate("loop", large)
    floor_small, floor_large = rate("floor", small), rate("floor", large)
    rows_out: list[tuple[str, str, str, str, bool | None]] = [
        (
            f"spool loop (look, claim {BATCH}, ack), {small:,} rows",
            f"{loop_small:,.0f} rows/s ({small / loop_small:.2f} s)",
            f"{floor_small / loop_small:.2f}x the floor's time",
            f">= {GOALS['rows_per_s']:,} rows/s",
            loop_small >= GOALS["rows_per_s"],
        ),
        (
            f"spool loop, {large:,} rows",
            f"{loop_large:,.0f} rows/s ({large / loop_large:.2f} s)",
            f"{loop_large / loop_small:.2f}x the rate at {small:,}",
            f">= {GOALS['linear']:g}x (linear)",
            loop_large / loop_small >= GOALS["linear"],
        ),
        (
            f"  raw SQLite floor, {small:,} / {large:,} rows",
            f"{floor_small:,.0f} / {floor_large:,.0f} rows/s",
            f"{floor_large / floor_small:.2f}x the rate at {small:,}",
            "-",
            None,
        ),
        (
            f"  spool loop at {large:,} rows, against the floor at that size",
            f"{floor_large / loop_large:.2f}x the floor's time",
            f"{floor_small / loop_small:.2f}x at {small:,}",
            "-",
            None,
        ),
    ]
    label = "a smoke run; figures are rough" if args.quick else f"median of {repeat}"
    print(f"\n[spool report] draining a spool, no sink ({label})")
    print_report_table(rows_out, time.monotonic() - started)
    return 0


def _measure(args: argparse.Namespace) -> int:
    result = MEASURES[args.what](args.events)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, measure = report_parser("The spool report; see the docstring.")
    measure.add_argument("--what", choices=sorted(MEASURES), required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return _report(args) if args.command == "report" else _measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
