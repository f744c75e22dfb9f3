-- The nodes whose last heartbeat is older than the timeout.
-- KEYS[1] nodes      sorted set: node -> its last heartbeat
-- ARGV[1] timeout    seconds
-- Returns their names.
local nodes, timeout = KEYS[1], tonumber(ARGV[1])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', nodes, '-inf', now - timeout)
