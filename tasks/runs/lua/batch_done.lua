-- A batch was written (counted once per seq, however often it is delivered).
--! include run_lib
-- KEYS[1] run        hash: the run record
-- KEYS[2] enqueued   set: seqs of the batches published
-- KEYS[3] done       set: seqs of the batches written
-- KEYS[4] failed     set: seqs of the batches dead-lettered
-- KEYS[5] rejected   list: JSON records of the items rejected (capped)
-- KEYS[6] lock       string: the id of the run that holds (source, kind)
-- KEYS[7] metrics    hash: the counters
-- KEYS[8] active     sorted set: runs not yet ended -> start time
-- ARGV[1] seq            the batch's seq
-- ARGV[2] written        items written
-- ARGV[3] n_rejected     items rejected
-- ARGV[4] rejected_json  JSON list of their records, each as JSON text
-- ARGV[5] now            seconds since the epoch
-- ARGV[6] run_id
-- ARGV[7] lock_seconds   the lock is renewed for this long
-- ARGV[8] keep           rejected-item records kept per run
-- ARGV[9] child          the batch's kind when it is a child kind of the run's ('' if not);
--                        its counts go to fields 'child.{kind}.{count}' (keys.child_field)
-- ARGV[10] skipped       items a mapping's selector skipped
-- ARGV[11] deleted       rows deleted by the API's tombstones (a kind's `deleted`)
-- Returns 1 when the caller finalizes the run, else 0; -1 when the run was started on another
-- Redis server (restarted or failed over since): the run is failed, the batch still counted
-- (a dead letter written by `sluice failed retry` leaves the list), and it never finalizes.
local run, enqueued, done, failed, rejected = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lock, metrics, active = KEYS[6], KEYS[7], KEYS[8]
local seq, written, n_rejected, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
local run_id, lock_seconds, keep = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])

if redis.call('HEXISTS', run, 'state') == 0 then return 0 end
local was_moved = moved(run, lock, active, metrics, now)
local answer = was_moved and -1 or 0
if redis.call('SADD', done, seq) == 0 then return answer end
redis.call('HINCRBY', run, 'batches_done', 1)
redis.call('HINCRBY', run, 'items_written', written)
redis.call('HINCRBY', run, 'items_rejected', n_rejected)
if tonumber(ARGV[10]) > 0 then redis.call('HINCRBY', run, 'items_skipped', tonumber(ARGV[10])) end
local deleted = tonumber(ARGV[11] or '0')
if deleted > 0 then
  redis.call('HINCRBY', run, 'items_deleted', deleted)
  metric(run, metrics, 'items_deleted', deleted)
  if ARGV[9] ~= '' then redis.call('HINCRBY', run, 'child.' .. ARGV[9] .. '.items_deleted', deleted) end
end
if ARGV[9] ~= '' then
  local prefix = 'child.' .. ARGV[9] .. '.'
  redis.call('HINCRBY', run, prefix .. 'batches_done', 1)
  redis.call('HINCRBY', run, prefix .. 'items_written', written)
  redis.call('HINCRBY', run, prefix .. 'items_rejected', n_rejected)
end
metric(run, metrics, 'items_written', written)
metric(run, metrics, 'items_rejected', n_rejected)
redis.call('HSET', run, 'updated_at', now)
-- Each record is JSON text already: cjson would round its big numbers (seqs) on the way.
for _, rec in ipairs(cjson.decode(ARGV[4])) do redis.call('RPUSH', rejected, rec) end
redis.call('LTRIM', rejected, 0, keep - 1)
if redis.call('GET', lock) == run_id then redis.call('EXPIRE', lock, lock_seconds) end
if redis.call('SREM', failed, seq) == 1 then
  -- a dead-lettered batch written by `sluice failed retry`
  redis.call('HINCRBY', run, 'batches_failed', -1)
  if not was_moved and redis.call('HGET', run, 'state') == 'failed'
     and tonumber(redis.call('HGET', run, 'batches_failed')) == 0
     and not redis.call('HGET', run, 'error') and not redis.call('HGET', run, 'redis_moved') then
    redis.call('HSET', run, 'state', 'succeeded', 'reason',
      'every dead-lettered batch was retried and written; stale entities were not deleted')
  end
  return answer
end
if was_moved then return -1 end
return try_finalize(run, enqueued, done, failed)
