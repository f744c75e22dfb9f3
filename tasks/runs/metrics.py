"""Sluice's own Prometheus metrics, read from Redis at every scrape.

The counters are kept by the progress scripts (``tasks.runs.progress``), atomically with the run
record, so every worker on every machine adds to the same numbers and a redelivered batch is
not counted twice. Flower's ``/metrics`` covers the Celery tasks themselves.

    sluice metrics --port 9808        # then scrape http://HOST:9808/metrics
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from tasks.runs.progress import Progress

COUNTERS = {
    "pages": ("sluice_pages", "Pages fetched from the API"),
    "items_fetched": ("sluice_items_fetched", "Items fetched from the API"),
    "items_written": ("sluice_items_written", "Items written into the target"),
    "items_rejected": ("sluice_items_rejected",
                       "Items rejected (no identifier, a value the target cannot store)"),
    "items_deleted": ("sluice_items_deleted",
                      "Rows deleted because the API listed the item as deleted (a kind's "
                      "`deleted` tombstones)"),
    "batches_failed": ("sluice_batches_failed", "Batches dead-lettered"),
    "deletions_refused": ("sluice_deletions_refused",
                          "Runs that did not delete stale entities: the deletion guard refused, "
                          "or the paging may have missed items"),
    "webhook_events": ("sluice_webhook_events", "Webhook events accepted and enqueued"),
    "webhook_written": ("sluice_webhook_written", "Webhook events written into the target"),
    "webhook_deleted": ("sluice_webhook_deleted", "Rows deleted by webhook events"),
    "webhook_stale": ("sluice_webhook_stale",
                      "Webhook events older than the row they would overwrite, left out"),
    "webhook_rejected": ("sluice_webhook_rejected",
                         "Webhook events rejected (no identifier, a failed fetch or mapping)"),
    "webhook_skipped": ("sluice_webhook_skipped", "Webhook events the mapping's selector skipped"),
    "webhook_batches_failed": ("sluice_webhook_batches_failed",
                               "Batches of webhook events dead-lettered"),
    "rate_limit_wait_seconds": ("sluice_rate_limit_wait_seconds",
                                "Seconds callers waited for the shared rate limit (a limit "
                                "is per source: kind is '-')"),
}


class SluiceCollector(Collector):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def collect(self) -> Iterator[Metric]:
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
            elif name == "runs":
                runs.add_metric(rest, value)
            elif name == "webhook_deliveries":
                deliveries.add_metric(rest, value)
            elif name in ("run_seconds_sum", "run_seconds_count"):
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


def serve(progress: Progress, *, host: str, port: int) -> None:
    """Serve /metrics until interrupted."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(SluiceCollector(progress))
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        thread.join()
    finally:
        server.shutdown()
