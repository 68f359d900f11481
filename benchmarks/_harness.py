"""The suite side of the benchmark protocol (stdlib only; see benchmarks/README.rst).

A suite script ``benchmarks/bench_<name>.py`` builds a :class:`Suite` and calls
:meth:`Suite.main`. The same script then answers three commands, which ``run.py``
issues with one interpreter or the other:

``describe``
    Print the suite's entries (names, titles, goals, sides) as one JSON object.
    Must not import ``eventtracking``, so it works under any interpreter.
``setup``
    Only for suites that declare one, and always run with *our* interpreter. Print
    one JSON object on one line (for example a server URI), then hold the resource
    until stdin reaches end of file, then release it and exit 0.
``run --side ours|peer --entry NAME [--quick] [--setup-json JSON]``
    Time one entry in this process and print one JSON object with the result. Any
    error (including a failed work check) exits non-zero with a traceback on stderr.

This module is imported by suite scripts running under either package's venv, so it
must never import ``eventtracking`` itself and must stay compatible with Python 3.10.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["SIDES", "Entry", "Suite", "Workload", "package_info"]

SIDES = ("ours", "peer")

# Per process: a warm-up run, then BATCHES timed runs of ITERATIONS events each. The
# best batch is the process's figure: the minimum is the least disturbed by the other
# processes on a small, shared machine.
ITERATIONS = 10_000
BATCHES = 5
WARMUP = 2_000
QUICK_ITERATIONS = 1_000
QUICK_BATCHES = 2
QUICK_WARMUP = 200


class Workload(Protocol):
    """What an entry's ``build`` returns: something that can emit ``n`` events."""

    def run(self, n: int) -> None:
        """Do the measured work for ``n`` events; nothing else belongs in here."""

    def check(self, expected: int) -> dict[str, Any]:
        """Verify that exactly ``expected`` events were handled; raise if not.

        Return a JSON-able dict describing the work done (for example a fingerprint
        of one delivered event). ``run.py`` requires both sides to return the same
        dict, so it must not contain anything that legitimately differs between
        the packages (timestamps, object ids, module paths).
        """


@dataclass(frozen=True)
class Entry:
    """One measured scenario of a suite.

    ``build(setup)`` is called in the timing process with the dict printed by the
    suite's setup step (``{}`` when there is none) and returns a :class:`Workload`.
    ``goal`` is the ratio peer time / our time to reach, or ``None``. ``sides``
    lists where the entry runs: an entry for ``("ours",)`` alone shows our figure
    without a ratio (baselines, features the peer lacks). ``floor`` names another entry
    of the suite that is the least this one could cost (a hand-written baseline), and
    ``floor_goal`` the largest ratio our figure / floor figure to accept.
    """

    name: str
    title: str
    build: Callable[[dict[str, Any]], Workload]
    goal: float | None = None
    sides: tuple[str, ...] = SIDES
    iterations: int = ITERATIONS
    description: str = ""
    floor: str | None = None
    floor_goal: float | None = None

    def describe(self) -> dict[str, Any]:
        """Return the JSON-able description printed by ``describe``."""
        return {
            "name": self.name,
            "title": self.title,
            "goal": self.goal,
            "sides": list(self.sides),
            "description": self.description,
            "floor": self.floor,
            "floor_goal": self.floor_goal,
        }


