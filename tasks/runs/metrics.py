"""Sluice's own Prometheus metrics, read from Redis at every scrape, and the one place their
counters' names are built.

The counters are kept by the progress scripts (``tasks.runs.progress``), atomically with the run
record, so every worker on every machine adds to the same numbers and a redelivered batch is
not counted twice. Flower's ``/metrics`` covers the Celery tasks themselves.

    sluice metrics --port 9808        # then scrape http://HOST:9808/metrics

Each counter is a field of the metrics hash (``keys.METRICS``) named ``field(name, source,
kind[, label])``: ``name|source|kind[|label]``. The run-record scripts add to theirs in Lua
(run_lib.lua's ``metric``, which spells the same; tests/unit/test_keys.py holds every name a
script counts to one known here); ``tasks.runs.webhooks``, ``tasks.serve.deliveries`` and the
rate limit build theirs here. This module imports prometheus_client only when it exports:
every worker and ``sluice serve`` reads the names, none of them serves the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from tasks.runs.progress import Progress

SEP = "|"
NO_KIND = "-"  # the kind of a counter of the source as a whole (rate limit, deliveries)

# The counters with a label, and the run durations (both counted by run_lib.lua's end_run).
RUNS = "runs"  # runs ended, by final state
RUN_SECONDS_SUM, RUN_SECONDS_COUNT = "run_seconds_sum", "run_seconds_count"
WEBHOOK_DELIVERIES = "webhook_deliveries"  # deliveries answered, by outcome (sluice serve)
WEBHOOK_EVENTS = "webhook_events"  # events enqueued (sluice serve)
WEBHOOK_BATCHES_FAILED = "webhook_batches_failed"
RATE_LIMIT_WAIT = "rate_limit_wait_seconds"


def field(name: str, source: str, kind: str = NO_KIND, label: str | None = None) -> str:
    """The metrics hash's field of counter ``name`` of (``source``, ``kind``[, ``label``])."""
    return SEP.join([name, source, kind] if label is None else [name, source, kind, label])


def parse(raw: str) -> tuple[str, ...]:
    """(name, source, kind[, label]) of a metrics hash field."""
    return tuple(raw.split(SEP))


def webhook(count: str) -> str:
    """The counter of a webhook batch's ``count`` (``WebhookLog.record``'s: "written",
    "deleted", "stale", "rejected", "skipped")."""
    return f"webhook_{count}"


def delivery(source: str, outcome: str) -> str:
    """The field counting ``sluice serve``'s deliveries of ``source`` answered ``outcome``."""
    return field(WEBHOOK_DELIVERIES, source, NO_KIND, outcome)


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
    WEBHOOK_EVENTS: ("sluice_webhook_events", "Webhook events accepted and enqueued"),
    webhook("written"): ("sluice_webhook_written", "Webhook events written into the target"),
    webhook("deleted"): ("sluice_webhook_deleted", "Rows deleted by webhook events"),
    webhook("stale"): ("sluice_webhook_stale",
                       "Webhook events older than the row they would overwrite, left out"),
    webhook("rejected"): ("sluice_webhook_rejected",
                          "Webhook events rejected (no identifier, a failed fetch or mapping)"),
    webhook("skipped"): ("sluice_webhook_skipped",
                         "Webhook events the mapping's selector skipped"),
    WEBHOOK_BATCHES_FAILED: ("sluice_webhook_batches_failed",
                             "Batches of webhook events dead-lettered"),
    RATE_LIMIT_WAIT: ("sluice_rate_limit_wait_seconds",
                      "Seconds callers waited for the shared rate limit (a limit is per "
                      "source: kind is '-')"),
}
NAMES = frozenset([*COUNTERS, RUNS, RUN_SECONDS_SUM, RUN_SECONDS_COUNT, WEBHOOK_DELIVERIES])


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
