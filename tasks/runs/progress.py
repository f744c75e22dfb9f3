"""The run record in Redis. Every change that must be counted once is one atomic Lua script.

A run's batches are counted as *sets of sequence numbers* (enqueued, done, failed), never by
INCR alone, so a redelivered page or batch is counted once. The run ends when the producer is
done and every enqueued batch is done or failed; the one caller whose script sees that moment
(the state flips running -> finalizing inside the script) finalizes the run.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, NamedTuple, cast

import redis

from integrations.pager import Checkpoint
from integrations.secrets import Redactor
from tasks.runs import keys, scripts
from tasks.settings import Settings


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
        for name, text in raw.items():  # child.<kind>.<count>
            if name.startswith("child."):
                kind, _, count = name[len("child."):].rpartition(".")
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


class Cycle(NamedTuple):
    """What ``record_page`` found: the page that already asked for the same state (``what``
    "state"), or that already held the very same items (``what`` "items")."""

    page: int
    what: str = "state"


class Recorded(NamedTuple):
    """``record_page`` did its work; the run has read ``pages`` pages with items so far."""

    pages: int

def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Progress:
    """The run records of one Redis database. Thin: one method per atomic step."""

    def __init__(self, client: redis.Redis, *, lock_seconds: int = 1800, ttl: int = 14 * 86400,
                 redactor: Redactor | None = None):
        self.r = client
        self.lock_seconds = lock_seconds
        self.ttl = ttl
        # Checkpoints, errors and reasons may hold what a request carried: redacted first.
        self.redactor = redactor or Redactor()
        self._create = scripts.register(client, "create_run")
        self._record_page = scripts.register(client, "record_page")
        self._producer_done = scripts.register(client, "producer_done")
        self._batch_done = scripts.register(client, "batch_done")
        self._batch_failed = scripts.register(client, "batch_failed")
        self._finish = scripts.register(client, "finish_run")
        self._record_children = scripts.register(client, "record_children")

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> Progress:
        """The run records of ``settings.redis_url`` (or of ``client``), with its lock and TTL."""
        return cls(client or redis.Redis.from_url(settings.redis_url),
                   lock_seconds=settings.run_lock_seconds, ttl=settings.run_ttl_seconds)

    def _set_keys(self, run_id: str) -> list[str]:
        return [keys.run(run_id), keys.run_enqueued(run_id), keys.run_done(run_id),
                keys.run_failed(run_id)]

    def create_run(self, source: str, kind: str, *, config_digest: str = "",
                   full: bool = False) -> Run:
        """A new run of (source, kind): 'running' with the lock taken and a ``run_seq`` larger
        than any before it, or 'skipped'. ``config_digest``: the sluice.toml it was started
        with (workers with another one reload theirs, or fail the run)."""
        now = time.time()
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + uuid.uuid4().hex[:8]
        fields = {"run_id": run_id, "source": source, "kind": kind, "started_at": repr(now),
                  "updated_at": repr(now)}
        if config_digest:
            fields["config_digest"] = config_digest
        if full:
            fields["full"] = "1"
        self._create(keys=[keys.run(run_id), keys.lock(source, kind), keys.ACTIVE, keys.METRICS,
                           keys.RUN_SEQ],
                     args=[run_id, json.dumps(fields), self.lock_seconds, now, int(now * 1e6)])
        pipe = self.r.pipeline()
        pipe.zadd(keys.RUNS, {run_id: now})
        # A run's record expires ``ttl`` after it ends: an id listed longer points at nothing,
        # and a list nothing trims grows by a run for good (ops/bench/soak.py found it).
        pipe.zremrangebyscore(keys.RUNS, "-inf", now - self.ttl)
        pipe.expire(keys.run(run_id), self.ttl)
        pipe.execute()
        return self.get(run_id) or Run(run_id=run_id, source=source, kind=kind)

    def get(self, run_id: str) -> Run | None:
        """The run's record; None for an unknown run."""
        raw = self.r.hgetall(keys.run(run_id))
        if not raw:
            return None
        return Run.from_record(run_id, {_text(k): _text(v) for k, v in raw.items()},
                               in_flight=self.in_flight(run_id))

    def recent(self, limit: int = 20) -> list[Run]:
        ids = cast(list[bytes], self.r.zrevrange(keys.RUNS, 0, limit - 1))
        return [run for run in (self.get(i.decode()) for i in ids) if run]

    def in_flight(self, run_id: str) -> int:
        """Batches published and neither written nor dead-lettered yet."""
        pipe = self.r.pipeline(transaction=False)
        for key in self._set_keys(run_id)[1:]:
            pipe.scard(key)
        enqueued, done, failed = pipe.execute()
        return max(0, int(enqueued) - int(done) - int(failed))

    def record_page(self, run_id: str, source: str, kind: str, batches: list[int],
                    n_items: int, checkpoint: Checkpoint | None, *, partition: int = 0,
                    total: int | None = None, truncated: str | None = None,
                    page: int | None = None, items_digest: str = "",
                    newest: Any = None) -> Recorded | Cycle | None:
        """Page ``page`` was published as ``batches`` (none for a page without items: then
        ``page`` is recorded as done, so a resumed plan does not ask for it again);
        ``checkpoint`` resumes after it. Also records the API's ``total`` (first page) and why
        the paging may be ``truncated`` (last page).

        Returns ``Recorded``; None when the run record is gone (Redis lost its data: the
        producer stops); or a ``Cycle`` when the state the checkpoint asks for next was already
        asked for by another page of the run (a cursor or next link that came back), or when
        ``items_digest`` (of the page's items) was another page's. ``newest``: the
        partition's newest cursor value so far, when this page raised it."""
        mark, next_seq = "", ""
        if checkpoint is not None and "next" in checkpoint:
            mark = hashlib.sha1(json.dumps([partition, checkpoint["next"]], sort_keys=True)
                                .encode()).hexdigest()[:20]
            next_seq = str(checkpoint["seq"])
        answer = self._record_page(
            keys=[keys.run(run_id), keys.run_enqueued(run_id), keys.lock(source, kind),
                  keys.METRICS, keys.run_seen(run_id), keys.run_empty(run_id)],
            args=[json.dumps(batches), n_items, json.dumps(self.redactor.data(checkpoint)),
                  repr(time.time()), run_id, self.lock_seconds, f"checkpoint:{partition}", mark,
                  next_seq, "" if total is None else total,
                  self.redactor.text(truncated or ""), batches[0] if batches else page or 0,
                  items_digest, "" if newest is None else f"mark:{partition}",
                  json.dumps(newest)])
        if answer[0] < 0:
            return Cycle(int(answer[1]), "state" if answer[0] == -1 else "items")
        return Recorded(int(answer[1])) if answer[0] else None

    def producer_done(self, run_id: str, *, partition: int = 0, error: str | None = None) -> bool:
        """A producer partition has published its last page, or failed (an error ends the
        whole producer side). True: the caller finalizes."""
        return bool(self._producer_done(
            keys=[*self._set_keys(run_id), keys.run_partitions_done(run_id)],
            args=[self.redactor.text(error or ""), repr(time.time()), partition]))

    def split(self, run_id: str, parts: list[dict[str, Any]]) -> None:
        """Split the producer into partitions: ``parts[i]`` is partition i's starting point
        (``{"checkpoint": ...}`` or ``{"key": ...}``, and ``{"since": ...}`` when the parts
        share partition 0's window)."""
        fields: dict[str, str] = {"partitions": str(len(parts))}
        for i, part in enumerate(parts):
            if "since" in part:
                fields[f"since:{i}"] = json.dumps(part["since"])
            if "checkpoint" in part:
                fields[f"checkpoint:{i}"] = json.dumps(self.redactor.data(part["checkpoint"]))
            if "key" in part:
                fields[f"key:{i}"] = json.dumps(part["key"])
        self.r.hset(keys.run(run_id), mapping=cast(Any, fields))  # redis-py's Mapping is invariant

    def partition(self, run_id: str, partition: int) -> tuple[bool, Any, bool]:
        """(started, checkpoint, done) of a producer partition (its key: ``key()``)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(keys.run(run_id), f"checkpoint:{partition}")
        pipe.sismember(keys.run_partitions_done(run_id), str(partition))
        raw, done = pipe.execute()
        return (raw is not None, None if raw is None else json.loads(raw), bool(done))

    def window(self, run_id: str, partition: int) -> tuple[bool, Any]:
        """(known, since) of a partition: what it asks changes since (None: everything)."""
        raw = self.r.hget(keys.run(run_id), f"since:{partition}")
        return (raw is not None, None if raw is None else json.loads(raw))

    def set_window(self, run_id: str, partition: int, since: Any) -> None:
        """A partition starts: it reads what changed since ``since`` (None: everything)."""
        fields = {f"since:{partition}": json.dumps(since)}
        if since is not None:
            fields["incremental"] = "1"
        self.r.hset(keys.run(run_id), mapping=cast(Any, fields))

    def newest(self, run_id: str, partition: int) -> Any:
        """The newest cursor value a partition has published so far (None: none yet)."""
        raw = self.r.hget(keys.run(run_id), f"mark:{partition}")
        return None if raw is None else json.loads(raw)

    def marks(self, run_id: str) -> dict[str, list[Any]]:
        """The newest cursor values of every partition, by partition key (JSON text)."""
        raw = {_text(k): _text(v) for k, v in self.r.hgetall(keys.run(run_id)).items()}
        found: dict[str, list[Any]] = {}
        for name, value in raw.items():
            if name.startswith("mark:"):
                i = name.split(":", 1)[1]
                found.setdefault(raw.get(f"key:{i}", "null"), []).append(json.loads(value))
        return found

    def key(self, run_id: str, partition: int) -> Any:
        raw = self.r.hget(keys.run(run_id), f"key:{partition}")
        return None if raw is None else json.loads(raw)

    def published(self, run_id: str) -> set[int]:
        """Sequence numbers of the batches published so far, and of the pages that were empty
        (nothing to publish)."""
        return {int(s) for s in self.r.sunion([keys.run_enqueued(run_id), keys.run_empty(run_id)])}

    def batch_done(self, run_id: str, source: str, kind: str, seq: int, *, written: int,
                   rejected: list[dict[str, Any]], child: str = "", skipped: int = 0,
                   deleted: int = 0) -> bool:
        """Batch ``seq`` was written (``child``: a batch of that child kind; ``kind`` is the
        run's; ``deleted``: rows its tombstones deleted). Counts once per seq. True: the
        caller finalizes."""
        return bool(self._batch_done(
            keys=[*self._set_keys(run_id), keys.run_rejected(run_id), keys.lock(source, kind),
                  keys.METRICS],
            args=[seq, written, len(rejected),
                  json.dumps([json.dumps(r) for r in self.redactor.data(rejected)]),
                  repr(time.time()), run_id,
                  self.lock_seconds, keys.REJECTED_KEEP, child, skipped, deleted]))

    def record_children(self, run_id: str, source: str, kind: str, batches: list[int], *,
                        child: str, n_items: int = 0, incomplete: str = "") -> bool:
        """Batches of ``child`` (a child kind of the run's ``kind``) were published: the task
        that fetches children, or the batches of items it collected. False: the run record
        is gone."""
        return bool(self._record_children(
            keys=[keys.run(run_id), keys.run_enqueued(run_id), keys.lock(source, kind),
                  keys.METRICS],
            args=[json.dumps(batches), n_items, child, repr(time.time()), run_id,
                  self.lock_seconds, self.redactor.text(incomplete)]))

    def touch(self, run_id: str, source: str, kind: str) -> None:
        """A long task of the run is alive: its record is fresh, its lock renewed."""
        pipe = self.r.pipeline()
        pipe.hset(keys.run(run_id), "updated_at", repr(time.time()))
        pipe.execute()
        if self.r.get(keys.lock(source, kind)) == run_id.encode():
            self.r.expire(keys.lock(source, kind), self.lock_seconds)

    def batch_failed(self, run_id: str, seq: int, *, dead_letter: dict[str, Any],
                     child: str = "") -> bool:
        """Batch ``seq`` is dead-lettered with its items. True: the caller finalizes."""
        return bool(self._batch_failed(
            keys=[*self._set_keys(run_id), keys.dead_letters(run_id), keys.METRICS],
            args=[seq, json.dumps({**dead_letter,
                                   "error": self.redactor.text(dead_letter.get("error", ""))}),
                  repr(time.time()), child]))

    def finish(self, run: Run, state: RunState, *, expect: RunState | None = None,
               **fields: Any) -> bool:
        """End an active run (only from ``expect``, if given): set the state and reasons,
        release the lock, count it, start the TTL of every key. False if it was not active."""
        values = {"state": str(state), "ended_at": repr(time.time()),
                  **{k: self.redactor.text(str(v)) for k, v in fields.items() if v is not None}}
        ended = self._finish(
            keys=[keys.run(run.run_id), keys.lock(run.source, run.kind), keys.ACTIVE,
                  keys.METRICS],
            args=[run.run_id, json.dumps(values), str(expect or "")])
        pipe = self.r.pipeline()
        for key in keys.run_keys(run.run_id):
            pipe.expire(key, self.ttl)
        pipe.execute()
        return bool(ended)

    def active(self) -> list[Run]:
        """Runs not yet ended, oldest first."""
        ids = cast(list[bytes], self.r.zrange(keys.ACTIVE, 0, -1))
        return [run for run in (self.get(i.decode()) for i in ids) if run]

    def mark_stalled(self, *, after: float, now: float | None = None) -> list[Run]:
        """End as 'stalled' every run not yet ended (running or finalizing) with no progress
        for ``after`` seconds; its lock is released."""
        now = time.time() if now is None else now
        stalled = []
        for run in self.active():
            if not run.state.ended and now - run.updated_at > after:
                reason = (f"no progress for {now - run.updated_at:.0f} s while "
                          f"{run.state} (stall_seconds {after:.0f}); nothing was deleted")
                if self.finish(run, RunState.STALLED, expect=run.state, reason=reason):
                    stalled.append(self.get(run.run_id) or run)
        return stalled

    def metrics(self) -> dict[tuple[str, ...], float]:
        """The counters: (name, source, kind[, label]) -> value."""
        return {tuple(_text(k).split("|")): float(v)
                for k, v in self.r.hgetall(keys.METRICS).items()}

    def rejected(self, run_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(keys.run_rejected(run_id), 0, -1)]

    def dead_letters(self, run_id: str) -> dict[int, dict[str, Any]]:
        """Dead-lettered batches still failed: seq -> {items, error, ...}."""
        failed = {int(s) for s in self.r.smembers(keys.run_failed(run_id))}
        raw = self.r.hgetall(keys.dead_letters(run_id))
        return {int(k): json.loads(v) for k, v in raw.items() if int(k) in failed}
