"""The sequence numbers of a run's batches and fan-out tasks, unique within the run: a page's
batches, the parts of a page split into several batches, the tasks that fetch a batch's
children and the batches they publish each have a range of their own, so a redelivered batch
is always recognised. Pages are numbered by ``integrations.pager``, partition ``p`` from
``p * PARTITION_SPAN + 1``."""

from __future__ import annotations

# A page split into several batches (more than max_batch_items items): part k > 0 of page s
# is batch s + k * PART_SPAN, so part 0 keeps the page's own number and no two batches meet.
PART_SPAN = 2**32


# The tasks that fetch the children of parent batch b, and the batches they publish, are
# numbered in ranges of their own (below 2**53: Lua reads numbers as doubles).
FANOUT_BASE = 2**50  # + b * CHILD_KINDS + c: the task fetching child kind c of batch b
CHILD_BASE = 2**51  # + (that task's offset) * CHILD_BATCHES + k: batch k of what it fetched
CHILD_KINDS = 16
CHILD_BATCHES = 256


def part_seq(seq: int, part: int) -> int:
    return seq + part * PART_SPAN


def fanout_seq(batch: int, child: int) -> int:
    """The task that fetches child kind number ``child`` of parent batch ``batch``."""
    if not 0 <= child < CHILD_KINDS:
        raise ValueError(f"more than {CHILD_KINDS} child kinds of one kind")
    return FANOUT_BASE + batch * CHILD_KINDS + child


def child_seq(fanout: int, k: int) -> int:
    """Batch ``k`` of the children that task ``fanout`` fetched."""
    if not 0 <= k < CHILD_BATCHES:
        raise ValueError(f"more than {CHILD_BATCHES} batches of children for one batch")
    seq = CHILD_BASE + (fanout - FANOUT_BASE) * CHILD_BATCHES + k
    if seq >= 2**53:  # Lua reads numbers as doubles: a bigger one could meet another
        raise ValueError(f"batch {describe_seq(fanout)} is split into too many parts to "
                         "fan out (lower max_batch_items' share of a page)")
    return seq


def describe_seq(seq: int) -> str:
    """'page=12', 'page=12 part=3' for a batch that holds part of a page; 'children of
    page=12' for the task fetching children, and 'children of page=12 batch=2' for theirs."""
    if seq >= CHILD_BASE:
        fanout, k = divmod(seq - CHILD_BASE, CHILD_BATCHES)
        return f"{describe_seq(FANOUT_BASE + fanout)} batch={k + 1}"
    if seq >= FANOUT_BASE:
        return f"children of {describe_seq((seq - FANOUT_BASE) // CHILD_KINDS)}"
    part, page = divmod(seq, PART_SPAN)
    return f"page={page}" + (f" part={part + 1}" if part else "")
