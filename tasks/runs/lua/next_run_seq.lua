-- Takes the next run sequence number without starting a run (a batch of webhook events
-- stamps its rows with it).
-- KEYS[1] run_seq   string: the last sequence number handed out
-- ARGV[1] now_us    microseconds since the epoch
-- Returns the new number, as text.
--
-- As in create_run: the last one plus one, or the time in microseconds when that is larger
-- (so it keeps growing if Redis loses its data).
local run_seq = KEYS[1]
local now_us = tonumber(ARGV[1])

local seq = math.max(tonumber(redis.call('GET', run_seq) or '0') + 1, now_us)
redis.call('SET', run_seq, string.format('%d', seq))
return string.format('%d', seq)
