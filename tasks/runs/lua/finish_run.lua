-- Ends an active run: sets its state and reasons, releases its lock, counts it.
--! include run_lib
-- KEYS[1] run        hash: the run record
-- KEYS[2] lock       string: the id of the run that holds (source, kind)
-- KEYS[3] active     sorted set: runs not yet ended -> start time
-- KEYS[4] metrics    hash: the counters
-- ARGV[1] run_id
-- ARGV[2] fields     JSON object: state, ended_at and the reasons
-- ARGV[3] expect     the state the run must be in ('' for either active state)
-- ARGV[4] done       JSON object: what the caller already did (deleted, watermark), recorded
--                    even when the run ends failed here because Redis changed under it
-- Returns 1 when it ended the run, 0 when the run was not in that state, -1 when the run was
-- started on another Redis server (restarted or failed over since): it is failed instead.
local run, lock, active, metrics = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id, expect = ARGV[1], ARGV[3]
local fields = cjson.decode(ARGV[2])

local state = redis.call('HGET', run, 'state')
if not state then return 0 end
if moved(run, lock, active, metrics, fields['ended_at']) then
  local done = cjson.decode(ARGV[4])
  if next(done) and redis.call('HGET', run, 'redis_moved') == '1' then
    for k, v in pairs(done) do redis.call('HSET', run, k, v) end
    redis.call('HSET', run, 'reason', 'Redis restarted or failed over while the run was'
      .. ' finalizing (its run_id changed): finalize had already acted on the record as it'
      .. ' stood before the change (see deleted and watermark); the run is failed all the same')
  end
  return -1
end
if expect ~= '' and state ~= expect then return 0 end
if state ~= 'running' and state ~= 'finalizing' then return 0 end
end_run(run, lock, active, metrics, run_id, fields)
return 1
