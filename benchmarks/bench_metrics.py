"""Metrics suite: what turning on eventtracking.metrics costs (ours only).

The metrics are observable instruments that read ``stats()`` when a reader collects,
so an emit should cost the same with them on. Every emit uses the core suite's event.

* ``plain``: the plain emit of both packages, for reference;
* ``on``: the same tracker with the metrics on, through an OpenTelemetry
  ``MeterProvider`` with the SDK's in-memory reader, never collected: the goal is the
  time of ``plain``;
* ``scraped``: the same, while a thread collects every 10 ms (a scrape 1,500 times as
  often as Prometheus's default 15 s);
* ``collect``: one collection of every metric (what a scrape costs the process), in
  microseconds per collection.
"""

from __future__ import annotations

import threading
from typing import Any

from _harness import Entry, Suite
from bench_core import NullWorkload


class MetricsWorkload(NullWorkload):
    """The core suite's null workload, with the metrics on and read by ``reader``."""

    def __init__(self, scrape_every: float | None = None) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from eventtracking import metrics

        super().__init__()
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        metrics.instrument(self.provider, side="web", trackers={"default": self.tracker})
        self.collections = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if scrape_every is not None:
            self._thread = threading.Thread(target=self._scrape, args=(scrape_every,), daemon=True)
            self._thread.start()

    def _scrape(self, every: float) -> None:
        while not self._stop.wait(every):
            self.reader.get_metrics_data()

    def emitted(self) -> int:
        """The emitted count as the metrics report it."""
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "eventtracking.events.emitted":
                        return int(metric.data.data_points[0].value)  # type: ignore[union-attr]
        msg = "eventtracking.events.emitted was not reported"
        raise AssertionError(msg)

    def check(self, expected: int) -> dict[str, Any]:
        result = super().check(expected)
        reported = self.emitted()
        if reported != self.tracker.stats()["emitted"]:
            msg = f"the metrics report {reported} emitted, stats() says otherwise"
            raise AssertionError(msg)
        return result

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.provider.shutdown()


class CollectWorkload(MetricsWorkload):
    """One collection per 'event': the cost of a scrape."""

    def run(self, n: int) -> None:
        collect = self.reader.get_metrics_data
        for _ in range(n):
            collect()
        self.collections += n

    def check(self, expected: int) -> dict[str, Any]:
        if self.collections != expected:
            msg = f"{self.collections} collections, expected {expected}"
            raise AssertionError(msg)
        return {"collections": self.collections}


def build_plain(_setup: dict[str, Any]) -> NullWorkload:
    return NullWorkload()


def build_on(_setup: dict[str, Any]) -> MetricsWorkload:
    return MetricsWorkload()


def build_scraped(_setup: dict[str, Any]) -> MetricsWorkload:
    return MetricsWorkload(scrape_every=0.01)


def build_collect(_setup: dict[str, Any]) -> CollectWorkload:
    return CollectWorkload()


OURS = ("ours",)

SUITE = Suite(
    name="metrics",
    title="OpenTelemetry metrics: emit with the metrics on, and one collection",
    entries=[
        Entry("plain", "plain emit, metrics off (reference)", build_plain),
        Entry(
            "on",
            "metrics on, not collected",
            build_on,
            sides=OURS,
            floor="plain",
            floor_goal=1.05,
        ),
        Entry(
            "scraped",
            "metrics on, collected every 10 ms",
            build_scraped,
            sides=OURS,
            floor="plain",
        ),
        Entry(
            "collect",
            "one collection of every metric (us/collection)",
            build_collect,
            sides=OURS,
            iterations=100,
        ),
    ],
)

if __name__ == "__main__":
    raise SystemExit(SUITE.main())
