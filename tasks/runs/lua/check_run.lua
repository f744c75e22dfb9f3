-- Whether a run was started on another Redis server than this one (restarted or failed over
-- since): then a run still active is ended failed, saying so, and its lock released.
--! include run_lib
-- KEYS[1] run        hash: the run record
-- KEYS[2] lock       string: the id of the run that holds (source, kind)
-- KEYS[3] active     sorted set: runs not yet ended -> start time
-- KEYS[4] metrics    hash: the counters
-- ARGV[1] run_id
-- ARGV[2] now        seconds since the epoch
-- Returns 1 when the run was started on another Redis server, 0 when on this one (or when its
-- record is gone).
local run, lock, active, metrics = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id, now = ARGV[1], ARGV[2]

if redis.call('HEXISTS', run, 'state') == 0 then return 0 end
if not moved(run, lock, active, metrics, now) then return 0 end
-- An ended run too: its tasks may have renewed the lock after it ended.
if redis.call('GET', lock) == run_id then redis.call('DEL', lock) end
return 1
