"""The counters of ``stats()`` as OpenTelemetry metrics, for Prometheus or any exporter.

Needs the ``otel`` extra: ``pip install 'event-tracking[otel]'``. :func:`instrument`
adds the metrics to a ``MeterProvider`` (the global one by default);
:func:`start_prometheus` also serves them over HTTP for Prometheus. ``docs/metrics.rst``
tells how to turn them on (under Django, the ``EVENT_TRACKING_METRICS`` setting), why
emitting costs nothing more, and what is exported (see :data:`METRICS`): each integer
in ``stats()``, so a counter added later is exported without a change here.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventtracking import tracker as _tracker_module
from eventtracking._util.options import check_count, is_count
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking.metrics._reading import Point, Reading

__all__ = [
    "METRICS",
    "Metric",
    "MetricsEndpoint",
    "instrument",
    "serve_worker_processes",
    "start_prometheus",
    "stop_prometheus",
]

LOG = logging.getLogger(__name__)
_LOG = RateLimitedLogger(LOG)  # a failing callback would otherwise log at every scrape

EXTRA_MESSAGE = (
    "eventtracking.metrics needs OpenTelemetry: pip install 'event-tracking[otel]' "
    "(opentelemetry-sdk, and opentelemetry-exporter-prometheus for start_prometheus)"
)
SIDES = ("web", "worker")


@dataclass(frozen=True)
class Metric:
    """An OpenTelemetry instrument: ``gauge`` for a level, else a monotonic counter."""

    name: str
    unit: str
    description: str
    gauge: bool = False


def _event_count(key: str, what: str) -> Metric:
    return Metric(f"eventtracking.events.{key}", "{event}", what)


#: The ``stats()`` keys with a metric of their own, by key.
METRICS: Mapping[str, Metric] = {
    "emitted": _event_count("emitted", "Events built by the tracker."),
    "queued": _event_count("queued", "Events accepted by a background delivery's queue."),
    "published": _event_count("published", "Events handed to the broker (web side)."),
    "stored": _event_count("stored", "Events confirmed by a delivery's sink."),
    "replayed": _event_count("replayed", "Events delivered from the spool."),
    "spooled": _event_count("spooled", "Events written to the spool to be sent later."),
    "delivered": _event_count("delivered", "Events every targeted backend took (worker)."),
    "retried": _event_count("retried", "(event, backend) pairs published again (worker)."),
    "filtered": _event_count("filtered", "Events a processor dropped on purpose."),
    "dead_lettered": _event_count("dead_lettered", "Events refused for good: dead letters."),
    "overflowed": _event_count("overflowed", "Events that found a delivery's queue full."),
    "received": _event_count("received", "Entries or messages a consumer received."),
    "dropped": _event_count("dropped", "Events lost, by reason."),
    "skipped": _event_count("skipped", "Events not published to the bus, by reason."),
    "failed": Metric("eventtracking.errors", "{error}", "Errors, by where they happened."),
    "retries": Metric("eventtracking.delivery.retries", "{attempt}", "Failed attempts."),
    "batches": Metric("eventtracking.delivery.batches", "{batch}", "Successful sink calls."),
    "refused": Metric("eventtracking.spool.refused", "{row}", "Rows the spool refused."),
    "queue_size": Metric(
        "eventtracking.queue.size", "{event}", "Events in a delivery's queue now.", gauge=True
    ),
    "in_flight": Metric(
        "eventtracking.queue.in_flight", "{event}", "Events being sent now.", gauge=True
    ),
}
OTHER = Metric("eventtracking.other", "1", "Counters without a metric of their own.")
SPOOL_PENDING = Metric(
    "eventtracking.spool.pending", "{event}", "Rows waiting in the spool.", gauge=True
)
SPOOL_DEAD = Metric(
    "eventtracking.spool.dead_letters", "{event}", "Dead letters kept in the spool.", gauge=True
)


def _import_otel() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(EXTRA_MESSAGE) from exc
    return metrics


def detect_side(argv: list[str] | None = None) -> str:
    """``worker`` when this process is ``celery ... worker`` (or ``-m celery``), else ``web``."""
    argv = sys.argv if argv is None else argv
    if not argv:
        return "web"
    program = Path(argv[0]).parts[-2:]
    return "worker" if any("celery" in p for p in program) and "worker" in argv[1:] else "web"


def instrument(
    meter_provider: Any = None,
    *,
    side: str | None = None,
    trackers: Mapping[str, Any] | None = None,
) -> None:
    """Report the counters of ``stats()`` through ``meter_provider`` from now on.

    ``meter_provider`` defaults to OpenTelemetry's global one (``set_meter_provider``).
    ``side`` is ``'web'`` or ``'worker'``, guessed from the command line when None
    (:func:`detect_side`). ``trackers`` by name; by default every registered tracker
    (:func:`eventtracking.tracker.register_tracker`), looked up at each collection.

    Raises ImportError naming the ``otel`` extra when OpenTelemetry is missing, and
    ValueError for a ``side`` that is neither ``web`` nor ``worker``.
    """
    otel = _import_otel()
    side = detect_side() if side is None else side
    if side not in SIDES:
        msg = f"side must be one of {', '.join(map(repr, SIDES))}, got {side!r}"
        raise ValueError(msg)
    if meter_provider is None:
        meter_provider = otel.get_meter_provider()
    source = (
        _tracker_module.registered_trackers if trackers is None else lambda: list(trackers.items())
    )
    spool = {"spool.pending": SPOOL_PENDING, "spool.dead_letters": SPOOL_DEAD}
    reading = Reading(source, side, {*METRICS, *spool})
    meter = meter_provider.get_meter("eventtracking", _version())
    # The SDK calls the callbacks in the order the instruments were made: the first
    # one reads stats() afresh, and the others report from that reading.
    for n, (key, metric) in enumerate({**METRICS, **spool}.items()):
        _add(meter, otel, metric, functools.partial(reading.points, key, refresh=n == 0))
    _add(meter, otel, OTHER, reading.others)


def _add(meter: Any, otel: Any, metric: Metric, points: Callable[[], list[Point]]) -> None:
    """Make ``metric``'s instrument, observing ``points()`` at each collection."""

    def observe(_options: Any) -> list[Any]:
        try:
            return [otel.Observation(value, attrs) for value, attrs in points()]
        except Exception:
            _LOG.error("observe", "Reporting eventtracking metrics failed", exc_info=True)
            return []

    create = meter.create_observable_gauge if metric.gauge else meter.create_observable_counter
    create(metric.name, callbacks=[observe], unit=metric.unit, description=metric.description)


