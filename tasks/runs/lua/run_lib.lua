-- Functions shared by the run-record scripts. A script that says `--! include run_lib` on a
-- line of its own gets this file put before it (tasks/runs/scripts.py).

-- Adds `by` to the counter `name` of the run's source and kind (and `label`, if given) in the
-- metrics hash. The run's labels are read once per script, however many counters it adds to.
local labels
local function metric(run, metrics, name, by, label)
  if not labels then
    labels = redis.call('HGET', run, 'source') .. '|' .. redis.call('HGET', run, 'kind')
  end
  local field = name .. '|' .. labels
  if label then field = field .. '|' .. label end
  redis.call('HINCRBYFLOAT', metrics, field, by)
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
