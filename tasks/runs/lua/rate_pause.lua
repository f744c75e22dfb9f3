-- Pauses a source's rate limit: every caller waits at least until now + seconds.
-- KEYS[1] bucket     hash: tat, pause
-- ARGV[1] seconds    how long the API asked to wait
-- Returns 1.
local bucket = KEYS[1]
local seconds = tonumber(ARGV[1])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + seconds
local pause = tonumber(redis.call('HGET', bucket, 'pause') or '0')
if until_ > pause then redis.call('HSET', bucket, 'pause', tostring(until_)) end
redis.call('EXPIRE', bucket, math.ceil(seconds) + 60)
return 1