def _version() -> str:
    from eventtracking import __version__

    return __version__


class MetricsEndpoint:
    """What :func:`start_prometheus` started: a provider and an HTTP server thread."""

    def __init__(self, provider: Any, server: Any, thread: Any, address: tuple[str, int]) -> None:
        self.provider = provider
        self._server = server
        self._thread = thread
        #: The ``(host, port)`` the server listens on.
        self.address = address
        self.pid = os.getpid()

    @property
    def url(self) -> str:
        """The address to scrape, ``http://host:port/metrics``."""
        host, port = self.address
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop the server and drop the metrics from prometheus_client's registry.

        In a child forked after the server started, only the child's copy of the
        socket is closed: the server thread, and the port, stay the parent's."""
        if self.pid == os.getpid():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        self.provider.shutdown()


_endpoint_lock = threading.Lock()
_endpoint: MetricsEndpoint | None = None


def start_prometheus(
    port: int = 9464,
    addr: str = "127.0.0.1",
    *,
    ports: int = 1,
    side: str | None = None,
    trackers: Mapping[str, Any] | None = None,
) -> MetricsEndpoint:
    """Serve the metrics for Prometheus on ``http://addr:port/metrics``, in this process.

    With ``ports`` over 1, the first free port from ``port`` to ``port + ports - 1`` is
    taken, one per process of a server with several (gunicorn, uWSGI).

    Makes a ``MeterProvider`` with the OpenTelemetry Prometheus exporter's reader, calls
    :func:`instrument` on it and starts prometheus_client's HTTP server thread, which
    also serves anything else registered in prometheus_client's default registry.
    ``port`` 0 picks a free port (see :attr:`MetricsEndpoint.address`). Once per
    process: a second call returns the endpoint already started, unless it was closed
    or started before a fork, whose server thread the child does not have.

    Raises ImportError naming the ``otel`` extra when a package is missing, ValueError
    for a bad ``port``, ``ports`` or ``side``, and OSError when no port can be bound.
    """
    global _endpoint
    if not is_count(port, minimum=0) or port > 65535:
        msg = f"port must be an integer from 0 to 65535, got {port!r}"
        raise ValueError(msg)
    check_count("ports", ports)
    if port + ports - 1 > 65535:
        msg = f"port {port} + ports {ports} - 1 is beyond 65535"
        raise ValueError(msg)
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise ImportError(EXTRA_MESSAGE) from exc
    with _endpoint_lock:
        if _endpoint is not None and _endpoint.pid == os.getpid():
            return _endpoint
        if _endpoint is not None:
            # Inherited across a fork: its collector would be served twice.
            _endpoint.close()
            _endpoint = None
        provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
        try:
            instrument(provider, side=side, trackers=trackers)
            server, thread = _serve(start_http_server, port, addr, ports)
        except BaseException:
            provider.shutdown()
            raise
        host, bound = server.server_address[:2]
        _endpoint = MetricsEndpoint(provider, server, thread, (str(host), int(bound)))
        return _endpoint


