-- Claims the next time windows of a sliced run to start, while fewer than `limit` of them are
-- started and not done (the run's windows in flight across the fleet).
-- KEYS[1] run              hash: the run record ('partitions', 'windows_next')
-- KEYS[2] partitions_done  set: the partitions that are done
-- ARGV[1] limit            windows in flight at most
-- ARGV[2] most             windows the caller takes at most
-- Returns the partitions the caller starts (each exactly once over the run).
local run, partitions_done = KEYS[1], KEYS[2]
local limit, most = tonumber(ARGV[1]), tonumber(ARGV[2])

if redis.call('HEXISTS', run, 'state') == 0 then return {} end
if redis.call('HGET', run, 'producer_done') == '1' then return {} end
local nxt = tonumber(redis.call('HGET', run, 'windows_next'))
if not nxt then return {} end  -- not a sliced run
local parts = tonumber(redis.call('HGET', run, 'partitions'))
local busy = nxt - redis.call('SCARD', partitions_done)
local claimed = {}
while nxt < parts and busy < limit and #claimed < most do
  table.insert(claimed, nxt)
  nxt, busy = nxt + 1, busy + 1
end
redis.call('HSET', run, 'windows_next', nxt)
return claimed
