-- Functions shared by the run-record scripts. A script that says `--! include run_lib` on a
-- line of its own gets this file put before it (tasks/runs/scripts.py).

-- Adds `by` to the counter `name` of the run's source and kind (and `label`, if given) in the
-- metrics hash. The run's labels are read once per script, however many counters it adds to.
-- The field is 'name|source|kind[|label]', as tasks/runs/metrics.py's field() spells it, and
-- `name` one metrics.py knows (tests/unit/test_keys.py holds both).
local labels
local function metric(run, metrics, name, by, label)
  if not labels then
    labels = redis.call('HGET', run, 'source') .. '|' .. redis.call('HGET', run, 'kind')
  end
  local field = name .. '|' .. labels
  if label then field = field .. '|' .. label end
  redis.call('HINCRBYFLOAT', metrics, field, by)
end

-- Adds the seqs of `batches` (a list) to the run's `enqueued` set and counts the new ones in
-- its batches_enqueued. Returns how many were new: all of them when the batches are published
-- for the first time, fewer on a redelivery.
local function enqueue(run, enqueued, batches)
  local added = 0
  for _, seq in ipairs(batches) do
    added = added + redis.call('SADD', enqueued, string.format('%d', seq))
  end
  if added > 0 then redis.call('HINCRBY', run, 'batches_enqueued', added) end
  return added
end

-- When the run is complete (its producer is done and every enqueued batch is done or failed),
-- sets its state running -> finalizing and returns 1: the caller finalizes. Else 0.
local function try_finalize(run, enqueued, done, failed)
  if redis.call('HGET', run, 'state') ~= 'running' then return 0 end
  if redis.call('HGET', run, 'producer_done') ~= '1' then return 0 end
  local settled = redis.call('SCARD', done) + redis.call('SCARD', failed)
  if settled < redis.call('SCARD', enqueued) then return 0 end
  redis.call('HSET', run, 'state', 'finalizing')
  return 1
end

-- This Redis server's identity: INFO's run_id, new at every start of the server and another
-- one on a replica that a failover promoted. nil where INFO is refused (fakeredis; a server
-- that renamed it): runs are then not watched for a restart.
local function redis_id()
  local info = redis.pcall('INFO', 'server')
  if type(info) ~= 'string' then return nil end
  return string.match(info, 'run_id:(%x+)')
end

-- Ends an active run with `fields` (state, ended_at and the reasons): releases its lock (when
-- `lock` is given and the run holds it), takes it off the active runs, counts it, and says so
-- on the channel keys.RUNS_ENDED (a channel, not a key: no KEYS slot), where `sluice run
-- --wait` listens.
local function end_run(run, lock, active, metrics, run_id, fields)
  for k, v in pairs(fields) do redis.call('HSET', run, k, v) end
  if lock and redis.call('GET', lock) == run_id then redis.call('DEL', lock) end
  redis.call('ZREM', active, run_id)
  redis.call('PUBLISH', 'sluice:runs:ended', run_id)
  metric(run, metrics, 'runs', 1, fields['state'])
  if fields['deletion_refused'] then metric(run, metrics, 'deletions_refused', 1) end
  local started = tonumber(redis.call('HGET', run, 'started_at'))
  metric(run, metrics, 'run_seconds_sum', tonumber(fields['ended_at']) - started)
  metric(run, metrics, 'run_seconds_count', 1)
end

-- True when the run was started on another Redis server than this one: Redis restarted since
-- (from a snapshot or a log that may miss its last writes) or failed over (to a replica that
-- may lag behind), so the run's record may have lost writes: counts gone back, batches
-- published but forgotten, a checkpoint rewound. The run cannot tell whether every item was
-- read. A run still active is ended here, failed, saying so (`now`: seconds since the epoch);
-- the callers then stop counting it towards an end.
local function moved(run, lock, active, metrics, now)
  local born = redis.call('HGET', run, 'redis_id')
  local here = born and redis_id()
  if not born or not here or born == here then return false end
  local state = redis.call('HGET', run, 'state')
  if state == 'running' or state == 'finalizing' then
    local why = 'Redis restarted or failed over during the run (its run_id changed from '
      .. string.sub(born, 1, 8) .. ' to ' .. string.sub(here, 1, 8) .. '): the run record'
      .. ' may have lost its last writes, so the run cannot tell whether every item was'
      .. ' read; nothing deleted, watermark not advanced (the next run reads it all again)'
    end_run(run, lock, active, metrics, redis.call('HGET', run, 'run_id'),
            {state = 'failed', ended_at = now, reason = why, redis_moved = '1'})
  end
  return true
end