def _serve(start: Callable[..., Any], port: int, addr: str, ports: int) -> Any:
    """Start the HTTP server on the first port of the range that can be bound."""
    for candidate in range(port, port + ports):
        try:
            return start(candidate, addr)
        except OSError as exc:
            if candidate == port + ports - 1:
                if ports > 1:
                    msg = f"no free port from {port} to {candidate} on {addr}: {exc}"
                    raise OSError(exc.errno, msg) from exc
                raise
    raise AssertionError  # unreachable: ports >= 1


def stop_prometheus() -> None:
    """Close the endpoint of :func:`start_prometheus`, if any; the next call starts anew."""
    global _endpoint
    with _endpoint_lock:
        endpoint, _endpoint = _endpoint, None
    if endpoint is not None:
        endpoint.close()


def serve_worker_processes(
    port: int = 9464, addr: str = "127.0.0.1", *, trackers: Mapping[str, Any] | None = None
) -> None:
    """In a Celery worker whose pool forks (prefork, the default), serve each pool
    process's metrics on ``port + n``, n being its index from 1 to the concurrency.

    Call it when the worker's app is loaded, before the pool starts: it connects to
    Celery's ``worker_process_init`` signal. With the solo or threads pool, call
    :func:`start_prometheus` instead (``docs/metrics.rst``, "Every process has its own
    counters").
    Only the first call in a process counts.

    Raises ImportError naming the extras when OpenTelemetry or Celery is missing.
    """
    _import_otel()
    try:
        from celery import signals
    except ImportError as exc:
        msg = "serve_worker_processes needs Celery: pip install 'event-tracking[celery]'"
        raise ImportError(msg) from exc

    def serve_this_process(**_kwargs: Any) -> None:
        from celery.utils.log import current_process_index

        index = current_process_index() or 0
        try:
            start_prometheus(port + index, addr, side="worker", trackers=trackers)
        except Exception:
            LOG.exception("Pool process %d could not serve metrics on port %d", index, port + index)

    signals.worker_process_init.connect(
        serve_this_process, weak=False, dispatch_uid="eventtracking.metrics"
    )
