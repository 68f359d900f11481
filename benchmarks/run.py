"""Run the benchmark suites under our package and event-tracking 4.0.2; print tables.

Usage (``make bench`` does the first)::

    .venv/bin/python benchmarks/run.py --peer-python .venv-peer/bin/python
    .venv/bin/python benchmarks/run.py --peer-python ... --suite core --quick

Each suite ``benchmarks/bench_<name>.py`` is run once per entry, side and repetition,
in a fresh process; the two sides alternate so that a slow spell of the machine hits
both. The figure per side is the median over repetitions of each process's best batch.
Timings are reported, never asserted: a missed goal prints MISSED and the exit status
stays 0. Status 1 means a run failed or the two sides did different work. The
protocol is described in benchmarks/README.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIDES = ("ours", "peer")
REPEAT = 7
SETUP_TIMEOUT = 120.0
RUN_TIMEOUT = 600.0


class BenchError(Exception):
    """A suite could not be run or returned unusable results."""


@dataclass
class Row:
    """The collected results of one entry."""

    entry: dict[str, Any]
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {s: [] for s in SIDES})
    error: str = ""

    def figure(self, side: str) -> float | None:
        values: list[float] = [r["best_us"] for r in self.runs[side]]
        return statistics.median(values) if values else None

    def spread(self, side: str) -> float | None:
        """Relative range of the per-run figures: how noisy this figure was."""
        values: list[float] = [r["best_us"] for r in self.runs[side]]
        if len(values) < 2:
            return None
        return (max(values) - min(values)) / statistics.median(values)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pythons = {"ours": args.ours_python, "peer": args.peer_python}
    names = args.suite or discover()
    unknown = [name for name in names if not (HERE / f"bench_{name}.py").is_file()]
    if unknown:
        msg = f"no suite named {', '.join(unknown)}; choose from {', '.join(discover())}"
        print(f"run.py: {msg}", file=sys.stderr)
        return 2
    repeat = 1 if args.quick and args.repeat is None else (args.repeat or REPEAT)
    failed = False
    report: dict[str, Any] = {"suites": {}}
    for name in names:
        start = time.monotonic()
        try:
            info, rows = run_suite(
                name, pythons, repeat=repeat, quick=args.quick, sides=args.side or SIDES
            )
        except BenchError as exc:
            print(f"\n[{name}] ERROR: {exc}", flush=True)
            failed = True
            continue
        if not rows:
            continue  # a report-only suite (bench_worker.py): the Makefile runs its report
        print_table(info, rows, repeat=repeat, quick=args.quick, seconds=time.monotonic() - start)
        failed = failed or any(row.error for row in rows)
        report["suites"][name] = {"info": info, "rows": [_row_json(row) for row in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 1 if failed else 0


def discover() -> list[str]:
    """Return the suite names found in benchmarks/, core first."""
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return sorted(names, key=lambda name: name != "core")


def run_suite(
    name: str,
    pythons: dict[str, str],
    *,
    repeat: int,
    quick: bool,
    sides: Sequence[str] = SIDES,
) -> tuple[dict[str, Any], list[Row]]:
    """Run every entry of suite ``name`` ``repeat`` times on each of its sides."""
    script = HERE / f"bench_{name}.py"
    info = _json_command([pythons["ours"], str(script), "describe"], what=f"{name} describe")
    rows = [Row(entry) for entry in info["entries"]]
    with _setup(script, pythons["ours"], enabled=info.get("setup", False)) as setup:
        extra = ["--setup-json", json.dumps(setup)] if setup else []
        for rep in range(repeat):
            # Alternate which side goes first, so neither always runs right after
            # the other (caches, CPU frequency, a neighbour's burst).
            order = SIDES if rep % 2 == 0 else SIDES[::-1]
            for row in rows:
                for side in order:
                    if side not in sides or side not in row.entry["sides"] or row.error:
                        continue
                    command = [pythons[side], str(script), "run", "--side", side]
                    command += ["--entry", row.entry["name"], *extra]
                    if quick:
                        command.append("--quick")
                    try:
                        result = _json_command(command, what=f"{name}/{row.entry['name']}/{side}")
                    except BenchError as exc:
                        row.error = str(exc)
                        continue
                    row.runs[side].append(result)
    for row in rows:
        if not row.error:
            row.error = _compare_sides(row)
    return info, rows


def _compare_sides(row: Row) -> str:
    """Return an error when the sides did different work or imported the same package."""
    ours, peer = row.runs["ours"], row.runs["peer"]
    if not ours or not peer:
        return ""
    if ours[0]["package"]["path"] == peer[0]["package"]["path"]:
        return f"both sides imported {ours[0]['package']['path']}; check --peer-python"
    checks = {json.dumps(r["check"], sort_keys=True) for r in ours + peer}
    if len(checks) != 1:
        return f"the sides did different work: {sorted(checks)}"
    return ""


@contextmanager
def _setup(script: Path, python: str, *, enabled: bool) -> Iterator[dict[str, Any]]:
    """Run the suite's setup step for the duration of the block, if it has one."""
    if not enabled:
        yield {}
        return
    proc = subprocess.Popen(
        [python, str(script), "setup"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(SETUP_TIMEOUT)
    try:
        if not line or not line[0].strip():
            msg = f"{script.name} setup printed nothing within {SETUP_TIMEOUT:.0f} s"
            raise BenchError(msg)
        try:
            info = json.loads(line[0])
        except ValueError as exc:
            msg = f"{script.name} setup printed {line[0]!r}, not JSON: {exc}"
            raise BenchError(msg) from exc
        yield info
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _json_command(command: list[str], *, what: str) -> dict[str, Any]:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_clean_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"{what}: {exc}"
        raise BenchError(msg) from exc
    if done.returncode != 0:
        tail = "\n    ".join(done.stderr.strip().splitlines()[-15:])
        msg = f"{what} exited with status {done.returncode}:\n    {tail}"
        raise BenchError(msg)
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        msg = f"{what} printed {done.stdout[-200:]!r}, not a JSON object"
        raise BenchError(msg) from exc
    return result


def _clean_env() -> dict[str, str]:
    # A PYTHONPATH pointing at the checkout would make the peer import our package.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONHASHSEED"] = "0"
    return env


def print_table(
    info: dict[str, Any], rows: list[Row], *, repeat: int, quick: bool, seconds: float
) -> None:
    """Print one suite's side-by-side table, then any errors under it."""
    packages = {}
    for side in SIDES:
        found = [row.runs[side][0] for row in rows if row.runs[side]]
        if found:
            pkg = found[0]["package"]
            packages[side] = f"event-tracking {pkg['version']} (python {found[0]['python']})"
    peer_label = "4.0.2" if packages.get("peer", "").startswith("event-tracking 4.0.2") else "peer"
    print(f"\n[{info['suite']}] {info['title']}")
    for side in SIDES:
        if side in packages:
            print(f"  {side + ':':6}{packages[side]}")
    sample = next((runs[0] for row in rows for runs in row.runs.values() if runs), None)
    if sample:
        batches = len(sample["batches_us"])
        note = " (--quick: a smoke run, figures are rough)" if quick else ""
        print(
            f"  median of {repeat} run(s) per side, each the best of {batches} batches of "
            f"{sample['iterations']:,} events{note}"
        )
    headers = ("scenario", "ours us/ev", f"{peer_label} us/ev", "x faster", "goal", "status")
    table: list[tuple[str, ...]] = [headers, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:-1], widths[1:-1], strict=True)]
        cells.append(line[-1])
        print("  " + "  ".join(cells).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * width for width in widths))
    by_name = {row.entry["name"]: row for row in rows}
    for row in rows:
        floor_name, floor_goal = row.entry.get("floor"), row.entry.get("floor_goal")
        floor_row = by_name.get(floor_name or "")
        ours = row.figure("ours")
        if floor_row is None or ours is None or floor_row.figure("ours") is None:
            continue
        ratio = ours / floor_row.figure("ours")
        status = "met" if floor_goal is None or ratio <= floor_goal else "MISSED"
        goal_text = f", goal <= {floor_goal:g}x" if floor_goal else ""
        print(
            f"  {row.entry['title']}: {ratio:.2f}x the time of "
            f"'{floor_row.entry['title']}'{goal_text}: {status}"
        )
    noisy = [
        f"{row.entry['name']} ({side} {spread:.0%})"
        for row in rows
        for side in SIDES
        if (spread := row.spread(side)) is not None and spread > 0.25
    ]
    if noisy:
        print(f"  noisy (runs differ by more than 25%): {', '.join(noisy)}")
    for row in rows:
        if row.error:
            print(f"  ERROR in {row.entry['name']}: {row.error}")
    print(f"  ({seconds:.0f} s)", flush=True)


