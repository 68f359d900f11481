"""eventtracking.metrics: the counters of stats() as OpenTelemetry metrics.

Read through the SDK's in-memory reader, and scraped over HTTP from a real Prometheus
exporter endpoint on a loopback port, with a real Celery worker (in this process) on
the embedded Redis for the worker side.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from celery_support import (
    TESTS_DIR,
    Broker,
    app_settings,
    in_process_worker,
    make_app,
    wait_until,
)
from redis_support import free_port

from eventtracking import metrics, tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.processors.whitelist import NameWhitelistProcessor

pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

Points = dict[tuple[str, frozenset[tuple[str, str]]], float]


def key(name: str, **attributes: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(attributes.items())


def collect(reader: InMemoryMetricReader) -> Points:
    """Every data point the reader collects now, by metric name and attributes."""
    points: Points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    attrs = frozenset((k, str(v)) for k, v in (point.attributes or {}).items())
                    points[metric.name, attrs] = point.value  # type: ignore[union-attr]
    return points


def scrape(url: str) -> Points:
    """GET ``url`` and parse the Prometheus text format; OTel's scope labels left out.

    The exporter gives every sample of a family the same label names, a missing one
    as ``""``, which Prometheus takes as no label: so are they left out here."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    points: Points = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if v and not k.startswith("otel_scope_")
            )
            points[sample.name, labels] = sample.value
    return points


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def int_leaves(stats: Mapping[str, Any]) -> int:
    """How many integers ``stats`` holds, at any depth (booleans are not counts)."""
    found = 0
    for value in stats.values():
        if isinstance(value, Mapping):
            found += int_leaves(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            found += 1
    return found


class Reader:
    """A MeterProvider with the SDK's in-memory reader."""

    def __init__(self) -> None:
        self.in_memory = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.in_memory])

    def collect(self) -> Points:
        return collect(self.in_memory)


@pytest.fixture
def reader() -> Iterator[Reader]:
    made = Reader()
    yield made
    made.provider.shutdown()


@pytest.fixture
def endpoint() -> Iterator[None]:
    """Stop the Prometheus endpoint a test started."""
    yield
    metrics.stop_prometheus()


# -- the in-memory reader -------------------------------------------------------------


def test_every_count_of_stats_is_a_data_point_with_its_value(
    reader: Reader,
) -> None:
    """Tracker, nested backends, groups by reason: each integer of stats() is reported
    once, under its metric, with the backend path and reason as attributes."""
    memory, kept = InMemoryBackend(), InMemoryBackend()
    only_keep = NameWhitelistProcessor(whitelist=["keep"])
    nested = RoutingBackend(backends={"kept": kept}, processors=[only_keep])
    events = tracker.Tracker({"memory": memory, "nested": nested})
    tracker.register_tracker(events)
    metrics.instrument(reader.provider, side="web")
    for name in ("keep", "other", "other"):
        events.emit(name, {})

    points = reader.collect()
    stats = events.stats()
    assert stats["emitted"] == 3
    assert points[key("eventtracking.events.emitted", side="web")] == stats["emitted"]
    assert points[key("eventtracking.events.stored", side="web", backend="memory")] == 3
    assert stats["backends"]["nested"]["dropped"] == {"filtered": 2}
    dropped = key("eventtracking.events.dropped", side="web", backend="nested", reason="filtered")
    assert points[dropped] == 2
    stored = key("eventtracking.events.stored", side="web", backend="nested.kept")
    assert points[stored] == stats["backends"]["nested"]["backends"]["kept"]["stored"] == 1
    module = [p for p in points if ("part", "module") in p[1]]
    own = {p: v for p, v in points.items() if p not in module}
    assert len(own) == int_leaves(stats)
    assert len(module) == int_leaves(tracker.stats())


def test_stats_are_read_when_a_reader_collects_once_for_every_instrument(
    reader: Reader,
) -> None:
    """Emitting reads no counter for metrics; a collection reads stats() once, also
    after a second call for the same provider (a second app start-up)."""
    events = tracker.Tracker({"memory": InMemoryBackend()})
    reads: list[int] = []
    real_stats = events.stats

    def counted_stats() -> dict[str, Any]:
        reads.append(1)
        return real_stats()

    events.stats = counted_stats  # type: ignore[method-assign]
    metrics.instrument(reader.provider, side="web", trackers={"default": events})
    for _ in range(100):
        events.emit("counted", {})
    assert reads == []
    points = reader.collect()
    assert len(reads) == 1
    assert points[key("eventtracking.events.emitted", side="web")] == 100
    reader.collect()
    assert len(reads) == 2
    metrics.instrument(reader.provider, side="web", trackers={"default": events})
    reader.collect()
    assert len(reads) == 3


