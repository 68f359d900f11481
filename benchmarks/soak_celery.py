"""A soak of the Celery path: minutes of steady traffic through worker and broker deaths.

``python benchmarks/soak_celery.py --minutes 3`` (``make soak``) runs one web process
(this one) that emits ``--rate`` events a second through ``AsyncRoutingBackend`` to a
local Redis (durable: an append-only file synced at every write) while a Celery worker
(solo pool) delivers them to a leaf that writes down every event it receives. On a
schedule, the worker is killed with SIGKILL and a new one started (``--kill-every``),
and Redis is killed and, ``--redis-down`` seconds later, started again on its file
(``--redis-every``). Then the web process flushes and the last worker drains.

It prints the events emitted, delivered (distinct), lost and delivered twice (a worker
killed in the middle of a batch delivers it again: at least once, by design), the
memory (RSS) of each process at its start and end, the web process's emit latency,
and the web spool's size as it went. Lost must be 0 and memory flat. It is a soak, not
a test: it exits 1 only when events were lost.

The worker and the web side run the benchmark app (``_celery_app.py``) with
``BENCH_CELERY_SOAK`` set: a dead worker's messages go out again after 10 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from _event import CONTEXT, DATA, NAME
from _redis import free_port, redis_binary, start_redis
from bench_celery import Worker, web_side

DRAIN_TIMEOUT = 300.0


def _rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def _seen(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    # A worker killed in the middle of a write may leave half a line: it is no delivery.
    return [int(line) for line in text.split("\n") if line.strip().isdigit()]


class Soak:
    """The processes of one soak, and what it saw of them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="soak-celery-"))
        self.redis_dir = self.workdir / "redis"
        self.redis_dir.mkdir()
        self.binary = redis_binary()
        self.port = free_port()
        self.broker = f"redis://127.0.0.1:{self.port}/0"
        self.queue = f"soak-{uuid.uuid4().hex[:8]}"
        self.redis: Any = None
        self.worker: Worker | None = None
        self.workers: list[tuple[float, float]] = []  # RSS at start and end, per worker
        self.redises: list[tuple[float, float]] = []
        self.spool_samples: list[tuple[float, int, int]] = []
        self.web_rss: list[tuple[float, float]] = []
        self.worker_started_rss = 0.0
        self.redis_started_rss = 0.0

    # -- processes --------------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis = start_redis(self.binary, self.port, str(self.redis_dir), durable=True)
        self.redis_started_rss = _rss_mb(self.redis.pid)

    def kill_redis(self) -> None:
        self.redises.append((self.redis_started_rss, _rss_mb(self.redis.pid)))
        self.redis.send_signal(signal.SIGKILL)
        self.redis.wait()

    def start_worker(self) -> None:
        (self.workdir / "ready").unlink(missing_ok=True)
        self.worker = Worker(sys.executable, self.broker, self.queue, str(self.workdir))
        self.worker.wait_ready()
        self.worker_started_rss = _rss_mb(self.worker.process.pid)

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.workers.append((self.worker_started_rss, _rss_mb(self.worker.process.pid)))
        self.worker.process.send_signal(signal.SIGKILL)
        self.worker.process.wait()
        self.worker.log.close()

    def close(self) -> None:
        if self.worker is not None and self.worker.process.poll() is None:
            self.workers.append((self.worker_started_rss, _rss_mb(self.worker.process.pid)))
            self.worker.stop()
        if self.redis is not None and self.redis.poll() is None:
            self.redises.append((self.redis_started_rss, _rss_mb(self.redis.pid)))
            self.redis.terminate()
            self.redis.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the run ----------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        os.environ["BENCH_CELERY_SOAK"] = "1"
        self.start_redis()
        self.start_worker()
        tracker, _module = web_side(self.broker, self.queue, str(self.workdir))
        router = tracker.get_backend("async")
        tracker.enter_context("request", CONTEXT)
        web = psutil.Process()
        emit = tracker.emit
        seq = 0
        for _ in range(200):  # warm-up, delivered and counted like the rest
            emit(NAME, {**DATA, "seq": seq})
            seq += 1
        web_start = web.memory_info().rss / 2**20
        duration = args.minutes * 60
        start = time.monotonic()
        next_kill = start + args.kill_every
        next_redis = start + args.redis_every
        redis_back = None
        next_sample = start
        worst = 0.0
        kills = restarts = 0
        print(
            f"soak: {args.minutes:g} min at {args.rate} events/s; worker SIGKILLed every "
            f"{args.kill_every:g} s, Redis down {args.redis_down:g} s every "
            f"{args.redis_every:g} s",
            flush=True,
        )
        while (now := time.monotonic()) < start + duration:
            due = 200 + int((now - start) * args.rate)
            while seq < due:
                begin = time.perf_counter()
                emit(NAME, {**DATA, "seq": seq})
                worst = max(worst, time.perf_counter() - begin)
                seq += 1
            if now >= next_kill:
                self.kill_worker()
                self.start_worker()
                kills += 1
                next_kill = time.monotonic() + args.kill_every
            if redis_back is None and now >= next_redis:
                self.kill_redis()
                redis_back = now + args.redis_down
            elif redis_back is not None and now >= redis_back:
                self.start_redis()
                restarts += 1
                redis_back = None
                next_redis = time.monotonic() + args.redis_every
            if now >= next_sample:
                spool = router.spool
                pending = spool.pending_count(router.stream)
                size = sum(f.stat().st_size for f in Path(spool.path).parent.glob("*sqlite3*"))
                self.spool_samples.append((now - start, pending, size))
                self.web_rss.append((now - start, web.memory_info().rss / 2**20))
                next_sample = now + 5
            time.sleep(0.005)
        emitted = seq
        if redis_back is not None:
            self.start_redis()
            restarts += 1
        web_end = web.memory_info().rss / 2**20
        flushed = tracker.flush(DRAIN_TIMEOUT)
        spool_left = router.spool.pending_count(router.stream)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        seen_path = self.workdir / "seen"
        while len(set(_seen(seen_path))) < emitted and time.monotonic() < deadline:
            time.sleep(0.5)
        seen = _seen(seen_path)
        distinct = set(seen)
        lost = emitted - len(distinct & set(range(emitted)))
        stats = router.stats() if hasattr(router, "stats") else {}
        self.close()
        tracker.close(5)

        peak_pending = max(p for _, p, _ in self.spool_samples)
        peak_size = max(s for _, _, s in self.spool_samples)
        print(f"  events emitted          {emitted:,} (warm-up of 200 included)")
        print(f"  delivered (distinct)    {len(distinct):,}")
        print(f"  lost                    {lost:,}")
        print(f"  delivered twice or more {len(seen) - len(distinct):,} deliveries")
        print(f"  flush() after the run   {flushed}; spool rows left {spool_left}")
        print(f"  worker SIGKILLs         {kills}; Redis restarts {restarts}")
        print(f"  web RSS start / end     {web_start:.1f} MB / {web_end:.1f} MB")
        step = max(1, len(self.web_rss) // 12)
        rss = " ".join(f"{t:.0f}s:{m:.1f}" for t, m in self.web_rss[::step])
        print(f"  web RSS by time (MB)    {rss}")
        for label, runs in (("worker", self.workers), ("redis", self.redises)):
            cells = ", ".join(f"{a:.0f}->{b:.0f}" for a, b in runs)
            print(f"  {label} RSS per process  {cells} MB")
        print(f"  slowest emit            {worst * 1000:.2f} ms")
        print(f"  web spool, peak         {peak_pending:,} rows, {peak_size / 2**20:.1f} MB")
        samples = " ".join(f"{t:.0f}s:{p}" for t, p, _ in self.spool_samples[::step])
        print(f"  web spool rows by time  {samples}")
        dropped = stats.get("dropped") if isinstance(stats, dict) else None
        if dropped:
            print(f"  dropped (web side)      {dropped}")
        return 1 if lost else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=200, help="events a second (200)")
    parser.add_argument("--kill-every", type=float, default=45.0, help="seconds (45)")
    parser.add_argument("--redis-every", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("--redis-down", type=float, default=8.0, help="seconds (8)")
    args = parser.parse_args(argv)
    soak = Soak(args)
    try:
        return soak.run()
    finally:
        soak.close()


if __name__ == "__main__":
    raise SystemExit(main())
