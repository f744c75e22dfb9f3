"""``sluice metrics``: Sluice's own Prometheus metrics, read from Redis at every scrape.

    sluice metrics --port 9808        # then scrape http://HOST:9808/metrics

The counters are named in tasks/runs/metrics.py and kept by the progress scripts, atomically
with the run record, so every worker on every machine adds to the same numbers and a
redelivered batch is not counted twice. Flower's ``/metrics`` covers the Celery tasks
themselves. prometheus_client is imported only here, by the process that exports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tasks.runs.metrics import (
    COUNTERS,
    RUN_SECONDS_COUNT,
    RUN_SECONDS_SUM,
    RUNS,
    WEBHOOK_DELIVERIES,
)
from tasks.runs.progress import Progress

if TYPE_CHECKING:
    from prometheus_client.core import Metric


class SluiceCollector:
    """A prometheus_client collector (its ``Collector`` protocol) of the counters in Redis."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        values = self.progress.metrics()
        labels = ["source", "kind"]
        families: dict[str, Any] = {
            name: CounterMetricFamily(metric, doc, labels=labels)
            for name, (metric, doc) in COUNTERS.items()}
        runs = CounterMetricFamily("sluice_runs", "Runs ended, by final state",
                                   labels=[*labels, "state"])
        deliveries = CounterMetricFamily(
            "sluice_webhook_deliveries", "Webhook deliveries answered by sluice serve, by "
            "outcome (accepted, duplicate, empty, or refused_<reason>; kind is '-')",
            labels=[*labels, "outcome"])
        duration: dict[str, dict[tuple[str, ...], float]] = {"sum": {}, "count": {}}
        for key, value in sorted(values.items()):
            name, rest = key[0], list(key[1:])
            if name in families:
                families[name].add_metric(rest, value)
            elif name == RUNS:
                runs.add_metric(rest, value)
            elif name == WEBHOOK_DELIVERIES:
                deliveries.add_metric(rest, value)
            elif name in (RUN_SECONDS_SUM, RUN_SECONDS_COUNT):
                duration[name.rsplit("_", 1)[1]][tuple(rest)] = value
        yield from families.values()
        yield runs
        yield deliveries
        summary = SummaryMetricFamily("sluice_run_duration_seconds",
                                      "Duration of ended runs", labels=labels)
        for key, count in duration["count"].items():
            summary.add_metric(list(key), count_value=int(count),
                               sum_value=duration["sum"].get(key, 0.0))
        yield summary
        active = GaugeMetricFamily("sluice_runs_active", "Runs not yet ended", labels=labels)
        oldest = GaugeMetricFamily("sluice_run_age_seconds",
                                   "Age of the oldest active run", labels=labels)
        now, seen = time.time(), dict[tuple[str, str], list[float]]()
        for run in self.progress.active():
            key = (run.source, run.kind)
            seen.setdefault(key, [0, now - run.started_at])[0] += 1
        for key, (count, age) in sorted(seen.items()):
            active.add_metric(list(key), count)
            oldest.add_metric(list(key), age)
        yield active
        yield oldest


def serve(progress: Progress, *, host: str, port: int,
          ready: Callable[[], None] = lambda: None) -> None:
    """Serve /metrics until interrupted; ``ready`` is called once the port listens."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(SluiceCollector(progress))
    server, thread = start_http_server(port, addr=host, registry=registry)
    ready()
    try:
        thread.join()
    finally:
        server.shutdown()
