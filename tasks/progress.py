"""The run record in Redis. Every change that must be counted once is one atomic Lua script.

A run's batches are counted as *sets of sequence numbers* (enqueued, done, failed), never by
INCR alone, so a redelivered page or batch is counted once. The run ends when the producer is
done and every enqueued batch is done or failed; the one caller whose script sees that moment
(the state flips running -> finalizing inside the script) finalizes the run.
"""

from __future__ import annotations

import json
import time
import uuid
from enum import StrEnum
from typing import Any

import redis

from tasks import keys
from tasks.settings import Settings


class RunState(StrEnum):
    RUNNING = "running"
    FINALIZING = "finalizing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    STALLED = "stalled"
    LOST = "lost"  # the record is gone: Redis lost its data (restarted without persistence)

    @property
    def ended(self) -> bool:
        return self not in (RunState.RUNNING, RunState.FINALIZING)


COUNTS = ("pages", "items_fetched", "items_written", "items_rejected", "batches_enqueued",
          "batches_done", "batches_failed", "deleted")

# Counters for Prometheus, per source and kind: KEYS[1] is the run, ``mkey`` the metrics hash.
_METRIC = """
local function metric(mkey, name, by, label)
  local field = name .. '|' .. redis.call('HGET', KEYS[1], 'source') .. '|'
                .. redis.call('HGET', KEYS[1], 'kind')
  if label then field = field .. '|' .. label end
  redis.call('HINCRBYFLOAT', mkey, field, by)
end
"""

# KEYS: run, enqueued, done, failed. Sets state=finalizing and returns 1 when the run is complete.
_TRY_FINALIZE = """
local function try_finalize()
  if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
  if redis.call('HGET', KEYS[1], 'producer_done') ~= '1' then return 0 end
  local settled = redis.call('SCARD', KEYS[3]) + redis.call('SCARD', KEYS[4])
  if settled < redis.call('SCARD', KEYS[2]) then return 0 end
  redis.call('HSET', KEYS[1], 'state', 'finalizing')
  return 1
end
"""

# KEYS: run, lock, active, metrics. ARGV: run_id, fields, lock_seconds, now
_CREATE = _METRIC + """
local ok = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', tonumber(ARGV[3]))
local fields = cjson.decode(ARGV[2])
if ok then
  fields['state'] = 'running'
else
  fields['state'] = 'skipped'
  fields['reason'] = 'run ' .. redis.call('GET', KEYS[2]) .. ' of this source and kind is still running'
  fields['ended_at'] = fields['started_at']
end
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
if fields['state'] == 'running' then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[1])
else
  metric(KEYS[4], 'runs', 1, 'skipped')
end
return fields['state']
"""

# KEYS: run, enqueued, lock, metrics.
# ARGV: seq, n_items, cursor, now, run_id, lock_seconds, cursor field
_RECORD_PAGE = _METRIC + """
if redis.call('HEXISTS', KEYS[1], 'state') == 0 then return 0 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'pages', 1)
  redis.call('HINCRBY', KEYS[1], 'batches_enqueued', 1)
  redis.call('HINCRBY', KEYS[1], 'items_fetched', tonumber(ARGV[2]))
  metric(KEYS[4], 'pages', 1)
  metric(KEYS[4], 'items_fetched', tonumber(ARGV[2]))
end
redis.call('HSET', KEYS[1], ARGV[7], ARGV[3], 'updated_at', ARGV[4])
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6])) end
return 1
"""

# KEYS: run, enqueued, done, failed, partitions_done. ARGV: error ('' for none), now, partition
# The producer is done when every partition is (one partition unless the kind was split).
_PRODUCER_DONE = _TRY_FINALIZE + """
if redis.call('HEXISTS', KEYS[1], 'state') == 0 then return 0 end
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[1]) end
local parts = tonumber(redis.call('HGET', KEYS[1], 'partitions') or '1')
if ARGV[1] == '' and redis.call('SCARD', KEYS[5]) < parts then return 0 end
redis.call('HSET', KEYS[1], 'producer_done', '1')
return try_finalize()
"""

