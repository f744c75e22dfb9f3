"""Every Redis key Sluice writes, in one place. TTLs come from ``tasks.settings``."""

from __future__ import annotations

import hashlib
import re

PREFIX = "sluice"

# sorted set: run id -> start time (`sluice status`); an id older than the run TTL is trimmed
# when a run is created (its record may be gone)
RUNS = f"{PREFIX}:runs"
ACTIVE = f"{PREFIX}:runs:active"  # sorted set: id of a run not yet ended -> start time
METRICS = f"{PREFIX}:metrics"  # hash: "name|source|kind[|label]" -> counter (never expires)
# pub/sub channel: the id of each run as it ends (run_lib.lua's end_run spells it);
# `sluice run --wait` wakes on it instead of waiting for its next look
RUNS_ENDED = f"{PREFIX}:runs:ended"
RUN_SEQ = f"{PREFIX}:run_seq"  # string: the last run's sequence number (targets stamp rows)
# sorted set: worker node -> its last heartbeat (tasks/worker/liveness.py)
NODES = f"{PREFIX}:nodes"


def node_tags(node: str) -> str:
    """Set: delivery tags of the broker messages the node holds (taken, not yet acked)."""
    return f"{PREFIX}:node:{node}:tags"


def fetch_wake(queue: str) -> str:
    """List: a token pushed with every message published to ``queue`` (at most
    ``broker.WAKE_TOKENS`` kept); a worker whose queues were empty waits on the lists of its
    queues (BLPOP, short timeout) and looks again as soon as one holds a token
    (tasks/worker/broker.py)."""
    return f"{PREFIX}:fetch:wake:{queue}"


def node_reaper(node: str) -> str:
    """String: the node giving back a dead node's messages (a lock)."""
    return f"{PREFIX}:node:{node}:reaper"


def run(run_id: str) -> str:
    """Hash: the run record (source, kind, state, counts, cursor, times, reasons; the fields
    named after a partition or a child kind: the ``*_field`` templates above)."""
    return f"{PREFIX}:run:{run_id}"


# The run record's fields named after a producer partition (an index), or after a child kind.
# A field of a fixed name is a ``Run`` field (tasks/runs/record.py). lua/*.lua spell these
# prefixes themselves (split_window.lua: window:, since:; batch_done.lua, batch_failed.lua,
# record_children.lua: child.); tests/unit/test_keys.py holds every prefix a script spells to
# one defined here.
CHECKPOINT = "checkpoint:"
SINCE = "since:"
KEY = "key:"
MARK = "mark:"
WINDOW = "window:"
CHILD = "child."


def checkpoint_field(partition: int) -> str:
    """Field of the run record: JSON of where the partition resumes (its last page's
    checkpoint; present once the partition started)."""
    return f"{CHECKPOINT}{partition}"


def since_field(partition: int) -> str:
    """Field of the run record: JSON of what the partition asks changes since (null:
    everything; a time window's partition: its window says)."""
    return f"{SINCE}{partition}"


def key_field(partition: int) -> str:
    """Field of the run record: JSON of the partition's key (``integrations``' partition)."""
    return f"{KEY}{partition}"


def mark_field(partition: int) -> str:
    """Field of the run record: JSON of the newest cursor value the partition published."""
    return f"{MARK}{partition}"


def window_field(partition: int) -> str:
    """Field of the run record: JSON ``[a, b]`` of the time window the partition reads."""
    return f"{WINDOW}{partition}"


def partition_of(field: str, prefix: str) -> int | None:
    """The partition a field of ``prefix`` (``MARK``, ...) is named after; None for another."""
    rest = field[len(prefix):]
    return int(rest) if field.startswith(prefix) and rest.isdigit() else None


def child_field(kind: str, count: str) -> str:
    """Field of the run record: a count of the run's child kind ``kind`` (``batches_done``,
    ``items_written``, ...); the run's own count of that name includes it."""
    return f"{CHILD}{kind}.{count}"


def child_of(field: str) -> tuple[str, str] | None:
    """(kind, count) a ``child_field`` is named after; None for another field. The kind may
    hold dots: the count is the last part."""
    if not field.startswith(CHILD):
        return None
    kind, _, count = field[len(CHILD):].rpartition(".")
    return kind, count


def run_enqueued(run_id: str) -> str:
    """Set: sequence numbers of the batches published for the run."""
    return f"{PREFIX}:run:{run_id}:enqueued"


def run_done(run_id: str) -> str:
    """Set: sequence numbers of the batches written (SADD, so a redelivery counts once)."""
    return f"{PREFIX}:run:{run_id}:done"


def run_failed(run_id: str) -> str:
    """Set: sequence numbers of the batches dead-lettered."""
    return f"{PREFIX}:run:{run_id}:failed"


def run_empty(run_id: str) -> str:
    """Set: sequence numbers of pages that came back empty (nothing was published)."""
    return f"{PREFIX}:run:{run_id}:empty"