def test_a_count_without_a_metric_of_its_own_is_reported_as_other(reader: Reader) -> None:
    """A key added to some backend's stats() later is exported under its name."""

    class Novel:
        def send(self, event: Any) -> None:
            pass

        def stats(self) -> dict[str, Any]:
            return {"novel": 5, "novel_kinds": {"a": 2}, "last_error": "text", "flag": True}

    tracker.register_tracker(tracker.Tracker({"novel": Novel()}), "second")
    metrics.instrument(reader.provider, side="worker")
    points = reader.collect()
    attributes = {"side": "worker", "tracker": "second", "backend": "novel"}
    assert points[key("eventtracking.other", **attributes, counter="novel")] == 5
    kinds = key("eventtracking.other", **attributes, counter="novel_kinds", reason="a")
    assert points[kinds] == 2
    assert not [
        p for p in points if ("counter", "flag") in p[1] or ("counter", "last_error") in p[1]
    ]


def test_spool_depth_and_dead_letters_are_gauges_equal_to_the_spool_status(
    reader: Reader, tmp_path: Path
) -> None:
    """Events kept in the spool (the broker app cannot be imported) are its depth."""
    router = AsyncRoutingBackend(
        backend_name="spooling",
        app="no_such_module_for_metrics:app",
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
    )
    tracker.register_tracker(tracker.Tracker({"spooling": router}))
    metrics.instrument(reader.provider, side="web")
    try:
        for i in range(3):
            tracker.get_tracker().emit("kept", {"i": i})
        router.flush(1)
        wait_until(lambda: router.spool.pending_count(router.stream) == 3)
        points = reader.collect()
        streams = router.spool.status()["streams"][router.stream]
        pending = key("eventtracking.spool.pending", side="web", backend="spooling")
        assert points[pending] == streams["pending"] == 3
        dead = key("eventtracking.spool.dead_letters", side="web", backend="spooling")
        assert points[dead] == streams["dead_letters"] == 0
        spooled = key("eventtracking.events.spooled", side="web", backend="spooling")
        assert points[spooled] == router.stats()["spooled"] == 3
        queue = key("eventtracking.queue.size", side="web", backend="spooling")
        assert points[queue] == router.stats()["queue_size"]
    finally:
        router.close(1)