# KEYS: run, enqueued, done, failed, rejected, lock, metrics.
# ARGV: seq, written, rejected, rejected_records_json, now, run_id, lock_seconds, keep
_BATCH_DONE = _METRIC + _TRY_FINALIZE + """
if redis.call('HEXISTS', KEYS[1], 'state') == 0 then return 0 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'batches_done', 1)
redis.call('HINCRBY', KEYS[1], 'items_written', tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'items_rejected', tonumber(ARGV[3]))
metric(KEYS[7], 'items_written', tonumber(ARGV[2]))
metric(KEYS[7], 'items_rejected', tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
for _, rec in ipairs(cjson.decode(ARGV[4])) do redis.call('RPUSH', KEYS[5], cjson.encode(rec)) end
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[8]) - 1)
if redis.call('GET', KEYS[6]) == ARGV[6] then redis.call('EXPIRE', KEYS[6], tonumber(ARGV[7])) end
if redis.call('SREM', KEYS[4], ARGV[1]) == 1 then
  -- a dead-lettered batch written by `sluice failed retry`
  redis.call('HINCRBY', KEYS[1], 'batches_failed', -1)
  if redis.call('HGET', KEYS[1], 'state') == 'failed'
     and tonumber(redis.call('HGET', KEYS[1], 'batches_failed')) == 0
     and not redis.call('HGET', KEYS[1], 'error') then
    redis.call('HSET', KEYS[1], 'state', 'succeeded', 'reason',
      'every dead-lettered batch was retried and written; stale entities were not deleted')
  end
  return 0
end
return try_finalize()
"""

# KEYS: run, enqueued, done, failed, dead, metrics. ARGV: seq, dead_letter_json, now
_BATCH_FAILED = _METRIC + _TRY_FINALIZE + """
if redis.call('HEXISTS', KEYS[1], 'state') == 0 then return 0 end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[5], ARGV[1], ARGV[2])
if redis.call('SADD', KEYS[4], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'batches_failed', 1)
  metric(KEYS[6], 'batches_failed', 1)
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
return try_finalize()
"""

# KEYS: run, lock, active, metrics. ARGV: run_id, fields_json, expected state ('' = any active)
_FINISH = _METRIC + """
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[3] ~= '' and state ~= ARGV[3] then return 0 end
if state ~= 'running' and state ~= 'finalizing' then return 0 end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
metric(KEYS[4], 'runs', 1, fields['state'])
local started = tonumber(redis.call('HGET', KEYS[1], 'started_at'))
metric(KEYS[4], 'run_seconds_sum', tonumber(fields['ended_at']) - started)
metric(KEYS[4], 'run_seconds_count', 1)
return 1
"""