@dataclass
class Suite:
    """A named list of entries, with an optional setup step run on our side."""

    name: str
    title: str
    entries: Sequence[Entry]
    setup: Callable[[], AbstractContextManager[dict[str, Any]]] | None = None
    _by_name: dict[str, Entry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {entry.name: entry for entry in self.entries}
        if len(self._by_name) != len(self.entries):
            msg = f"suite {self.name!r} has duplicate entry names; make each name unique"
            raise ValueError(msg)
        for entry in self.entries:
            if entry.floor is not None and entry.floor not in self._by_name:
                msg = f"entry {entry.name!r} names floor {entry.floor!r}, which is no entry"
                raise ValueError(msg)
            unknown = set(entry.sides) - set(SIDES)
            if unknown or not entry.sides:
                msg = (
                    f"entry {entry.name!r} has sides {entry.sides!r}; "
                    f"use a non-empty subset of {SIDES!r}"
                )
                raise ValueError(msg)

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse the command line, run the command and return the exit status."""
        args = _parser(self).parse_args(argv)
        if args.command == "describe":
            _print(
                {
                    "suite": self.name,
                    "title": self.title,
                    "setup": self.setup is not None,
                    "entries": [entry.describe() for entry in self.entries],
                }
            )
            return 0
        if args.command == "setup":
            return self._serve_setup()
        return self._run(args)

    def _serve_setup(self) -> int:
        if self.setup is None:
            print(f"suite {self.name!r} has no setup step", file=sys.stderr)
            return 2
        # run.py reads the first stdout line as the setup data: anything the setup
        # code prints (server banners) goes to stderr instead.
        real_stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            with self.setup() as info:
                real_stdout.write(json.dumps(info, sort_keys=True) + "\n")
                real_stdout.flush()
                # run.py closes our stdin when every run of the suite is over.
                sys.stdin.read()
        finally:
            sys.stdout = real_stdout
        return 0

    def _run(self, args: argparse.Namespace) -> int:
        entry = self._by_name[args.entry]
        if args.side not in entry.sides:
            print(f"entry {entry.name!r} does not run on side {args.side!r}", file=sys.stderr)
            return 2
        setup = json.loads(args.setup_json) if args.setup_json else {}
        if args.quick:
            iterations = min(entry.iterations, QUICK_ITERATIONS)
            batches, warmup = QUICK_BATCHES, QUICK_WARMUP
        else:
            iterations, batches, warmup = entry.iterations, BATCHES, WARMUP
        workload = entry.build(setup)
        try:
            timings = list(_time_batches(workload, iterations, batches, warmup))
            check = workload.check(warmup + iterations * batches)
        finally:
            close = getattr(workload, "close", None)
            if close is not None:
                close()
        per_event_us = [ns / iterations / 1000 for ns in timings]
        _print(
            {
                "suite": self.name,
                "entry": entry.name,
                "side": args.side,
                "best_us": min(per_event_us),
                "median_us": statistics.median(per_event_us),
                "batches_us": per_event_us,
                "iterations": iterations,
                "check": check,
                "package": package_info(),
                "python": sys.version.split()[0],
            }
        )
        return 0


def _time_batches(workload: Workload, iterations: int, batches: int, warmup: int) -> Iterator[int]:
    """Yield the duration in ns of each timed batch, after one warm-up run.

    The collector stays enabled, as in production: garbage made by the library is
    part of its cost. A collection before each batch keeps earlier garbage out.
    """
    workload.run(warmup)
    for _ in range(batches):
        gc.collect()
        start = time.perf_counter_ns()
        workload.run(iterations)
        yield time.perf_counter_ns() - start


def package_info() -> dict[str, str]:
    """Return the version and location of the ``eventtracking`` imported here."""
    from importlib.metadata import PackageNotFoundError, version

    import eventtracking

    try:
        dist_version = version("event-tracking")
    except PackageNotFoundError:
        dist_version = "unknown"
    return {"version": dist_version, "path": str(eventtracking.__file__)}


def _parser(suite: Suite) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=f"Benchmark suite {suite.name!r}: {suite.title}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("describe", help="print the entries as JSON")
    commands.add_parser("setup", help="print setup data as JSON, hold it until stdin closes")
    run = commands.add_parser("run", help="time one entry and print the result as JSON")
    run.add_argument("--side", choices=SIDES, required=True)
    run.add_argument("--entry", choices=sorted(suite._by_name), required=True)
    run.add_argument("--quick", action="store_true", help="few iterations: a smoke run")
    run.add_argument("--setup-json", default="", help="the JSON printed by the setup step")
    return parser


def _print(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


# -- the reports of bench_mongo.py and bench_celery.py ---------------------------------

#: How a report row's goal check reads: met, missed, or no goal.
REPORT_STATUS = {True: "met", False: "MISSED", None: "-"}


def print_report_table(rows: Sequence[tuple[Any, ...]], seconds: float) -> None:
    """Print a report's rows (measure, figures, ratio, goal, met: bool or None) as an
    aligned table, then the seconds it took."""
    headers = ("measure", "figures", "ratio", "goal", "status")
    table = [headers] + [(*row[:4], REPORT_STATUS[row[4]]) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    for n, line in enumerate(table):
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  " + "  ".join(cells).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * width for width in widths))
    print(f"  ({seconds:.0f} s)", flush=True)


def report_parser(description: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command line of a report script: ``report`` (its options are the same in
    every report) and ``measure``, returned for the script to add its own options."""
    parser = argparse.ArgumentParser(description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="measure and print the report")
    report.add_argument("--peer-python", required=True, help="interpreter with 4.0.2")
    report.add_argument("--repeat", type=int, default=3, help="runs per side (3)")
    report.add_argument("--quick", action="store_true", help="a smoke run")
    measure = commands.add_parser("measure", help="one measurement, as JSON (internal)")
    measure.add_argument("--events", type=int, required=True)
    return parser, measure


def run_measure(python: str, script: str, *argv: str, timeout: float) -> dict[str, Any]:
    """Run ``script measure *argv`` under ``python`` and return the JSON object it
    printed last; RuntimeError with the end of its stderr when it fails. The child gets
    no PYTHONPATH, so it imports the package installed in that interpreter's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [python, script, "measure", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if done.returncode != 0:
        msg = f"measure {' '.join(argv[:2])} failed:\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
