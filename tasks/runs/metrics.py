"""The one place the names of Sluice's own counters are built (``sluice metrics`` exports them:
tasks/operator/exporter.py).

The counters are kept by the progress scripts (``tasks.runs.progress``), atomically with the run
record, so every worker on every machine adds to the same numbers and a redelivered batch is
not counted twice. Flower's ``/metrics`` covers the Celery tasks themselves.

Each counter is a field of the metrics hash (``keys.METRICS``) named ``field(name, source,
kind[, label])``: ``name|source|kind[|label]``. The run-record scripts add to theirs in Lua
(run_lib.lua's ``metric``, which spells the same; tests/unit/test_keys.py holds every name a
script counts to one known here); ``tasks.runs.webhooks``, ``tasks.serve.deliveries`` and the
rate limit build theirs here. It imports nothing: every worker and ``sluice serve`` reads the
names, none of them serves the metrics.
"""

from __future__ import annotations

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