def test_with_a_range_of_ports_a_process_takes_the_first_free_one(endpoint: None) -> None:
    """ports=3: the first port of the range is taken (by another process of a server):
    the next one serves, and a range with none free is an error naming it."""
    base = free_port()
    while base + 2 > 65535 or not all(port_is_free(base + n) for n in (1, 2)):
        base = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        with pytest.raises(OSError):
            metrics.start_prometheus(base, ports=1, side="web")
        served = metrics.start_prometheus(base, ports=3, side="web")
        assert served.address == ("127.0.0.1", base + 1)
        tracker.register_tracker(tracker.Tracker({"memory": InMemoryBackend()}))
        tracker.get_tracker().emit("ranged", {})
        points = scrape(served.url)
        assert points[key("eventtracking_events_emitted_total", side="web")] == 1
        metrics.stop_prometheus()
        with socket.socket() as second:
            # The scrape's connection may leave the port in TIME_WAIT for a while.
            second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            second.bind(("127.0.0.1", base + 1))
            second.listen()
            with pytest.raises(OSError, match=f"no free port from {base} to {base + 1}"):
                metrics.start_prometheus(base, ports=2, side="web")


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("call", [metrics.instrument, lambda: metrics.start_prometheus(0)])
def test_without_the_extra_the_error_names_it(call: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With OpenTelemetry missing, turning metrics on says which extra to install."""
    for name in list(sys.modules):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'event-tracking\[otel\]'"):
        call()


def test_a_bad_side_or_port_is_refused_naming_the_choices(reader: Reader) -> None:
    with pytest.raises(ValueError, match="side must be one of 'web', 'worker', got 'api'"):
        metrics.instrument(reader.provider, side="api")
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535, got '9464'"):
        metrics.start_prometheus("9464")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ports must be a positive int, got 0"):
        metrics.start_prometheus(9464, ports=0)


@pytest.mark.parametrize(
    ("argv", "side"),
    [
        (["/venv/bin/celery", "-A", "proj", "worker"], "worker"),
        (["/usr/lib/python3/site-packages/celery/__main__.py", "-A", "proj", "worker"], "worker"),
        (["/venv/bin/celery", "-A", "proj", "beat"], "web"),
        (["/venv/bin/gunicorn", "proj.wsgi"], "web"),
        ([], "web"),
    ],
)
def test_the_side_is_guessed_from_the_command_line(argv: list[str], side: str) -> None:
    assert metrics.detect_side(argv) == side


# -- a Prometheus scrape, with a Celery worker ----------------------------------------


@pytest.fixture(scope="module")
def app(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # The tasks are shared tasks: imported before the app is made, the worker has them.
    import eventtracking.tasks  # noqa: F401

    home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home))
        celery_app = make_app(Broker("redis", redis_server.url_for(3)))
        yield celery_app
        celery_app.close()


@pytest.fixture(scope="module")
def worker(app: Any) -> Iterator[Any]:
    with in_process_worker(app) as running:
        yield running


class Flaky:
    """A leaf that raises for its first ``failures`` events, then stores them."""

    mutates_events = False

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.events: list[Any] = []

    def send(self, event: Any) -> None:
        if self.failures:
            self.failures -= 1
            msg = "leaf down"
            raise ConnectionError(msg)
        self.events.append(event)


def test_a_prometheus_scrape_shows_both_sides_equal_to_stats(
    app: Any, worker: Any, tmp_path: Path, endpoint: None
) -> None:
    """The web side's published and queue depth, the worker's delivered, retried and
    leaf errors: every sample of the scrape equals stats()."""
    memory, flaky = InMemoryBackend(), Flaky(failures=2)
    only_travel = NameWhitelistProcessor(whitelist=["travel"])
    router = AsyncRoutingBackend(
        backends={"memory": memory, "flaky": flaky},
        processors=[only_travel],
        backend_name="async",
        app=app,
        spool_dir=tmp_path / "spool",
        flush_interval=0.05,
        retry_backoff=0.05,
        retry_backoff_max=0.1,
        max_retries=3,
    )
    tracker.register_tracker(tracker.Tracker({"async": router}))
    try:
        served = metrics.start_prometheus(0, "127.0.0.1", side="web")
        assert metrics.start_prometheus(0) is served
        for i in range(3):
            tracker.get_tracker().emit("travel", {"i": i})
        tracker.get_tracker().emit("stay", {})
        assert router.flush(10)
        wait_until(lambda: len(flaky.events) == 3 and router.stats()["delivered"] == 3)

        points = scrape(served.url)
        stats = tracker.get_tracker().stats()
        own = stats["backends"]["async"]
        web = {"side": "web", "backend": "async"}
        assert stats["emitted"] == 4
        assert points[key("eventtracking_events_emitted_total", side="web")] == 4
        assert points[key("eventtracking_events_published_total", **web)] == own["published"] == 3
        assert points[key("eventtracking_events_delivered_total", **web)] == own["delivered"] == 3
        assert points[key("eventtracking_events_retried_total", **web)] == own["retried"] == 2
        dropped = key("eventtracking_events_dropped_total", **web, reason="filtered")
        assert points[dropped] == own["dropped"]["filtered"] == 1
        errors = key("eventtracking_errors_total", **web, part="worker", reason="flaky")
        assert points[errors] == own["worker"]["failed"]["flaky"] == 2
        queue = key("eventtracking_queue_size", **web)
        assert points[queue] == own["queue_size"] == 0
        batches = key("eventtracking_delivery_batches_total", **web, part="publisher")
        assert points[batches] == own["publisher"]["batches"] >= 1
        pending = key("eventtracking_spool_pending", **web)
        assert points[pending] == router.spool.pending_count(router.stream) == 0
        from_stats = [
            p
            for p in points
            if p[0].startswith("eventtracking_")
            and p[0] not in ("eventtracking_spool_pending", "eventtracking_spool_dead_letters")
            and ("part", "module") not in p[1]
        ]
        assert len(from_stats) == int_leaves(stats)
    finally:
        router.close(1)


def test_each_prefork_pool_process_serves_its_own_counters(
    app: Any, tmp_path: Path, redis_server: Any
) -> None:
    """serve_worker_processes: pool process n serves on port + n, side 'worker'; the
    events they delivered add up to what the web side published."""
    base = free_port()
    while base + 2 > 65535 or not all(port_is_free(base + n) for n in (1, 2)):
        base = free_port()
    web_app = make_app(Broker("redis", redis_server.url_for(4)))
    settings = app_settings(web_app)
    env = dict(os.environ)
    env.update(
        METRICS_TEST_APP=json.dumps(settings),
        METRICS_TEST_SPOOL=str(tmp_path / "worker-spool"),
        METRICS_TEST_PORT=str(base),
        PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)]),
    )
    command = [sys.executable, "-m", "celery", "-A", "metrics_worker_app", "worker"]
    command += ["--pool=prefork", "--concurrency=2", "--without-gossip", "--without-mingle"]
    command += ["--without-heartbeat", "--loglevel=WARNING"]
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    router = AsyncRoutingBackend(
        backends={"memory": InMemoryBackend()},
        backend_name="async",
        app=web_app,
        spool_dir=tmp_path / "web-spool",
        flush_interval=0.05,
        batch_size=1,
    )
    tracker.register_tracker(tracker.Tracker({"async": router}))
    try:
        for i in range(20):
            tracker.get_tracker().emit("prefork", {"i": i})
        assert router.flush(30)
        assert router.stats()["published"] == 20

        def delivered() -> dict[int, float] | None:
            found: dict[int, float] = {}
            for n in (1, 2):
                try:
                    points = scrape(f"http://127.0.0.1:{base + n}/metrics")
                except OSError:
                    return None
                name = "eventtracking_events_delivered_total"
                worker_side = key(name, side="worker", backend="async")
                found[n] = points.get(worker_side, 0.0)
            return found if sum(found.values()) == 20 else None

        found = wait_until(delivered, timeout=60)
        assert sorted(found) == [1, 2]
        assert worker.poll() is None, log_path.read_text()
    finally:
        router.close(1)
        web_app.close()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(30)