def _cells(row: Row) -> tuple[str, ...]:
    ours, peer = row.figure("ours"), row.figure("peer")
    goal = row.entry.get("goal")
    goal_text = f">= {goal:g}x" if goal else "-"
    if row.error:
        status = "ERROR"
    elif ours is None or peer is None:
        status = "-"
    elif goal:
        status = "met" if peer / ours >= goal else "MISSED"
    else:
        status = "-"
    return (
        row.entry["title"],
        f"{ours:.2f}" if ours is not None else "-",
        f"{peer:.2f}" if peer is not None else "-",
        f"{peer / ours:.2f}x" if ours and peer else "-",
        goal_text,
        status,
    )


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "entry": row.entry,
        "us_per_event": {side: row.figure(side) for side in SIDES},
        "runs": row.runs,
        "error": row.error,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compare event-tracking against a peer interpreter, suite by suite."
    )
    parser.add_argument(
        "--peer-python",
        required=True,
        help="interpreter of the venv holding event-tracking 4.0.2 (make bench: .venv-peer)",
    )
    parser.add_argument(
        "--ours-python",
        default=sys.executable,
        help="interpreter of the venv holding our package (default: this one)",
    )
    parser.add_argument(
        "--suite",
        action="append",
        metavar="NAME",
        help="run only this suite (benchmarks/bench_NAME.py); repeatable",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few events, one repetition"
    )
    parser.add_argument(
        "--repeat", type=int, metavar="N", help=f"runs per entry and side (default {REPEAT})"
    )
    parser.add_argument(
        "--side",
        choices=SIDES,
        action="append",
        help="run only this side (default: both); the table then shows no ratio",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every raw result to FILE")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
