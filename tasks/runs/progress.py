"""The run record in Redis. Every change that must be counted once is one atomic Lua script.

A run's batches are counted as *sets of sequence numbers* (enqueued, done, failed), never by
INCR alone, so a redelivered page or batch is counted once. The run ends when the producer is
done and every enqueued batch is done or failed; the one caller whose script sees that moment
(the state flips running -> finalizing inside the script) finalizes the run.

A run records the identity of the Redis server it started on (INFO's ``run_id``: new at every
start of the server, another one on a replica a failover promoted). Redis that restarted from a
snapshot, or a replica that lagged, may have lost the record's last writes (counts gone back,
batches published but forgotten, a checkpoint rewound) and nothing in the record says so. So
every script that counts a run first compares the identity (run_lib's ``moved``): a run started
on another server is failed there and then, and never finalizes (no deletion, no watermark).
A record that is gone altogether reads as ``lost``, and nothing brings it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any, cast

import redis

from integrations.secrets import Redactor
from tasks.runs import keys, metrics, scripts
from tasks.runs.deadletter import DeadLetter
from tasks.runs.record import Cycle, PageRecord, Recorded, Run, RunState, Stopped
from tasks.settings import Settings

# The record's types are defined in tasks.runs.record and read from here as well.
__all__ = ["Cycle", "PageRecord", "Progress", "Recorded", "Run", "RunState", "Stopped"]

log = logging.getLogger(__name__)

MOVED = -1  # a counting script's answer: the run was started on another Redis server
MOVED_PAGE = -3  # record_page's


def _in_flight(enqueued: int, done: int, failed: int) -> int:
    return max(0, int(enqueued) - int(done) - int(failed))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def page_keys(run_id: str, source: str, kind: str) -> dict[str, str]:
    """record_page.lua's KEYS, by the names its header gives them, in its order."""
    return {"run": keys.run(run_id), "enqueued": keys.run_enqueued(run_id),
            "lock": keys.lock(source, kind), "metrics": keys.METRICS,
            "seen": keys.run_seen(run_id), "empty": keys.run_empty(run_id),
            "active": keys.ACTIVE}


