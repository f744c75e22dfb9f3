-- Reserves the next free slot of a source's rate limit (GCRA) on Redis's clock.
-- KEYS[1] bucket     hash: tat (the theoretical arrival time), pause (no slot before it)
-- ARGV[1] interval   seconds per request
-- ARGV[2] burst      requests that may go at once
-- Returns the seconds the caller waits for its slot.
local bucket = KEYS[1]
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('HGET', bucket, 'tat') or '0')
local pause = tonumber(redis.call('HGET', bucket, 'pause') or '0')
local start = math.max(tat, now)
local slot = math.max(start - (burst - 1) * interval, pause)
local new_tat = math.max(start, slot) + interval
redis.call('HSET', bucket, 'tat', tostring(new_tat))
redis.call('EXPIRE', bucket, math.ceil(new_tat - now) + 60)
return tostring(math.max(0, slot - now))
