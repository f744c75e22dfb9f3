"""The one place that sends Sluice's tasks: the producer, beat, the CLI, the tests and the
benchmark all come through here.

Tasks are sent by name on whichever Celery app the caller has (the workers' own, or a client's
that only knows the broker), with a short ``argsrepr`` for Flower and the logs: never the items
of a batch, never anything secret. Messages carry names and ids; workers resolve the rest from
their own configuration.

Each task goes to one of four queues, which a plain ``celery -A tasks worker`` (no ``-Q``)
consumes together, taking from them in turn (kombu's round robin on Redis, one consumer per
queue on RabbitMQ), so no kind of work waits behind another's backlog:

====================  ============================================================
``sluice.urgent``     webhook batches, run ends (finalize), ``sluice run``'s start
                      request (tasks/operator/thin.py): small, someone waits
``sluice.producers``  producer slices (resync): each a run's next pages
``sluice``            batches of a run's first ``SLUICE_BULK_AFTER_ITEMS`` items, and
                      child-fetching tasks: a small run's whole work
``sluice.bulk``       a big run's later batches: a backfill waits here, behind nothing
====================  ============================================================

The split by size inside a run is a feedback queue: every run starts in ``sluice``; once it
has read ``bulk_after_items`` items it is a backfill, and its next batches go to
``sluice.bulk``. A run of 1,000 items then never queues behind the batches of a run of
1,000,000 (both bounded by ``max_in_flight``), which have a queue of their own that the
workers still serve one take in four, or all of them when nothing else waits.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from celery import Celery

from integrations import jsontext, pager
from tasks import traces
from tasks.envelope import BATCHES as BATCHES
from tasks.envelope import BULK as BULK
from tasks.envelope import PRODUCERS as PRODUCERS
from tasks.envelope import QUEUES as QUEUES
from tasks.envelope import START as START
from tasks.envelope import URGENT as URGENT
from tasks.ids import new_id
from tasks.runs.seqs import describe_seq, part_seq

RESYNC = "sluice.resync"
INGEST = "sluice.ingest_batch"
FINALIZE = "sluice.finalize"
CHILDREN = "sluice.children"
WEBHOOK = "sluice.webhook_batch"
# START and the queues are named in tasks/envelope.py (imported above): ``sluice run`` sends its
# start request without Celery (tasks/operator/thin.py), not from here.



def resync(app: Celery, source: str, kind: str, run_id: str, *, partition: int = 0,
           windows: list[int] | None = None, trace: str = "") -> None:
    """A producer slice of partition ``partition`` of the run, or of the time windows
    ``windows`` (partitions of a sliced run) at once; ``trace``: the run's ``traceparent``,
    under whose root every slice is enqueued (``tasks.traces``)."""
    kwargs: dict[str, Any] = {"run_id": run_id}
    if partition:
        kwargs["partition"] = partition
    if windows is not None:
        kwargs["windows"] = windows
    where = f" partition={partition}" if partition else ""
    if windows is not None:
        where = f" windows={','.join(map(str, windows))}"
    with traces.within(trace):
        app.send_task(RESYNC, (source, kind), kwargs,
                      argsrepr=f"{source}/{kind} run={run_id}{where}", kwargsrepr="{}",
                      task_id=new_id(), queue=PRODUCERS)


class BatchMessage(NamedTuple):
    seq: int
    items: str  # the items as one JSON array: a message stays flat however deep they nest
    size: int  # items


def batches(page: pager.Page, *, max_items: int, max_bytes: int) -> list[BatchMessage]:
    """The page as batches of at most ``max_items`` items and about ``max_bytes`` bytes of
    JSON each (an item bigger than that is a batch of its own).

    The items travel as JSON text, not as a nested structure: a prefork worker's main process
    pickles what it hands to a child, and an item nested a few hundred levels deep would make
    that raise RecursionError there and stop the whole node, again on every node the message
    reaches."""
    if not page.items:
        return []
    if len(page.items) <= max_items:
        # A page that is one batch (the usual case) is encoded in one call; the loop below
        # cuts the very same text, item by item, when it is more.
        whole = jsontext.dumps_array(page.items)
        if whole is not None and len(whole) - 2 <= max_bytes:
            return [BatchMessage(part_seq(page.seq, 0), whole, len(page.items))]
    out: list[BatchMessage] = []
    part: list[str] = []
    size = 0
    for item in page.items:
        text = jsontext.dumps(item)
        if part and (len(part) >= max_items or size + len(text) > max_bytes):
            out.append(BatchMessage(part_seq(page.seq, len(out)), f"[{','.join(part)}]",
                                    len(part)))
            part, size = [], 0
        part.append(text)
        size += len(text) + 1
    if part:
        out.append(BatchMessage(part_seq(page.seq, len(out)), f"[{','.join(part)}]", len(part)))
    return out


def batch(app: Celery, run_id: str, source: str, kind: str, seq: int, items: str | list[Any],
          *, run_seq: int | None, count: int | None = None, note: str = "",
          root: str | None = None, bulk: bool = False) -> None:
    """Batch ``seq`` of the run: ``items`` as JSON text (then ``count`` says how many) or a
    list. ``root``: the run's kind, when ``kind`` is a child kind of it. ``bulk``: the run
    is a backfill (it has read ``bulk_after_items`` items), its batch goes to ``BULK``."""
    if count is None:
        count = len(items) if isinstance(items, list) else 0
    kwargs: dict[str, Any] = {} if run_seq is None else {"run_seq": run_seq}
    if root is not None:
        kwargs["root"] = root
    app.send_task(INGEST, (run_id, source, kind, seq, items), kwargs,
                  argsrepr=f"run={run_id} {source}/{kind} {describe_seq(seq)} items={count}{note}",
                  kwargsrepr="{}", task_id=new_id(), queue=BULK if bulk else BATCHES)


def children(app: Celery, run_id: str, source: str, kind: str, seq: int, parents: str, *,
             run_seq: int, count: int, root: str, note: str = "") -> None:
    """Task ``seq`` of the run (of kind ``root``): fetch the ``kind`` children of ``parents``
    (a JSON list of what each parent gives them, ``count`` of them) and publish them as
    batches."""
    app.send_task(CHILDREN, (run_id, source, kind, seq, parents),
                  {"run_seq": run_seq, "root": root},
                  argsrepr=f"run={run_id} {source}/{kind} {describe_seq(seq)} "
                           f"parents={count}{note}", kwargsrepr="{}", task_id=new_id(),
                  queue=BATCHES)


def finalize(app: Celery, run_id: str) -> None:
    """End the run (the progress scripts elected the caller)."""
    app.send_task(FINALIZE, (run_id,), argsrepr=f"run={run_id}", kwargsrepr="{}",
                  task_id=new_id(), queue=URGENT)


def webhook(app: Celery, source: str, kind: str, batch_id: str, events: str, *,
            count: int) -> None:
    """A batch of webhook events of one kind (``events``: a JSON list of
    ``integrations.webhooks.Event.as_json``, ``count`` of them), as ``sluice serve`` coalesced
    them; ``batch_id`` names the batch in the logs and its dead letter."""
    app.send_task(WEBHOOK, (source, kind, batch_id, events),
                  argsrepr=f"{source}/{kind} webhook batch={batch_id} events={count}",
                  kwargsrepr="{}", task_id=new_id(), queue=URGENT)
