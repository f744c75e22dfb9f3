-- A batch is dead-lettered with its items (unless a delivery of it was written).
--! include run_lib
-- KEYS[1] run        hash: the run record
-- KEYS[2] enqueued   set: seqs of the batches published
-- KEYS[3] done       set: seqs of the batches written
-- KEYS[4] failed     set: seqs of the batches dead-lettered
-- KEYS[5] dead       hash: seq -> the dead letter (JSON)
-- KEYS[6] metrics    hash: the counters
-- KEYS[7] active     sorted set: runs not yet ended -> start time
-- ARGV[1] seq          the batch's seq
-- ARGV[2] dead_letter  JSON object: {items, error, attempts, ...}
-- ARGV[3] now          seconds since the epoch
-- ARGV[4] child        the batch's kind when it is a child kind of the run's ('' if not);
--                      counted in field 'child.{kind}.batches_failed' (keys.child_field)
-- Returns 1 when the caller finalizes the run, else 0; -1 when the run was started on another
-- Redis server (restarted or failed over since): the run is failed, the dead letter still
-- kept (`sluice failed retry` can send it again), and it never finalizes.
local run, enqueued, done, failed, dead, metrics = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local active = KEYS[7]
local seq, dead_letter, now = ARGV[1], ARGV[2], ARGV[3]

if redis.call('HEXISTS', run, 'state') == 0 then return 0 end
local was_moved = moved(run, nil, active, metrics, now)
if redis.call('SISMEMBER', done, seq) == 1 then return was_moved and -1 or 0 end
redis.call('HSET', dead, seq, dead_letter)
if redis.call('SADD', failed, seq) == 1 then
  redis.call('HINCRBY', run, 'batches_failed', 1)
  if ARGV[4] ~= '' then redis.call('HINCRBY', run, 'child.' .. ARGV[4] .. '.batches_failed', 1) end
  metric(run, metrics, 'batches_failed', 1)
end
redis.call('HSET', run, 'updated_at', now)
if was_moved then return -1 end
return try_finalize(run, enqueued, done, failed)