def page_args(run_id: str, page: PageRecord, *, now: float, lock_seconds: int,
              redactor: Redactor) -> dict[str, Any]:
    """record_page.lua's ARGV, by the names its header gives them, in its order: the one place
    a ``PageRecord`` becomes them (tests/unit/test_keys.py holds the names and the header to
    each other, so a slot added, moved or renamed on one side only fails there). What the
    page's checkpoint asks for next is kept as a digest (``mark``) with the page asking."""
    mark, next_seq = "", ""
    checkpoint = page.checkpoint
    if checkpoint is not None and "next" in checkpoint:
        mark = hashlib.sha1(json.dumps([page.partition, checkpoint["next"]], sort_keys=True)
                            .encode()).hexdigest()[:20]
        next_seq = str(checkpoint["seq"])
    return {
        "batches": json.dumps(list(page.batches)),
        "n_items": page.items,
        "checkpoint": json.dumps(redactor.data(checkpoint)),
        "now": repr(now),
        "run_id": run_id,
        "lock_seconds": lock_seconds,
        "field": keys.checkpoint_field(page.partition),
        "mark": mark,
        "next_seq": next_seq,
        "total": "" if page.total is None else page.total,
        "truncated": redactor.text(page.truncated or ""),
        "page": page.seq,
        "items_mark": page.items_digest,
        "newest_field": "" if page.newest is None else keys.mark_field(page.partition),
        "newest": json.dumps(page.newest),
    }


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
        self._check = scripts.register(client, "check_run")
        self._update = scripts.register(client, "update_run")

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> Progress:
        """The run records of ``settings.redis_url`` (or of ``client``), with its lock and TTL."""
        return cls(client or redis.Redis.from_url(settings.redis_url),
                   lock_seconds=settings.run_lock_seconds, ttl=settings.run_ttl_seconds)

    def update(self, run_id: str, fields: dict[str, str]) -> bool:
        """Set fields of the run's record; False (nothing set) when the record is gone."""
        return bool(self._update(keys=[keys.run(run_id)], args=[json.dumps(fields)]))

    def expire(self, run_id: str) -> None:
        """Start the TTL of every key of an ended run."""
        pipe = self.r.pipeline()
        for key in keys.run_keys(run_id):
            pipe.expire(key, self.ttl)
        pipe.execute()

    def _answered(self, run_id: str, answer: Any) -> bool:
        """A counting script's answer: True for 1 (recorded; or, where the script elects one,
        the caller finalizes). -1: the run was started on another Redis server and the script
        failed it: its keys start their TTL."""
        if answer == MOVED:
            self.expire(run_id)
        return bool(answer == 1)

    def identity(self) -> str:
        """This Redis server's run_id ("" where INFO is refused)."""
        try:
            return str(self.r.info("server").get("run_id", ""))
        except redis.ResponseError:
            return ""

    def moved(self, run_id: str, source: str, kind: str) -> bool:
        """True when the run was started on another Redis server than this one (Redis
        restarted or failed over since): then it is failed, if it was still active, and its
        lock released."""
        moved = bool(self._check(keys=[keys.run(run_id), keys.lock(source, kind), keys.ACTIVE,
                                       keys.METRICS], args=[run_id, repr(time.time())]))
        if moved:
            self.expire(run_id)
        return moved

    def _set_keys(self, run_id: str) -> list[str]:
        return [keys.run(run_id), keys.run_enqueued(run_id), keys.run_done(run_id),
                keys.run_failed(run_id)]

    def create_run(self, source: str, kind: str, *, config_digest: str = "",
                   full: bool = False, traceparent: str = "") -> Run:
        """A new run of (source, kind): 'running' with the lock taken and a ``run_seq`` larger
        than any before it, or 'skipped'. ``config_digest``: the sluice.toml it was started
        with (workers with another one reload theirs, or fail the run); ``traceparent``: its
        trace's root (every producer slice is enqueued under it)."""
        now = time.time()
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + uuid.uuid4().hex[:8]
        fields = {"run_id": run_id, "source": source, "kind": kind, "started_at": repr(now),
                  "updated_at": repr(now)}
        if config_digest:
            fields["config_digest"] = config_digest
        if full:
            fields["full"] = "1"
        if traceparent:
            fields["traceparent"] = traceparent
        holder = self.r.get(keys.lock(source, kind))
        if holder is not None:  # free when its run was started on a Redis since lost
            self.moved(_text(holder), source, kind)
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
        run = self.get(run_id) or Run(run_id=run_id, source=source, kind=kind)
        if run.state == RunState.RUNNING and not run.redis_id:
            log.warning("run %s: Redis does not tell its run_id (INFO refused): a restart or "
                        "failover of Redis during the run cannot be detected", run_id)
        return run

    def get(self, run_id: str) -> Run | None:
        """The run's record; None for an unknown run."""
        runs = self._read([run_id])
        return runs[0] if runs else None

    def recent(self, limit: int = 20) -> list[Run]:
        """The ``limit`` newest runs, newest first (a record that expired is left out)."""
        ids = cast(list[bytes], self.r.zrevrange(keys.RUNS, 0, limit - 1))
        return self._read([i.decode() for i in ids])

    def _read(self, run_ids: list[str]) -> list[Run]:
        """The records of ``run_ids`` that exist, in one round trip however many they are
        (``sluice status --limit 300`` made 600)."""
        pipe = self.r.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(keys.run(run_id))
            self._count_in_flight(pipe, run_id)
        answers = pipe.execute()
        runs = []
        for n, run_id in enumerate(run_ids):
            raw, *counts = answers[4 * n: 4 * n + 4]
            if raw:
                runs.append(Run.from_record(run_id, {_text(k): _text(v) for k, v in raw.items()},
                                            in_flight=_in_flight(*counts)))
        return runs

    def in_flight(self, run_id: str) -> int:
        """Batches published and neither written nor dead-lettered yet."""
        pipe = self.r.pipeline(transaction=False)
        self._count_in_flight(pipe, run_id)
        return _in_flight(*pipe.execute())

    def _count_in_flight(self, pipe: Any, run_id: str) -> None:
        """Three SCARDs on ``pipe``: the batches enqueued, done and failed (``_in_flight``)."""
        for key in self._set_keys(run_id)[1:]:
            pipe.scard(key)

    def record_page(self, run_id: str, source: str, kind: str,
                    page: PageRecord) -> Recorded | Cycle | Stopped:
        """Record a page the run's producer published (``PageRecord`` says what of it).

        Returns ``Recorded``; ``Stopped`` when the run record is gone (Redis lost its data) or
        the run was started on another Redis server (it is failed now): the producer stops; or
        a ``Cycle`` when the state the page's checkpoint asks for next was already asked for
        by another page of the run (a cursor or next link that came back), or when its
        ``items_digest`` was another page's."""
        answer = self._record_page(
            keys=list(page_keys(run_id, source, kind).values()),
            args=list(page_args(run_id, page, now=time.time(), lock_seconds=self.lock_seconds,
                                redactor=self.redactor).values()))
        if answer[0] == MOVED_PAGE:
            self.expire(run_id)
            return Stopped("it was started on another Redis server (Redis restarted or failed "
                           "over since): the run is failed")
        if answer[0] < 0:
            return Cycle(int(answer[1]), "state" if answer[0] == -1 else "items")
        return Recorded(int(answer[1])) if answer[0] else Stopped("its record is gone from Redis")

    def producer_done(self, run_id: str, *, partition: int = 0, error: str | None = None) -> bool:
        """A producer partition has published its last page, or failed (an error ends the
        whole producer side). True: the caller finalizes."""
        return self._answered(run_id, self._producer_done(
            keys=[*self._set_keys(run_id), keys.run_partitions_done(run_id), keys.ACTIVE,
                  keys.METRICS],
            args=[self.redactor.text(error or ""), repr(time.time()), partition]))

    def split(self, run_id: str, parts: list[dict[str, Any]]) -> None:
        """Split the producer into partitions: ``parts[i]`` is partition i's starting point
        (``{"checkpoint": ...}`` or ``{"key": ...}``, and ``{"since": ...}`` when the parts
        share partition 0's window)."""
        fields: dict[str, str] = {"partitions": str(len(parts))}
        for i, part in enumerate(parts):
            if "since" in part:
                fields[keys.since_field(i)] = json.dumps(part["since"])
            if "checkpoint" in part:
                checkpoint = self.redactor.data(part["checkpoint"])
                fields[keys.checkpoint_field(i)] = json.dumps(checkpoint)
            if "key" in part:
                fields[keys.key_field(i)] = json.dumps(part["key"])
        self.update(run_id, fields)

    def partition(self, run_id: str, partition: int) -> tuple[bool, Any, bool]:
        """(started, checkpoint, done) of a producer partition (its key: ``key()``)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(keys.run(run_id), keys.checkpoint_field(partition))
        pipe.sismember(keys.run_partitions_done(run_id), str(partition))
        raw, done = pipe.execute()
        return (raw is not None, None if raw is None else json.loads(raw), bool(done))

    def window(self, run_id: str, partition: int) -> tuple[bool, Any]:
        """(known, since) of a partition: what it asks changes since (None: everything)."""
        raw = self.r.hget(keys.run(run_id), keys.since_field(partition))
        return (raw is not None, None if raw is None else json.loads(raw))

    def set_window(self, run_id: str, partition: int, since: Any) -> None:
        """A partition starts: it reads what changed since ``since`` (None: everything)."""
        fields = {keys.since_field(partition): json.dumps(since)}
        if since is not None:
            fields["incremental"] = "1"
        self.update(run_id, fields)

    def newest(self, run_id: str, partition: int) -> Any:
        """The newest cursor value a partition has published so far (None: none yet)."""
        raw = self.r.hget(keys.run(run_id), keys.mark_field(partition))
        return None if raw is None else json.loads(raw)

    def marks(self, run_id: str) -> dict[str, list[Any]]:
        """The newest cursor values of every partition, by partition key (JSON text)."""
        raw = {_text(k): _text(v) for k, v in self.r.hgetall(keys.run(run_id)).items()}
        found: dict[str, list[Any]] = {}
        for name, value in raw.items():
            i = keys.partition_of(name, keys.MARK)
            if i is not None:
                found.setdefault(raw.get(keys.key_field(i), "null"), []).append(json.loads(value))
        return found

    def key(self, run_id: str, partition: int) -> Any:
        raw = self.r.hget(keys.run(run_id), keys.key_field(partition))
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
        return self._answered(run_id, self._batch_done(
            keys=[*self._set_keys(run_id), keys.run_rejected(run_id), keys.lock(source, kind),
                  keys.METRICS, keys.ACTIVE],
            args=[seq, written, len(rejected),
                  json.dumps([json.dumps(r) for r in self.redactor.data(rejected)]),
                  repr(time.time()), run_id,
                  self.lock_seconds, keys.REJECTED_KEEP, child, skipped, deleted]))

    def record_children(self, run_id: str, source: str, kind: str, batches: list[int], *,
                        child: str, n_items: int = 0, incomplete: str = "") -> bool:
        """Batches of ``child`` (a child kind of the run's ``kind``) were published: the task
        that fetches children, or the batches of items it collected. False: the run record
        is gone, or the run was started on another Redis server (it is failed now)."""
        return self._answered(run_id, self._record_children(
            keys=[keys.run(run_id), keys.run_enqueued(run_id), keys.lock(source, kind),
                  keys.METRICS, keys.ACTIVE],
            args=[json.dumps(batches), n_items, child, repr(time.time()), run_id,
                  self.lock_seconds, self.redactor.text(incomplete)]))

    def touch(self, run_id: str, source: str, kind: str) -> None:
        """A long task of the run is alive: its record is fresh, its lock renewed."""
        if not self.update(run_id, {"updated_at": repr(time.time())}):
            return
        if self.r.get(keys.lock(source, kind)) == run_id.encode():
            self.r.expire(keys.lock(source, kind), self.lock_seconds)

    def batch_failed(self, run_id: str, seq: int, *, dead_letter: DeadLetter,
                     child: str = "") -> bool:
        """Batch ``seq`` is dead-lettered with its items. True: the caller finalizes."""
        letter = replace(dead_letter, error=self.redactor.text(dead_letter.error))
        return self._answered(run_id, self._batch_failed(
            keys=[*self._set_keys(run_id), keys.dead_letters(run_id), keys.METRICS, keys.ACTIVE],
            args=[seq, letter.to_json(), repr(time.time()), child]))

    def finish(self, run: Run, state: RunState, *, expect: RunState | None = None,
               **fields: Any) -> bool:
        """End an active run (only from ``expect``, if given): set the state and reasons,
        release the lock, count it, start the TTL of every key. False if it was not active,
        or was started on another Redis server (then it ends failed, saying so, and keeps
        what ``fields`` say was done already: ``deleted``, ``moved``, ``watermark``)."""
        values = {"state": str(state), "ended_at": repr(time.time()),
                  **{k: self.redactor.text(str(v)) for k, v in fields.items() if v is not None}}
        done = {k: values[k] for k in ("deleted", "moved", "watermark")
                if k in values and values[k] not in ("0", "")}
        ended = self._finish(
            keys=[keys.run(run.run_id), keys.lock(run.source, run.kind), keys.ACTIVE,
                  keys.METRICS],
            args=[run.run_id, json.dumps(values), str(expect or ""), json.dumps(done)])
        self.expire(run.run_id)
        return bool(ended == 1)

    def active(self) -> list[Run]:
        """Runs not yet ended, oldest first."""
        ids = cast(list[bytes], self.r.zrange(keys.ACTIVE, 0, -1))
        return [run for run in (self.get(i.decode()) for i in ids) if run]

    def watch(self, *, stall_after: float, now: float | None = None) -> list[Run]:
        """End every run not yet ended that cannot end well: failed when it was started on
        another Redis server (restarted or failed over since; a run that no task touches any
        more would otherwise wait for the stall watch), stalled when it has made no progress
        for ``stall_after`` seconds. Returns the runs it ended."""
        self.keep_alive()
        here = self.identity()
        moved = [run for run in self.active() if here and run.redis_id
                 and run.redis_id != here and self.moved(run.run_id, run.source, run.kind)]
        ended = [self.get(run.run_id) or run for run in moved]
        return ended + self.mark_stalled(after=stall_after, now=now)

    def keep_alive(self) -> None:
        """A run lasts as long as it makes progress, longer than the record's TTL if need be:
        the record of every run not yet ended starts its TTL again (the stall watch ends the
        ones that make none). An id whose record is gone (expired, or a Redis that forgot it)
        leaves the active list, and its other keys start their TTL: nothing of it is kept for
        good."""
        ids = [i.decode() for i in cast(list[bytes], self.r.zrange(keys.ACTIVE, 0, -1))]
        pipe = self.r.pipeline(transaction=False)
        for run_id in ids:
            pipe.expire(keys.run(run_id), self.ttl)
        gone = [run_id for run_id, kept in zip(ids, pipe.execute(), strict=True) if not kept]
        for run_id in gone:
            self.expire(run_id)
        if gone:
            self.r.zrem(keys.ACTIVE, *gone)

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
        return {metrics.parse(_text(k)): float(v)
                for k, v in self.r.hgetall(keys.METRICS).items()}

    def rejected(self, run_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(keys.run_rejected(run_id), 0, -1)]

    def dead_letters(self, run_id: str) -> dict[int, DeadLetter]:
        """Dead-lettered batches still failed, by seq."""
        failed = {int(s) for s in self.r.smembers(keys.run_failed(run_id))}
        raw = self.r.hgetall(keys.dead_letters(run_id))
        return {int(k): DeadLetter.from_json(v) for k, v in raw.items() if int(k) in failed}
