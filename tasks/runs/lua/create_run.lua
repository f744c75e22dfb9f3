-- Starts a run of (source, kind), or records it as skipped when another run holds the lock.
--! include run_lib
-- KEYS[1] run           hash: the new run's record
-- KEYS[2] lock          string: the id of the run that holds (source, kind)
-- KEYS[3] active        sorted set: runs not yet ended -> start time
-- KEYS[4] metrics       hash: the counters
-- KEYS[5] run_seq       string: the last run's sequence number
-- ARGV[1] run_id
-- ARGV[2] fields        JSON object: the record's first fields
-- ARGV[3] lock_seconds  how long the lock lasts without progress
-- ARGV[4] now           seconds since the epoch
-- ARGV[5] now_us        microseconds since the epoch
-- Returns the run's state: 'running' or 'skipped'.
--
-- A run's sequence number (its stamp on what it writes) only grows: the last one plus one, or
-- the time in microseconds when that is larger (so it keeps growing if Redis loses its data).
-- A running run records this Redis server's identity (`redis_id`): the scripts that count it
-- fail it once Redis restarted or failed over under it (run_lib's `moved`).
local run, lock, active, metrics, run_seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local run_id, lock_seconds, now, now_us = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local fields = cjson.decode(ARGV[2])

if redis.call('SET', lock, run_id, 'NX', 'EX', lock_seconds) then
  fields['state'] = 'running'
  local seq = math.max(tonumber(redis.call('GET', run_seq) or '0') + 1, now_us)
  redis.call('SET', run_seq, string.format('%d', seq))
  fields['run_seq'] = string.format('%d', seq)
  fields['redis_id'] = redis_id()
else
  fields['state'] = 'skipped'
  fields['reason'] = 'run ' .. redis.call('GET', lock) .. ' of this source and kind is still running'
  fields['ended_at'] = fields['started_at']
end
for k, v in pairs(fields) do redis.call('HSET', run, k, v) end
if fields['state'] == 'running' then
  redis.call('ZADD', active, now, run_id)
else
  metric(run, metrics, 'runs', 1, 'skipped')
end
return fields['state']
