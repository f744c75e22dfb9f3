-- Ends an active run: sets its state and reasons, releases its lock, counts it.
--! include run_lib
-- KEYS[1] run        hash: the run record
-- KEYS[2] lock       string: the id of the run that holds (source, kind)
-- KEYS[3] active     sorted set: runs not yet ended -> start time
-- KEYS[4] metrics    hash: the counters
-- ARGV[1] run_id
-- ARGV[2] fields     JSON object: state, ended_at and the reasons
-- ARGV[3] expect     the state the run must be in ('' for either active state)
-- Returns 1 when it ended the run, 0 when the run was not in that state.
local run, lock, active, metrics = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id, expect = ARGV[1], ARGV[3]

local state = redis.call('HGET', run, 'state')
if expect ~= '' and state ~= expect then return 0 end
if state ~= 'running' and state ~= 'finalizing' then return 0 end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', run, k, v) end
if redis.call('GET', lock) == run_id then redis.call('DEL', lock) end
redis.call('ZREM', active, run_id)
metric(run, metrics, 'runs', 1, fields['state'])
if fields['deletion_refused'] then metric(run, metrics, 'deletions_refused', 1) end
local started = tonumber(redis.call('HGET', run, 'started_at'))
metric(run, metrics, 'run_seconds_sum', tonumber(fields['ended_at']) - started)
metric(run, metrics, 'run_seconds_count', 1)
return 1