def run_seen(run_id: str) -> str:
    """Hash: digest of a state asked for next (cursor, next link) -> the page asking for it;
    ``SEEN_ITEMS`` + digest of a page's items -> that page (record_page.lua)."""
    return f"{PREFIX}:run:{run_id}:seen"


SEEN_ITEMS = "items:"  # a field prefix of run_seen, spelled by record_page.lua


def run_partitions_done(run_id: str) -> str:
    """Set: producer partitions that published their last page."""
    return f"{PREFIX}:run:{run_id}:partitions_done"


def run_rejected(run_id: str) -> str:
    """List: JSON records of items rejected (no identifier), capped."""
    return f"{PREFIX}:run:{run_id}:rejected"


def dead_letters(run_id: str) -> str:
    """Hash: batch sequence number -> JSON {items, error, attempts} of a dead-lettered batch."""
    return f"{PREFIX}:dead:{run_id}"


def rate_limit(source: str) -> str:
    """Hash: the shared rate limit of a source's API (tat, pause); expires when idle."""
    return f"{PREFIX}:ratelimit:{source}"


def rate_limit_webhook(source: str) -> str:
    """Hash: the share of a source's rate limit kept for webhook follow-up fetches (tat,
    pause), beside ``rate_limit(source)``, which resyncs take (ratelimit.py)."""
    return f"{PREFIX}:ratelimit:{source}:webhook"


def watermarks(source: str, kind: str) -> str:
    """Hash: partition key (JSON) -> the kind's watermark (JSON), for a target without a state
    table (the http target); never expires."""
    return f"{PREFIX}:watermarks:{source}:{kind}"


def oauth(source: str, name: str) -> str:
    """String: a sealed OAuth 2.0 value of the source's auth (``integrations.http.oauth``):
    ``TAG:token`` (the shared access token, expiring before it does), ``TAG:lock`` (the one
    refresher), ``TAG:refused`` (a refusal shared for a few minutes), ``kept`` (the newest
    refresh token, beside the target's copy; never expires). TAG changes with the section."""
    return f"{PREFIX}:oauth:{source}:{name}"


def lock(source: str, kind: str) -> str:
    """String: the id of the run that holds (source, kind); expires without progress."""
    return f"{PREFIX}:lock:{source}:{kind}"


def webhook_delivery(source: str, delivery: str) -> str:
    """String: a webhook delivery id claimed by ``sluice serve`` (SET NX): a redelivery of it
    is answered without being enqueued again; expires after ``webhook_delivery_ttl``. An id
    that is not plain text is kept as its sha256 (it comes from outside)."""
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", delivery):
        delivery = "sha256-" + hashlib.sha256(delivery.encode()).hexdigest()
    return f"{PREFIX}:webhook:delivery:{source}:{delivery}"


def webhook_batch(source: str, batch_id: str) -> str:
    """String: a webhook batch of the source counted (SET NX: a redelivered batch is counted
    once); expires after ``webhook_delivery_ttl``, as the delivery claims do. A key per batch:
    one set per source, whose TTL every batch renewed, never expired while events kept coming
    and grew by a member a batch (ops/bench/soak.py found it)."""
    return f"{PREFIX}:webhook:batch:{source}:{batch_id}"


def webhook_rejected(source: str) -> str:
    """List: JSON records of the source's webhook events rejected (the newest REJECTED_KEEP)."""
    return f"{PREFIX}:webhook:rejected:{source}"


def webhook_gone(source: str, kind: str, identifier: str) -> str:
    """String: the tombstone of an item a webhook event deleted, JSON of the delete's cursor
    value; expires after SLUICE_WEBHOOK_DELIVERY_TTL. The identifier is hashed (it comes
    from outside, of any length)."""
    digest = hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{PREFIX}:webhook:gone:{source}:{kind}:{digest}"


def webhook_dead(source: str) -> str:
    """Hash: batch id -> JSON {kind, events, error, attempts, at} of a dead-lettered batch of
    the source's webhook events (``sluice failed retry webhooks-SOURCE`` sends them again)."""
    return f"{PREFIX}:webhook:dead:{source}"


def run_keys(run_id: str) -> list[str]:
    """Every key of one run, for TTLs."""
    return [run(run_id), run_enqueued(run_id), run_done(run_id), run_failed(run_id),
            run_partitions_done(run_id), run_rejected(run_id), dead_letters(run_id),
            run_seen(run_id), run_empty(run_id)]

REJECTED_KEEP = 1000  # rejected-item records kept per run (the count is exact regardless)


def start_claim(request: str) -> str:
    """String, short TTL: ``sluice run``'s start request ``request`` not yet taken. The worker
    that takes it (GET and DEL in one transaction) starts the runs; a client that gave up
    waiting deletes it first, and then no worker starts them (tasks/operator/thin.py)."""
    return f"{PREFIX}:start:{request}"


def start_reply(request: str) -> str:
    """List, short TTL: the worker's answer to start request ``request`` (JSON)."""
    return f"{PREFIX}:start:{request}:reply"