class Progress:
    """The run records of one Redis database. Thin: one method per atomic step."""

    def __init__(self, client: redis.Redis, *, lock_seconds: int = 1800, ttl: int = 14 * 86400):
        self.r = client
        self.lock_seconds = lock_seconds
        self.ttl = ttl
        self._create = client.register_script(_CREATE)
        self._record_page = client.register_script(_RECORD_PAGE)
        self._producer_done = client.register_script(_PRODUCER_DONE)
        self._batch_done = client.register_script(_BATCH_DONE)
        self._batch_failed = client.register_script(_BATCH_FAILED)
        self._finish = client.register_script(_FINISH)

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> Progress:
        """The run records of ``settings.redis_url`` (or of ``client``), with its lock and TTL."""
        return cls(client or redis.Redis.from_url(settings.redis_url),
                   lock_seconds=settings.run_lock_seconds, ttl=settings.run_ttl_seconds)

    def _set_keys(self, run_id: str) -> list[str]:
        return [keys.run(run_id), keys.run_enqueued(run_id), keys.run_done(run_id),
                keys.run_failed(run_id)]

    def create_run(self, source: str, kind: str) -> dict[str, Any]:
        """A new run of (source, kind): 'running' with the lock taken, or 'skipped'."""
        now = time.time()
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + uuid.uuid4().hex[:8]
        fields = {"run_id": run_id, "source": source, "kind": kind, "started_at": repr(now),
                  "updated_at": repr(now)}
        self._create(keys=[keys.run(run_id), keys.lock(source, kind), keys.ACTIVE, keys.METRICS],
                     args=[run_id, json.dumps(fields), self.lock_seconds, now])
        pipe = self.r.pipeline()
        pipe.zadd(keys.RUNS, {run_id: now})
        pipe.expire(keys.run(run_id), self.ttl)
        pipe.execute()
        return self.get(run_id)

    def get(self, run_id: str) -> dict[str, Any]:
        """The run record with numbers decoded; {} for an unknown run."""
        raw = self.r.hgetall(keys.run(run_id))
        if not raw:
            return {}
        rec: dict[str, Any] = {"run_id": run_id, "source": "?", "kind": "?", "state": str(RunState.LOST),
                               **{k.decode(): v.decode() for k, v in raw.items()}}
        for name in COUNTS:
            rec[name] = int(rec.get(name, 0))
        for name in ("started_at", "updated_at", "ended_at"):
            if name in rec:
                rec[name] = float(rec[name])
        rec["producer_done"] = rec.get("producer_done") == "1"
        rec["in_flight"] = self.in_flight(run_id)
        return rec

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        ids = self.r.zrevrange(keys.RUNS, 0, limit - 1)
        return [rec for rec in (self.get(i.decode()) for i in ids) if rec]

    def in_flight(self, run_id: str) -> int:
        """Batches published and neither written nor dead-lettered yet."""
        pipe = self.r.pipeline(transaction=False)
        for key in self._set_keys(run_id)[1:]:
            pipe.scard(key)
        enqueued, done, failed = pipe.execute()
        return max(0, enqueued - done - failed)

    def record_page(self, run_id: str, source: str, kind: str, seq: int, n_items: int,
                    cursor: dict[str, Any] | None, *, partition: int = 0) -> bool:
        """A page was published as batch ``seq``; ``cursor`` resumes after it.
        False when the run record is gone (Redis lost its data): the producer stops."""
        return bool(self._record_page(
            keys=[keys.run(run_id), keys.run_enqueued(run_id), keys.lock(source, kind),
                  keys.METRICS],
            args=[seq, n_items, json.dumps(cursor), repr(time.time()), run_id, self.lock_seconds,
                  f"cursor:{partition}"]))

    def save_cursor(self, run_id: str, cursor: dict[str, Any] | None, *,
                    partition: int = 0) -> None:
        """Save the checkpoint after a page that carried no items (no batch was published)."""
        if self.r.hexists(keys.run(run_id), "state"):
            self.r.hset(keys.run(run_id), mapping={f"cursor:{partition}": json.dumps(cursor),
                                                   "updated_at": repr(time.time())})

    def producer_done(self, run_id: str, *, partition: int = 0, error: str | None = None) -> bool:
        """A producer partition has published its last page, or failed (an error ends the
        whole producer side). True: the caller finalizes."""
        return bool(self._producer_done(
            keys=[*self._set_keys(run_id), keys.run_partitions_done(run_id)],
            args=[error or "", repr(time.time()), partition]))

    def split(self, run_id: str, parts: list[dict[str, Any]]) -> None:
        """Split the producer into partitions: ``parts[i]`` is partition i's starting point
        (``{"checkpoint": ...}`` or ``{"key": ...}``)."""
        fields: dict[str, str] = {"partitions": str(len(parts))}
        for i, part in enumerate(parts):
            if "checkpoint" in part:
                fields[f"cursor:{i}"] = json.dumps(part["checkpoint"])
            if "key" in part:
                fields[f"key:{i}"] = json.dumps(part["key"])
        self.r.hset(keys.run(run_id), mapping=fields)

    def partition(self, run_id: str, partition: int) -> tuple[bool, Any, bool]:
        """(started, checkpoint, done) of a producer partition (its key: ``key()``)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(keys.run(run_id), f"cursor:{partition}")
        pipe.sismember(keys.run_partitions_done(run_id), partition)
        raw, done = pipe.execute()
        return (raw is not None, None if raw is None else json.loads(raw), bool(done))

    def key(self, run_id: str, partition: int) -> Any:
        raw = self.r.hget(keys.run(run_id), f"key:{partition}")
        return None if raw is None else json.loads(raw)

    def published(self, run_id: str) -> set[int]:
        """Sequence numbers of the batches published so far."""
        return {int(s) for s in self.r.smembers(keys.run_enqueued(run_id))}

    def batch_done(self, run_id: str, source: str, kind: str, seq: int, *, written: int,
                   rejected: list[dict[str, Any]]) -> bool:
        """Batch ``seq`` was written. Counts once per seq. True: the caller finalizes."""
        return bool(self._batch_done(
            keys=[*self._set_keys(run_id), keys.run_rejected(run_id), keys.lock(source, kind),
                  keys.METRICS],
            args=[seq, written, len(rejected), json.dumps(rejected), repr(time.time()), run_id,
                  self.lock_seconds, keys.REJECTED_KEEP]))

    def batch_failed(self, run_id: str, seq: int, *, dead_letter: dict[str, Any]) -> bool:
        """Batch ``seq`` is dead-lettered with its items. True: the caller finalizes."""
        return bool(self._batch_failed(
            keys=[*self._set_keys(run_id), keys.dead_letters(run_id), keys.METRICS],
            args=[seq, json.dumps(dead_letter), repr(time.time())]))

    def finish(self, run: dict[str, Any], state: RunState, *, expect: RunState | None = None,
               **fields: Any) -> bool:
        """End an active run (only from ``expect``, if given): set the state and reasons,
        release the lock, count it, start the TTL of every key. False if it was not active."""
        values = {"state": str(state), "ended_at": repr(time.time()),
                  **{k: str(v) for k, v in fields.items() if v is not None}}
        ended = self._finish(
            keys=[keys.run(run["run_id"]), keys.lock(run["source"], run["kind"]), keys.ACTIVE,
                  keys.METRICS],
            args=[run["run_id"], json.dumps(values), str(expect or "")])
        pipe = self.r.pipeline()
        for key in keys.run_keys(run["run_id"]):
            pipe.expire(key, self.ttl)
        pipe.execute()
        return bool(ended)

    def active(self) -> list[dict[str, Any]]:
        """Runs not yet ended, oldest first."""
        ids = self.r.zrange(keys.ACTIVE, 0, -1)
        return [rec for rec in (self.get(i.decode()) for i in ids) if rec]

    def mark_stalled(self, *, after: float, now: float | None = None) -> list[dict[str, Any]]:
        """End as 'stalled' every running run with no progress for ``after`` seconds."""
        now = time.time() if now is None else now
        stalled = []
        for run in self.active():
            if run["state"] == RunState.RUNNING and now - run["updated_at"] > after:
                reason = (f"no progress for {now - run['updated_at']:.0f} s (stall_seconds "
                          f"{after:.0f}); nothing was deleted")
                if self.finish(run, RunState.STALLED, expect=RunState.RUNNING, reason=reason):
                    stalled.append(self.get(run["run_id"]))
        return stalled

    def metrics(self) -> dict[tuple[str, ...], float]:
        """The counters: (name, source, kind[, label]) -> value."""
        return {tuple(k.decode().split("|")): float(v)
                for k, v in self.r.hgetall(keys.METRICS).items()}

    def rejected(self, run_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(keys.run_rejected(run_id), 0, -1)]

    def dead_letters(self, run_id: str) -> dict[int, dict[str, Any]]:
        """Dead-lettered batches still failed: seq -> {items, error, ...}."""
        failed = {int(s) for s in self.r.smembers(keys.run_failed(run_id))}
        raw = self.r.hgetall(keys.dead_letters(run_id))
        return {int(k): json.loads(v) for k, v in raw.items() if int(k) in failed}
