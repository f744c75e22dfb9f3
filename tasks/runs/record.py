"""The run record's shape: a run's states, its record as read from Redis (``Run``), what
``Progress.record_page`` takes (``PageRecord``) and answers. ``tasks.runs.progress`` keeps the
record in Redis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from tasks.runs import keys

if TYPE_CHECKING:
    from integrations.pager import Checkpoint


class RunState(StrEnum):
    RUNNING = "running"
    FINALIZING = "finalizing"
    SUCCEEDED = "succeeded"
    # Every item fetched was written, but stale entities were not deleted: the deletion guard
    # refused, or the paging may have missed items (``reason`` says which).
    PARTIAL = "partial"
    FAILED = "failed"
    SKIPPED = "skipped"
    STALLED = "stalled"
    LOST = "lost"  # the record is gone: Redis lost its data (restarted without persistence)

    @property
    def ended(self) -> bool:
        return self not in (RunState.RUNNING, RunState.FINALIZING)


@dataclass(frozen=True, kw_only=True)
class Run:
    """One run's record, as read from Redis (``Progress.get``)."""

    run_id: str
    source: str = "?"
    kind: str = "?"
    # LOST when the record has no state: Redis lost its data and only later writes remain.
    state: RunState = RunState.LOST
    started_at: float = 0.0
    updated_at: float = 0.0
    ended_at: float | None = None
    run_seq: int = 0  # the stamp on what the run writes; only grows from run to run
    redis_id: str = ""  # the Redis server it started on (INFO's run_id; "" where not told)
    redis_moved: bool = False  # failed because Redis restarted or failed over under it
    config_digest: str = ""  # the sluice.toml the run was started with
    partitions: int | None = None  # producer tasks the kind was split into (None: not split)
    producer_done: bool = False
    in_flight: int = 0  # batches published and neither written nor dead-lettered yet
    full: bool = False  # asked for a full read (`sluice run --full`, a full schedule)
    incremental: bool = False  # a partition read only what changed: the run deletes nothing
    # counts
    pages: int = 0
    items_fetched: int = 0
    items_expected: int = 0  # what the API said the kind holds, when it said so
    items_written: int = 0
    items_rejected: int = 0
    items_skipped: int = 0  # left out by a mapping's selector
    batches_enqueued: int = 0
    batches_done: int = 0
    batches_failed: int = 0
    deleted: int = 0  # stale entities deleted when the run ended
    items_deleted: int = 0  # rows deleted by the API's tombstones (a kind's `deleted`)
    moved: int = 0  # a mapped kind's rows deleted from entities once its typed table held it
    # why (each empty unless it applies)
    reason: str = ""  # why the run ended as it did (failed, partial, skipped, stalled)
    error: str = ""  # the producer's failure
    incomplete: str = ""  # why the paging may have missed items
    deletion_refused: str = ""
    deletion_skipped: str = ""
    watermark: str = ""  # what the run did to its kind's watermarks, and where they are kept
    traceparent: str = ""  # the run's root span (W3C), when traces are on (tasks/traces)
    # child kind -> its counts in this run (batches_enqueued, batches_done, batches_failed,
    # items_fetched, items_written, items_rejected); the run's own counts include them
    children: dict[str, dict[str, int]] = field(default_factory=dict)

    def own(self, name: str) -> int:
        """A count of the run's own kind, without its children's."""
        return int(getattr(self, name)) - sum(c.get(name, 0) for c in self.children.values())

    @classmethod
    def from_record(cls, run_id: str, raw: Mapping[str, str], *, in_flight: int = 0) -> Run:
        """From the run's Redis hash (decoded); fields it does not know (checkpoints) are left."""
        values: dict[str, Any] = {"run_id": run_id, "in_flight": in_flight, "children": {}}
        for name, text in raw.items():
            child = keys.child_of(name)
            if child is not None:
                kind, count = child
                values["children"].setdefault(kind, {})[count] = int(text)
        for f in fields(cls):
            if f.name not in raw or f.name in values:
                continue
            text = raw[f.name]
            if f.name == "state":
                values[f.name] = RunState(text)
            elif f.type == "bool":
                values[f.name] = text == "1"
            elif f.type in ("int", "int | None"):
                values[f.name] = int(float(text))
            elif f.type in ("float", "float | None"):
                values[f.name] = float(text)
            else:
                values[f.name] = text
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        """The record as JSON (``sluice status --json``, task results): reasons only when set."""
        return {k: v for k, v in asdict(self).items() if v != "" and v is not None}


@dataclass(frozen=True, kw_only=True)
class PageRecord:
    """A page the producer published as ``batches``, or found empty, for
    ``Progress.record_page`` (which turns it into record_page.lua's ARGV, in one place)."""

    batches: tuple[int, ...]  # the page's batch seqs; none for a page without items
    items: int  # items on the page
    checkpoint: Checkpoint | None  # where the partition resumes after this page
    partition: int = 0  # the producer partition that read it
    total: int | None = None  # the API's count of the kind's items (a first page's)
    truncated: str | None = None  # why the paging may have missed items (a last page's)
    # this page's seq: recorded as done when it has no batches, so a resumed plan does not
    # ask for it again (a page with batches is known by its first batch's seq)
    page: int | None = None
    items_digest: str = ""  # digest of the page's items ("": empty), to find a repeated page
    newest: Any = None  # the partition's newest cursor value, when this page raised it

    @property
    def seq(self) -> int:
        """The seq the page is known by: its first batch's, else ``page`` (0 when not told)."""
        return self.batches[0] if self.batches else self.page or 0


class Cycle(NamedTuple):
    """What ``record_page`` found: the page that already asked for the same state (``what``
    "state"), or that already held the very same items (``what`` "items")."""

    page: int
    what: str = "state"


class Recorded(NamedTuple):
    """``record_page`` did its work; the run has read ``pages`` pages with items so far."""

    pages: int


class Stopped(NamedTuple):
    """``record_page`` recorded nothing: the run's record is gone, or the run was started on
    another Redis server (``why`` says which); its producer stops."""

    why: str
